"""A real Prometheus server on loopback, scraping targets listed in a ``file_sd`` file.

Used by the integration tests and the local demo. It scrapes and evaluates every second so tests see a value
within about two seconds of the emulator producing it.

    with PrometheusServer(file_sd_path=path) as prom:
        prom.wait_for_series("vllm:num_requests_waiting", timeout_s=10)
        prom.query('sum by (namespace) (vllm:num_requests_waiting)')
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from autoscaler.errors import StackError
from autoscaler.localstack.ports import free_port

__all__ = ["INSTALL_COMMAND", "PrometheusServer", "ensure_installed", "find_binary"]

INSTALL_COMMAND = "apt-get install -y --no-install-recommends prometheus"
_KNOWN_PATHS = ("/usr/bin/prometheus", "/usr/local/bin/prometheus")

Sample = dict[str, Any]  # one element of an instant query's "result": {"metric": {...}, "value": [t, "v"]}


def find_binary() -> str | None:
    """The ``prometheus`` executable on PATH or where the Debian package puts it, else ``None``."""
    found = shutil.which("prometheus")
    if found:
        return found
    return next((p for p in _KNOWN_PATHS if os.access(p, os.X_OK)), None)


def ensure_installed() -> str:
    """Path of ``prometheus``; installs the Debian package when missing and we are root."""
    found = find_binary()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise StackError(f"prometheus is not installed; run as root: {INSTALL_COMMAND}")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise StackError(f"installing prometheus failed ({INSTALL_COMMAND}): {detail[-2000:]}") from exc
    found = find_binary()
    if not found:
        raise StackError(f"prometheus still not found after: {INSTALL_COMMAND}")
    return found


class PrometheusServer:
    """Runs ``prometheus`` with a temporary config and TSDB; everything is removed on :meth:`stop`."""

    def __init__(
        self,
        *,
        file_sd_path: Path,
        binary: str | None = None,
        job: str = "vllm",
        scrape_interval_s: float = 1.0,
        startup_timeout_s: float = 30.0,
        rule_files: Sequence[Path] = (),
    ) -> None:
        self.file_sd_path = Path(file_sd_path).resolve()
        self.rule_files = tuple(Path(p).resolve() for p in rule_files)  # e.g. autoscaler.signals.rules.rule_file
        self.binary = binary
        self.job = job
        self.scrape_interval_s = scrape_interval_s
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding config, TSDB and log while running."""
        return self._dir

    @property
    def url(self) -> str:
        if self.port is None:
            raise StackError("prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._proc is not None:
            raise StackError("prometheus already started")
        binary = self.binary or ensure_installed()
        self._dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        try:
            config = self._dir / "prometheus.yml"
            config.write_text(json.dumps(self._config(), indent=1), encoding="utf-8")  # JSON is YAML
            if not self.file_sd_path.exists():  # Prometheus wants the file; an empty list is a valid one
                self.file_sd_path.parent.mkdir(parents=True, exist_ok=True)
                self.file_sd_path.write_text("[]", encoding="utf-8")
            for attempt in range(3):  # the free port may be taken before Prometheus binds it
                self.port = free_port()
                if self._launch(binary, config):
                    return
                if "address already in use" not in self.log_tail().lower() or attempt == 2:
                    raise StackError(f"prometheus did not become ready on {self.url}:\n{self.log_tail()}")
                self._terminate()
        except BaseException:
            self.stop()
            raise

    def _config(self) -> dict[str, Any]:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        return {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "file_sd_configs": [{"files": [str(self.file_sd_path)], "refresh_interval": "1s"}],
                }
            ],
        }

    def _launch(self, binary: str, config: Path) -> bool:
        """Start the process and wait for /-/ready; False when it exited early."""
        assert self._dir is not None
        data = self._dir / "data"
        if self._log is not None:
            self._log.close()
        self._log = open(self._dir / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise StackError(
            f"prometheus not ready after {self.startup_timeout_s}s on {self.url}:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """Stop the process and delete the config, TSDB and log. Safe to call twice."""
        self._terminate()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.port = None

    def log_tail(self, lines: int = 40) -> str:
        if self._dir is None or not (self._dir / "prometheus.log").exists():
            return "(no log)"
        if self._log is not None:
            self._log.flush()
        text = (self._dir / "prometheus.log").read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ queries

    def _api(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise StackError(f"prometheus {path} {params}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"prometheus {path} unreachable: {exc}\n{self.log_tail(10)}") from exc
        if body.get("status") != "success":
            raise StackError(f"prometheus {path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str, *, at: float | None = None) -> list[Sample]:
        """Instant query at ``at`` (default: the current time); the vector's samples (a scalar comes back as one
        sample, a range selector as its series with their raw ``values``)."""
        data = self._api("/api/v1/query", {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[Sample] = data["result"]
        return result

    def query_values(self, promql: str, *, by: str | None = None) -> dict[str, float]:
        """``{label value of by: sample value}`` (key ``""`` when ``by`` is None and one sample comes back)."""
        return {(s["metric"].get(by, "") if by else ""): float(s["value"][1]) for s in self.query(promql)}

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (``/api/v1/targets``)."""
        active: list[dict[str, Any]] = self._api("/api/v1/targets", {"state": "active"})["activeTargets"]
        return active

    def wait_for_series(
        self,
        promql: str,
        *,
        timeout_s: float = 15.0,
        until: Callable[[list[Sample]], bool] = bool,
        poll_s: float = 0.2,
    ) -> list[Sample]:
        """Query until ``until(result)`` holds (default: any sample), then return the result.

        Raises :class:`StackError` with the last result and the log tail on timeout.
        """
        deadline = time.monotonic() + timeout_s
        result: list[Sample] = []
        while True:
            result = self.query(promql)
            if until(result):
                return result
            if time.monotonic() >= deadline:
                raise StackError(
                    f"no satisfying result for {promql!r} within {timeout_s}s; last: {result}\n"
                    f"{self.log_tail(10)}"
                )
            time.sleep(poll_s)
