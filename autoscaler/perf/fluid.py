"""Coarse model of ONE disaggregated vLLM replica, for replays of days: the :class:`Engine` interface, per tick.

The per-step :class:`autoscaler.perf.engine.Engine` runs every scheduler iteration (a few per request): exact, but
a two-day trace at four times its load is ~10^7 iterations. :class:`FluidEngine` keeps what decides latency and
what the controller reads, and moves in ticks of any length (the simulator uses its control interval):

- **prefill** (role ``prefill``): a FIFO server. A request's prefill ends at
  ``max(arrival + alone, previous end + queued)`` (Lindley's recursion), where ``alone`` is its time on an idle
  engine (``ceil(N / max_num_batched_tokens)`` fixed costs ``a`` plus ``b*N + c*N^2``) and ``queued`` its time
  behind others, when chunked prefill packs prompts into full batches and the fixed cost is shared
  (``a * N / max_num_batched_tokens + b*N + c*N^2``). Exact for one request at a time; behind a queue the
  per-step engine's iterations end together, the fluid ends one after another (within one iteration's time).
- **decode** (role ``decode``): continuous batching as a fluid. In a tick every sequence decodes at one step time,
  ``decode_step_time(B, C)`` at the tick's time-averaged batch ``B`` and context ``C`` over the time the pod is
  busy (two fixed-point passes); a sequence joins at its arrival (or when a seat frees, seats and KV blocks as
  the engine counts them), its first token one step later, and it finishes after its output tokens' steps. So
  a request's ITL is the step time of the ticks it lived in, its TTFT what the prefill queue, the transfer and
  the first step give.

Not modelled, said out loud: preemption (admission keeps the KV cache within its blocks instead, the counter
stays 0); the growth of contexts within a tick in the KV check; prefill pods' KV limit. The decode step time is
held for a tick, so bursts shorter than a tick are averaged over it. Only the ``prefill`` and ``decode`` roles.
Validated against the per-step engine on the shipped one-hour traces (``tests/core/test_sim_coarse.py``).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque

import numpy as np

from autoscaler.core.types import Role
from autoscaler.perf.engine import Completion, EngineStats, FinishReason, LatencyObservations, Request
from autoscaler.perf.profile import PerformanceProfile

__all__ = ["FluidEngine"]


def _blocks(tokens: float, block_size: int) -> int:
    return -(-math.ceil(tokens) // block_size)


class FluidEngine:
    """One disaggregated vLLM replica (role ``prefill`` or ``decode``) as a fluid; see the module docstring.

    Same public surface as :class:`autoscaler.perf.engine.Engine`: ``submit``, ``advance``, ``snapshot``,
    ``evict_all``, ``drain_latencies``, ``decode_view``, ``now_s``.
    """

    def __init__(self, *, profile: PerformanceProfile, role: Role, start_s: float = 0.0,
                 serve_from_s: float | None = None, block_size: int = 16, record_latencies: bool = False) -> None:
        role = Role(role)
        if role not in (Role.PREFILL, Role.DECODE):
            raise ValueError(f"FluidEngine models a prefill or a decode replica, not role {role.value!r}")
        if profile.kv_capacity_tokens < block_size:
            raise ValueError(f"profile {profile.name}: kv_capacity_tokens={profile.kv_capacity_tokens} holds no "
                             f"block of {block_size} tokens")
        self.profile = profile
        self.role = role
        self.block_size = block_size
        self.record_latencies = record_latencies
        self._blocks_total = profile.kv_capacity_tokens // block_size
        self._horizon = start_s
        self._serve_from = start_s if serve_from_s is None else max(start_s, serve_from_s)
        """The pod is ready (weights loaded) from here: its clock may start earlier, in the tick it gets ready."""
        # prefill: the iterations planned, in order: [start, end, tokens, attention, [(request, last chunk?)]]
        self._iterations_planned: deque[list] = deque()  # type: ignore[type-arg]
        # ... and beside them, for the router's question "prompt tokens done by t" in O(log n): each planned
        # iteration's end (non-decreasing: an iteration starts at or after the previous one's end) and the running
        # sum of the prompts whose last chunk it runs; entries before _head are done (returned by advance).
        self._ends: list[float] = []
        self._done_cum: list[int] = []
        self._head = 0
        self._done_popped = 0  # the running sum at the last iteration returned
        self._outstanding = 0
        # decode: future arrivals (heap), arrived and not admitted, and the decoding sequences
        self._pending: list[tuple[float, int, Request]] = []
        self._order = 0
        self._waiting: deque[Request] = deque()
        self._req: list[Request] = []
        self._ctx = np.zeros(0)
        self._left = np.zeros(0)
        self._gen = np.zeros(0)
        self._first = np.zeros(0)
        self._last_step = 0.0  # the step time of the last tick that decoded: the next tick's first guess
        # counters, as vLLM's
        self._prompt_tokens = 0
        self._generation_tokens = 0.0
        self._successes = 0
        self._iterations = 0.0
        self._busy = 0.0
        self._ttft: list[float] = []
        self._itl_s: list[float] = []
        self._itl_n: list[int] = []

    @property
    def now_s(self) -> float:
        return self._horizon

    # ------------------------------------------------------------------ requests in

    def submit(self, request: Request) -> None:
        if self.role is Role.PREFILL:
            self._plan_prefill(request)
            return
        heapq.heappush(self._pending, (request.arrival_s, self._order, request))
        self._order += 1

    def _plan_prefill(self, request: Request) -> None:
        """Put the prompt's chunks into the iterations it will run in, creating iterations as needed."""
        p, budget = self.profile, self.profile.max_num_batched_tokens
        at, left, done_tokens = max(request.arrival_s, self._horizon, self._serve_from), request.prompt_tokens, 0
        iterations = self._iterations_planned
        self._outstanding += 1
        while left > 0:
            tail = iterations[-1] if iterations else None
            if tail is None or at >= tail[1]:  # the engine is idle by then: an iteration starts at once
                tail = [at, at, 0, 0, []]
                self._new_iteration(tail)
            elif at > tail[0] or tail[2] >= budget:  # the last one runs already (or is full): the next one
                tail = [tail[1], tail[1], 0, 0, []]
                self._new_iteration(tail)
            take = min(left, budget - tail[2])
            tail[2] += take
            tail[3] += (done_tokens + take) ** 2 - done_tokens ** 2  # attention of this chunk, per sequence
            done_tokens += take
            left -= take
            tail[1] = tail[0] + p.prefill_a + p.prefill_b * tail[2] + p.prefill_c * tail[3]
            tail[4].append((request, left == 0))
            self._ends[-1] = tail[1]  # only the newest iteration ever grows
            if left == 0:
                self._done_cum[-1] += request.prompt_tokens
            at = tail[0]  # the next chunk goes in a later iteration

    def _new_iteration(self, iteration: list) -> None:  # type: ignore[type-arg]
        self._iterations_planned.append(iteration)
        self._ends.append(iteration[1])
        self._done_cum.append(self._done_cum[-1] if len(self._done_cum) > self._head else self._done_popped)

    def _pop_iteration(self) -> list:  # type: ignore[type-arg]
        self._done_popped = self._done_cum[self._head]
        self._head += 1
        if self._head >= 1024 and 2 * self._head >= len(self._ends):  # drop what is done, now and then
            del self._ends[:self._head], self._done_cum[:self._head]
            self._head = 0
        return self._iterations_planned.popleft()

    def prefilled_tokens_by(self, t: float) -> int:
        """Prompt tokens of the requests planned to finish by ``t`` and not yet returned by :meth:`advance`: what a
        router that sees completions as they happen (whole prompts, as it counts them) no longer counts as
        outstanding at ``t``, within a tick."""
        k = bisect_right(self._ends, t, self._head)  # iterations done by t: their ends are in order
        return self._done_cum[k - 1] - self._done_popped if k > self._head else 0

    # ------------------------------------------------------------------ time

    def advance(self, dt: float) -> list[Completion]:
        """Simulate ``dt`` seconds; the requests finished in them, in finishing order."""
        if not (dt >= 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a finite number >= 0, got {dt}")
        t0, t1 = self._horizon, self._horizon + dt
        self._horizon = t1
        if dt == 0:
            return []
        return self._prefill_until(t1) if self.role is Role.PREFILL else self._decode(t0, t1)

    def _prefill_until(self, t1: float) -> list[Completion]:
        done: list[Completion] = []
        iterations = self._iterations_planned
        while iterations and iterations[0][1] <= t1:
            start, end, _, _, chunks = self._pop_iteration()
            self._busy += end - start
            self._iterations += 1
            for r, last in chunks:
                if not last:
                    continue
                self._outstanding -= 1
                self._prompt_tokens += r.prompt_tokens
                self._generation_tokens += 1
                self._successes += 1
                if self.record_latencies:
                    self._ttft.append(end - r.arrival_s)
                done.append(Completion(request=r, first_token_s=end, finish_s=end, generated_tokens=1,
                                       finished_reason=FinishReason.LENGTH, preemptions=0))
        return done

    def _admit(self, arrivals: list[Request], t0: float, t1: float,
               step_guess: float) -> tuple[list[Request], list[float], list[Request]]:
        """Requests that join the batch in [t0, t1) and when: waiting ones first (FIFO), then arrivals in order,
        each at its arrival or when a seat and its KV blocks free up (sequences, those joining in the tick too,
        finishing at ``step_guess`` per token)."""
        p, bs = self.profile, self.block_size
        ends = list(zip((t0 + self._left * step_guess).tolist(), [_blocks(c, bs) for c in self._ctx.tolist()],
                        strict=True))
        heapq.heapify(ends)
        seats = p.max_num_seqs - len(self._req)
        blocks = self._blocks_total - sum(b for _, b in ends)
        joined: list[Request] = []
        at: list[float] = []
        for i, r in enumerate(arrivals):
            when = max(r.arrival_s, t0, self._serve_from)
            need = _blocks(r.prompt_tokens + 1, bs)
            while ends and ends[0][0] <= when:  # sequences done by then
                seats += 1
                blocks += heapq.heappop(ends)[1]
            while (seats <= 0 or blocks < need) and ends and ends[0][0] < t1:
                end, freed = heapq.heappop(ends)  # wait for the next sequence to finish
                when = max(when, end)
                seats += 1
                blocks += freed
            if seats <= 0 or blocks < need:
                return joined, at, arrivals[i:]  # FIFO: the rest waits for the next tick
            seats -= 1
            blocks -= need
            joined.append(r)
            at.append(when)
            heapq.heappush(ends, (when + r.output_tokens * step_guess, need))
        return joined, at, []

    def _batch_with(self, joined: list[Request], at: list[float], n_old: int, t0: float,
                    step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start in the tick, context and tokens to go of the sequences decoding now and of those joining."""
        start = np.concatenate((np.full(n_old, t0), np.asarray(at, dtype=np.float64)))
        if joined and (n_old or len(joined) > 1):
            # one joining a running batch waits for the step in progress: half a step on average
            start[n_old + (0 if n_old else 1):] += 0.5 * step
        ctx = np.concatenate((self._ctx[:n_old], np.fromiter((r.prompt_tokens for r in joined), np.float64,
                                                             len(joined))))
        left = np.concatenate((self._left[:n_old], np.fromiter((r.output_tokens for r in joined), np.float64,
                                                               len(joined))))
        return start, ctx, left

    def _step_time(self, start: np.ndarray, ctx: np.ndarray, left: np.ndarray, t0: float, t1: float,
                   guess: float) -> float:
        """The tick's step time: batch and context averaged over the busy time, two fixed-point passes."""
        step = guess
        for _ in range(2):
            end = np.minimum(t1, start + left * step)
            alive = np.maximum(end - start, 0.0)
            total = float(alive.sum())
            busy = min(t1 - t0, float(end.max() - start.min()))
            if total <= 0 or busy <= 0:
                break
            step = self.profile.decode_step_time(total / busy, float((ctx * alive).sum()) / total)
        return step

    def _decode(self, t0: float, t1: float) -> list[Completion]:
        p = self.profile
        n_old = len(self._req)
        arrivals: list[Request] = list(self._waiting)
        self._waiting = deque()
        while self._pending and self._pending[0][0] < t1:
            arrivals.append(heapq.heappop(self._pending)[2])
        if not arrivals and not n_old:
            return []
        # Admission needs the step time (when do seats and blocks free up?) and the step time the batch: plan
        # with last tick's step, solve the step time for that plan, plan again with it.
        guess = self._last_step or p.decode_step_time(max(n_old, 1), float(self._ctx.mean()) if n_old else 0.0)
        for _ in range(2):
            joined, at, rest = self._admit(arrivals, t0, t1, guess)
            start, ctx, left = self._batch_with(joined, at, n_old, t0, guess)
            guess = self._step_time(start, ctx, left, t0, t1, guess)
        self._waiting.extend(rest)
        if not joined and not n_old:
            return []
        if joined:
            self._req += joined
            self._gen = np.concatenate((self._gen, np.zeros(len(joined))))
            self._first = np.concatenate((self._first, np.full(len(joined), np.nan)))
        step = self._last_step = guess
        end = np.maximum(start, np.minimum(t1, start + left * step))  # a join after t1 waits for the next tick
        tokens = np.minimum(left, (end - start) / step)
        fresh = (self._gen == 0) & (tokens > 0)
        self._first = np.where(fresh, start + step, self._first)
        self._gen = self._gen + tokens
        self._ctx = ctx + tokens
        self._left = left - tokens
        made = float(tokens.sum())
        self._generation_tokens += made
        busy = max(0.0, min(t1 - t0, float(end.max() - start.min())))
        self._busy += busy
        self._iterations += busy / step
        if fresh.any():
            self._prompt_tokens += int(ctx[fresh].sum())
            if self.record_latencies:
                self._ttft += (start[fresh] + step - np.fromiter(
                    (self._req[i].arrival_s for i in np.flatnonzero(fresh)), np.float64)).tolist()
        if self.record_latencies:
            self._itl_s.append(step)
            self._itl_n.append(round(made) - int(fresh.sum()))
        finished = self._left <= 1e-6
        done: list[Completion] = []
        if finished.any():
            idx = np.flatnonzero(finished)
            for i, finish in sorted(zip(idx.tolist(), end[idx].tolist(), strict=True), key=lambda x: x[1]):
                r = self._req[i]
                done.append(Completion(request=r, first_token_s=float(self._first[i]), finish_s=finish,
                                       generated_tokens=r.output_tokens, finished_reason=FinishReason.STOP,
                                       preemptions=0))
            self._successes += len(done)
            keep = ~finished
            self._req = [r for r, k in zip(self._req, keep.tolist(), strict=True) if k]
            self._ctx, self._left, self._gen, self._first = (self._ctx[keep], self._left[keep], self._gen[keep],
                                                             self._first[keep])
        return done

    # ------------------------------------------------------------------ what vLLM reports

    def snapshot(self) -> EngineStats:
        now, bs = self._horizon, self.block_size
        if self.role is Role.PREFILL:
            started: dict[int, int] = {}
            for start, _, _, _, chunks in self._iterations_planned:
                if start > now:
                    break
                started.update((r.id, r.prompt_tokens) for r, _ in chunks)
            running = len(started)
            waiting = self._outstanding - running
            used = sum(_blocks(n, bs) for n in started.values())
        else:
            waiting = len(self._waiting) + sum(1 for t, _, _ in self._pending if t <= now)
            running = len(self._req)
            used = int(np.ceil(self._ctx / bs).sum()) if running else 0
        used = min(used, self._blocks_total)
        return EngineStats(
            now_s=now, waiting=waiting, running=running, kv_usage=used / self._blocks_total, kv_blocks_used=used,
            kv_blocks_total=self._blocks_total, prompt_tokens_total=self._prompt_tokens,
            generation_tokens_total=int(self._generation_tokens), successes_total=self._successes,
            preemptions_total=0, prefix_cache_queries_total=0, prefix_cache_hits_total=0,
            iterations_total=int(self._iterations), busy_s=self._busy)

    def decode_view(self) -> tuple[list[int], list[int], list[int]]:
        """Per decoding sequence its KV tokens and output so far, and the contexts of requests routed here that
        do not decode yet: what a router reads of a decode pod."""
        contexts = [int(c) for c in self._ctx.tolist()]
        generated = [int(g) for g in self._gen.tolist()]
        waiting = [r.prompt_tokens for r in self._waiting] + [r.prompt_tokens for _, _, r in self._pending]
        return contexts, generated, waiting

    def drain_latencies(self) -> LatencyObservations:
        obs = LatencyObservations(ttft_s=np.asarray(self._ttft, dtype=np.float64),
                                  itl_s=np.asarray(self._itl_s, dtype=np.float64),
                                  itl_count=np.asarray(self._itl_n, dtype=np.int64))
        self._ttft, self._itl_s, self._itl_n = [], [], []
        return obs

    def evict_all(self) -> list[Request]:
        """Every unfinished request, oldest arrival first (the pod is going away; their progress is lost)."""
        prefilling = [r for *_, chunks in self._iterations_planned for r, last in chunks if last]
        requests = prefilling + self._req + list(self._waiting)
        requests.sort(key=lambda r: r.arrival_s)
        requests += [r for _, _, r in sorted(self._pending)]
        self._iterations_planned.clear()
        self._ends, self._done_cum, self._head, self._done_popped = [], [], 0, 0
        self._outstanding = 0
        self._pending.clear()
        self._waiting.clear()
        self._req = []
        self._ctx = self._left = self._gen = self._first = np.zeros(0)
        return requests
