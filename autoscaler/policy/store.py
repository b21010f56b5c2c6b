"""Hot reload that keeps the last good policy.

The controller calls :meth:`PolicyStore.reload` (every cycle, or on a file-watch event); a file that fails
to parse or validate leaves the policy in effect untouched and the error is kept for status and logs.
"""

from __future__ import annotations

import threading
from pathlib import Path

from autoscaler.core.policyset import PolicySet
from autoscaler.errors import ConfigError
from autoscaler.policy.loader import fingerprint, load_policy

__all__ = ["PolicyStore"]


class PolicyStore:
    """The policy in effect, loaded from a file or a directory.

    >>> store = PolicyStore(Path("policies/default.yaml"))  # doctest: +SKIP
    >>> store.reload(), store.current.source, store.error  # doctest: +SKIP
    (True, 'policies/default.yaml', None)
    """

    def __init__(self, source: Path, *, initial: PolicySet | None = None) -> None:
        self._source = Path(source)
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
                policy = load_policy(self._source)
            except ConfigError as exc:
                self._error = exc
                return False
            except OSError as exc:  # a file vanished between listing and reading (ConfigMap swap)
                self._error = ConfigError(f"{self._source}: {exc}", field="policy")
                return False
            self._current, self._version, self._error = policy, version, None
            return True
