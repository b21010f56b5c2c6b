"""Hot reload that keeps the last good policy.

The controller calls :meth:`PolicyStore.reload` (every cycle, or on a file-watch event); a file that fails
to parse or validate leaves the policy in effect untouched and the error is kept for status and logs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from autoscaler.core.policyset import PolicySet
from autoscaler.errors import ConfigError
from autoscaler.policy.loader import fingerprint, load_policy
from autoscaler.scaling_settings import Layers

__all__ = ["PolicyStore", "require_gateway_for_scale_to_zero"]


class PolicyStore:
    """The policy in effect, loaded from a file or a directory.

    >>> store = PolicyStore(Path("policies/default.yaml"))  # doctest: +SKIP
    >>> store.reload(), store.current.source, store.error  # doctest: +SKIP
    (True, 'policies/default.yaml', None)
    """

    def __init__(self, source: Path, *, initial: PolicySet | None = None,
                 check: Callable[[PolicySet], None] | None = None, base: Layers | None = None) -> None:
        """``check``: a rule of the deployment a policy must also meet (raises ConfigError), e.g. no
        scale-to-zero without a gateway signal; a policy that fails it is refused like a bad file. ``base``:
        the settings' behaviour, saturation and SLO, which the file's fields override one by one."""
        self._source = Path(source)
        self._base = base
        self._check = check
        self._current = initial if initial is not None else PolicySet(source="built-in defaults")
        self._error: ConfigError | None = None
        self._version: str | None = None  # fingerprint of the files in effect; None = none loaded yet
        self._lock = threading.Lock()

    @property
    def source(self) -> Path:
        return self._source

    @property
    def current(self) -> PolicySet:
        return self._current

    @property
    def error(self) -> ConfigError | None:
        """Why the last reload was refused; None after a good one."""
        return self._error

    @property
    def version(self) -> str | None:
        """Fingerprint of the files in effect (for status); None while only the initial policy is in effect."""
        return self._version

    def reload(self) -> bool:
        """Load the files if they changed. True when the policy in effect is the one on disk; False when the
        disk's policy was refused (the previous one stays, :attr:`error` says why)."""
        with self._lock:
            try:
                version = fingerprint(self._source)
                if version == self._version:
                    self._error = None
                    return True
                policy = load_policy(self._source, base=self._base)
                if self._check is not None:
                    self._check(policy)
            except ConfigError as exc:
                self._error = exc
                return False
            except OSError as exc:  # a file vanished between listing and reading (ConfigMap swap)
                self._error = ConfigError(f"{self._source}: {exc}", field="policy")
                return False
            self._current, self._version, self._error = policy, version, None
            return True


def require_gateway_for_scale_to_zero(gateway_metric: str | None) -> Callable[[PolicySet], None]:
    """The check that refuses ``scale_to_zero`` when no gateway queue metric is configured: at zero replicas
    vLLM exports nothing, so only the gateway's queue can show that requests wait for the variant."""
    def check(policy: PolicySet) -> None:
        if gateway_metric:
            return
        for model in policy.models:
            for variant in model.variants:
                if variant.scale_to_zero:
                    raise ConfigError(
                        f"{policy.source or 'policy'}: model {model.model}, variant {variant.role.value}/"
                        f"{variant.accelerator}: scale_to_zero needs prometheus.gateway_queue_metric "
                        f"(e.g. inference_extension_flow_control_queue_size): at zero replicas vLLM exports "
                        f"nothing, so without the gateway's queue the variant could never scale back up",
                        field="prometheus.gateway_queue_metric")
    return check
