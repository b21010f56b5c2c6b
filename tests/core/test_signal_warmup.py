import pytest

from autoscaler.signals.parse import parse_pod_ages
from autoscaler.signals.queries import LabelMap
from autoscaler.signals.warmup import PodCensus, PodSighting, take_census

KEY = ("ns", "m", "decode", "H100")
OTHER = ("ns", "m", "prefill", "H100")


@pytest.mark.parametrize(
    ("age", "remembered_since", "warming"),
    [
        pytest.param(30.0, None, True, id="young-process"),
        pytest.param(300.0, None, False, id="old-process"),
        pytest.param(None, None, True, id="no-start-time-first-seen-now"),
        pytest.param(None, 950.0, True, id="no-start-time-seen-recently"),
        pytest.param(None, 500.0, False, id="no-start-time-seen-long-ago"),
        pytest.param(30.0, 0.0, True, id="restarted-process-counts-as-new-despite-memory"),
    ],
)
def test_a_pod_is_warming_until_warmup_has_passed(age, remembered_since, warming):
    memory = {} if remembered_since is None else {(KEY, "p"): PodSighting(remembered_since, 990.0)}
    census, _ = take_census({KEY: {"p": age}}, memory=memory, now=1_000.0, warmup_s=120)
    expected = PodCensus(warming=("p",)) if warming else PodCensus(warm=("p",))
    assert census[KEY] == expected


def test_memory_follows_the_live_fleet():
    memory = {(KEY, "gone"): PodSighting(0.0, 800.0), (KEY, "blip"): PodSighting(0.0, 950.0)}
    census, memory = take_census({KEY: {"new": None}, OTHER: {"x": 10.0}}, memory=memory, now=1_000.0,
                                 warmup_s=120, forget_after_s=100)
    assert set(memory) == {(KEY, "blip"), (KEY, "new"), (OTHER, "x")}  # unseen for > 100 s: forgotten
    assert memory[(KEY, "new")] == PodSighting(1_000.0, 1_000.0) and census[OTHER].warming == ("x",)


def test_a_pod_back_after_a_scrape_gap_keeps_its_first_sighting():
    _, memory = take_census({KEY: {"p": None}}, memory={}, now=0.0, warmup_s=120, forget_after_s=90)
    _, memory = take_census({}, memory=memory, now=60.0, warmup_s=120, forget_after_s=90)
    census, memory = take_census({KEY: {"p": None}}, memory=memory, now=80.0, warmup_s=120, forget_after_s=90)
    assert census[KEY].warming == ("p",)
    census, _ = take_census({KEY: {"p": None}}, memory=memory, now=125.0, warmup_s=120)
    assert census[KEY].warm == ("p",)


def test_pod_ages_parse_the_sentinel_and_the_pod_identity():
    labels = LabelMap()
    base = {"namespace": "ns", "model_name": "m", "role": "decode", "accelerator": "H100"}
    result = [
        {"metric": {**base, "pod": "a"}, "value": [1, "42.5"]},
        {"metric": {**base, "pod": "b"}, "value": [1, "-1"]},  # exports no process_start_time_seconds
        {"metric": {**base, "instance": "10.0.0.3:8000"}, "value": [1, "7"]},  # no pod label: instance names it
        {"metric": {**base, "pod": "a", "job": "dup"}, "value": [1, "40"]},  # scraped twice: youngest wins
        {"metric": {**base}, "value": [1, "3"]},  # no identity at all: skipped
        {"metric": {**base, "pod": "c"}, "value": "garbage"},
    ]
    assert parse_pod_ages(result, labels=labels) == {KEY: {"a": 40.0, "b": None, "10.0.0.3:8000": 7.0}}
