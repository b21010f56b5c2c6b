"""The local control plane: a real kube-apiserver + etcd (and kube-controller-manager) on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client import exceptions as kube_exceptions

from autoscaler import errors
from autoscaler.localstack import assets as kube_assets
from autoscaler.localstack import kube

pytestmark = pytest.mark.integration


def _deployment(name: str, *, replicas: int) -> kube_client.V1Deployment:
    labels = {"app": name}
    return kube_client.V1Deployment(
        metadata=kube_client.V1ObjectMeta(name=name),
        spec=kube_client.V1DeploymentSpec(
            replicas=replicas,
            selector=kube_client.V1LabelSelector(match_labels=labels),
            template=kube_client.V1PodTemplateSpec(
                metadata=kube_client.V1ObjectMeta(labels=labels),
                spec=kube_client.V1PodSpec(
                    containers=[kube_client.V1Container(name="main", image="registry.invalid/none:1")]
                ),
            ),
        ),
    )


def _eventually(probe: Callable[[], bool], *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.2)
    return probe()


# -- the API behaves like a cluster's ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "patched"),
    [
        pytest.param(1, 4, id="scale-up"),
        pytest.param(5, 2, id="scale-down"),
        pytest.param(3, 0, id="scale-to-zero"),
    ],
)
def test_scale_subresource_patch_is_read_back(
    kube_api_client: kube_client.ApiClient, kube_namespace: str, initial: int, patched: int
) -> None:
    apps = kube_client.AppsV1Api(kube_api_client)
    apps.create_namespaced_deployment(kube_namespace, _deployment("decode", replicas=initial))

    apps.patch_namespaced_deployment_scale("decode", kube_namespace, {"spec": {"replicas": patched}})

    scale = apps.read_namespaced_deployment_scale("decode", kube_namespace)
    deployment = apps.read_namespaced_deployment("decode", kube_namespace)
    assert scale.spec is not None
    assert deployment.spec is not None
    # Scale.spec.replicas is omitempty on the wire: zero comes back as an absent field (None).
    assert (scale.spec.replicas or 0, deployment.spec.replicas) == (patched, patched)


def test_kubeconfig_authenticates_as_admin(control_plane: kube.ControlPlane, kube_namespace: str) -> None:
    kubeconfig = str(control_plane.kubeconfig_path)
    loaded = kube_config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    with loaded as api_client:
        namespaces = kube_client.CoreV1Api(api_client).list_namespace().items
    names = {ns.metadata.name for ns in namespaces if ns.metadata is not None}
    assert {"default", kube_namespace} <= names


@pytest.mark.parametrize(
    ("bearer_token", "expected_status"),
    [
        pytest.param(None, 403, id="anonymous-is-forbidden"),
        pytest.param("not-a-token", 401, id="unknown-token-is-unauthorized"),
    ],
)
def test_refuses_requests_without_valid_credentials(
    control_plane: kube.ControlPlane, bearer_token: str | None, expected_status: int
) -> None:
    config = kube_client.Configuration(host=control_plane.server_url)
    config.ssl_ca_cert = str(control_plane.ca_cert_path)
    if bearer_token is not None:
        config.api_key = {"authorization": f"Bearer {bearer_token}"}
    with (
        kube_client.ApiClient(configuration=config) as api_client,
        pytest.raises(kube_exceptions.ApiException) as refused,
    ):
        kube_client.CoreV1Api(api_client).list_namespace()
    assert refused.value.status == expected_status


def test_aggregation_layer_publishes_the_front_proxy_ca(
    control_plane: kube.ControlPlane, kube_api_client: kube_client.ApiClient
) -> None:
    certs = control_plane.aggregation_certs
    assert certs is not None
    published = kube_client.CoreV1Api(kube_api_client).read_namespaced_config_map(
        "extension-apiserver-authentication", "kube-system"
    )
    assert published.data is not None
    assert published.data["requestheader-client-ca-file"].strip() == certs.front_proxy_ca.read_text().strip()
    assert certs.allowed_name in published.data["requestheader-allowed-names"]
    assert "X-Remote-User" in published.data["requestheader-username-headers"]


# -- controller manager and teardown ----------------------------------------------------------------------------


def test_controller_manager_runs_the_hpa_controller(kube_assets_paths: kube_assets.KubeAssets) -> None:
    with kube.ControlPlane(assets=kube_assets_paths) as plane, plane.api_client() as api_client:
        plane.start_controller_manager(hpa_sync_period_s=1)
        kube_client.AppsV1Api(api_client).create_namespaced_deployment(
            "default", _deployment("prefill", replicas=1)
        )
        autoscaling = kube_client.AutoscalingV2Api(api_client)
        autoscaling.create_namespaced_horizontal_pod_autoscaler(
            "default",
            kube_client.V2HorizontalPodAutoscaler(
                metadata=kube_client.V1ObjectMeta(name="prefill"),
                spec=kube_client.V2HorizontalPodAutoscalerSpec(
                    scale_target_ref=kube_client.V2CrossVersionObjectReference(
                        api_version="apps/v1", kind="Deployment", name="prefill"
                    ),
                    min_replicas=1,
                    max_replicas=3,
                ),
            ),
        )

        def reconciled() -> bool:
            status = autoscaling.read_namespaced_horizontal_pod_autoscaler("prefill", "default").status
            return bool(status and status.conditions)

        # Only the HPA controller writes status.conditions; with no pods behind the Deployment it reports
        # why it cannot scale rather than scaling.
        assert _eventually(reconciled, timeout_s=30)


def test_stop_leaves_no_process_and_no_directory_behind(kube_assets_paths: kube_assets.KubeAssets) -> None:
    plane = kube.ControlPlane(assets=kube_assets_paths, aggregation=False)
    with plane:
        plane.start_controller_manager()
        pids = plane.pids
        directory = plane.directory
        alive_while_running = [Path(f"/proc/{pid}").exists() for pid in pids]

    assert (len(pids), alive_while_running) == (3, [True, True, True])
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    assert not directory.exists()
    assert plane.pids == []


def test_start_failure_reports_the_log_tail_and_cleans_up(kube_assets_paths: kube_assets.KubeAssets) -> None:
    plane = kube.ControlPlane(assets=kube_assets_paths, apiserver_args=["--no-such-flag=1"])

    with pytest.raises(errors.StackError, match=r"(?s)kube-apiserver exited.*no-such-flag"):
        plane.start()

    assert plane.pids == []
    with pytest.raises(errors.StackError, match="not started"):
        _ = plane.directory


# -- where the binaries come from -------------------------------------------------------------------------------

_ALL = (kube_assets.KUBE_APISERVER, kube_assets.ETCD, kube_assets.KUBE_CONTROLLER_MANAGER)


def _place(directory: Path, names: tuple[str, ...], *, executable: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755 if executable else 0o644)


@pytest.mark.parametrize(
    ("in_kubebuilder", "in_cache", "expected"),
    [
        pytest.param(_ALL, _ALL, {name: "kubebuilder" for name in _ALL}, id="kubebuilder-assets-win"),
        pytest.param(
            (kube_assets.KUBE_APISERVER, kube_assets.ETCD),
            _ALL,
            {
                kube_assets.KUBE_APISERVER: "kubebuilder",
                kube_assets.ETCD: "kubebuilder",
                kube_assets.KUBE_CONTROLLER_MANAGER: "cache",
            },
            id="setup-envtest-layout-takes-controller-manager-from-cache",
        ),
        pytest.param((), _ALL, {name: "cache" for name in _ALL}, id="cache-when-kubebuilder-is-empty"),
        pytest.param((kube_assets.KUBE_APISERVER,), (), None, id="missing-etcd-is-not-found"),
    ],
)
def test_locate_assets_looks_in_kubebuilder_assets_then_the_cache(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_kubebuilder: tuple[str, ...],
    in_cache: tuple[str, ...],
    expected: dict[str, str] | None,
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "kubebuilder"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _place(tmp_path / "kubebuilder", in_kubebuilder)
    _place(kube_assets.cache_dir(), in_cache)
    sources = {tmp_path / "kubebuilder": "kubebuilder", kube_assets.cache_dir(): "cache"}

    found = kube_assets.locate_assets()

    if expected is None:
        assert found is None
        return
    assert found is not None
    paths = {
        kube_assets.KUBE_APISERVER: found.kube_apiserver,
        kube_assets.ETCD: found.etcd,
        kube_assets.KUBE_CONTROLLER_MANAGER: found.kube_controller_manager,
    }
    assert {name: sources[path.parent] for name, path in paths.items() if path is not None} == expected


def test_locate_assets_ignores_files_that_are_not_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "kubebuilder"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _place(tmp_path / "kubebuilder", _ALL, executable=False)

    assert kube_assets.locate_assets(controller_manager=False) is None


def test_cache_dir_is_under_xdg_cache_home_and_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")

    assert kube_assets.cache_dir() == Path("/somewhere/cache/variant-autoscaler/k8s-v1.36.3")


# -- building them (with a stand-in for the go command) ---------------------------------------------------------

_FAKE_GO = r"""#!/bin/sh
echo "$*" >> "$FAKE_GO_DIR/calls"
if [ -n "$FAKE_GO_FAIL" ]; then echo "$FAKE_GO_FAIL" >&2; exit 2; fi
case "$1 $2" in
  "mod download") printf '{"GoMod": "%s"}\n' "$FAKE_GO_DIR/upstream.mod" ;;
  "mod tidy") cat go.mod >> "$FAKE_GO_DIR/wrappers.mod" ;;
  build*)
    out=""; prev=""
    for arg in "$@"; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; done
    case "$out" in
      */) targets="${out}kube-apiserver ${out}kube-controller-manager" ;;
      *) targets="$out" ;;
    esac
    for target in $targets; do
      mkdir -p "$(dirname "$target")"; printf '#!/bin/sh\n' > "$target"; chmod +x "$target"
    done ;;
esac
"""

_UPSTREAM_GOMOD = """module k8s.io/kubernetes

go 1.26.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `go` first on PATH that records its calls and the wrapper go.mod files; an empty cache."""
    tools = tmp_path / "fake-go"
    tools.mkdir()
    (tools / "go").write_text(_FAKE_GO)
    (tools / "go").chmod(0o755)
    (tools / "upstream.mod").write_text(_UPSTREAM_GOMOD)
    monkeypatch.setenv("FAKE_GO_DIR", str(tools))
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tools


def test_ensure_assets_builds_through_wrapper_modules_into_the_cache(fake_go: Path) -> None:
    built = kube_assets.ensure_assets()

    cache = kube_assets.cache_dir()
    assert (built.kube_apiserver, built.etcd, built.kube_controller_manager) == (
        cache / "kube-apiserver",
        cache / "etcd",
        cache / "kube-controller-manager",
    )
    wrappers = (fake_go / "wrappers.mod").read_text()
    assert "require k8s.io/kubernetes v1.36.3" in wrappers
    assert "k8s.io/client-go => k8s.io/client-go v0.36.3" in wrappers
    assert "require go.etcd.io/etcd/server/v3 v3.6.8" in wrappers
    assert "k8s.io/component-base/version.gitVersion=v1.36.3" in (fake_go / "calls").read_text()
    # Only the cache directory and its lock remain: scratch directories are gone.
    assert sorted(p.name for p in cache.parent.iterdir()) == ["k8s-v1.36.3", "k8s-v1.36.3.lock"]


def test_ensure_assets_reports_go_output_when_the_build_fails(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "go: k8s.io/kubernetes@v1.36.3: no route to proxy")

    with pytest.raises(errors.StackError, match="no route to proxy"):
        kube_assets.ensure_assets()

    assert kube_assets.locate_assets() is None


def test_ensure_assets_does_not_build_what_is_already_there(
    fake_go: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "kubebuilder"))
    _place(tmp_path / "kubebuilder", _ALL)

    found = kube_assets.ensure_assets()

    assert found.etcd == tmp_path / "kubebuilder" / "etcd"
    assert not (fake_go / "calls").exists()
