"""Two real controller processes (``variant-autoscaler run``) against a real API server, one Lease.

What acting means here: the Deployment sits at 0 replicas under a VariantAutoscaling with minReplicas 1, and
Prometheus is unreachable, so the leader's every cycle holds on signals but clamps to the minimum: it scales
the Deployment to 1 and records a SuccessfulRescale Event whose reportingInstance names it. The test keeps
setting the Deployment back to 0. Cycles are also visible as ``cycle`` lines in each process's JSON log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client

from autoscaler.kube import api
from autoscaler.kube.client import apply_crd
from autoscaler.localstack import kube
from autoscaler.localstack.ports import free_port

pytestmark = pytest.mark.integration

# Long enough that a controller starved of CPU for a few seconds on a loaded 2-core machine still renews in
# time; the protocol bounds below are asserted with a slack (SCHEDULING_S) for the same reason.
LEASE_S, RENEW_S, RETRY_S = 8.0, 5.0, 1.0
SCHEDULING_S = 2.0
# Deadlines for things that must happen, not bounds on how fast: generous, so that load only makes them slower.
START_S = 90.0
REPO = Path(__file__).resolve().parents[2]


# -- a controller process ----------------------------------------------------------------------------------------


class ControllerProcess:
    def __init__(self, *, identity: str, kubeconfig: Path, namespace: str, workdir: Path,
                 prometheus_url: str = "http://127.0.0.1:9", config: Path | None = None, interval_s: float = 0.5,
                 lease: tuple[float, float, float] = (LEASE_S, RENEW_S, RETRY_S), duration_s: float = 120) -> None:
        self.identity = identity
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / f"{identity}.log"
        env = {
            **os.environ,
            "VAS_RUNTIME_IDENTITY": identity,
            "VAS_RUNTIME_LEASE_NAMESPACE": namespace,
            "VAS_RUNTIME_LEASE_DURATION_S": str(lease[0]),
            "VAS_RUNTIME_RENEW_DEADLINE_S": str(lease[1]),
            "VAS_RUNTIME_RETRY_PERIOD_S": str(lease[2]),
            "VAS_RUNTIME_API_TIMEOUT_S": "3",
            "VAS_RUNTIME_HEALTH_BIND": "127.0.0.1",
            "VAS_RUNTIME_HEALTH_PORT": str(self.health_port),
            "VAS_RUNTIME_METRICS_PORT": str(self.metrics_port),
            "VAS_RUNTIME_SHARD_NAMESPACES": namespace,
        }
        argv = [sys.executable, "-m", "autoscaler.cli", "run", "--kubeconfig", str(kubeconfig),
                "--prometheus-url", prometheus_url, "--interval", str(interval_s), "--log-format", "json",
                "--duration", str(duration_s), *(["--config", str(config)] if config is not None else [])]
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def logged(self, event: str) -> list[dt.datetime]:
        return [dt.datetime.fromisoformat(e["timestamp"]) for e in self.events() if e.get("event") == event]

    def probe(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/{path}", timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)


def eventually(probe: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:g}s: {what}")


# -- a TCP proxy that can black-hole one controller's API traffic -------------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to the API server until ``cut()``; after that bytes go nowhere and no answer
    comes back (a partition, or a hung API server, from the controller's side)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._cut = threading.Event()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            conn.setblocking(True)
            self._sockets.append(conn)
            if self._cut.is_set():
                continue  # hold it open, answer nothing
            upstream = socket.create_connection(self._upstream)
            self._sockets.append(upstream)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        # Blocking sockets polled with select: a socket timeout would also cut the other direction's sendall.
        while not self._closing.is_set():
            try:
                readable, _, _ = select.select([src], [], [], 0.2)
                if not readable:
                    continue
                data = src.recv(65536)
            except (OSError, ValueError):
                return
            if not data:
                return
            if not self._cut.is_set():
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        for s in self._sockets:
            s.close()
        self._listener.close()


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def scene(control_plane: kube.ControlPlane, kube_api_client: kube_client.ApiClient,
          kube_namespace: str) -> str:
    apply_crd(kube_api_client)
    labels = {"app": "decode"}
    kube_client.AppsV1Api(kube_api_client).create_namespaced_deployment(kube_namespace, {
        "metadata": {"name": "decode"},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}}})
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, kube_namespace, api.PLURAL, {
            "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama-decode"},
            "spec": {"model": "llama", "role": "decode", "accelerator": "H100", "minReplicas": 1, "maxReplicas": 4,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "decode"}}})
    return kube_namespace


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[ControllerProcess]]:
    started: list[ControllerProcess] = []
    yield started
    for process in started:
        process.stop()


def holder(kube_api_client: kube_client.ApiClient, namespace: str) -> str:
    try:
        lease = kube_client.CoordinationV1Api(kube_api_client).read_namespaced_lease("variant-autoscaler-"
                                                                                       + _lease_suffix(namespace),
                                                                                       namespace)
    except kube_client.exceptions.ApiException:
        return ""
    return lease.spec.holder_identity or ""


def _lease_suffix(namespace: str) -> str:
    from autoscaler.controller.runtime import _default_lease_name

    return _default_lease_name((namespace,), None).removeprefix("variant-autoscaler-")


def reset_replicas(kube_api_client: kube_client.ApiClient, namespace: str) -> None:
    kube_client.AppsV1Api(kube_api_client).patch_namespaced_deployment_scale(
        "decode", namespace, {"spec": {"replicas": 0}})


def rescaled_by(kube_api_client: kube_client.ApiClient, namespace: str) -> list[tuple[str, dt.datetime]]:
    events = kube_client.EventsV1Api(kube_api_client).list_namespaced_event(namespace).items
    return sorted(((e.reporting_instance, e.event_time) for e in events if e.reason == "SuccessfulRescale"),
                  key=lambda pair: pair[1])


def start_pair(scene: str, control_plane: kube.ControlPlane, processes: list[ControllerProcess], tmp_path: Path,
               kubeconfigs: tuple[Path, Path] | None = None) -> tuple[ControllerProcess, ControllerProcess]:
    a_config, b_config = kubeconfigs or (control_plane.kubeconfig_path, control_plane.kubeconfig_path)
    a = ControllerProcess(identity="controller-a", kubeconfig=a_config, namespace=scene, workdir=tmp_path)
    processes.append(a)
    b = ControllerProcess(identity="controller-b", kubeconfig=b_config, namespace=scene, workdir=tmp_path)
    processes.append(b)
    return a, b


# -- tests -----------------------------------------------------------------------------------------------------


def test_exactly_one_of_two_controllers_acts(scene: str, control_plane: kube.ControlPlane,
                                             kube_api_client: kube_client.ApiClient,
                                             processes: list[ControllerProcess], tmp_path: Path) -> None:
    a, b = start_pair(scene, control_plane, processes, tmp_path)
    leader_id = eventually(lambda: holder(kube_api_client, scene), timeout_s=START_S, what="a lease holder")
    leader, follower = (a, b) if leader_id == a.identity else (b, a)
    eventually(lambda: follower.probe("readyz") == 200, timeout_s=START_S, what="the standby to be ready")
    for done in range(4):  # give the leader something to do, four times
        reset_replicas(kube_api_client, scene)
        # generous: on a loaded CI machine one cycle (API calls, a refused Prometheus) can take seconds
        eventually(lambda n=done: len(rescaled_by(kube_api_client, scene)) > n, timeout_s=START_S, what="a rescale")

    assert {who for who, _ in rescaled_by(kube_api_client, scene)} == {leader.identity}
    assert leader.logged("cycle") and not follower.logged("cycle")
    assert [p.probe("healthz") for p in (leader, follower)] == [200, 200]
    assert [p.probe("readyz") for p in (leader, follower)] == [200, 200]
    assert "variant_autoscaler_cycles_total" in leader.metrics()


def test_the_standby_takes_over_within_the_lease_duration_when_the_leader_dies(
    scene: str, control_plane: kube.ControlPlane, kube_api_client: kube_client.ApiClient,
    processes: list[ControllerProcess], tmp_path: Path,
) -> None:
    a, b = start_pair(scene, control_plane, processes, tmp_path)
    leader_id = eventually(lambda: holder(kube_api_client, scene), timeout_s=START_S, what="a lease holder")
    leader, follower = (a, b) if leader_id == a.identity else (b, a)
    eventually(lambda: follower.logged("leader_election_started"), timeout_s=START_S, what="the standby to campaign")
    eventually(lambda: leader.logged("cycle"), timeout_s=START_S, what="the leader's first cycle")

    leader.popen.send_signal(signal.SIGKILL)  # no release, no goodbye
    killed = time.monotonic()
    eventually(lambda: holder(kube_api_client, scene) == follower.identity, timeout_s=3 * LEASE_S,
               what="the standby to hold the lease")
    takeover_s = time.monotonic() - killed
    reset_replicas(kube_api_client, scene)
    eventually(lambda: any(who == follower.identity for who, _ in rescaled_by(kube_api_client, scene)),
               timeout_s=START_S, what="the new leader to act")
    print(f"takeover after SIGKILL: {takeover_s:.2f}s (lease {LEASE_S:g}s, retry {RETRY_S:g}s)")
    # The last renewal was at most one retry period before the kill; the standby polls every retry period.
    assert takeover_s <= LEASE_S + 2 * RETRY_S + SCHEDULING_S


def test_sigterm_releases_the_lease_for_an_immediate_handover(
    scene: str, control_plane: kube.ControlPlane, kube_api_client: kube_client.ApiClient,
    processes: list[ControllerProcess], tmp_path: Path,
) -> None:
    a, b = start_pair(scene, control_plane, processes, tmp_path)
    leader_id = eventually(lambda: holder(kube_api_client, scene), timeout_s=START_S, what="a lease holder")
    leader, follower = (a, b) if leader_id == a.identity else (b, a)
    eventually(lambda: follower.logged("leader_election_started"), timeout_s=START_S, what="the standby to campaign")

    eventually(lambda: leader.logged("cycle"), timeout_s=START_S, what="the leader's first cycle")

    leader.popen.send_signal(signal.SIGTERM)
    assert leader.popen.wait(timeout=START_S) == 0  # the cycle in progress finished, then a clean exit
    [released] = leader.logged("lease_released")
    eventually(lambda: holder(kube_api_client, scene) == follower.identity, timeout_s=3 * LEASE_S,
               what="the standby to hold the lease")
    [started] = follower.logged("leading_started")
    handover_s = (started - released).total_seconds()
    print(f"handover after the release: {handover_s:.2f}s (lease {LEASE_S:g}s, retry {RETRY_S:g}s)")
    # The standby polls every retry period; it does not wait for the lease to expire.
    assert 0 <= handover_s <= 2 * RETRY_S + SCHEDULING_S < LEASE_S


def _kubeconfig_via(control_plane: kube.ControlPlane, port: int, path: Path) -> Path:
    config = yaml.safe_load(control_plane.kubeconfig_path.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_partitioned_leader_stops_acting_before_the_new_leader_starts(
    scene: str, control_plane: kube.ControlPlane, kube_api_client: kube_client.ApiClient,
    processes: list[ControllerProcess], tmp_path: Path,
) -> None:
    upstream = control_plane.server_url.removeprefix("https://").split(":")
    proxy = CuttableProxy((upstream[0], int(upstream[1])))
    try:
        via_proxy = _kubeconfig_via(control_plane, proxy.port, tmp_path / "via-proxy.kubeconfig")
        a = ControllerProcess(identity="controller-a", kubeconfig=via_proxy, namespace=scene, workdir=tmp_path)
        processes.append(a)
        eventually(lambda: holder(kube_api_client, scene) == a.identity, timeout_s=START_S, what="A to lead")
        b = ControllerProcess(identity="controller-b", kubeconfig=control_plane.kubeconfig_path, namespace=scene,
                              workdir=tmp_path)
        processes.append(b)
        eventually(lambda: b.logged("leader_election_started"), timeout_s=START_S, what="B to campaign")

        proxy.cut()  # A can no longer renew; its requests hang until their timeouts
        eventually(lambda: holder(kube_api_client, scene) == b.identity, timeout_s=4 * LEASE_S,
                   what="B to take over")
        eventually(lambda: a.popen.poll() is not None, timeout_s=START_S, what="A to exit")
    finally:
        proxy.close()

    [a_stopped] = a.logged("leading_lost")
    [b_started] = b.logged("leading_started")
    print(f"A stopped acting {(b_started - a_stopped).total_seconds():.2f}s before B started")
    assert a_stopped < b_started
    assert a.popen.returncode == 1 and a.logged("exiting_after_losing_the_lease")


def test_a_paused_leader_does_not_act_when_it_wakes_up_deposed(
    scene: str, control_plane: kube.ControlPlane, kube_api_client: kube_client.ApiClient,
    processes: list[ControllerProcess], tmp_path: Path,
) -> None:
    """A stop-the-world pause (SIGSTOP) outlasting the lease: on waking, the old leader must not write."""
    a, b = start_pair(scene, control_plane, processes, tmp_path)
    leader_id = eventually(lambda: holder(kube_api_client, scene), timeout_s=START_S, what="a lease holder")
    leader, follower = (a, b) if leader_id == a.identity else (b, a)
    eventually(lambda: follower.logged("leader_election_started"), timeout_s=START_S, what="the standby to campaign")
    eventually(lambda: leader.logged("cycle"), timeout_s=START_S, what="the leader's first cycle")

    leader.popen.send_signal(signal.SIGSTOP)
    eventually(lambda: holder(kube_api_client, scene) == follower.identity, timeout_s=3 * LEASE_S,
               what="the standby to take over")
    follower.popen.send_signal(signal.SIGSTOP)  # so that only the woken leader could fix the replicas
    reset_replicas(kube_api_client, scene)
    woke = dt.datetime.now(dt.UTC)
    leader.popen.send_signal(signal.SIGCONT)
    assert leader.popen.wait(timeout=START_S) == 1
    scale = kube_client.AppsV1Api(kube_api_client).read_namespaced_deployment_scale("decode", scene)
    follower.popen.send_signal(signal.SIGCONT)

    assert (scale.spec.replicas or 0) == 0  # the woken leader wanted 1 and did not write it
    late = [when for who, when in rescaled_by(kube_api_client, scene) if who == leader.identity and when > woke]
    assert late == []
    # Whether its renewer or a scheduled cycle woke first, it wrote nothing; when the cycle won the race, its
    # writes were refused ("not scaling: this instance does not hold the lease" in its log).
