"""A real Kubernetes control plane (etcd + kube-apiserver, optionally kube-controller-manager) on loopback,
for integration tests and the local demo; the same idea as controller-runtime's envtest.

    with ControlPlane(aggregation=True) as plane:
        apps = kubernetes.client.AppsV1Api(plane.api_client())
        plane.start_controller_manager()          # only when a controller (HPA) must run

There is no scheduler or kubelet: Deployments never get pods. Authentication is by client certificate (the
admin user is in ``system:masters``), authorisation is RBAC, so anonymous requests are refused.

Everything lives in one temp directory (certificates, kubeconfig, etcd data, one log file per process) that
``stop()`` removes after terminating every process (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import atexit
import base64
import collections
import datetime
import functools
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as kube_client

from autoscaler import certs as certificates
from autoscaler import errors
from autoscaler.localstack import assets as kube_assets
from autoscaler.localstack import ports

__all__ = ["AggregationCerts", "ControlPlane"]

# Process-start attempts: ports are picked free but can be taken before the server binds them.
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 30
_STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.1
# The name the apiserver's front-proxy client certificate carries; extension apiservers allow only it.
_FRONT_PROXY_CLIENT = "front-proxy-client"
# A plane lives for a test session or a demo: a month is plenty.
_CERT_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class AggregationCerts:
    """What an extension apiserver (the HPA metrics adapter) needs to trust the kube-apiserver's proxied
    requests: the CA of the front-proxy client certificate and the name that certificate carries. The same
    CA and names are published in ConfigMap kube-system/extension-apiserver-authentication."""

    front_proxy_ca: Path
    proxy_client_cert: Path
    proxy_client_key: Path
    allowed_name: str


class ControlPlane:
    """etcd and kube-apiserver on free loopback ports; a context manager (``start``/``stop``)."""

    def __init__(
        self,
        *,
        assets: kube_assets.KubeAssets | None = None,
        aggregation: bool = False,
        apiserver_args: Sequence[str] = (),
        start_timeout_s: float = 60.0,
    ) -> None:
        """``assets`` defaults to ``ensure_assets`` (which may build); ``aggregation`` adds the
        aggregation-layer flags and certificates; ``apiserver_args`` are appended to kube-apiserver's."""
        self._assets = assets
        self._aggregation = aggregation
        self._apiserver_args = tuple(apiserver_args)
        self._start_timeout_s = start_timeout_s
        self._dir: Path | None = None
        self._processes: list[_Process] = []
        self._server_url: str | None = None
        self._aggregation_certs: AggregationCerts | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and kube-apiserver and wait for /readyz; ``StackError`` (with log tails) on failure."""
        if self._dir is not None:
            raise errors.StackError("control plane already started")
        if self._assets is None:
            self._assets = kube_assets.ensure_assets(controller_manager=False)
        self._dir = Path(tempfile.mkdtemp(prefix="vas-kube-"))
        atexit.register(self.stop)
        try:
            self._write_certificates()
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_etcd_and_apiserver()
                    break
                except errors.StackError as exc:
                    self._terminate_processes()
                    if attempt == _START_ATTEMPTS or "address already in use" not in str(exc):
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate every process and remove the temp directory; safe to call twice."""
        self._terminate_processes()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._server_url = None
        self._aggregation_certs = None
        atexit.unregister(self.stop)

    def start_controller_manager(
        self,
        *,
        controllers: Sequence[str] = ("horizontalpodautoscaling",),
        hpa_sync_period_s: float = 1.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Run kube-controller-manager against this plane with only ``controllers`` enabled and the HPA
        controller syncing every ``hpa_sync_period_s`` (default 15 s in a real cluster, too slow for tests)."""
        directory = self._require_started()
        if any(p.name == kube_assets.KUBE_CONTROLLER_MANAGER for p in self._processes):
            raise errors.StackError("kube-controller-manager already started")
        binary = self._binaries(controller_manager=True).kube_controller_manager
        assert binary is not None
        kubeconfig = str(self.kubeconfig_path)
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = ports.free_port()
            process = _Process.spawn(
                name=kube_assets.KUBE_CONTROLLER_MANAGER,
                argv=[
                    str(binary),
                    # No --authentication/authorization-kubeconfig: /healthz is always allowed, and delegated
                    # authn would complain all along about the front-proxy CA when aggregation is off.
                    f"--kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    f"--controllers={','.join(controllers)}",
                    f"--horizontal-pod-autoscaler-sync-period={hpa_sync_period_s:g}s",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--cert-dir={directory / 'controller-manager'}",
                    *extra_args,
                ],
                directory=directory,
            )
            self._processes.append(process)
            try:
                # It serves a self-signed certificate; only liveness is checked here.
                _wait_until(
                    functools.partial(_http_ok, f"https://127.0.0.1:{port}/healthz", _unverified_tls()),
                    process=process,
                    timeout_s=self._start_timeout_s,
                )
                return
            except errors.StackError as exc:
                process.terminate(timeout_s=_STOP_TIMEOUT_S)
                self._processes.remove(process)
                if attempt == _START_ATTEMPTS or "address already in use" not in str(exc):
                    raise

    # -- what clients need -----------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The temp directory holding certificates, kubeconfig, etcd data and ``<process>.log`` files."""
        return self._require_started()

    @property
    def server_url(self) -> str:
        self._require_started()
        if self._server_url is None:
            raise errors.StackError("kube-apiserver is not running")
        return self._server_url

    @property
    def kubeconfig_path(self) -> Path:
        """A self-contained kubeconfig (certificates inline) for the admin user."""
        return self._require_started() / "kubeconfig"

    @property
    def ca_cert_path(self) -> Path:
        """The CA that signed the apiserver's serving certificate and the admin client certificate."""
        return self._require_started() / "certs" / "ca.crt"

    @property
    def aggregation_certs(self) -> AggregationCerts | None:
        return self._aggregation_certs

    @property
    def pids(self) -> list[int]:
        """Process ids of the processes this plane started and has not stopped."""
        return [p.pid for p in self._processes]

    def api_client(self) -> kube_client.ApiClient:
        """A new client authenticated as the admin user (``system:masters``)."""
        certs = self._require_started() / "certs"
        config = kube_client.Configuration(host=self.server_url)
        config.ssl_ca_cert = str(certs / "ca.crt")
        config.cert_file = str(certs / "admin.crt")
        config.key_file = str(certs / "admin.key")
        return kube_client.ApiClient(configuration=config)

    # -- internals -------------------------------------------------------------------------------------------

    def _require_started(self) -> Path:
        if self._dir is None:
            raise errors.StackError("control plane not started")
        return self._dir

    def _binaries(self, *, controller_manager: bool) -> kube_assets.KubeAssets:
        if self._assets is None or (controller_manager and self._assets.kube_controller_manager is None):
            self._assets = kube_assets.ensure_assets(controller_manager=controller_manager)
        return self._assets

    def _write_certificates(self) -> None:
        certs = self._require_started() / "certs"
        certs.mkdir()
        ca = certificates.Authority("variant-autoscaler-local-ca", validity=_CERT_VALIDITY)
        ca.write(certs / "ca.crt")
        ca.issue(certs, "apiserver", common_name="kube-apiserver", hosts=("127.0.0.1", "localhost"))
        ca.issue(certs, "admin", common_name="admin", organizations=("system:masters",))
        sa_key = ec.generate_private_key(ec.SECP256R1())
        certificates.write_key(certs / "sa-signer.key", sa_key)
        (certs / "sa-signer.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        if self._aggregation:
            front_proxy = certificates.Authority("variant-autoscaler-front-proxy-ca", validity=_CERT_VALIDITY)
            front_proxy.write(certs / "front-proxy-ca.crt")
            proxy = front_proxy.issue(certs, "front-proxy-client", common_name=_FRONT_PROXY_CLIENT)
            self._aggregation_certs = AggregationCerts(
                front_proxy_ca=certs / "front-proxy-ca.crt",
                proxy_client_cert=proxy.cert,
                proxy_client_key=proxy.key,
                allowed_name=_FRONT_PROXY_CLIENT,
            )

    def _start_etcd_and_apiserver(self) -> None:
        directory = self._require_started()
        binaries = self._binaries(controller_manager=False)
        certs = directory / "certs"
        client_port, peer_port, secure_port = ports.free_port(), ports.free_port(), ports.free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        shutil.rmtree(directory / "etcd-data", ignore_errors=True)
        etcd = _Process.spawn(
            name=kube_assets.ETCD,
            argv=[
                str(binaries.etcd),
                f"--data-dir={directory / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Throwaway data: skipping fsync makes writes (and so the apiserver's start) much faster.
                "--unsafe-no-fsync=true",
            ],
            directory=directory,
        )
        self._processes.append(etcd)
        _wait_until(
            functools.partial(_etcd_healthy, f"{etcd_url}/health"),
            process=etcd,
            timeout_s=self._start_timeout_s,
        )

        server_url = f"https://127.0.0.1:{secure_port}"
        # Flags after controller-runtime's envtest (pkg/internal/testing/controlplane/apiserver.go): RBAC, a
        # service-cluster range, privileged pods allowed, the ServiceAccount admission plugin off (no
        # controller creates default service accounts), a generated service-account signing key.
        argv = [
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure_port}",
            f"--cert-dir={directory / 'apiserver'}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            # The `kubernetes` Service's endpoints would be 127.0.0.1, which validation refuses (loopback);
            # reconciling them only fills the log with errors.
            "--endpoint-reconciler-type=none",
            f"--service-account-issuer={server_url}/",
            f"--service-account-key-file={certs / 'sa-signer.pub'}",
            f"--service-account-signing-key-file={certs / 'sa-signer.key'}",
        ]
        if self._aggregation:
            argv += [
                f"--requestheader-client-ca-file={certs / 'front-proxy-ca.crt'}",
                f"--requestheader-allowed-names={_FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={certs / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={certs / 'front-proxy-client.key'}",
                "--enable-aggregator-routing=false",
            ]
        apiserver = _Process.spawn(
            name=kube_assets.KUBE_APISERVER, argv=[*argv, *self._apiserver_args], directory=directory
        )
        self._processes.append(apiserver)
        tls = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        tls.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
        _wait_until(
            functools.partial(_http_ok, f"{server_url}/readyz", tls),
            process=apiserver,
            timeout_s=self._start_timeout_s,
        )
        self._server_url = server_url
        self._write_kubeconfig(certs)

    def _write_kubeconfig(self, certs: Path) -> None:
        def inline(name: str) -> str:
            return base64.b64encode((certs / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server_url, "certificate-authority-data": inline("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": inline("admin.crt"),
                        "client-key-data": inline("admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        # JSON is YAML: kubectl and the kubernetes client read it as a kubeconfig.
        self.kubeconfig_path.write_text(json.dumps(config, indent=2))
        self.kubeconfig_path.chmod(0o600)

    def _terminate_processes(self) -> None:
        # Signal all first so their shutdowns overlap, newest (controller manager, apiserver) first.
        processes, self._processes = list(reversed(self._processes)), []
        for process in processes:
            process.signal_terminate()
        for process in processes:
            process.terminate(timeout_s=_STOP_TIMEOUT_S)


class _Process:
    """One child process whose stdout and stderr go to ``<directory>/<name>.log``."""

    def __init__(self, *, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._popen = popen

    @classmethod
    def spawn(cls, *, name: str, argv: Sequence[str], directory: Path) -> _Process:
        log_path = directory / f"{name}.log"
        with log_path.open("ab") as log:
            try:
                popen = subprocess.Popen(
                    list(argv), cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                raise errors.StackError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        return cls(name=name, popen=popen, log_path=log_path)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def exit_code(self) -> int | None:
        return self._popen.poll()

    def log_tail(self) -> str:
        try:
            with self.log_path.open(errors="replace") as log:
                return "\n".join(line.rstrip() for line in collections.deque(log, maxlen=_LOG_TAIL_LINES))
        except OSError:
            return "(no log)"

    def signal_terminate(self) -> None:
        if self._popen.poll() is None:
            self._popen.terminate()

    def terminate(self, *, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; always reaps the child."""
        self.signal_terminate()
        try:
            self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


def _wait_until(ready: Callable[[], bool], *, process: _Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.exit_code()
        if code is not None:
            raise errors.StackError(
                f"{process.name} exited with code {code} while starting; log tail ({process.log_path}):\n"
                f"{process.log_tail()}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise errors.StackError(
                f"{process.name} not ready after {timeout_s:g}s; log tail ({process.log_path}):\n"
                f"{process.log_tail()}"
            )
        time.sleep(_POLL_INTERVAL_S)


def _fetch(url: str, tls: ssl.SSLContext | None = None) -> tuple[int, bytes] | None:
    """(status, body), or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=tls) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return None


def _http_ok(url: str, tls: ssl.SSLContext) -> bool:
    answer = _fetch(url, tls)
    return answer is not None and answer[0] == 200


def _etcd_healthy(url: str) -> bool:
    answer = _fetch(url)
    if answer is None or answer[0] != 200:
        return False
    try:
        return bool(json.loads(answer[1]).get("health") == "true")
    except ValueError:
        return False


def _unverified_tls() -> ssl.SSLContext:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return tls
