"""manifests/monitoring: the PodMonitor and the plain scrape job give llm-d's vLLM series the labels the
controller groups by, and the accelerator they give is the one an llmd.ai VariantAutoscaling resolves from the
same pod template, so a variant's signals are found without relabelling by hand.

Prometheus's relabelling (``replace`` and ``keep``, anchored regexes, ``$1``) is applied here in a few lines:
Debian's Prometheus is built without Kubernetes service discovery, so it cannot load the job itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.kube import llmd
from autoscaler.signals.queries import LabelMap, variant_key

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _meta(namespace: str, pod: str, labels: dict[str, str], port: str = "vllm") -> dict[str, str]:
    """Kubernetes pod discovery's target labels (label names sanitised as Prometheus does)."""
    meta = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod,
            "__meta_kubernetes_pod_container_port_name": port}
    for key, value in labels.items():
        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return meta


def _relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    out = dict(labels)
    for rule in rules:
        source = ";".join(out.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), source)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
            continue
        if action != "replace":
            raise NotImplementedError(action)
        if match:
            value = match.expand(rule.get("replacement", "$1").replace("$1", r"\1")) if match.groups() else ""
            if value:
                out[rule["target_label"]] = value
            else:
                out.pop(rule["target_label"], None)
    return {k: v for k, v in out.items() if not k.startswith("__")}


def _pod_monitor_rules() -> list[dict[str, Any]]:
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    rules = [{"source_labels": r.get("sourceLabels", []), "target_label": r.get("targetLabel"),
              **({"regex": r["regex"]} if "regex" in r else {}), **({"action": r["action"]} if "action" in r else {})}
             for r in endpoint["relabelings"]]
    # What the Prometheus Operator adds to every PodMonitor target before the user's relabelings.
    operator = [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]
    return operator + rules


def _plain_rules() -> list[dict[str, Any]]:
    [job] = yaml.safe_load((MONITORING / "scrape-config.prometheus.yml").read_text())["scrape_configs"]
    return job["relabel_configs"]


POD_LABELS = [
    pytest.param({"llm-d.ai/role": "decode", "llm-d.ai/accelerator-variant": "nvidia-h100-80gb",
                  "llm-d.ai/accelerator-vendor": "nvidia"}, id="llm-d-chart-labels"),
    pytest.param({"llm-d.ai/role": "prefill", "llm-d.ai/accelerator-variant": "gpu",
                  "llm-d.ai/accelerator": "NVIDIA-H100-80GB-HBM3"}, id="full-gpu-name-wins"),
    pytest.param({"llm-d.ai/role": "prefill", "llm-d.ai/accelerator": "NVIDIA-L40S"}, id="only-the-full-name"),
]


@pytest.mark.parametrize("rules", [pytest.param(_pod_monitor_rules, id="podmonitor"),
                                   pytest.param(_plain_rules, id="plain-scrape-config")])
@pytest.mark.parametrize("pod_labels", POD_LABELS)
def test_the_scraped_series_land_on_the_variant_the_llmd_object_resolves_to(rules: Any,
                                                                            pod_labels: dict[str, str]) -> None:
    target = _relabel(_meta("serving", "llama-0", pod_labels), rules())
    assert target is not None
    series = {**target, "model_name": MODEL}  # vLLM's own label
    va = llmd.parse_llmd_variant({"metadata": {"namespace": "serving", "name": "llama"},
                                  "spec": {"modelID": MODEL, "scaleTargetRef": {"kind": "Deployment",
                                                                                "name": "llama"}}})
    identity = llmd.template_identity({"spec": {"template": {"metadata": {"labels": pod_labels}}}}, va_labels={})
    spec = llmd.to_variant_spec(va, identity, aggregated=False)
    assert LabelMap().key_of(series) == variant_key(spec)
    assert (series["namespace"], series["pod"]) == ("serving", "llama-0")


@pytest.mark.parametrize(("labels", "port"), [({"app": "web"}, "vllm"), ({"llm-d.ai/role": "decode"}, "http")])
def test_the_plain_job_keeps_only_llm_d_serving_ports(labels: dict[str, str], port: str) -> None:
    assert _relabel(_meta("serving", "x", labels, port=port), _plain_rules()) is None


def test_the_podmonitor_selects_pods_by_llm_d_role() -> None:
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    assert monitor["spec"]["selector"]["matchExpressions"] == [{"key": "llm-d.ai/role", "operator": "Exists"}]
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
