"""Forecaster state survives a restart: saved to JSON, loaded back, and the forecast carries on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autoscaler.errors import ConfigError
from autoscaler.forecast import ForecastConfig, Method, MixObservation, MixState, new_mix, update_mix
from autoscaler.forecast.store import DEFAULT_DIRECTORY, load_all, load_mix, save_all, save_mix, state_path

CONFIG = ForecastConfig(interval_s=60.0, lead_time_s=180.0, history_s=6 * 3600.0, fit_window_s=3600.0,
                        methods=(Method.LAST_VALUE, Method.EWMA, Method.HOLT))


def warmed_up(cycles: int = 60) -> MixState:
    state = new_mix(CONFIG)
    rng = np.random.default_rng(11)
    for t in range(cycles):
        rate = None if t % 13 == 5 else 3.0 + 0.02 * t + rng.normal(0.0, 0.1)
        state, _ = update_mix(state, observation=MixObservation(rate, 1000.0 + t, None), now=60.0 * t,
                              config=CONFIG)
    return state


def test_a_saved_state_loads_back_equal(tmp_path: Path) -> None:
    state = warmed_up()
    save_mix(state, model="llama", config=CONFIG, directory=tmp_path)
    loaded = load_mix(model="llama", config=CONFIG, directory=tmp_path)
    assert loaded is not None
    for name in ("arrival_rate", "mean_input_tokens", "mean_output_tokens"):
        before, after = getattr(state, name), getattr(loaded, name)
        assert after.last_time_s == before.last_time_s
        for field in ("values", "pending_mean", "pending_upper", "pinball", "pinball_weight", "naive_pinball", "ape",
                      "naive_ape", "ape_weight", "scored"):
            np.testing.assert_array_equal(getattr(after, field), getattr(before, field), err_msg=f"{name}.{field}")


def test_after_a_restart_the_forecast_carries_on_from_the_saved_history_and_scores(tmp_path: Path) -> None:
    state = warmed_up()
    save_mix(state, model="llama", config=CONFIG, directory=tmp_path)
    restored = load_mix(model="llama", config=CONFIG, directory=tmp_path)
    assert restored is not None
    # fitted models are not saved (they are refitted from the history on the next cycle); otherwise identical
    unfitted = MixState(*(replace(getattr(state, n), fitted={})
                          for n in ("arrival_rate", "mean_input_tokens", "mean_output_tokens")))
    observation = MixObservation(4.5, 1100.0, None)
    _, expected = update_mix(unfitted, observation=observation, now=60.0 * 60, config=CONFIG)
    _, actual = update_mix(restored, observation=observation, now=60.0 * 60, config=CONFIG)
    assert actual.arrival_rate is not None and expected.arrival_rate is not None
    assert actual.arrival_rate.method == expected.arrival_rate.method
    np.testing.assert_allclose(actual.arrival_rate.upper, expected.arrival_rate.upper, rtol=1e-9)
    assert actual.mean_output_tokens is None


def test_a_model_without_a_file_has_no_state(tmp_path: Path) -> None:
    assert load_mix(model="never-seen", config=CONFIG, directory=tmp_path) is None
    assert load_all(config=CONFIG, directory=tmp_path / "absent") == {}


@pytest.mark.parametrize("changes", [
    pytest.param({"interval_s": 30.0}, id="other-interval"),
    pytest.param({"lead_time_s": 600.0}, id="other-lead-time"),
    pytest.param({"methods": (Method.LAST_VALUE,)}, id="other-methods"),
])
def test_a_state_written_under_other_settings_is_forgotten_not_misread(tmp_path: Path,
                                                                        changes: dict[str, object]) -> None:
    save_mix(warmed_up(10), model="llama", config=CONFIG, directory=tmp_path)
    other = ForecastConfig(**{**{f: getattr(CONFIG, f) for f in ("interval_s", "lead_time_s", "history_s",
                                                                 "fit_window_s", "methods")}, **changes})
    assert load_mix(model="llama", config=other, directory=tmp_path) is None


@pytest.mark.parametrize(("edit", "where"), [
    pytest.param(lambda doc: "{not json", "(document)", id="not-json"),
    pytest.param(lambda doc: json.dumps({**doc, "arrival_rate": {**doc["arrival_rate"], "values": "many"}}),
                 "arrival_rate.values", id="values-not-a-list"),
    pytest.param(lambda doc: json.dumps({k: v for k, v in doc.items() if k != "mean_input_tokens"}),
                 "mean_input_tokens", id="series-missing"),
    pytest.param(lambda doc: json.dumps({**doc, "arrival_rate": {**doc["arrival_rate"], "pinball": [[1.0]]}}),
                 "arrival_rate.pinball", id="wrong-shape"),
])
def test_a_corrupt_state_file_is_a_config_error_naming_file_and_field(tmp_path: Path, edit, where: str) -> None:
    path = save_mix(warmed_up(10), model="llama", config=CONFIG, directory=tmp_path)
    path.write_text(edit(json.loads(path.read_text())))
    with pytest.raises(ConfigError) as caught:
        load_mix(model="llama", config=CONFIG, directory=tmp_path)
    assert str(path) in str(caught.value)
    assert where in str(caught.value)


def test_model_names_become_distinct_safe_file_names(tmp_path: Path) -> None:
    slash = state_path(model="meta-llama/Llama-3.1-8B", directory=tmp_path)
    underscore = state_path(model="meta-llama_Llama-3.1-8B", directory=tmp_path)
    assert slash.parent == tmp_path and "/" not in slash.name
    assert slash != underscore


def test_save_all_and_load_all_keep_models_apart(tmp_path: Path) -> None:
    states = {"a/model": warmed_up(20), "b": warmed_up(40)}
    save_all(states, config=CONFIG, directory=tmp_path)
    loaded = load_all(config=CONFIG, directory=tmp_path)
    assert set(loaded) == {"a/model", "b"}
    assert len(loaded["a/model"].arrival_rate.values) == 20
    assert len(loaded["b"].arrival_rate.values) == 40


def test_saving_leaves_no_temporary_files_behind(tmp_path: Path) -> None:
    save_mix(warmed_up(5), model="llama", config=CONFIG, directory=tmp_path / "nested")
    save_mix(warmed_up(6), model="llama", config=CONFIG, directory=tmp_path / "nested")
    assert [p.name.endswith(".forecast.json") for p in (tmp_path / "nested").iterdir()] == [True]


def test_the_default_directory_is_models_forecast() -> None:
    assert DEFAULT_DIRECTORY == Path("models/forecast")
