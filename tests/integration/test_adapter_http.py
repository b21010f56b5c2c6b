"""The adapter over real HTTPS on loopback, asked by real clients (the kubernetes Python client, raw TLS)."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import (
    AuthenticationConfig,
    PrivilegedGroupAuthorizer,
    RequestHeaderAuthenticator,
    RequestHeaderConfig,
)
from autoscaler.adapter.server import AdapterServer
from autoscaler.adapter.tls import Authority, self_signed, server_context
from tests.core.test_adapter_store import DECODE, PREFILL, outcome, store_with

pytestmark = pytest.mark.integration


class DenyAll:
    def authorize(self, attributes):
        return False, "deny all"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapter-tls")
    serving = self_signed(d, hosts=("localhost", "127.0.0.1"))
    front, stranger = Authority("front-proxy-ca"), Authority("stranger")
    certs = {
        "ca": serving.cert,
        "proxy": front.issue(d, "proxy", common_name="front-proxy-client"),
        "stranger": stranger.issue(d, "stranger", common_name="front-proxy-client"),
    }
    config = AuthenticationConfig(request_header=RequestHeaderConfig(client_cas=(front.cert,),
                                                                      allowed_names=("front-proxy-client",)))
    api = ExternalMetricsAPI(store=store_with(outcome(DECODE, desired=4), outcome(PREFILL, desired=3)),
                             authenticator=RequestHeaderAuthenticator(config.request_header),
                             authorizer=PrivilegedGroupAuthorizer(DenyAll()))
    seen = []
    context = server_context(cert=serving.cert, key=serving.key, client_cas_pem=config.trusted_cas_pem())
    with AdapterServer(api=api, ssl_context=context, observer=lambda *a: seen.append(a)) as server:
        yield server, certs, seen


def kube_api(server, certs, *, client_cert="proxy", user="admin", group="system:masters"):
    config = kube_client.Configuration(host=server.url)
    config.ssl_ca_cert = str(certs["ca"])
    if client_cert:
        config.cert_file, config.key_file = str(certs[client_cert].cert), str(certs[client_cert].key)
    api = kube_client.ApiClient(configuration=config)
    api.set_default_header("X-Remote-User", user)
    api.set_default_header("X-Remote-Group", group)
    return api


def test_the_kubernetes_client_reads_an_external_metric(adapter):
    server, certs, _ = adapter
    with kube_api(server, certs) as api:
        body = kube_client.CustomObjectsApi(api).list_namespaced_custom_object(
            "external.metrics.k8s.io", "v1beta1", "llm", "variant_desired_replicas",
            label_selector="role in (decode),variant=llama-decode")
    assert body["kind"] == "ExternalMetricValueList"
    assert [(i["metricName"], i["metricLabels"]["variant"], i["value"]) for i in body["items"]] == [
        ("variant_desired_replicas", "llama-decode", "4")]


def test_the_kubernetes_client_gets_a_not_found_status_for_an_unknown_metric(adapter):
    server, certs, _ = adapter
    with kube_api(server, certs) as api, pytest.raises(ApiException) as info:
        kube_client.CustomObjectsApi(api).list_namespaced_custom_object(
            "external.metrics.k8s.io", "v1beta1", "llm", "no_such_metric")
    assert info.value.status == 404
    assert json.loads(info.value.body)["reason"] == "NotFound"


@pytest.mark.parametrize(
    ("client_cert", "group", "status"),
    [
        pytest.param(None, "system:masters", 401, id="no-client-certificate"),
        pytest.param("proxy", "system:authenticated", 403, id="authenticated-not-authorised"),
    ],
)
def test_refuses_unauthenticated_and_unauthorised_callers(adapter, client_cert, group, status):
    server, certs, _ = adapter
    with kube_api(server, certs, client_cert=client_cert, group=group) as api, pytest.raises(ApiException) as info:
        kube_client.CustomObjectsApi(api).list_namespaced_custom_object(
            "external.metrics.k8s.io", "v1beta1", "llm", "variant_desired_replicas")
    assert info.value.status == status


def test_a_client_certificate_from_an_untrusted_ca_fails_the_handshake(adapter):
    server, certs, _ = adapter
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    context.load_cert_chain(str(certs["stranger"].cert), str(certs["stranger"].key))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connection.request("GET", "/apis", headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"})
        connection.getresponse().read()
    connection.close()


def test_keeps_the_connection_alive_across_requests_and_health_needs_no_certificate(adapter):
    server, certs, seen = adapter
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    connection = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=5)
    try:
        answers, sockets = [], set()
        for path in ("/healthz", "/readyz", "/livez", "/openapi/v2"):
            connection.request("GET", path)
            response = connection.getresponse()
            answers.append((response.status, response.read()[:2]))
            sockets.add(connection.sock)
    finally:
        connection.close()
    assert answers == [(200, b"ok"), (200, b"ok"), (200, b"ok"), (401, b'{"')]
    assert len(sockets) == 1 and None not in sockets, "each request needed a new connection"
    assert ("health", 200) in [(endpoint, code) for endpoint, code, _ in seen]


def test_a_stopped_server_closes_its_kept_alive_connections(tmp_path):
    serving = self_signed(tmp_path)
    api = ExternalMetricsAPI(store=store_with(outcome(DECODE, desired=1)),
                             authenticator=RequestHeaderAuthenticator(RequestHeaderConfig(client_cas=())),
                             authorizer=DenyAll())
    server = AdapterServer(api=api, ssl_context=server_context(cert=serving.cert, key=serving.key))
    server.start()
    connection = http.client.HTTPSConnection("localhost", server.port, timeout=5,
                                             context=ssl.create_default_context(cafile=str(serving.cert)))
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() == b"ok"
    server.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)):
        connection.request("GET", "/healthz")
        connection.getresponse().read()
    connection.close()
