"""Read policy files: one YAML file, or every ``*.yaml``/``*.yml`` in a directory (a mounted ConfigMap).

A directory's files are merged: models from all of them (a model in two files is refused), and each of
``bounds``, ``behavior``, ``saturation`` from at most one file. Errors name the file, the line, the field
and the reason, e.g. ``policies/prod.yaml:14: models[0].variants[1].max_replicas: Input should be greater
than or equal to 0 (got -2)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autoscaler.core.policyset import PolicySet
from autoscaler.errors import ConfigError
from autoscaler.policy.schema import PolicyFile, to_policy_set
from autoscaler.scaling_settings import Layers

__all__ = ["fingerprint", "load_policy", "parse_policy", "policy_files"]

_GLOBAL_SECTIONS = ("bounds", "behavior", "saturation")


def policy_files(source: Path) -> list[Path]:
    """The files ``source`` stands for: itself, or a directory's YAML files by name (hidden ones skipped, as
    the ``..data`` links of a ConfigMap volume)."""
    if source.is_dir():
        return sorted(p for p in source.iterdir()
                      if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())
    if source.exists():
        return [source]
    raise ConfigError(f"{source}: no such file or directory", field="policy")


def fingerprint(source: Path) -> str:
    """Digest of the names and contents of the policy files: changes when any file does."""
    digest = hashlib.sha256()
    for path in policy_files(source):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of the deepest ancestor found)."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if getattr(key, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def parse_policy(text: str, *, source: str) -> PolicyFile:
    """Validate one file's text. Raises ConfigError naming ``source``, the line, the field and the reason."""
    try:
        tree = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}", field="policy") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}", field="policy")
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line(tree, loc)
            got = "" if err["type"] == "missing" or isinstance(err["input"], (dict, list)) else f" (got {err['input']!r})"
            lines.append(f"{source}{f':{line}' if line else ''}: {_where(loc)}: {err['msg']}{got}")
        first = exc.errors()[0]
        raise ConfigError("\n".join(lines), field=_where(tuple(first["loc"]))) from exc


def load_policy(source: Path, *, base: Layers | None = None) -> PolicySet:
    """Load and merge the policy at ``source`` (a file or a directory), over ``base`` (the settings' fields,
    see :func:`autoscaler.policy.schema.to_policy_set`)."""
    files = policy_files(Path(source))
    if not files:
        raise ConfigError(f"{source}: no *.yaml policy files", field="policy")
    parsed: list[tuple[Path, PolicyFile]] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}", field="policy") from exc
        parsed.append((path, parse_policy(text, source=str(path))))
    if len(parsed) == 1:
        return to_policy_set(parsed[0][1], source=str(files[0]), base=base)

    seen_models: dict[str, Path] = {}
    owners: dict[str, Path] = {}
    for path, policy in parsed:
        for model in policy.models:
            if model.name in seen_models:
                raise ConfigError(f"{path}: model {model.name!r} is also defined in {seen_models[model.name]}",
                                  field="models")
            seen_models[model.name] = path
        for section in _GLOBAL_SECTIONS:
            if getattr(policy, section) is not None:
                if section in owners:
                    raise ConfigError(f"{path}: section {section!r} is also defined in {owners[section]}; "
                                      "define it in one file", field=section)
                owners[section] = path
    merged = PolicyFile(
        models=[m for _, p in parsed for m in p.models],
        bounds=next((p.bounds for _, p in parsed if p.bounds is not None), None),
        behavior=next((p.behavior for _, p in parsed if p.behavior is not None), None),
        saturation=next((p.saturation for _, p in parsed if p.saturation is not None), None),
    )
    return to_policy_set(merged, source=str(source), base=base)
