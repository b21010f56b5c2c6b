"""Fixtures for a real kube-apiserver + etcd (``autoscaler.localstack.kube.ControlPlane``).

``control_plane`` is one plane per session, with the aggregation layer on so that the HPA adapter tests can
share it. ``kube_namespace`` gives each test a fresh namespace. Missing binaries are built once, after
collection and before any test runs, so that a cold build (minutes) does not count against a test's timeout;
a build that fails skips the tests locally and fails them in CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as kube_client

from autoscaler import errors
from autoscaler.localstack import assets as kube_assets
from autoscaler.localstack import kube
from tests.plugins.require import require

_FIXTURES_NEEDING_BINARIES = {"kube_assets_paths", "control_plane", "kube_api_client", "kube_namespace"}
_ASSETS_KEY = pytest.StashKey[kube_assets.KubeAssets | errors.StackError]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(_FIXTURES_NEEDING_BINARIES & set(getattr(item, "fixturenames", ())) for item in session.items):
        return
    if kube_assets.locate_assets() is not None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[kube assets] {line}")

    try:
        session.config.stash[_ASSETS_KEY] = kube_assets.ensure_assets(progress=say)
    except errors.StackError as exc:
        session.config.stash[_ASSETS_KEY] = exc


@pytest.fixture(scope="session")
def kube_assets_paths(request: pytest.FixtureRequest) -> kube_assets.KubeAssets:
    """The kube-apiserver, etcd and kube-controller-manager binaries (built if needed)."""
    found = request.config.stash.get(_ASSETS_KEY, None)
    if found is None:
        try:
            found = kube_assets.ensure_assets()
        except errors.StackError as exc:
            found = exc
    if isinstance(found, errors.StackError):
        require(False, f"kube-apiserver/etcd/kube-controller-manager {kube_assets.K8S_VERSION}: {found}")
    assert isinstance(found, kube_assets.KubeAssets)  # require() skipped or failed otherwise
    return found


@pytest.fixture(scope="session")
def control_plane(kube_assets_paths: kube_assets.KubeAssets) -> Iterator[kube.ControlPlane]:
    """One etcd + kube-apiserver for the session, aggregation layer enabled; no controller manager (tests
    that need one start their own plane, since its controllers would act on every test's objects)."""
    with kube.ControlPlane(assets=kube_assets_paths, aggregation=True) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_api_client(control_plane: kube.ControlPlane) -> Iterator[kube_client.ApiClient]:
    """An admin client of the session's control plane."""
    with control_plane.api_client() as api_client:
        yield api_client


@pytest.fixture
def kube_namespace(kube_api_client: kube_client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted after the test. With no namespace controller running it then stays
    Terminating, so names are never reused (``generateName``)."""
    core = kube_client.CoreV1Api(kube_api_client)
    created = core.create_namespace(
        kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(generate_name="vas-test-"))
    )
    assert created.metadata is not None
    name = str(created.metadata.name)
    yield name
    core.delete_namespace(name)
