"""Settings become the planner's configuration: the switches that change how demand is read."""

from __future__ import annotations

import pytest

from autoscaler.config import load_settings
from autoscaler.controller.wiring import planner_config


@pytest.mark.parametrize(("overrides", "enforced", "on_demand"), [
    pytest.param({}, False, False, id="defaults-no-gateway-nodes-present"),
    pytest.param({"planner": {"gateway_enforces_admission": True}}, True, False, id="gateway-applies-the-ratio"),
    pytest.param({"planner": {"nodes_on_demand": True}}, False, True, id="nodes-on-demand"),
    pytest.param({"nodes": {"enabled": True}}, False, True, id="managed-machinesets-imply-on-demand"),
])
def test_planner_switches_follow_the_settings(overrides, enforced, on_demand):
    config = planner_config(load_settings(None, overrides))
    assert (config.admission_enforced, config.nodes_on_demand) == (enforced, on_demand)


def test_the_default_forecast_reach_covers_a_node_start_and_a_pod_start():
    # A GPU node takes 5-15 min and a 70B pod 4 min to load: a 10 min reach would cut the lead time short.
    config = planner_config(load_settings(None, {}))
    assert config.forecast.lead_time_s >= 15 * 60
