"""The package as users get it: the wheel built (with build isolation, as the Containerfile does), installed
non-editable into a fresh virtualenv outside the repository, and run from a directory with no checkout.

- ``variant-autoscaler profiles`` finds the profiles the wheel carries (no ``models/`` anywhere near);
- ``recommend`` lists and decides WVA's own sample VariantAutoscalings (llm-d/llm-d-workload-variant-autoscaler
  config/samples/variantautoscaling-with-cost.yaml, unchanged) applied with WVA's CRD to a real kube-apiserver;
- ``recommend --prometheus-url`` with no cluster at all discovers the variants from the metrics' labels, and a
  bad kubeconfig is one line and exit code 2;
- the Deployment's own command, environment and ConfigMap (manifests/base) run against the local stack until a
  control cycle completes. Changed only where a test process must: the config file's path (not /etc), the
  Prometheus URL in the ConfigMap (the local one), POD_NAME/POD_NAMESPACE given as values instead of the
  downward API, KUBECONFIG to reach the local API server, and the two ports moved to free ones.

Dependencies are not downloaded again: the fresh environment sees the test environment's site-packages through
a ``.pth`` entry (a directory listed there is on ``sys.path``, its own ``.pth`` files, the editable install's
among them, are not run), so ``autoscaler`` itself is imported from the wheel only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client

from autoscaler.kube.client import apply_crd
from autoscaler.localstack.kube import ControlPlane
from autoscaler.localstack.ports import free_port
from autoscaler.localstack.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WVA = ROOT / "tests" / "fixtures" / "wva"
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "autoscaler", "models")


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path  # outside the repository, no models/ in sight

    @property
    def cli(self) -> str:
        return str(self.venv / "bin" / "variant-autoscaler")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VAS_", "PYTHON", "KUBECONFIG")) and k != "VIRTUAL_ENV"}
        env["HOME"] = str(self.workdir)  # no ~/.kube/config of the machine's
        return {**env, **extra}

    def run(self, *args: str, timeout_s: float = 120.0, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.cli, *args], cwd=self.workdir, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    context, dist, venv, workdir = base / "context", base / "dist", base / "venv", base / "work"
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "_models"))
        else:
            context.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--wheel-dir", str(dist),
                            "--quiet"], cwd=context, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = dist.glob("variant_autoscaler-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site] = (venv / "lib").glob("python3*/site-packages")
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--no-deps", "--no-index", "--quiet", str(wheel)], capture_output=True, text=True,
                          timeout=300, check=False,
                          # a checkout on PYTHONPATH would show pip the package as installed already
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr[-2000:]
    workdir.mkdir()
    return Installed(venv=venv, workdir=workdir)


def test_the_installed_package_is_the_wheel_and_finds_the_profiles_it_carries(installed: Installed) -> None:
    code = ("import autoscaler, autoscaler.perf.profiles as p; "
            "print(autoscaler.__file__); print(p.default_models_dir())")
    where = subprocess.run([str(installed.venv / "bin" / "python"), "-c", code],
                           cwd=installed.workdir, env=installed.env(), capture_output=True, text=True, check=True)
    package, models = where.stdout.split()
    assert package.startswith(str(installed.venv)), package  # not the checkout, not the editable install
    assert models.startswith(str(installed.venv)) and models.endswith("autoscaler/_models"), models
    listed = installed.run("profiles")
    assert listed.returncode == 0, listed.stderr
    assert "llama-3.1-8b/h100" in listed.stdout


def test_a_bad_kubeconfig_is_one_line_and_exit_code_2(installed: Installed) -> None:
    bad = installed.workdir / "bad-kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    done = installed.run("recommend", "--kubeconfig", str(bad), "--prometheus-url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: kubeconfig"), done.stderr
    assert "Traceback" not in done.stderr


# -- with the local stack ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    plane: ControlPlane
    api: kube_client.ApiClient
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def stack(kube_assets_paths: Any, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    """A plane of its own (the controller under test acts on every namespace), both CRDs, and a Prometheus
    scraping one emulated vLLM pod of one of WVA's sample targets."""
    from autoscaler.core.types import Role
    from autoscaler.emulator.emulator import Emulator
    from autoscaler.emulator.variant import EmulatedVariant
    from autoscaler.perf.profiles import default_profiles

    with ControlPlane(assets=kube_assets_paths) as plane:
        api = plane.api_client()
        apply_crd(api)
        apply_crd(api, path=WVA / "crd-variantautoscalings.llmd.ai.yaml")
        _wait_until_listable(api, ("variant-autoscaler.io", "llmd.ai"))
        targets = tmp_path_factory.mktemp("targets") / "targets.json"
        variant = EmulatedVariant(namespace="llm-inference", deployment="llama-8b-default-cost",
                                  model="meta/llama-3.1-8b", role=Role.BOTH, accelerator="A100",
                                  profile=default_profiles()["llama-3.1-8b/a100"], load=lambda t: 2.0,
                                  startup_s=0.0)
        emulator = Emulator(variants=[variant], replicas_of=lambda v: 1, file_sd_path=targets)
        emulator.sync_replicas()
        server = PrometheusServer(file_sd_path=targets, binary=prometheus_binary)
        try:
            server.start()
            yield Stack(plane=plane, api=api, prometheus=server)
        finally:
            server.stop()
            emulator.close()


def _wait_until_listable(api: kube_client.ApiClient, groups: tuple[str, ...], timeout_s: float = 30.0) -> None:
    """An Established CRD may still answer 429 (storage initialising) for a moment."""
    custom = kube_client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout_s
    for group in groups:
        while True:
            try:
                custom.list_cluster_custom_object(group, "v1alpha1", "variantautoscalings")
                break
            except kube_client.exceptions.ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _apply_wva_samples(api: kube_client.ApiClient) -> list[dict[str, Any]]:
    samples = [d for d in yaml.safe_load_all((WVA / "variantautoscaling-with-cost.yaml").read_text()) if d]
    core, apps, custom = (kube_client.CoreV1Api(api), kube_client.AppsV1Api(api), kube_client.CustomObjectsApi(api))
    for namespace in sorted({s["metadata"]["namespace"] for s in samples}):
        core.create_namespace({"metadata": {"name": namespace}})
    for sample in samples:
        meta = sample["metadata"]
        custom.create_namespaced_custom_object("llmd.ai", "v1alpha1", meta["namespace"], "variantautoscalings",
                                               sample)
        if meta["name"] == "llama-8b-tenant-silver":
            continue  # its target is never created: TargetResolved=False
        accelerator = (meta.get("labels") or {}).get("accelerator", "a100")
        labels = {"app": meta["name"], "llm-d.ai/role": "decode", "llm-d.ai/accelerator-variant": accelerator}
        apps.create_namespaced_deployment(meta["namespace"], {
            "metadata": {"name": sample["spec"]["scaleTargetRef"]["name"]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": meta["name"]}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}}})
    return samples


def test_recommend_from_the_wheel_lists_and_decides_wvas_own_samples(installed: Installed, stack: Stack) -> None:
    samples = _apply_wva_samples(stack.api)
    stack.prometheus.wait_for_series("vllm:num_requests_running", timeout_s=30)
    done = installed.run("recommend", "-o", "json", "--kubeconfig", str(stack.plane.kubeconfig_path),
                         "--prometheus-url", stack.prometheus.url)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    decided = {row["variant"]: row for row in report["variants"]}
    assert decided, f"nothing decided; errors: {report['errors']}; stderr: {done.stderr[-2000:]}"
    expected = {f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in samples} - {
        "tenant-silver/llama-8b-tenant-silver"}
    assert set(decided) == expected
    assert all(row["desired"] is not None for row in decided.values())
    assert decided["llm-inference/llama-70b-premium-h100"]["accelerator"] == "H100"  # from its pod labels
    read = decided["llm-inference/llama-8b-default-cost"]  # the emulated pod is Prometheus's series for it
    assert (read["freshness"], read["role"]) == ("fresh", "both")
    assert any("llama-8b-tenant-silver" in e and "not found" in e for e in report["errors"])


def test_recommend_without_a_cluster_discovers_variants_from_the_metrics(installed: Installed, stack: Stack) -> None:
    stack.prometheus.wait_for_series("vllm:num_requests_running", timeout_s=30)
    done = installed.run("recommend", "-o", "json", "--prometheus-url", stack.prometheus.url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no Kubernetes cluster configured" in done.stderr and "no VariantAutoscaling or scale target was read" \
        in done.stderr
    [row] = json.loads(done.stdout)["variants"]
    assert (row["model"], row["role"], row["accelerator"], row["current"]) == ("meta/llama-3.1-8b", "both", "A100", 1)
    assert row["freshness"] == "fresh" and row["desired"] is not None


def _deployment_and_configmap() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = yaml.safe_load((ROOT / "manifests" / "base" / "deployment.yaml").read_text())
    config_map = yaml.safe_load((ROOT / "manifests" / "base" / "config.yaml").read_text())
    return deployment, config_map


def test_the_manifests_deployment_command_runs_from_the_wheel_to_a_completed_cycle(installed: Installed,
                                                                                  stack: Stack) -> None:
    deployment, config_map = _deployment_and_configmap()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    settings = yaml.safe_load(config_map["data"]["config.yaml"])
    settings["prometheus"]["url"] = stack.prometheus.url
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
    config_dir = installed.workdir / mount.strip("/")
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.yaml").write_text(yaml.safe_dump(settings))
    args = [a.replace(mount, str(config_dir)) for a in container["args"]]
    namespace = "variant-autoscaler"
    kube_client.CoreV1Api(stack.api).create_namespace({"metadata": {"name": namespace}})
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(POD_NAME="variant-autoscaler-0", POD_NAMESPACE=namespace)  # the downward API's values
    health, metrics = free_port(), free_port()
    env.update(KUBECONFIG=str(stack.plane.kubeconfig_path), VAS_RUNTIME_HEALTH_PORT=str(health),
               VAS_RUNTIME_METRICS_PORT=str(metrics))
    proc = subprocess.Popen([installed.cli, *args], cwd=installed.workdir, env=installed.env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90.0
        cycles = 0.0
        while time.monotonic() < deadline and proc.poll() is None:
            cycles = _sample(f"http://127.0.0.1:{metrics}/metrics", "variant_autoscaler_cycles_total")
            if cycles >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the controller exited {proc.returncode}: {proc.communicate()[0][-3000:]}"
        assert cycles >= 1, "no control cycle completed within 90 s"
        ready = urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=5).read()
        assert ready.strip() == b"ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output[-3000:]  # SIGTERM: the cycle in progress ends, the lease is released


def _sample(url: str, name: str) -> float:
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
