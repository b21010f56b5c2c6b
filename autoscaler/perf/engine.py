"""Time-stepped model of ONE vLLM replica with continuous batching, driven by a :class:`PerformanceProfile`.

The live emulator and the trace-driven simulator both run this model. It is pure: no I/O, no clock; time is
the engine's own and moves only in :meth:`Engine.advance`.

What one engine iteration does (modelled on vLLM v1's scheduler):

1. every decoding sequence gets one token (the decode step), and the token budget left over
   (``max_num_batched_tokens`` minus the decode tokens) goes to prompt chunks (chunked prefill), first to
   sequences already prefilling, then to waiting requests admitted while ``max_num_seqs`` and free KV blocks
   allow;
2. the iteration lasts ``profile.decode_step_time(B, mean context)`` plus the prefill time of its chunks
   (the profile's ``a + b*N`` plus attention counted per sequence, see :meth:`Engine._prefill_time`), less one
   fixed cost when both phases share the pass (the weights are read once);
3. when the KV cache cannot hold one more token for every decoding sequence, the newest sequence is preempted
   (recompute mode: its blocks are freed, it goes back to the front of the queue, and its prompt plus the
   tokens generated so far are prefilled again on re-admission).

Simplifications, chosen for speed and said out loud: blocks for a whole prompt are reserved at admission
(vLLM v1 reserves per chunk); an iteration that starts before the end of :meth:`Engine.advance`'s window runs
to its end, so the engine clock may run up to one iteration ahead of the window; while the batch does not
change (no prefill, nobody admissible, no arrival, no completion) whole runs of decode steps are advanced in
closed form instead of one by one.

Roles: ``prefill`` finishes a request after its first token (its KV goes to a decode pool); ``decode`` gets
requests whose prompt was prefilled elsewhere (context = prompt length) and only decodes; ``both`` does both.
Token counters follow vLLM: the prompt length is counted once, when the request's first token appears.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from autoscaler.core.types import Role
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "Completion",
    "Engine",
    "EngineStats",
    "FinishReason",
    "LatencyObservations",
    "Request",
]


class FinishReason(StrEnum):
    """vLLM's ``finished_reason`` label values for requests that completed."""

    STOP = "stop"  # the model ended the sequence (our sampled output length was reached)
    LENGTH = "length"  # max_tokens reached; a prefill-only engine runs with max_tokens=1


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request. ``arrival_s`` is in the engine's clock; a future arrival waits until then.

    >>> Request(id=7, prompt_tokens=512, output_tokens=128, arrival_s=0.0)
    Request(id=7, prompt_tokens=512, output_tokens=128, arrival_s=0.0)
    """

    id: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.id}: prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.output_tokens < 1:
            raise ValueError(f"request {self.id}: output_tokens must be >= 1, got {self.output_tokens}")
        if not math.isfinite(self.arrival_s):
            raise ValueError(f"request {self.id}: arrival_s must be finite, got {self.arrival_s}")


@dataclass(frozen=True, slots=True)
class Completion:
    """A request this engine finished, with its timings in the engine's clock."""

    request: Request
    first_token_s: float
    finish_s: float
    generated_tokens: int
    finished_reason: FinishReason
    preemptions: int

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.request.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.request.arrival_s

    @property
    def time_per_output_token_s(self) -> float:
        """Mean time between output tokens after the first (0 when only one token was generated)."""
        if self.generated_tokens <= 1:
            return 0.0
        return (self.finish_s - self.first_token_s) / (self.generated_tokens - 1)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What the engine's scheduler and counters say at ``now_s``: the source of the vLLM metrics."""

    now_s: float
    waiting: int  # arrived, not admitted (includes preempted requests)
    running: int  # admitted: prefilling or decoding
    kv_usage: float  # 0..1, used KV blocks over all KV blocks
    kv_blocks_used: int
    kv_blocks_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    successes_total: int
    preemptions_total: int
    prefix_cache_queries_total: int  # tokens looked up in the prefix cache
    prefix_cache_hits_total: int  # tokens found there
    iterations_total: int
    busy_s: float  # engine time spent computing; busy_s / elapsed is the utilisation


@dataclass(frozen=True, slots=True)
class LatencyObservations:
    """Latencies observed since the last drain, as vLLM observes them: TTFT once per request at its first
    token, and one inter-token latency per generated token (``itl_count[i]`` tokens took ``itl_s[i]`` each)."""

    ttft_s: np.ndarray
    itl_s: np.ndarray
    itl_count: np.ndarray


class _Seq:
    """Mutable per-request state. Decode progress of decoding sequences lives in the engine's arrays."""

    __slots__ = ("blocks", "first_token_s", "generated", "preemptions", "request", "to_prefill")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.generated = 0
        self.to_prefill = 0
        self.blocks = 0
        self.first_token_s = math.nan
        self.preemptions = 0

    @property
    def context(self) -> int:
        """Tokens whose KV the sequence holds once prefilled: the prompt plus what it generated so far."""
        return self.request.prompt_tokens + self.generated


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class Engine:
    """One vLLM replica. ``submit`` requests, ``advance`` time, read ``snapshot``.

    >>> from autoscaler.perf.profile import PerformanceProfile
    >>> p = PerformanceProfile(name="p", model="m", accelerator="H100", gpus_per_replica=1,
    ...     prefill_a=0.01, prefill_b=1e-4, prefill_c=0.0, decode_alpha=0.01, decode_beta=1e-4,
    ...     decode_gamma=0.0, kv_capacity_tokens=100_000)
    >>> e = Engine(profile=p, role=Role.BOTH)
    >>> e.submit(Request(id=1, prompt_tokens=100, output_tokens=10, arrival_s=0.0))
    >>> [c.generated_tokens for c in e.advance(1.0)]
    [10]
    """

    def __init__(
        self,
        *,
        profile: PerformanceProfile,
        role: Role,
        start_s: float = 0.0,
        block_size: int = 16,
        prefix_cache_hit_rate: float = 0.0,
        record_latencies: bool = False,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not 0.0 <= prefix_cache_hit_rate < 1.0:
            raise ValueError(f"prefix_cache_hit_rate must be in [0, 1), got {prefix_cache_hit_rate}")
        if profile.kv_capacity_tokens < block_size:
            raise ValueError(
                f"profile {profile.name}: kv_capacity_tokens={profile.kv_capacity_tokens} holds no block of "
                f"{block_size} tokens"
            )
        if profile.max_num_seqs < 1 or profile.max_num_batched_tokens < 1:
            raise ValueError(
                f"profile {profile.name}: max_num_seqs and max_num_batched_tokens must be >= 1, got "
                f"{profile.max_num_seqs} and {profile.max_num_batched_tokens}"
            )
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be finite, got {start_s}")
        self.profile = profile
        self.role = Role(role)
        self.block_size = block_size
        self.prefix_cache_hit_rate = prefix_cache_hit_rate
        self.record_latencies = record_latencies
        self._blocks_total = profile.kv_capacity_tokens // block_size

        self._now = start_s  # end of the last iteration (may be past the window)
        self._horizon = start_s  # end of the last advance() window
        self._pending: list[tuple[float, int, Request]] = []  # heap of future arrivals
        self._order = 0  # tie-break in the heap: submission order
        self._waiting: deque[_Seq] = deque()
        self._prefilling: list[_Seq] = []
        # Decoding sequences; parallel arrays hold their KV tokens, tokens still to generate, and generated.
        self._dec: list[_Seq] = []
        self._ctx = np.zeros(0, dtype=np.int64)
        self._left = np.zeros(0, dtype=np.int64)
        self._gen = np.zeros(0, dtype=np.int64)
        self._prefill_blocks = 0  # blocks held by prefilling sequences

        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._successes = 0
        self._preemptions = 0
        self._pc_queries = 0
        self._pc_hits = 0
        self._iterations = 0
        self._busy = 0.0

        self._ttft: list[float] = []
        self._itl_s: list[np.ndarray] = []
        self._itl_n: list[np.ndarray] = []

    # ------------------------------------------------------------------ public API

    @property
    def now_s(self) -> float:
        """The engine clock: the end of the last advance() window, or of the last iteration if later."""
        return max(self._now, self._horizon)

    def submit(self, request: Request) -> None:
        """Queue a request; it joins the waiting queue once the engine clock reaches its arrival."""
        needed = request.prompt_tokens + (1 if self.role is Role.PREFILL else request.output_tokens)
        if _blocks(needed, self.block_size) > self._blocks_total:
            raise ValueError(
                f"request {request.id}: {needed} tokens can never fit in a KV cache of "
                f"{self._blocks_total * self.block_size} tokens (profile {self.profile.name})"
            )
        if request.arrival_s <= self.now_s:
            self._waiting.append(_Seq(request))
            return
        heapq.heappush(self._pending, (request.arrival_s, self._order, request))
        self._order += 1

    def advance(self, dt: float) -> list[Completion]:
        """Simulate ``dt`` seconds and return the requests finished in them, in finishing order."""
        if not (dt >= 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a finite number >= 0, got {dt}")
        horizon = self._horizon + dt
        self._horizon = horizon
        done: list[Completion] = []
        while self._now < horizon:
            self._release_arrivals(self._now)
            if not self._waiting and not self._prefilling and not self._dec:
                next_arrival = self._pending[0][0] if self._pending else math.inf
                self._now = min(max(next_arrival, self._now), horizon)
                continue
            self._iterate(horizon, done)
        self._release_arrivals(self.now_s)
        return done

    def snapshot(self) -> EngineStats:
        used = self._blocks_used()
        return EngineStats(
            now_s=self.now_s,
            waiting=len(self._waiting),
            running=len(self._prefilling) + len(self._dec),
            kv_usage=used / self._blocks_total,
            kv_blocks_used=used,
            kv_blocks_total=self._blocks_total,
            prompt_tokens_total=self._prompt_tokens,
            generation_tokens_total=self._generation_tokens,
            successes_total=self._successes,
            preemptions_total=self._preemptions,
            prefix_cache_queries_total=self._pc_queries,
            prefix_cache_hits_total=self._pc_hits,
            iterations_total=self._iterations,
            busy_s=self._busy,
        )

    def decode_view(self) -> tuple[list[int], list[int], list[int]]:
        """Per decoding sequence its KV tokens and output so far, and the contexts of the requests held here that
        do not decode yet (waiting, preempted, not arrived): what a router reads of a decode pod."""
        waiting = [seq.context for seq in self._waiting] + [request.prompt_tokens for _, _, request in self._pending]
        return self._ctx.tolist(), self._gen.tolist(), waiting

    def drain_latencies(self) -> LatencyObservations:
        """Latencies observed since the last call (empty unless ``record_latencies``)."""
        obs = LatencyObservations(
            ttft_s=np.asarray(self._ttft, dtype=np.float64),
            itl_s=np.concatenate(self._itl_s) if self._itl_s else np.zeros(0),
            itl_count=np.concatenate(self._itl_n) if self._itl_n else np.zeros(0, dtype=np.int64),
        )
        self._ttft, self._itl_s, self._itl_n = [], [], []
        return obs

    def evict_all(self) -> list[Request]:
        """Take every unfinished request out (the pod is going away), oldest arrival first.

        Their progress is lost, as when a client retries a request on another replica.
        """
        seqs = [*self._waiting, *self._prefilling, *self._dec]
        requests = sorted((s.request for s in seqs), key=lambda r: r.arrival_s)
        requests += [r for _, _, r in sorted(self._pending)]
        self._pending.clear()
        self._waiting.clear()
        self._prefilling.clear()
        empty = np.zeros(0, dtype=np.int64)
        self._set_decode([], empty, empty.copy(), empty.copy())
        self._prefill_blocks = 0
        return requests

    # ------------------------------------------------------------------ scheduling

    def _release_arrivals(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            self._waiting.append(_Seq(heapq.heappop(self._pending)[2]))

    def _blocks_used(self) -> int:
        return self._prefill_blocks + int(((self._ctx + self.block_size - 1) // self.block_size).sum())

    def _blocks_next_step(self) -> int:
        """Blocks held once every decoding sequence has stored one more token."""
        return self._prefill_blocks + int(((self._ctx + self.block_size) // self.block_size).sum())

    def _admit_cost(self, seq: _Seq) -> int:
        # A decode-only engine stores the received context plus the token its first step writes; an aggregated
        # one holds the token its prefill produces as soon as the sequence joins the decode batch. (Reserving
        # only the context let a re-admitted, preempted sequence overflow the cache by a block at that moment.)
        extra = 0 if self.role is Role.PREFILL else 1
        return _blocks(seq.context + extra, self.block_size)

    def _can_admit(self) -> bool:
        if not self._waiting:
            return False
        if len(self._prefilling) + len(self._dec) >= self.profile.max_num_seqs:
            return False
        return self._blocks_next_step() + self._admit_cost(self._waiting[0]) <= self._blocks_total

    def _set_decode(self, seqs: list[_Seq], ctx: np.ndarray, left: np.ndarray, gen: np.ndarray) -> None:
        self._dec, self._ctx, self._left, self._gen = seqs, ctx, left, gen

    def _append_decode(self, seq: _Seq) -> None:
        self._append_decode_many([seq])

    def _append_decode_many(self, seqs: list[_Seq]) -> None:
        if not seqs:
            return
        self._dec.extend(seqs)
        self._ctx = np.concatenate((self._ctx, np.fromiter((s.context for s in seqs), np.int64, len(seqs))))
        self._left = np.concatenate((self._left, np.fromiter(
            (s.request.output_tokens - s.generated for s in seqs), np.int64, len(seqs))))
        self._gen = np.concatenate((self._gen, np.fromiter((s.generated for s in seqs), np.int64, len(seqs))))

    def _preempt_one(self) -> None:
        """Preempt the newest sequence (vLLM v1 pops the tail of its running list); back to the queue front."""
        if self._prefilling:
            seq = self._prefilling.pop()
            self._prefill_blocks -= seq.blocks
        else:
            seq = self._dec[-1]
            seq.generated = int(self._gen[-1])
            self._set_decode(self._dec[:-1], self._ctx[:-1], self._left[:-1], self._gen[:-1])
        seq.blocks = 0
        seq.preemptions += 1
        self._preemptions += 1
        self._waiting.appendleft(seq)

    def _make_room_for_decode(self) -> None:
        """Preempt until every decoding sequence can store one more token."""
        while self._dec and self._blocks_next_step() > self._blocks_total:
            self._preempt_one()

    def _admit_head(self) -> _Seq:
        seq = self._waiting.popleft()
        seq.blocks = self._admit_cost(seq)
        if self.role is Role.DECODE:
            seq.blocks = 0  # held in the decode arrays instead
            self._append_decode(seq)
            return seq
        seq.to_prefill = seq.context
        if seq.generated == 0 and self.prefix_cache_hit_rate > 0:
            # vLLM counts queried and hit tokens; hits are whole blocks and the last token is always computed.
            prompt = seq.request.prompt_tokens
            hits = min(int(prompt * self.prefix_cache_hit_rate) // self.block_size * self.block_size, prompt - 1)
            self._pc_queries += prompt
            self._pc_hits += hits
            seq.to_prefill -= hits
        self._prefill_blocks += seq.blocks
        self._prefilling.append(seq)
        return seq

    def _admit_decode_only(self) -> None:
        """Admit waiting requests in order while seats and KV blocks allow (what ``_can_admit`` checks one by
        one, with the blocks counted once and kept up to date as requests are admitted)."""
        if not self._waiting:
            return
        seats = self.profile.max_num_seqs - len(self._prefilling) - len(self._dec)
        if seats <= 0:
            return
        used = self._blocks_next_step()
        admitted: list[_Seq] = []
        while self._waiting and seats > 0:
            seq = self._waiting[0]
            cost = self._admit_cost(seq)  # = its blocks once it stores one more token
            if used + cost > self._blocks_total:
                break
            self._waiting.popleft()
            seq.blocks = 0  # held in the decode arrays instead
            admitted.append(seq)
            used += cost
            seats -= 1
        self._append_decode_many(admitted)

    def _iterate(self, horizon: float, done: list[Completion]) -> None:
        self._make_room_for_decode()
        if self.role is Role.DECODE:
            self._admit_decode_only()
        batch = len(self._dec)
        budget = self.profile.max_num_batched_tokens - batch

        prefill_busy = bool(self._prefilling) or (self.role is not Role.DECODE and self._can_admit())
        # A decode-only engine's new requests (nothing generated yet) start within a run: their first token
        # is timed at the end of the run's first step.
        fresh_ok = self.role is Role.DECODE or bool(self._gen.min() > 0) if batch else False
        if batch and (not prefill_busy or budget <= 0) and fresh_ok:
            self._decode_run(horizon, done)
            return

        # One mixed iteration: prompt chunks first-come first-served, then new admissions, within the budget.
        chunks: list[tuple[_Seq, int]] = []
        if self.role is not Role.DECODE:
            for seq in self._prefilling:
                if budget <= 0:
                    break
                take = min(seq.to_prefill, budget)
                chunks.append((seq, take))
                budget -= take
            while budget > 0 and self._can_admit():
                seq = self._admit_head()
                take = min(seq.to_prefill, budget)
                chunks.append((seq, take))
                budget -= take
        chunk_tokens = sum(take for _, take in chunks)
        mean_ctx = float(self._ctx.sum()) / batch if batch else 0.0  # ints: the sum is exact, as mean's
        step = self.profile.decode_step_time(batch, mean_ctx) + self._prefill_time(chunks, chunk_tokens)
        if batch and chunk_tokens:  # one forward pass: the weights are read once, not once per phase
            step -= min(self.profile.prefill_a, self.profile.decode_alpha)
        if step <= 0:
            raise ValueError(f"profile {self.profile.name}: an iteration with work must take time, got {step}")
        self._now += step
        self._busy += step
        self._iterations += 1
        now = self._now

        if batch:
            self._decode_tokens(1, np.array([step]), done)
        for seq, take in chunks:
            seq.to_prefill -= take
        finished_prefill = [s for s in self._prefilling if s.to_prefill == 0]
        if finished_prefill:
            self._prefilling = [s for s in self._prefilling if s.to_prefill > 0]
            for seq in finished_prefill:
                self._prefill_blocks -= seq.blocks
                seq.blocks = 0
                self._first_token_or_next(seq, now)
                seq.generated += 1
                self._generation_tokens += 1
                if self.role is Role.PREFILL:
                    self._finish(seq, now, FinishReason.LENGTH, done)
                elif seq.generated >= seq.request.output_tokens:
                    self._finish(seq, now, FinishReason.STOP, done)
                else:
                    self._append_decode(seq)

    def _prefill_time(self, chunks: list[tuple[_Seq, int]], tokens: int) -> float:
        """Prompt chunks of several sequences in one pass: ``a + b*tokens + c*attention``.

        Attention is per sequence: a chunk of ``m`` tokens after ``p`` computed ones costs ``(p+m)^2 - p^2``,
        so one unchunked prompt of ``N`` tokens costs ``profile.prefill_time(N)`` exactly, a prompt split into
        chunks costs its quadratic term once, and prompts batched together do not attend to each other.
        """
        if tokens <= 0:
            return 0.0
        attention = 0
        for seq, take in chunks:
            done = seq.context - seq.to_prefill  # computed before this chunk, prefix-cache hits included
            attention += (done + take) ** 2 - done * done
        p = self.profile
        return p.prefill_a + p.prefill_b * tokens + p.prefill_c * attention

    def _first_token_or_next(self, seq: _Seq, now: float) -> None:
        if seq.generated == 0:
            seq.first_token_s = now
            self._prompt_tokens += seq.request.prompt_tokens
            if self.record_latencies:
                self._ttft.append(now - seq.request.arrival_s)

    def _decode_run(self, horizon: float, done: list[Completion]) -> None:
        """Advance k decode steps in closed form while the batch cannot change.

        k is the number of steps that start before the window ends and before the next arrival (it might be
        admissible), at most until the first sequence finishes and while every sequence can store its tokens.
        Step times grow linearly with the context, so the steps before ``stop`` are estimated in closed form
        and counted exactly on that prefix only; the KV check runs at that k first (the common case).
        """
        batch = len(self._dec)
        k_cap = int(self._left.min())
        mean_ctx = float(self._ctx.sum()) / batch
        base = self.profile.decode_step_time(batch, mean_ctx)
        per_step = self.profile.decode_step_time(batch, mean_ctx + 1.0) - base  # linear in context
        if base <= 0:
            raise ValueError(f"profile {self.profile.name}: a decode step must take time, got {base}")
        # Steps may start only before the window ends and before the next arrival (it might be admissible).
        stop = min(horizon, self._pending[0][0] if self._pending else math.inf)
        bound = k_cap
        if math.isfinite(stop):
            span = max(0.0, stop - self._now)
            # start of step j: j*base + per_step*j*(j-1)/2 <= j*base; so j < span/base + 1 bounds the count
            bound = min(k_cap, int(span / base) + 2)
        times = base + per_step * np.arange(bound, dtype=np.float64)
        starts_before = self._now + np.concatenate(([0.0], np.cumsum(times[:-1])))
        k = max(1, int(np.searchsorted(starts_before, stop, side="left")))
        k = min(k, bound)
        # KV: the largest k' <= k for which every sequence can store k' more tokens (>= 1 after make_room).
        if self._blocks_after(k) > self._blocks_total:
            lo, hi = 1, k
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._blocks_after(mid) <= self._blocks_total:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        times = times[:k]
        elapsed = float(times.sum())
        self._now += elapsed
        self._busy += elapsed
        self._iterations += k
        self._decode_tokens(k, times, done)

    def _blocks_after(self, k: int) -> int:
        """Blocks held once every decoding sequence has stored ``k`` more tokens."""
        return self._prefill_blocks + int(((self._ctx + k + self.block_size - 1) // self.block_size).sum())

    def _decode_tokens(self, k: int, step_times: np.ndarray, done: list[Completion]) -> None:
        """Every decoding sequence generated ``k`` tokens, the j-th taking ``step_times[j]``; finish the done."""
        batch = len(self._dec)
        now = self._now
        # Decode-only role: a request's first local token is its first token, at the end of the first step.
        fresh = np.flatnonzero(self._gen == 0) if self.role is Role.DECODE else np.zeros(0, dtype=np.int64)
        if fresh.size:
            first = now - float(step_times[1:].sum()) if k > 1 else now
            for i in fresh:
                self._first_token_or_next(self._dec[int(i)], first)
        self._ctx += k
        self._left -= k
        self._gen += k
        self._generation_tokens += batch * k
        if self.record_latencies:
            self._itl_s.append(step_times.astype(np.float64, copy=True))
            counts = np.full(k, batch, dtype=np.int64)
            counts[0] -= fresh.size  # a first token has no inter-token latency
            self._itl_n.append(counts)
        finished = self._left <= 0
        if finished.any():
            keep = ~finished
            for i in np.flatnonzero(finished):
                seq = self._dec[int(i)]
                seq.generated = int(self._gen[i])
                self._finish(seq, now, FinishReason.STOP, done)
            self._set_decode(
                [s for s, kept in zip(self._dec, keep.tolist()) if kept],
                self._ctx[keep], self._left[keep], self._gen[keep],
            )

    def _finish(self, seq: _Seq, now: float, reason: FinishReason, done: list[Completion]) -> None:
        self._successes += 1
        done.append(Completion(
            request=seq.request,
            first_token_s=seq.first_token_s,
            finish_s=now,
            generated_tokens=seq.generated,
            finished_reason=reason,
            preemptions=seq.preemptions,
        ))
