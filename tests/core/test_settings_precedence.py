"""One home per setting: the settings, the policy file and the VariantAutoscaling override each other field by
field, in the order autoscaler/scaling_settings.py documents, and ``recommend --explain`` names each source.

Each of the first tests pins a former disagreement (issue 18) and failed before the merge by field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from autoscaler.config import load_settings
from autoscaler.controller.wiring import assemble_controller, policy_source
from autoscaler.core.plan import PlannerState, VariantObservation, plan_cycle
from autoscaler.core.policyset import PolicySet
from autoscaler.errors import ConfigError
from autoscaler.kube.api import to_variant_spec
from autoscaler.perf.profiles import default_profiles
from autoscaler.report import effective_settings, to_json
from autoscaler.signals.queries import LabelMap, variant_key
from tests.core.test_controller_cycle import SATURATED, Clock, Scaler, Signals, Variants
from tests.core.test_plan import CONFIG, MODEL, signals

POLICY_SCALE_DOWN_ONLY = """
version: 1
behavior:
  scale_down: {max_step: 2}
"""


def current(settings) -> PolicySet:
    source = policy_source(settings)
    return source() if callable(source) else source


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def crd(role: str, *, accelerator: str = "H100", **extra) -> dict:
    name = f"llama-{role}"
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"model": MODEL, "role": role, "accelerator": accelerator, "minReplicas": 1, "maxReplicas": 40,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, **extra}}


# -- the former disagreements -----------------------------------------------------------------------------------


def test_the_node_boot_scale_up_window_holds_with_a_policy_file_that_leaves_it_out(tmp_path):
    policy = write(tmp_path, "policy.yaml", POLICY_SCALE_DOWN_ONLY)
    settings = load_settings(None, {"planner": {"nodes_on_demand": True, "policy_file": str(policy)}})
    behavior = current(settings).behavior
    assert behavior.scale_up_window_s == 120.0  # the settings' derived default survives the policy file
    assert behavior.max_step_down == 2  # and the field the file sets wins


def test_a_crd_slo_changes_the_decision():
    def decide(prefill_crd: dict):
        observations = [
            VariantObservation(to_variant_spec(prefill_crd), signals(rps=30, prompt=2000, output=300), 1),
            VariantObservation(to_variant_spec(crd("decode")), signals(rps=30, prompt=2000, output=300), 1),
        ]
        result, _ = plan_cycle(observations=observations, state=PlannerState(), profiles=default_profiles(),
                               policy=PolicySet(), config=CONFIG, now=1000.0)
        return result.decision(observations[0].spec.ref).desired

    loose = decide(crd("prefill"))
    tight = decide(crd("prefill", slo={"ttft": "250ms"}))
    assert tight > loose  # a tighter TTFT needs more prefill replicas for the same demand


def test_h100_and_its_gke_spelling_are_one_accelerator_in_the_crd_labels_policy_and_quotas(tmp_path):
    policy_file = write(tmp_path, "policy.yaml", f"""
version: 1
models:
  - name: {MODEL}
    variants: [{{role: decode, accelerator: nvidia-h100-80gb, max_replicas: 6}}]
bounds:
  gpu_quota: {{nvidia-h100-80gb: 12}}
""")
    spec = to_variant_spec(crd("decode", accelerator="H100"))
    policy = current(load_settings(None, {"planner": {"policy_file": str(policy_file)}}))
    label = {"namespace": "ns", "model_name": MODEL, "role": "decode", "accelerator": "nvidia-h100-80gb"}
    assert LabelMap().key_of(label) == variant_key(spec)
    assert policy.variant_policy(spec) is not None
    assert policy.bounds.gpu_quota[spec.accelerator] == 12


# -- field by field ---------------------------------------------------------------------------------------------


def test_a_policy_file_overrides_only_the_fields_it_sets(tmp_path):
    policy = write(tmp_path, "policy.yaml", POLICY_SCALE_DOWN_ONLY)
    settings = load_settings(None, {"behavior": {"scale_down": {"stabilization_window_s": 60}},
                                    "saturation": {"kv_high": 0.9}, "planner": {"policy_file": str(policy)}})
    merged = current(settings)
    assert (merged.behavior.scale_down_window_s, merged.behavior.max_step_down) == (60, 2)
    assert merged.saturation.kv_high == 0.9
    assert merged.sources["behavior.scale_down.max_step"] == "policy file"
    assert merged.sources["behavior.scale_down.stabilization_window_s"] == "flag"


def test_an_explicit_policy_window_still_wins_over_the_node_boot_default(tmp_path):
    policy = write(tmp_path, "policy.yaml", "behavior:\n  scale_up: {stabilization_window_s: 30}\n")
    settings = load_settings(None, {"planner": {"nodes_on_demand": True, "policy_file": str(policy)}})
    assert current(settings).behavior.scale_up_window_s == 30


def test_the_crd_slo_overrides_the_policy_slo_one_target_at_a_time(tmp_path):
    policy = write(tmp_path, "policy.yaml", f"models:\n  - name: {MODEL}\n    slo: {{ttft_s: 2.0, itl_s: 0.03}}\n")
    settings = load_settings(None, {"slo": {"percentile": 0.95}, "planner": {"policy_file": str(policy)}})
    merged = current(settings)
    slo = merged.slo_for(to_variant_spec(crd("prefill", slo={"ttft": "500ms"})), default=settings.layers().slo())
    assert (slo.ttft_s, slo.itl_s, slo.percentile) == (0.5, 0.03, 0.95)


@pytest.mark.parametrize(
    ("settings", "policy", "field"),
    [
        pytest.param({"saturation": {"kv_high": 0.5}}, "saturation: {kv_low: 0.6}\n", "saturation",
                     id="policy-kv-low-above-the-settings-kv-high"),
        pytest.param({}, "behavior:\n  scale_up: {max_step: -1}\n", "behavior.scale_up.max_step",
                     id="negative-step"),
    ],
)
def test_a_merge_that_breaks_a_rule_is_refused_naming_the_field(tmp_path, settings, policy, field):
    path = write(tmp_path, "policy.yaml", policy)
    with pytest.raises(ConfigError) as refused:
        current(load_settings(None, {**settings, "planner": {"policy_file": str(path)}}))
    assert field in str(refused.value) and "\n" not in str(refused.value)


def test_the_cli_exits_2_with_one_line_when_the_policy_breaks_a_rule_with_the_settings(tmp_path):
    policy = write(tmp_path, "policy.yaml", "saturation: {kv_low: 0.6}\n")
    cfg = write(tmp_path, "config.yaml", yaml.safe_dump({"saturation": {"kv_high": 0.5},
                                                         "planner": {"policy_file": str(policy)}}))
    proc = subprocess.run([sys.executable, "-m", "autoscaler.cli", "recommend", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "saturation" in lines[0] and "kv_low" in lines[0]


# -- recommend --explain ----------------------------------------------------------------------------------------


def test_explain_names_the_source_of_every_effective_setting(tmp_path, monkeypatch):
    policy = write(tmp_path, "policy.yaml", f"""
models:
  - name: {MODEL}
    slo: {{itl_s: 0.03}}
behavior:
  scale_down: {{max_step: 2}}
bounds:
  gpu_hour_usd: {{nvidia-h100-80gb: 2.0}}
""")
    config = write(tmp_path, "config.yaml", "saturation:\n  kv_low: 0.3\n")
    monkeypatch.setenv("VAS_SATURATION__KV_HIGH", "0.85")
    settings = load_settings(config, {"planner": {"nodes_on_demand": True, "policy_file": str(policy)}})
    spec = to_variant_spec(crd("decode", slo={"ttft": "800ms"}, gpusPerReplica=2))
    controller = assemble_controller(settings, variants=Variants([spec]), signals=Signals({spec: SATURATED}),
                                     scaler=Scaler({spec.ref.name: 1}), clock=Clock(), profiles=default_profiles())
    report = replace(controller, seed_histories=False).run_cycle()
    explained = effective_settings(controller, report)[str(spec.ref)]
    got = {r["setting"]: (r["value"], r["source"]) for r in explained}
    assert got["behavior.scale_up.stabilization_window_s"] == (120.0, "default (nodes boot on demand)")
    assert got["behavior.scale_down.max_step"] == (2, "policy file")
    assert got["behavior.scale_down.stabilization_window_s"] == (300.0, "default")
    assert got["saturation.kv_low"] == (0.3, "settings file")
    assert got["saturation.kv_high"] == (0.85, "environment")
    assert got["slo.ttft_s"] == (0.8, "VariantAutoscaling spec.slo")
    assert got["slo.itl_s"][1].startswith("policy file")
    assert got["slo.percentile"] == (0.9, "default")
    assert got["gpus_per_replica"] == (2, "VariantAutoscaling spec.gpusPerReplica")
    assert got["cost_per_hour"] == (4.0, "policy file bounds.gpu_hour_usd")
    assert json.loads(to_json(report, settings={str(spec.ref): explained}))["variants"][0]["settings"] == explained


def test_the_crd_cost_per_hour_wins_over_the_policy_gpu_price():
    from autoscaler.core.policyset import CostBounds
    from autoscaler.perf.capacity import SloTargets
    from autoscaler.scaling_settings import explain_variant

    policy = PolicySet(bounds=CostBounds(gpu_hour_price={"H100": 2.0}))
    priced = {r.path: r for r in explain_variant(to_variant_spec(crd("decode", costPerHour="7.5")), policy,
                                                  default_slo=SloTargets(1.0, 0.05))}
    assert (priced["cost_per_hour"].value, priced["cost_per_hour"].source) == (7.5, "VariantAutoscaling spec.costPerHour")


def test_recommend_explain_adds_each_variants_settings_to_the_json(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import autoscaler.kube.client as kube_client
    from autoscaler import cli
    from autoscaler.controller import wiring

    spec = to_variant_spec(crd("decode", slo={"itl": "30ms"}))

    def fake(settings):
        return assemble_controller(settings, variants=Variants([spec]), signals=Signals({spec: SATURATED}),
                                   scaler=Scaler({spec.ref.name: 1}), clock=Clock(), profiles=default_profiles())

    monkeypatch.setattr(kube_client, "cluster_configured", lambda _path: False)
    monkeypatch.setattr(wiring, "build_metrics_only_controller", fake)
    config = write(tmp_path, "config.yaml", "log_format: console\nlog_level: error\n")
    result = CliRunner().invoke(cli.app, ["recommend", "--explain", "-o", "json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    variant = json.loads(result.stdout[result.stdout.index("{"):])["variants"][0]
    got = {r["setting"]: r["source"] for r in variant["settings"]}
    assert got["slo.itl_s"] == "VariantAutoscaling spec.slo" and got["slo.ttft_s"] == "default"
