import textwrap
from pathlib import Path

import pytest

from autoscaler.core.types import Role
from autoscaler.errors import ConfigError
from autoscaler.policy import PolicyStore, load_policy

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
models:
  - name: llama
    priority: 10
    slo: {ttft_s: 1.0, itl_s: 0.05}
    variants:
      - role: decode
        accelerator: H100
        min_replicas: 1
        max_replicas: 8
        scale_to_zero: true
        idle_window_s: 900
        schedule:
          timezone: Europe/Paris
          windows:
            - {name: business, days: [mon-fri], start: "08:00", end: "20:00", min_replicas: 3}
bounds:
  gpu_quota: {H100: 16}
  budget_usd_per_hour: 100
behavior:
  tolerance: 0.05
  scale_down: {stabilization_window_s: 600, max_step: 2, max_step_percent: 25, cooldown_s: 60}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", ["default.yaml", "example-h100-a100.yaml"])
def test_shipped_policies_load(name):
    policy = load_policy(REPO / "policies" / name)
    assert policy.models and all(m.variants for m in policy.models)


def test_a_valid_file_becomes_core_values(tmp_path):
    policy = load_policy(write(tmp_path, "p.yaml", GOOD))
    model = policy.model("llama")
    variant = model.variant(Role.DECODE, "H100")
    assert (model.priority, model.slo.ttft_s, model.slo.percentile) == (10, 1.0, 0.9)
    assert (variant.max_replicas, variant.scale_to_zero, variant.idle_window_s) == (8, True, 900)
    assert variant.schedule.windows[0].days == frozenset(range(5))
    assert variant.schedule.windows[0].start_s == 8 * 3600
    assert (policy.bounds.gpu_quota, policy.bounds.budget_per_hour) == ({"H100": 16}, 100)
    b = policy.behavior
    assert (b.scale_down_window_s, b.max_step_down, b.max_step_down_percent, b.cooldown_down_s, b.tolerance) \
        == (600, 2, 25, 60, 0.05)
    assert (b.max_step_up, b.max_step_up_percent) == (1, 0)  # where the file is silent: the one default


@pytest.mark.parametrize(
    ("replace", "line", "field", "reason"),
    [
        pytest.param(("max_replicas: 8", "max_replicas: -2"), 10, "models[0].variants[0].max_replicas",
                     "greater than or equal to 0", id="negative-max"),
        pytest.param(("min_replicas: 1", "min_replicas: 9"), 7, "models[0].variants[0]",
                     "min_replicas (9) must be <= max_replicas (8)", id="min-above-max"),
        pytest.param(("role: decode", "role: router"), 7, "models[0].variants[0].role", "'prefill'",
                     id="unknown-role"),
        pytest.param(("itl_s: 0.05", "itl_s: 0"), 5, "models[0].slo.itl_s", "greater than 0", id="zero-itl"),
        pytest.param(("Europe/Paris", "Europe/Atlantis"), 14, "models[0].variants[0].schedule.timezone",
                     "unknown time zone", id="unknown-time-zone"),
        pytest.param(("mon-fri", "mon-fry"), 16, "models[0].variants[0].schedule.windows[0].days",
                     "unknown day 'fry'", id="unknown-day"),
        pytest.param(('"20:00"', '"25:00"'), 16, "models[0].variants[0].schedule.windows[0].end", "HH:MM",
                     id="bad-time"),
        pytest.param(("budget_usd_per_hour: 100", "budget_usd_per_hour: -5"), 19, "bounds.budget_usd_per_hour",
                     "greater than or equal to 0", id="negative-budget"),
        pytest.param(("tolerance: 0.05", "tolerance: 1.5"), 21, "behavior.tolerance", "less than 1",
                     id="tolerance-too-large"),
        pytest.param(("priority: 10", "priority: 10\n    colour: blue"), 5, "models[0].colour",
                     "Extra inputs are not permitted", id="unknown-field"),
    ],
)
def test_a_malformed_policy_names_file_line_field_and_reason(tmp_path, replace, line, field, reason):
    path = write(tmp_path, "bad.yaml", GOOD.replace(*replace))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {field}:"), message
    assert reason in message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("models: [\n", "not valid YAML", id="broken-yaml"),
        pytest.param("- a\n- b\n", "expected a mapping", id="top-level-list"),
        pytest.param("version: 2\n", "version", id="unknown-version"),
        pytest.param("models:\n  - {name: a}\n  - {name: a}\n", "listed twice", id="duplicate-model"),
        pytest.param("models:\n  - name: a\n    variants:\n      - {role: both, accelerator: H100}\n"
                     "      - {role: decode, accelerator: H100}\n", "aggregated", id="mixed-roles"),
    ],
)
def test_refuses_structurally_wrong_files(tmp_path, text, reason):
    with pytest.raises(ConfigError, match=reason):
        load_policy(write(tmp_path, "x.yaml", text))


def test_a_directory_merges_models_and_takes_global_sections_from_one_file(tmp_path):
    write(tmp_path, "a-models.yaml", "models:\n  - {name: a, priority: 1}\n")
    write(tmp_path, "b-models.yaml", "models:\n  - {name: b, priority: 2}\n")
    write(tmp_path, "c-bounds.yaml", "bounds: {max_gpus: 8}\n")
    write(tmp_path, ".hidden.yaml", "this is: [not read\n")
    write(tmp_path, "notes.txt", "ignored")
    policy = load_policy(tmp_path)
    assert [m.model for m in policy.models] == ["a", "b"]
    assert policy.bounds.max_gpus == 8


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        pytest.param("models:\n  - {name: a}\n", "model 'a' is also defined in", id="model-in-two-files"),
        pytest.param("bounds: {max_gpus: 2}\n", "section 'bounds' is also defined in", id="bounds-in-two-files"),
    ],
)
def test_a_directory_refuses_conflicts_naming_both_files(tmp_path, second, reason):
    write(tmp_path, "1.yaml", "models:\n  - {name: a}\nbounds: {max_gpus: 8}\n")
    write(tmp_path, "2.yaml", second)
    with pytest.raises(ConfigError, match=reason) as info:
        load_policy(tmp_path)
    assert "1.yaml" in str(info.value) and "2.yaml" in str(info.value)


def test_the_store_keeps_the_last_good_policy_when_a_reload_fails(tmp_path):
    path = write(tmp_path, "p.yaml", GOOD)
    store = PolicyStore(path)
    assert store.version is None and store.current.models == ()  # built-in defaults until the first load
    assert store.reload() is True
    good, version = store.current, store.version
    path.write_text(GOOD.replace("max_replicas: 8", "max_replicas: -1"))
    assert store.reload() is False
    assert store.current is good and store.version == version
    assert "max_replicas" in str(store.error)
    path.write_text(GOOD.replace("max_replicas: 8", "max_replicas: 12"))
    assert store.reload() is True and store.error is None
    assert store.current.model("llama").variant(Role.DECODE, "H100").max_replicas == 12
    assert store.version != version


def test_the_store_does_not_reparse_unchanged_files(tmp_path):
    store = PolicyStore(write(tmp_path, "p.yaml", GOOD))
    store.reload()
    first = store.current
    assert store.reload() is True and store.current is first


def test_a_vanished_policy_keeps_the_last_good_one(tmp_path):
    path = write(tmp_path, "p.yaml", GOOD)
    store = PolicyStore(path)
    store.reload()
    good = store.current
    path.unlink()
    assert store.reload() is False and store.current is good
    assert "no such file" in str(store.error)
