"""Who is calling, and may they: authentication and authorisation as aggregated API servers do them.

Authentication (first authenticator that recognises the credentials wins, :class:`UnionAuthenticator`):

- :class:`RequestHeaderAuthenticator`: the kube-apiserver's aggregator proxies a request with its front-proxy
  client certificate and the caller's identity in ``X-Remote-User`` / ``X-Remote-Group`` /
  ``X-Remote-Extra-*``. The headers are believed only when the TLS client certificate was issued by the
  requestheader CA and its common name is an allowed name.
- :class:`ClientCertAuthenticator`: any other client certificate issued by the client CA (user = CN, groups = O).
- :class:`TokenReviewAuthenticator`: ``Authorization: Bearer`` tokens, checked with a TokenReview.

:class:`TrustedCertAuthenticator` holds the first two under one :class:`AuthenticationConfig` and swaps them
whole when the trust is re-read (``autoscaler.adapter.reload``), as the generic apiserver's dynamic CA
content does: a request is checked against the old trust or the new one, never a mix.

Authorisation: :class:`PrivilegedGroupAuthorizer` (``system:masters`` needs no round trip, as in the generic
apiserver) in front of :class:`SubjectAccessReviewAuthorizer`. Review results are cached briefly (10 s, the
generic apiserver's default webhook cache TTLs).

Where the trust comes from: ConfigMap ``kube-system/extension-apiserver-authentication``, which the
kube-apiserver publishes (:func:`load_authentication_config`), or files (:func:`authentication_config_from_files`).

Limitation: a client certificate must be issued directly by the CA (no intermediates), which is how kubeadm
and the kube-apiserver's own front-proxy set-up issue them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import urllib3
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from autoscaler.errors import AutoscalerError, ConfigError

__all__ = [
    "AlwaysAllowAuthorizer",
    "Attributes",
    "AuthError",
    "AuthenticationConfig",
    "Authenticator",
    "AuthorizationFailed",
    "Authorizer",
    "ClientCertAuthenticator",
    "Credentials",
    "Forbidden",
    "PrivilegedGroupAuthorizer",
    "RequestHeaderAuthenticator",
    "RequestHeaderConfig",
    "SubjectAccessReviewAuthorizer",
    "TokenReviewAuthenticator",
    "TrustedCertAuthenticator",
    "Unauthenticated",
    "UnionAuthenticator",
    "UserInfo",
    "authentication_config_from_configmap",
    "authentication_config_from_files",
    "load_authentication_config",
]

AUTH_CONFIGMAP_NAMESPACE = "kube-system"
AUTH_CONFIGMAP_NAME = "extension-apiserver-authentication"
_CONFIGMAP = f"ConfigMap {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP_NAME}"
AUTHENTICATED_GROUP = "system:authenticated"
_CACHE_TTL_S = 10.0  # generic apiserver: --authentication-token-webhook-cache-ttl / --authorization-webhook-*
_CACHE_SIZE = 4096
_BODY_LIMIT = 300  # characters of an API error body kept in a message


class AuthError(AutoscalerError):
    status = 500
    reason = "InternalError"


class Unauthenticated(AuthError):
    status = 401
    reason = "Unauthorized"


class Forbidden(AuthError):
    status = 403
    reason = "Forbidden"


class AuthorizationFailed(AuthError):
    """The authoriser could not answer (API error); the request is refused, never let through."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def cache_key(self) -> tuple[Any, ...]:
        return self.name, self.uid, self.groups, tuple(sorted((k, v) for k, v in self.extra.items()))


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents: its verified TLS client certificate (DER) and its header lines."""

    peer_cert_der: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request does, in SubjectAccessReview terms: a resource request (``resource`` set) or a
    non-resource request on ``path``."""

    user: UserInfo
    verb: str
    namespace: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    path: str = ""

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)

    def describe(self) -> str:
        if self.resource_request:
            where = f" in namespace {self.namespace!r}" if self.namespace else ""
            return f"{self.verb} {self.resource}.{self.group}{where}"
        return f"{self.verb} {self.path}"


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        """The user, or None when these credentials are not of this kind; raises :class:`Unauthenticated`
        when they are of this kind but invalid."""
        ...


class Authorizer(Protocol):
    def authorize(self, attributes: Attributes) -> tuple[bool, str]:
        """(allowed, reason)."""
        ...


# -- configuration ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHeaderConfig:
    client_cas: tuple[x509.Certificate, ...]
    allowed_names: tuple[str, ...] = ()  # empty: any certificate from the CA (as in Kubernetes)
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_headers_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


@dataclass(frozen=True, slots=True)
class AuthenticationConfig:
    """Trust roots for client certificates: the client CA (direct callers) and the request-header set-up."""

    client_cas: tuple[x509.Certificate, ...] = ()
    request_header: RequestHeaderConfig | None = None

    def trusted_cas_pem(self) -> str:
        """Every CA a TLS client certificate may chain to, for the server's SSL context."""
        from cryptography.hazmat.primitives.serialization import Encoding

        cas = list(self.client_cas) + (list(self.request_header.client_cas) if self.request_header else [])
        return "".join(ca.public_bytes(Encoding.PEM).decode() for ca in cas)


def _load_pem_bundle(data: bytes, *, source: str) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise ConfigError(f"{source}: not a PEM certificate bundle: {exc}", field=source) from exc


def _json_list(raw: str | None, *, source: str) -> tuple[str, ...]:
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: expected a JSON list of strings, got {raw[:80]!r}", field=source) from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: expected a JSON list of strings, got {raw[:80]!r}", field=source)
    return tuple(value)


def load_authentication_config(api: kube_client.ApiClient) -> AuthenticationConfig:
    """Read ``kube-system/extension-apiserver-authentication`` (needs the
    ``extension-apiserver-authentication-reader`` Role)."""
    try:
        cm = kube_client.CoreV1Api(api).read_namespaced_config_map(AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE)
    except ApiException as exc:
        raise ConfigError(f"{_CONFIGMAP}: cannot read: HTTP {exc.status}: {str(exc.body)[:_BODY_LIMIT]}",
                          field="authentication") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # no answer at all (connection refused, timeout)
        raise ConfigError(f"{_CONFIGMAP}: cannot read: {exc}", field="authentication") from exc
    return authentication_config_from_configmap(cm.data or {})


def authentication_config_from_configmap(data: Mapping[str, str]) -> AuthenticationConfig:
    """Parse the data of ``extension-apiserver-authentication`` as the kube-apiserver writes it: PEM bundles
    and JSON lists of strings."""
    client_cas: tuple[x509.Certificate, ...] = ()
    if data.get("client-ca-file"):
        client_cas = _load_pem_bundle(data["client-ca-file"].encode(), source=f"{_CONFIGMAP}: client-ca-file")
    request_header = None
    if data.get("requestheader-client-ca-file"):

        def listed(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            return _json_list(data.get(key), source=f"{_CONFIGMAP}: {key}") if key in data else default

        request_header = RequestHeaderConfig(
            client_cas=_load_pem_bundle(data["requestheader-client-ca-file"].encode(),
                                        source=f"{_CONFIGMAP}: requestheader-client-ca-file"),
            allowed_names=listed("requestheader-allowed-names", ()),
            username_headers=listed("requestheader-username-headers", ("X-Remote-User",)),
            uid_headers=listed("requestheader-uid-headers", ()),
            group_headers=listed("requestheader-group-headers", ("X-Remote-Group",)),
            extra_headers_prefixes=listed("requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
        )
    return AuthenticationConfig(client_cas=client_cas, request_header=request_header)


def authentication_config_from_files(*, requestheader_ca: Path | None = None,
                                     allowed_names: Sequence[str] = (),
                                     client_ca: Path | None = None) -> AuthenticationConfig:
    def read(path: Path, what: str) -> tuple[x509.Certificate, ...]:
        try:
            return _load_pem_bundle(path.read_bytes(), source=f"{what} {path}")
        except OSError as exc:
            raise ConfigError(f"{what} {path}: cannot read: {exc}", field=what) from exc

    request_header = None
    if requestheader_ca is not None:
        request_header = RequestHeaderConfig(client_cas=read(requestheader_ca, "requestheader-client-ca-file"),
                                             allowed_names=tuple(allowed_names))
    return AuthenticationConfig(client_cas=read(client_ca, "client-ca-file") if client_ca else (),
                                request_header=request_header)


# -- authenticators --------------------------------------------------------------------------------------


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


@functools.lru_cache(maxsize=256)
def _issuer_index(der: bytes, cas: tuple[x509.Certificate, ...]) -> tuple[int, str, tuple[str, ...]] | None:
    """(index of the CA that issued the certificate, its CN, its O's), or None; cached per certificate
    because a keep-alive connection presents the same one on every request and a signature check costs."""
    cert = x509.load_der_x509_certificate(der)
    for index, ca in enumerate(cas):
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):  # another issuer, or another key type
            continue
        orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        return index, _common_name(cert), orgs
    return None


class RequestHeaderAuthenticator:
    def __init__(self, config: RequestHeaderConfig) -> None:
        self._config = config

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        issued = _issuer_index(credentials.peer_cert_der, self._config.client_cas) \
            if credentials.peer_cert_der else None
        if issued is None:
            return None
        cn = issued[1]
        if self._config.allowed_names and cn not in self._config.allowed_names:
            raise Unauthenticated(f"front-proxy client certificate CN {cn!r} is not an allowed name")
        name = next((v for h in self._config.username_headers for v in credentials.header(h) if v), "")
        if not name:
            return None  # a proxy request without a user: fall through (and end unauthenticated)
        uid = next((v for h in self._config.uid_headers for v in credentials.header(h) if v), "")
        groups = tuple(v for h in self._config.group_headers for v in credentials.header(h))
        extra: dict[str, list[str]] = {}
        for prefix in self._config.extra_headers_prefixes:
            low = prefix.lower()
            for key, value in credentials.headers:
                if key.lower().startswith(low) and len(key) > len(prefix):
                    extra.setdefault(urllib.parse.unquote(key[len(prefix):].lower()), []).append(value)
        return UserInfo(name=name, uid=uid, groups=groups, extra={k: tuple(v) for k, v in extra.items()})


class ClientCertAuthenticator:
    def __init__(self, client_cas: Sequence[x509.Certificate]) -> None:
        self._cas = tuple(client_cas)

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        issued = _issuer_index(credentials.peer_cert_der, self._cas) if credentials.peer_cert_der else None
        if issued is None:
            return None
        return UserInfo(name=issued[1], groups=issued[2])


class TrustedCertAuthenticator:
    """Request-header, then client-certificate authentication under one :class:`AuthenticationConfig`, which
    :meth:`update` replaces atomically (one reference swapped; readers take no lock)."""

    def __init__(self, config: AuthenticationConfig) -> None:
        self._state = self._build(config)

    @staticmethod
    def _build(config: AuthenticationConfig) -> tuple[AuthenticationConfig, tuple[Authenticator, ...]]:
        authenticators: list[Authenticator] = []
        if config.request_header is not None:
            authenticators.append(RequestHeaderAuthenticator(config.request_header))
        if config.client_cas:
            authenticators.append(ClientCertAuthenticator(config.client_cas))
        return config, tuple(authenticators)

    @property
    def config(self) -> AuthenticationConfig:
        return self._state[0]

    def update(self, config: AuthenticationConfig) -> bool:
        """Use ``config`` from the next request on; False when it is the one in use already."""
        if config == self._state[0]:
            return False
        self._state = self._build(config)
        return True

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        for authenticator in self._state[1]:
            user = authenticator.authenticate(credentials)
            if user is not None:
                return user
        return None


class _TTLCache:
    """A small thread-safe cache whose entries expire; oldest evicted first when full."""

    def __init__(self, *, clock: Callable[[], float], size: int = _CACHE_SIZE) -> None:
        self._clock = clock
        self._size = size
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._data[key]
                return None
            return hit[1]

    def put(self, key: Any, value: Any, *, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class TokenReviewAuthenticator:
    def __init__(self, api: kube_client.ApiClient, *, ttl_s: float = _CACHE_TTL_S,
                 clock: Callable[[], float] = time.monotonic, audiences: Sequence[str] = ()) -> None:
        self._api = kube_client.AuthenticationV1Api(api)
        self._ttl_s = ttl_s
        self._audiences = list(audiences) or None
        self._cache = _TTLCache(clock=clock)
        self.reviews = 0  # TokenReviews sent, for tests and benchmarks

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        header = next(iter(credentials.header("Authorization")), "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        key = hashlib.sha256(token.strip().encode()).hexdigest()  # never keep tokens themselves
        cached = self._cache.get(key)
        if cached is None:
            cached = self._review(token.strip())
            self._cache.put(key, cached, ttl_s=self._ttl_s)
        if isinstance(cached, UserInfo):
            return cached
        raise Unauthenticated(f"bearer token rejected: {cached}")

    def _review(self, token: str) -> UserInfo | str:
        body = kube_client.V1TokenReview(spec=kube_client.V1TokenReviewSpec(token=token, audiences=self._audiences))
        self.reviews += 1
        try:
            result = self._api.create_token_review(body)
        except ApiException as exc:
            raise AuthError(f"TokenReview failed: HTTP {exc.status}: {str(exc.body)[:_BODY_LIMIT]}") from exc
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            return (status.error if status is not None and status.error else "not authenticated")
        user = status.user
        return UserInfo(name=user.username or "", uid=user.uid or "", groups=tuple(user.groups or ()),
                        extra={k: tuple(v) for k, v in (user.extra or {}).items()})


class UnionAuthenticator:
    """The first authenticator that recognises the credentials wins. Every authenticated user gets the group
    ``system:authenticated``, as the generic apiserver adds it (RBAC grants discovery to that group)."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self._authenticators = tuple(authenticators)

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        for authenticator in self._authenticators:
            user = authenticator.authenticate(credentials)
            if user is not None:
                if AUTHENTICATED_GROUP in user.groups:
                    return user
                return dataclasses.replace(user, groups=(*user.groups, AUTHENTICATED_GROUP))
        return None


# -- authorisers -----------------------------------------------------------------------------------------


class AlwaysAllowAuthorizer:
    """Local runs only (``--insecure-allow-all``): every authenticated caller may do everything."""

    def authorize(self, attributes: Attributes) -> tuple[bool, str]:
        return True, "always allow"


class PrivilegedGroupAuthorizer:
    """Members of ``groups`` are allowed without a round trip; everyone else is asked of ``fallback``."""

    def __init__(self, fallback: Authorizer, *, groups: Sequence[str] = ("system:masters",)) -> None:
        self._fallback = fallback
        self._groups = frozenset(groups)

    def authorize(self, attributes: Attributes) -> tuple[bool, str]:
        if self._groups.intersection(attributes.user.groups):
            return True, "privileged group"
        return self._fallback.authorize(attributes)


class SubjectAccessReviewAuthorizer:
    def __init__(self, api: kube_client.ApiClient, *, allowed_ttl_s: float = _CACHE_TTL_S,
                 denied_ttl_s: float = _CACHE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = kube_client.AuthorizationV1Api(api)
        self._allowed_ttl_s = allowed_ttl_s
        self._denied_ttl_s = denied_ttl_s
        self._cache = _TTLCache(clock=clock)
        self.reviews = 0  # SubjectAccessReviews sent, for tests and benchmarks

    def authorize(self, attributes: Attributes) -> tuple[bool, str]:
        key = (attributes.user.cache_key(), attributes.verb, attributes.namespace, attributes.group,
               attributes.version, attributes.resource, attributes.path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        answer = self._review(attributes)
        self._cache.put(key, answer, ttl_s=self._allowed_ttl_s if answer[0] else self._denied_ttl_s)
        return answer

    def _review(self, a: Attributes) -> tuple[bool, str]:
        spec = kube_client.V1SubjectAccessReviewSpec(
            user=a.user.name, uid=a.user.uid or None, groups=list(a.user.groups) or None,
            extra={k: list(v) for k, v in a.user.extra.items()} or None,
        )
        if a.resource_request:
            spec.resource_attributes = kube_client.V1ResourceAttributes(
                namespace=a.namespace or None, verb=a.verb, group=a.group, version=a.version, resource=a.resource)
        else:
            spec.non_resource_attributes = kube_client.V1NonResourceAttributes(path=a.path, verb=a.verb)
        self.reviews += 1
        try:
            result = self._api.create_subject_access_review(kube_client.V1SubjectAccessReview(spec=spec))
        except ApiException as exc:
            raise AuthorizationFailed(
                f"SubjectAccessReview failed: HTTP {exc.status}: {str(exc.body)[:_BODY_LIMIT]}") from exc
        status = result.status
        allowed = bool(status and status.allowed and not status.denied)
        return allowed, (status.reason or status.evaluation_error or "") if status else ""
