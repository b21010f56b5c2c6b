"""The adapter's authentication and authorisation against a real kube-apiserver: the trust ConfigMap,
TokenReview, SubjectAccessReview (with RBAC), and the apiserver's real front-proxy client certificate."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from kubernetes import client as kube_client

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import (
    AUTH_CONFIGMAP_NAME,
    AUTH_CONFIGMAP_NAMESPACE,
    AuthenticationConfig,
    ClientCertAuthenticator,
    PrivilegedGroupAuthorizer,
    RequestHeaderAuthenticator,
    SubjectAccessReviewAuthorizer,
    TokenReviewAuthenticator,
    UnionAuthenticator,
    load_authentication_config,
)
from autoscaler.adapter.run import AdapterOptions, build_security
from autoscaler.adapter.server import AdapterServer
from autoscaler.adapter.tls import self_signed, server_context
from autoscaler.certs import Authority, IssuedCert
from tests.core.test_adapter_store import outcome, spec, store_with

pytestmark = pytest.mark.integration

METRIC = "variant_desired_replicas"
REQUESTHEADER_CA = "requestheader-client-ca-file"
_RBAC_TIMEOUT_S = 10.0


class Adapter:
    def __init__(self, *, server: AdapterServer, ca: Path, tokens: TokenReviewAuthenticator,
                 reviews: SubjectAccessReviewAuthorizer, config: AuthenticationConfig) -> None:
        self.server, self.ca, self.tokens, self.reviews, self.config = server, ca, tokens, reviews, config

    def get(self, path: str, *, token: str | None = None, cert: tuple[Path, Path] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        connection = http.client.HTTPSConnection("localhost", self.server.port, context=context, timeout=10)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        try:
            connection.request("GET", path, headers=sent)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture
def adapter(kube_api_client, kube_namespace, tmp_path) -> Iterator[Adapter]:
    config = load_authentication_config(kube_api_client)
    tokens = TokenReviewAuthenticator(kube_api_client)
    reviews = SubjectAccessReviewAuthorizer(kube_api_client)
    assert config.request_header is not None
    authn = UnionAuthenticator([RequestHeaderAuthenticator(config.request_header),
                                ClientCertAuthenticator(config.client_cas), tokens])
    store = store_with(outcome(spec("llama-decode", namespace=kube_namespace), desired=4))
    serving = self_signed(tmp_path)
    api = ExternalMetricsAPI(store=store, authenticator=authn, authorizer=PrivilegedGroupAuthorizer(reviews))
    context = server_context(cert=serving.cert, key=serving.key, client_cas_pem=config.trusted_cas_pem())
    with AdapterServer(api=api, ssl_context=context) as server:
        yield Adapter(server=server, ca=serving.cert, tokens=tokens, reviews=reviews, config=config)


def service_account_token(api: kube_client.ApiClient, namespace: str, name: str) -> str:
    core = kube_client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, kube_client.V1ServiceAccount(
        metadata=kube_client.V1ObjectMeta(name=name)))
    request = kube_client.AuthenticationV1TokenRequest(spec=kube_client.V1TokenRequestSpec(audiences=[],
                                                                                         expiration_seconds=600))
    return str(core.create_namespaced_service_account_token(name, namespace, request).status.token)


def allow_reading_external_metrics(api: kube_client.ApiClient, namespace: str, account: str) -> None:
    rbac = kube_client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, kube_client.V1Role(
        metadata=kube_client.V1ObjectMeta(name="external-metrics-reader"),
        rules=[kube_client.V1PolicyRule(api_groups=["external.metrics.k8s.io"], resources=["*"],
                                        verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding(namespace, kube_client.V1RoleBinding(
        metadata=kube_client.V1ObjectMeta(name="external-metrics-reader"),
        role_ref=kube_client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                       name="external-metrics-reader"),
        subjects=[kube_client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=namespace)]))
    # RBAC reads through informers: wait until the binding is in effect, so no denial gets cached.
    review = kube_client.V1SubjectAccessReview(spec=kube_client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{namespace}:{account}", resource_attributes=kube_client.V1ResourceAttributes(
            namespace=namespace, verb="list", group="external.metrics.k8s.io", resource=METRIC)))
    deadline = time.monotonic() + _RBAC_TIMEOUT_S
    while not kube_client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed:
        assert time.monotonic() < deadline, "RBAC binding not effective in time"
        time.sleep(0.1)


def metric_path(namespace: str) -> str:
    return f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{METRIC}?labelSelector=variant%3Dllama-decode"


def test_reads_its_trust_from_the_extension_apiserver_authentication_configmap(control_plane, kube_api_client):
    config = load_authentication_config(kube_api_client)
    certs = control_plane.aggregation_certs
    assert certs is not None and config.request_header is not None
    assert config.request_header.client_cas == (x509.load_pem_x509_certificate(certs.front_proxy_ca.read_bytes()),)
    assert config.request_header.allowed_names == (certs.allowed_name,)
    assert config.request_header.username_headers == ("X-Remote-User",)
    assert config.request_header.group_headers == ("X-Remote-Group",)
    assert config.request_header.extra_headers_prefixes == ("X-Remote-Extra-",)
    assert x509.load_pem_x509_certificate(control_plane.ca_cert_path.read_bytes()) in config.client_cas


def test_a_service_account_with_rbac_access_reads_the_metric_with_its_token(adapter, kube_api_client,
                                                                           kube_namespace):
    token = service_account_token(kube_api_client, kube_namespace, "hpa-reader")
    allow_reading_external_metrics(kube_api_client, kube_namespace, "hpa-reader")
    status, body = adapter.get(metric_path(kube_namespace), token=token)
    assert status == 200, body
    assert [(i["metricLabels"]["variant"], i["value"]) for i in body["items"]] == [("llama-decode", "4")]


def test_a_service_account_without_access_is_forbidden(adapter, kube_api_client, kube_namespace):
    token = service_account_token(kube_api_client, kube_namespace, "nobody")
    status, body = adapter.get(metric_path(kube_namespace), token=token)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert f"system:serviceaccount:{kube_namespace}:nobody" in body["message"]


@pytest.mark.parametrize("token", [None, "not-a-real-token"], ids=["no-token", "bad-token"])
def test_unauthenticated_callers_are_refused(adapter, kube_namespace, token):
    status, body = adapter.get(metric_path(kube_namespace), token=token)
    assert (status, body["kind"], body["reason"]) == (401, "Status", "Unauthorized")


def test_token_and_access_reviews_are_cached_briefly(adapter, kube_api_client, kube_namespace):
    token = service_account_token(kube_api_client, kube_namespace, "frequent")
    allow_reading_external_metrics(kube_api_client, kube_namespace, "frequent")
    statuses = [adapter.get(metric_path(kube_namespace), token=token)[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert (adapter.tokens.reviews, adapter.reviews.reviews) == (1, 1)


def test_the_apiservers_front_proxy_certificate_carries_the_callers_identity(adapter, control_plane,
                                                                             kube_api_client, kube_namespace):
    certs = control_plane.aggregation_certs
    assert certs is not None
    proxy = (certs.proxy_client_cert, certs.proxy_client_key)
    allowed_user = f"system:serviceaccount:{kube_namespace}:via-proxy"
    service_account_token(kube_api_client, kube_namespace, "via-proxy")
    allow_reading_external_metrics(kube_api_client, kube_namespace, "via-proxy")

    def as_user(user: str, group: str | None = None) -> int:
        headers = {"X-Remote-User": user} | ({"X-Remote-Group": group} if group else {})
        return adapter.get(metric_path(kube_namespace), cert=proxy, headers=headers)[0]

    assert as_user(allowed_user) == 200
    assert as_user("someone-else") == 403
    assert as_user("admin", "system:masters") == 200
    # The same identity headers without the proxy certificate prove nothing.
    assert adapter.get(metric_path(kube_namespace), headers={"X-Remote-User": "admin",
                                                            "X-Remote-Group": "system:masters"})[0] == 401


# -- the trust ConfigMap changes under a running adapter ---------------------------------------------------

_RELOAD_S = 0.2
_RELOAD_WAIT_S = 10.0


@pytest.fixture
def trust_configmap(kube_api_client) -> Iterator[kube_client.V1ConfigMap]:
    """The session plane's ConfigMap kube-system/extension-apiserver-authentication, restored afterwards (other
    tests read it). The kube-apiserver merges its own CAs and names back into it, never removes any."""
    core = kube_client.CoreV1Api(kube_api_client)
    original = core.read_namespaced_config_map(AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE)
    assert original.data is not None and REQUESTHEADER_CA in original.data
    bundle = original.data[REQUESTHEADER_CA]
    try:
        yield original
    finally:
        core.patch_namespaced_config_map(AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE,
                                         {"data": {REQUESTHEADER_CA: bundle}})


def set_requestheader_ca(api: kube_client.ApiClient, original: kube_client.V1ConfigMap, ca: Authority) -> None:
    # The apiserver's own front-proxy CA stays in the bundle, so its trust controller has nothing to merge back.
    data = original.data or {}
    bundle = data[REQUESTHEADER_CA].rstrip("\n") + "\n" + ca.pem.decode()
    kube_client.CoreV1Api(api).patch_namespaced_config_map(AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE,
                                                           {"data": {REQUESTHEADER_CA: bundle}})


def proxied_status(server: AdapterServer, ca_file: Path, client: IssuedCert, namespace: str) -> int | str:
    """The HTTP status of a proxied request made with ``client``'s certificate on a fresh connection, or
    "refused" when the TLS handshake rejects the certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(client.cert), str(client.key))
    connection = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
    try:
        connection.request("GET", metric_path(namespace), headers={"X-Remote-User": "admin",
                                                                   "X-Remote-Group": "system:masters"})
        return connection.getresponse().status
    except (ssl.SSLError, ConnectionError):
        return "refused"
    finally:
        connection.close()


def test_a_changed_requestheader_ca_applies_without_a_restart(kube_api_client, kube_namespace, trust_configmap,
                                                            tmp_path):
    old_ca, new_ca = Authority("rotated-front-proxy-ca-1"), Authority("rotated-front-proxy-ca-2")
    old_client = old_ca.issue(tmp_path, "old", common_name="front-proxy-client")
    new_client = new_ca.issue(tmp_path, "new", common_name="front-proxy-client")
    set_requestheader_ca(kube_api_client, trust_configmap, old_ca)

    serving = self_signed(tmp_path / "serving")
    security = build_security(kube_api_client, AdapterOptions(), cert=serving.cert, key=serving.key)
    store = store_with(outcome(spec("llama-decode", namespace=kube_namespace), desired=4))
    api = ExternalMetricsAPI(store=store, authenticator=security.authenticator, authorizer=security.authorizer)
    with AdapterServer(api=api, ssl_context=security.tls.current) as server, \
            security.reloading(auth_interval_s=_RELOAD_S, cert_interval_s=_RELOAD_S):

        def status(client: IssuedCert) -> int | str:
            return proxied_status(server, serving.cert, client, kube_namespace)

        assert (status(old_client), status(new_client)) == (200, "refused")
        set_requestheader_ca(kube_api_client, trust_configmap, new_ca)
        deadline = time.monotonic() + _RELOAD_WAIT_S
        while status(new_client) != 200:
            assert time.monotonic() < deadline, "the new requestheader CA was not picked up"
            time.sleep(_RELOAD_S)
        assert status(old_client) in ("refused", 401)
        assert security.auth_reloader.error is None
