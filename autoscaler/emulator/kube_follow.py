"""``replicas_of`` for the emulator: the Deployment's ``spec.replicas``, read from the API server.

This is how the emulated pods follow the autoscaler: the autoscaler patches the Deployment's scale, the
emulator reads it back and adds or removes pods.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes.client import ApiClient, AppsV1Api
from kubernetes.client.exceptions import ApiException

from autoscaler.emulator.variant import EmulatedVariant
from autoscaler.errors import StackError

__all__ = ["DeploymentReplicas", "follow_deployments"]


class DeploymentReplicas:
    """Callable ``variant -> spec.replicas``; answers from a cache when asked again within ``min_interval_s``.

    A Deployment that does not exist has 0 replicas; an unset ``spec.replicas`` means 1, as Kubernetes
    defaults it. Other API failures raise :class:`StackError` (the emulator then keeps its last count).
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        min_interval_s: float = 1.0,
        request_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not min_interval_s >= 1.0:
            raise ValueError(f"min_interval_s must be >= 1 (poll at most once a second), got {min_interval_s}")
        self._apps = AppsV1Api(api_client)
        self._min_interval_s = min_interval_s
        self._timeout = request_timeout_s
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, int]] = {}

    def __call__(self, variant: EmulatedVariant) -> int:
        key = variant.key
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._min_interval_s:
            return cached[1]
        try:
            deployment = self._apps.read_namespaced_deployment(
                name=variant.deployment, namespace=variant.namespace, _request_timeout=self._timeout
            )
            replicas = deployment.spec.replicas
            value = 1 if replicas is None else int(replicas)
        except ApiException as exc:
            if exc.status != 404:
                raise StackError(
                    f"reading deployment {variant.namespace}/{variant.deployment}: {exc.status} {exc.reason}"
                ) from exc
            value = 0
        self._cache[key] = (now, value)
        return value


def follow_deployments(api_client: ApiClient, *, min_interval_s: float = 1.0) -> DeploymentReplicas:
    """The ``replicas_of`` to hand to :class:`~autoscaler.emulator.Emulator` to follow real Deployments."""
    return DeploymentReplicas(api_client, min_interval_s=min_interval_s)
