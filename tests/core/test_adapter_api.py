"""Every answer the HPA and the aggregator can get from the adapter, checked without sockets."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import (
    Attributes,
    ClientCertAuthenticator,
    Credentials,
    PrivilegedGroupAuthorizer,
    RequestHeaderAuthenticator,
    RequestHeaderConfig,
    UnionAuthenticator,
    UserInfo,
)
from autoscaler.adapter.tls import Authority
from tests.core.test_adapter_store import DECODE, PREFILL, T0, FakeClock, outcome, store_with

METRIC_PATH = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/variant_desired_replicas"


class RecordingAuthorizer:
    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed
        self.seen: list[Attributes] = []

    def authorize(self, attributes: Attributes) -> tuple[bool, str]:
        self.seen.append(attributes)
        return self.allowed, "" if self.allowed else "RBAC: no rule"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A front-proxy CA with an allowed and a not-allowed client, a client CA with a user, a stranger CA."""
    d = tmp_path_factory.mktemp("pki")
    front, clients, stranger = Authority("front-proxy-ca"), Authority("client-ca"), Authority("stranger-ca")

    def der(issued):
        return x509.load_pem_x509_certificate(issued.cert.read_bytes()).public_bytes(Encoding.DER)

    return {
        "front": front, "clients": clients,
        "proxy": der(front.issue(d, "proxy", common_name="front-proxy-client")),
        "proxy_not_allowed": der(front.issue(d, "other", common_name="someone-else")),
        "user": der(clients.issue(d, "alice", common_name="alice", organizations=("team-a", "team-b"))),
        "stranger": der(stranger.issue(d, "mallory", common_name="front-proxy-client")),
    }


def make_api(pki, *, authorizer=None, store=None):
    authn = UnionAuthenticator([
        RequestHeaderAuthenticator(RequestHeaderConfig(client_cas=(pki["front"].cert,),
                                                       allowed_names=("front-proxy-client",))),
        ClientCertAuthenticator((pki["clients"].cert,)),
    ])
    store = store or store_with(outcome(DECODE, desired=4), outcome(PREFILL, desired=3))
    return ExternalMetricsAPI(store=store, authenticator=authn, authorizer=authorizer or RecordingAuthorizer())


def proxied(pki, user="system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            groups=("system:serviceaccounts", "system:authenticated"), cert="proxy", extra=()):
    headers = [("X-Remote-User", user)] + [("X-Remote-Group", g) for g in groups] + list(extra)
    return Credentials(peer_cert_der=pki[cert], headers=tuple(headers))


def get(api, target, credentials, method="GET"):
    return api.handle(method=method, target=target, credentials=credentials)


# -- the documents ---------------------------------------------------------------------------------------


def test_serves_the_exact_value_list_the_hpa_parses(pki):
    response = get(make_api(pki), f"{METRIC_PATH}?labelSelector=variant%3Dllama-decode", proxied(pki))
    assert (response.status, response.content_type) == (200, "application/json")
    assert response.json() == {
        "kind": "ExternalMetricValueList",
        "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": [{
            "metricName": "variant_desired_replicas",
            "metricLabels": {"variant": "llama-decode", "model": "meta-llama_Llama-3.1-8B", "role": "decode",
                             "accelerator": "H100", "variant_name": "llama-decode", "accelerator_type": "H100"},
            "timestamp": "2023-11-14T22:13:20Z",
            "value": "4",
        }],
    }


def test_serves_wvas_desired_replicas_to_the_hpa_llm_d_documents(pki):
    """The HPA shape of WVA's config/samples/hpa-integration.yaml: wva_desired_replicas by variant_name."""
    target = METRIC_PATH.replace("variant_desired_replicas", "wva_desired_replicas")
    response = get(make_api(pki), f"{target}?labelSelector=variant_name%3Dllama-decode", proxied(pki))
    assert response.status == 200
    assert [(i["metricName"], i["value"]) for i in response.json()["items"]] == [("wva_desired_replicas", "4")]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/apis", {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "external.metrics.k8s.io",
             "versions": [{"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}],
             "preferredVersion": {"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}}]},
                     id="group-list"),
        pytest.param("/apis/external.metrics.k8s.io", {
            "kind": "APIGroup", "apiVersion": "v1", "name": "external.metrics.k8s.io",
            "versions": [{"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}],
            "preferredVersion": {"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}},
                     id="group"),
    ],
)
def test_serves_discovery_documents(pki, path, expected):
    response = get(make_api(pki), path, proxied(pki))
    assert (response.status, response.json()) == (200, expected)


def test_resource_list_names_every_served_metric_as_a_namespaced_read_only_resource(pki):
    body = get(make_api(pki), "/apis/external.metrics.k8s.io/v1beta1", proxied(pki)).json()
    assert (body["kind"], body["groupVersion"]) == ("APIResourceList", "external.metrics.k8s.io/v1beta1")
    names = [r["name"] for r in body["resources"]]
    assert "variant_desired_replicas" in names and "variant_admission_ratio" in names
    assert all(r["namespaced"] and r["verbs"] == ["get"] for r in body["resources"])


@pytest.mark.parametrize(
    "path",
    ["/openapi/v2", "/openapi/v3", "/apis/other.group/v1", "/api/v1/pods", "/apis/external.metrics.k8s.io/v1",
     "/apis/external.metrics.k8s.io/v1beta1/variant_desired_replicas",
     f"{METRIC_PATH}/extra-segment"],
)
def test_unknown_paths_are_a_not_found_status(pki, path):
    response = get(make_api(pki), path, proxied(pki))
    assert response.status == 404
    body = response.json()
    assert {k: body[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    assert path.split("?")[0] in body["message"]


@pytest.mark.parametrize(
    ("target", "status", "reason", "message"),
    [
        pytest.param("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/nope", 404, "NotFound",
                     "'nope' is not served", id="unknown-metric"),
        pytest.param(f"{METRIC_PATH}?labelSelector=variant%3Dother", 404, "NotFound", "no variant",
                     id="no-matching-variant"),
        pytest.param(f"{METRIC_PATH}?labelSelector=role+in+decode", 400, "BadRequest", "position 8",
                     id="bad-selector"),
    ],
)
def test_metric_errors_are_statuses(pki, target, status, reason, message):
    response = get(make_api(pki), target, proxied(pki))
    body = response.json()
    assert (response.status, body["kind"], body["reason"], body["code"]) == (status, "Status", reason, status)
    assert message in body["message"]


def test_a_stale_decision_is_service_unavailable(pki):
    clock = FakeClock()
    store = store_with(outcome(DECODE, desired=4), clock=clock, max_age_s=45)
    clock.t = T0 + 120
    response = get(make_api(pki, store=store), METRIC_PATH, proxied(pki))
    assert (response.status, response.json()["reason"]) == (503, "ServiceUnavailable")


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
def test_health_endpoints_answer_without_credentials(pki, path):
    response = get(make_api(pki), path, Credentials())
    assert (response.status, response.body) == (200, b"ok")


def test_writes_are_not_allowed(pki):
    response = get(make_api(pki), METRIC_PATH, proxied(pki), method="POST")
    assert (response.status, response.json()["reason"]) == (405, "MethodNotAllowed")


# -- authentication --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        pytest.param(lambda pki: Credentials(), "no valid client certificate", id="nothing"),
        pytest.param(lambda pki: Credentials(headers=(("X-Remote-User", "admin"),
                                                      ("X-Remote-Group", "system:masters"))),
                     "no valid client certificate", id="headers-without-proxy-certificate"),
        pytest.param(lambda pki: proxied(pki, cert="stranger"), "no valid client certificate",
                     id="certificate-from-another-ca"),
        pytest.param(lambda pki: proxied(pki, cert="proxy_not_allowed"), "'someone-else' is not an allowed name",
                     id="proxy-name-not-allowed"),
        pytest.param(lambda pki: Credentials(peer_cert_der=pki["proxy"]), "no valid client certificate",
                     id="proxy-certificate-without-user"),
        pytest.param(lambda pki: Credentials(headers=(("Authorization", "Bearer abc"),)),
                     "no valid client certificate", id="token-without-token-review"),
    ],
)
def test_unauthenticated_requests_are_refused(pki, credentials, message):
    authorizer = RecordingAuthorizer()
    response = get(make_api(pki, authorizer=authorizer), METRIC_PATH, credentials(pki))
    body = response.json()
    assert (response.status, body["reason"], body["code"]) == (401, "Unauthorized", 401)
    assert message in body["message"]
    assert authorizer.seen == []  # never reached authorisation


def test_request_header_identity_reaches_the_authorizer(pki):
    authorizer = RecordingAuthorizer()
    extra = (("X-Remote-Extra-Scopes", "a"), ("X-Remote-Extra-Scopes", "b"), ("X-Remote-Extra-Acme.com%2Fk", "v"))
    get(make_api(pki, authorizer=authorizer), METRIC_PATH, proxied(pki, extra=extra))
    [seen] = authorizer.seen
    assert seen == Attributes(
        user=UserInfo(name="system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                      groups=("system:serviceaccounts", "system:authenticated"),
                      extra={"scopes": ("a", "b"), "acme.com/k": ("v",)}),
        verb="list", namespace="llm", group="external.metrics.k8s.io", version="v1beta1",
        resource="variant_desired_replicas")


def test_a_client_certificate_user_is_its_common_name_and_organisations(pki):
    authorizer = RecordingAuthorizer()
    get(make_api(pki, authorizer=authorizer), "/apis", Credentials(peer_cert_der=pki["user"]))
    [seen] = authorizer.seen
    assert (seen.user.name, seen.user.groups, seen.verb, seen.path) == (
        "alice", ("team-a", "team-b", "system:authenticated"), "get", "/apis")


def test_a_client_certificate_cannot_claim_another_identity_with_headers(pki):
    authorizer = RecordingAuthorizer()
    creds = Credentials(peer_cert_der=pki["user"], headers=(("X-Remote-User", "admin"),
                                                            ("X-Remote-Group", "system:masters")))
    get(make_api(pki, authorizer=authorizer), "/apis", creds)
    assert [(a.user.name, a.user.groups) for a in authorizer.seen] == [
        ("alice", ("team-a", "team-b", "system:authenticated"))]


# -- authorisation ---------------------------------------------------------------------------------------


def test_unauthorised_requests_are_forbidden(pki):
    response = get(make_api(pki, authorizer=RecordingAuthorizer(allowed=False)), METRIC_PATH, proxied(pki))
    body = response.json()
    assert (response.status, body["reason"]) == (403, "Forbidden")
    assert "cannot list variant_desired_replicas.external.metrics.k8s.io in namespace 'llm'" in body["message"]


def test_every_authenticated_user_is_in_the_authenticated_group_once(pki):
    authorizer = RecordingAuthorizer()
    api = make_api(pki, authorizer=authorizer)
    get(api, "/apis", proxied(pki, user="system:kube-aggregator", groups=()))
    get(api, "/apis", proxied(pki, user="bob", groups=("system:authenticated", "dev")))
    assert [a.user.groups for a in authorizer.seen] == [("system:authenticated",), ("system:authenticated", "dev")]


def test_privileged_group_is_allowed_without_asking(pki):
    fallback = RecordingAuthorizer(allowed=False)
    api = make_api(pki, authorizer=PrivilegedGroupAuthorizer(fallback))
    assert get(api, METRIC_PATH, proxied(pki, user="admin", groups=("system:masters",))).status == 200
    assert get(api, METRIC_PATH, proxied(pki, user="bob", groups=("system:authenticated",))).status == 403
    assert [a.user.name for a in fallback.seen] == ["bob"]


def test_readyz_is_unavailable_until_ready_and_liveness_is_unaffected(pki):
    api = ExternalMetricsAPI(store=store_with(outcome(DECODE, desired=1)), authenticator=UnionAuthenticator([]),
                             authorizer=RecordingAuthorizer(), ready=lambda: False)
    assert [get(api, p, Credentials()).status for p in ("/readyz", "/livez", "/healthz")] == [503, 200, 200]


def test_the_public_surface_is_exactly_what_all_names():
    from autoscaler import adapter

    assert sorted(adapter.__all__) == sorted(n for n in vars(adapter) if not n.startswith("_")
                                             and n not in {"api", "catalog", "selectors", "store", "auth",
                                                           "documents", "quantity", "tls", "server", "run",
                                                           "reload"})
