"""Label selectors as the HPA sends them (apimachinery's Selector.String())."""

import pytest

from autoscaler.adapter.selectors import SelectorError, parse_selector

LABELS = {"variant": "llama-decode", "model": "llama", "role": "decode", "accelerator": "H100", "gen": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("", True, id="empty-selects-all"),
        pytest.param("variant=llama-decode", True, id="equals"),
        pytest.param("variant==llama-decode", True, id="double-equals"),
        pytest.param("variant=llama-prefill", False, id="equals-other"),
        pytest.param("role!=prefill", True, id="not-equals"),
        pytest.param("role!=decode", False, id="not-equals-same"),
        pytest.param("absent!=x", True, id="not-equals-matches-absent-key"),
        pytest.param("role in (decode,prefill)", True, id="in"),
        pytest.param("role in (prefill)", False, id="in-other"),
        pytest.param("role notin (prefill,both)", True, id="notin"),
        pytest.param("role notin (decode)", False, id="notin-same"),
        pytest.param("model", True, id="exists"),
        pytest.param("canary", False, id="exists-absent"),
        pytest.param("!canary", True, id="not-exists"),
        pytest.param("!model", False, id="not-exists-present"),
        pytest.param("gen>2", True, id="greater"),
        pytest.param("gen<3", False, id="less"),
        pytest.param("model>2", False, id="greater-on-non-integer"),
        pytest.param("model=llama,role=decode,accelerator=H100", True, id="conjunction"),
        pytest.param("model=llama,role=prefill", False, id="conjunction-one-fails"),
        pytest.param(" model = llama , role in ( decode ) ", True, id="spaces"),
        pytest.param("index=1", False, id="key-starting-with-in"),
        pytest.param("example.com/tier=gold", False, id="prefixed-key"),
        pytest.param("model=", False, id="empty-value"),
    ],
)
def test_selector_matches_as_apimachinery_does(selector, expected):
    assert parse_selector(selector).matches(LABELS) is expected


def test_empty_value_matches_an_empty_label():
    assert parse_selector("model=").matches({"model": ""})


@pytest.mark.parametrize(
    ("selector", "position"),
    [
        pytest.param("model=llama,", 12, id="trailing-comma"),
        pytest.param("role in decode", 8, id="in-without-parentheses"),
        pytest.param("role in ()", 10, id="in-empty-set"),
        pytest.param("role in (a,b", 12, id="unclosed-set"),
        pytest.param("=x", 0, id="no-key"),
        pytest.param("gen>x", 4, id="greater-not-integer"),
        pytest.param("model=ll ama", 9, id="space-inside-value"),
        pytest.param("model~llama", 5, id="unknown-operator"),
    ],
)
def test_bad_selector_names_the_position(selector, position):
    with pytest.raises(SelectorError, match=f"at position {position}$"):
        parse_selector(selector)
