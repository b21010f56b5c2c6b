"""One raw JSON request through a kubernetes ``ApiClient`` (auth, TLS and pooling as configured there).

For paths the generated API classes do not cover well: the scale subresource of an arbitrary kind, discovery
of one group-version. Non-2xx answers raise ``ApiException`` as the generated methods do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

__all__ = ["request_json"]


def request_json(api: client.ApiClient, method: str, path: str, *, body: Any = None,
                 content_type: str | None = None, query: Mapping[str, str] | None = None,
                 timeout_s: float | None = None) -> Any:
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(method, path, query_params=list((query or {}).items()) or None,
                                     header_params=headers, body=body, auth_settings=["BearerToken"])
    response = api.call_api(*serialized, _request_timeout=timeout_s)
    response.read()  # type: ignore[no-untyped-call]
    return api.response_deserialize(response, {"2XX": "object"}).data
