"""Kubernetes label selectors in their string form, as the HPA sends them in ``?labelSelector=``.

The HPA turns its ``metric.selector`` (a LabelSelector) into a string with apimachinery's ``Selector.String()``
and the external metrics client puts it in the query. The grammar (apimachinery ``labels.Parse``):

    selector    := requirement ("," requirement)*        (empty selector = everything)
    requirement := key | "!" key
                 | key ("=" | "==" | "!=") value
                 | key ("in" | "notin") "(" value ("," value)* ")"
                 | key (">" | "<") integer

    >>> sel = parse_selector("role in (decode,prefill),model=llama,!canary")
    >>> sel.matches({"role": "decode", "model": "llama"})
    True

Pure: no I/O. Bad input raises :class:`SelectorError` naming the position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Operator", "Requirement", "Selector", "SelectorError", "parse_selector"]

# Qualified-name keys with an optional DNS prefix, and label values; apimachinery validates them the same way.
_KEY = re.compile(r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_INTEGER = re.compile(r"-?[0-9]+")


class SelectorError(ValueError):
    """A label selector that does not parse; the message names the offending position."""


class Operator(StrEnum):
    EXISTS = "exists"
    NOT_EXISTS = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    GREATER = ">"
    LESS = "<"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        # Semantics of apimachinery's Requirement.Matches: "!=" and "notin" also match when the key is absent.
        present = self.key in labels
        value = labels.get(self.key, "")
        match self.operator:
            case Operator.EXISTS:
                return present
            case Operator.NOT_EXISTS:
                return not present
            case Operator.EQUALS | Operator.IN:
                return present and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or value not in self.values
            case Operator.GREATER | Operator.LESS:
                if not present or not _INTEGER.fullmatch(value):
                    return False
                bound = int(self.values[0])
                return int(value) > bound if self.operator is Operator.GREATER else int(value) < bound
        return False  # pragma: no cover - every operator is handled above


@dataclass(frozen=True, slots=True)
class Selector:
    """All requirements must hold (a selector is a conjunction)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.text)

    def peek(self, literal: str) -> bool:
        self.skip_spaces()
        return self.text.startswith(literal, self.pos)

    def take(self, literal: str) -> bool:
        if self.peek(literal):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            self.fail(f"expected {literal!r}")

    def word(self, pattern: re.Pattern[str], what: str) -> str:
        self.skip_spaces()
        match = pattern.match(self.text, self.pos)
        if match is None or (not match.group(0) and what != "value"):
            self.fail(f"expected a {what}")
        assert match is not None
        self.pos = match.end()
        return match.group(0)

    def keyword(self, word: str) -> bool:
        """``in``/``notin`` must be followed by a space or "(", so a key named ``index`` is not ``in``."""
        self.skip_spaces()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and (end >= len(self.text) or self.text[end] in " \t("):
            self.pos = end
            return True
        return False

    def fail(self, message: str) -> None:
        raise SelectorError(f"label selector {self.text!r}: {message} at position {self.pos}")


def parse_selector(text: str | None) -> Selector:
    """Parse a selector string; ``None`` or blank selects everything."""
    if text is None or not text.strip():
        return Selector()
    scanner = _Scanner(text)
    requirements: list[Requirement] = []
    while True:
        requirements.append(_requirement(scanner))
        if scanner.at_end():
            break
        scanner.expect(",")
    return Selector(tuple(requirements))


def _requirement(s: _Scanner) -> Requirement:
    if s.take("!"):
        return Requirement(s.word(_KEY, "key"), Operator.NOT_EXISTS)
    key = s.word(_KEY, "key")
    if s.at_end() or s.peek(","):
        return Requirement(key, Operator.EXISTS)
    if s.take("=="):
        return Requirement(key, Operator.EQUALS, (s.word(_VALUE, "value"),))
    if s.take("!="):
        return Requirement(key, Operator.NOT_EQUALS, (s.word(_VALUE, "value"),))
    if s.take("="):
        return Requirement(key, Operator.EQUALS, (s.word(_VALUE, "value"),))
    if s.take(">"):
        return Requirement(key, Operator.GREATER, (s.word(_INTEGER, "integer"),))
    if s.take("<"):
        return Requirement(key, Operator.LESS, (s.word(_INTEGER, "integer"),))
    for word, operator in (("notin", Operator.NOT_IN), ("in", Operator.IN)):
        if s.keyword(word):
            return Requirement(key, operator, _value_set(s))
    s.fail(f"expected an operator after key {key!r}")
    raise AssertionError("unreachable")  # pragma: no cover


def _value_set(s: _Scanner) -> tuple[str, ...]:
    s.expect("(")
    values = [s.word(_VALUE, "value")]
    while s.take(","):
        values.append(s.word(_VALUE, "value"))
    s.expect(")")
    if values == [""]:
        s.fail("'in' and 'notin' need at least one value")
    return tuple(sorted(set(values)))
