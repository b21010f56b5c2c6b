"""Load for real vLLM instances: streamed /v1/completions from client threads, each request as the client saw it.

Closed loop: each of ``concurrency`` threads sends its next request when the last one ends, so the number in
flight is the concurrency; more than ``--max-num-seqs`` of them queue in the engine. Used by the tests marked
``vllm`` and by ``make demo ENGINE=vllm``; it sends traffic only to the loopback instances it is given.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LoadGenerator", "Served", "plain_completion", "stream_completion"]




@dataclass
class Served:
    """One request as the client saw it (wall-clock seconds)."""

    started: float
    first_token: float | None = None
    finished: float | None = None
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)
    aborted: bool = False

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


def stream_completion(url: str, *, model: str, prompt: list[int], max_tokens: int, abort_after: int | None = None,
                      timeout_s: float = 300.0, extra: dict | None = None) -> Served:
    """A streamed /v1/completions request; ``abort_after`` tokens closes the connection early (vLLM aborts it)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                       "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}, **(extra or {})})
    record = Served(started=time.time())
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"completion failed: {response.status} {response.read()[:300]!r}")
        last, chunks = None, 0
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):  # the last chunk (include_usage): the engine's own count
                record.tokens = chunk["usage"]["completion_tokens"]
            if not chunk.get("choices"):
                continue
            # One chunk per engine step that produced a token (its text may be empty: a byte-level token that
            # ends inside a UTF-8 character is held back by the detokenizer).
            now = time.time()
            if record.first_token is None:
                record.first_token = now
            elif last is not None:
                record.gaps.append(now - last)
            last = now
            chunks += 1
            if abort_after is not None and chunks >= abort_after:
                record.aborted = True
                break
        record.finished = time.time()
    finally:
        conn.close()
    return record


def plain_completion(url: str, *, model: str, prompt: list[int], max_tokens: int, timeout_s: float = 300.0) -> Served:
    """A non-streamed /v1/completions request: only its start, end and token count are seen."""
    record = Served(started=time.time())
    request = urllib.request.Request(f"{url}/v1/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                      "temperature": 0.0, "ignore_eos": True}).encode())
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        record.tokens = json.loads(response.read())["usage"]["completion_tokens"]
    record.finished = time.time()
    return record


class LoadGenerator:
    """``concurrency`` client threads, each sending the next request when its last one ends (closed loop).

    ``url`` is one instance's, or a callable giving the instance for the next request (a Service spreading
    requests over the ready pods). ``active()``, when given, is how many of the threads send now: the others
    idle, so the load can rise and fall."""

    def __init__(self, url: str | Callable[[], str | None], *, model: str, concurrency: int, prompt_tokens: int,
                 max_tokens: int, abort_every: int = 0, active: Callable[[], int] | None = None,
                 stream: bool = True) -> None:
        self.url: Callable[[], str | None] = (lambda: url) if isinstance(url, str) else url
        self.model = model
        self.concurrency = concurrency
        self.prompt = [7 + (i % 1000) for i in range(prompt_tokens)]
        self.max_tokens = max_tokens
        self.abort_every = abort_every
        self.active = active
        # Streamed requests measure TTFT and ITL but cost the HTTP front end work per token: on a starved core
        # the front end then queues requests before the engine sees them. Unstreamed, the engine is the queue.
        self.stream = stream
        self.records: list[Served] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count = 0
        self._threads: list[threading.Thread] = []

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            url = self.url()
            if url is None or (self.active is not None and index >= self.active()):
                self._stop.wait(0.2)
                continue
            with self._lock:
                self._count += 1
                n = self._count
            abort = self.abort_every > 0 and n % self.abort_every == 0
            try:
                if self.stream:
                    record = stream_completion(url, model=self.model, prompt=self.prompt,
                                               max_tokens=self.max_tokens, abort_after=2 if abort else None)
                else:
                    record = plain_completion(url, model=self.model, prompt=self.prompt, max_tokens=self.max_tokens)
            except Exception as exc:  # noqa: BLE001 - kept for the caller to report
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.5)
                continue
            with self._lock:
                self.records.append(record)

    def start(self) -> LoadGenerator:
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def served_between(self, t0: float, t1: float) -> list[Served]:
        with self._lock:
            return [r for r in self.records if not r.aborted and r.finished is not None and t0 <= r.finished < t1]
