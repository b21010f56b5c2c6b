"""The simulated disaggregated cluster: GPU nodes, pods, a prefill pool and a decode pool of vLLM engines.

Time moves in ticks (``Scenario.run_tick_s``). One :meth:`SimCluster.step` over ``[t0, t1)``:

1. life cycle at ``t0``: nodes that finished provisioning take their pods, pods that finished loading get an
   engine (:class:`autoscaler.perf.engine.Engine`, the one performance model the live emulator also runs; with
   ``Scenario.engine_mode`` "coarse", :class:`autoscaler.perf.fluid.FluidEngine`, its fluid approximation),
   draining pods that are empty (or past their grace period) go away, empty nodes are released;
2. the trace's arrivals in the tick pass the gateway (an admission hook a policy may set: early rejection) and
   are routed to the prefill pod with the fewest outstanding prompt tokens (each request at its own arrival
   time: the engine holds it until then);
3. prefill engines advance; each finished prefill moves its KV cache to the decode pool, arriving after
   ``kv_latency_s + prompt_tokens * bytes_per_token / kv_bandwidth`` and routed to the decode pod holding the
   fewest tokens;
4. decode engines advance; a request's first token is the decode pod's first token (the prefill pod's token is
   discarded, as llm-d's and Dynamo's disaggregated flows do), so TTFT includes prefill, queueing, the transfer
   and the first decode step.

Nodes: a pod needs ``gpus_per_replica`` GPUs on one node; a pod that fits on no node requests a new one (ready
after the node delay), and the pod loads for the pod delay once its node is ready. A pod waiting for a node is
Pending (``ReplicaCounts.unschedulable``) and moves to a ready node as soon as one has room. GPU-seconds accrue
per node from its request to its release, booting or idle included.

Scale-down removes pods that are not ready first, then the ready pods with the least outstanding work (the
pod-deletion-cost the actuator sets). A removed ready pod drains: it takes no new requests and finishes what it
has for up to ``drain_grace_s``; what is left is evicted and retried from the start (prefill again).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoscaler.core.types import ReplicaCounts, Role
from autoscaler.perf.engine import Completion, Engine, EngineStats, Request
from autoscaler.perf.fluid import FluidEngine
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.scenario import COARSE, Scenario
from autoscaler.traces import Trace

__all__ = ["Admission", "CompletionRecord", "DecodeState", "Outcomes", "PoolCounters", "SimCluster", "ttft_and_itl"]

Admission = Callable[[int, float], bool]
"""Gateway admission: (request index in the trace, arrival time) -> admit? Set by a policy for early rejection."""

ROLES = (Role.PREFILL, Role.DECODE)


class _Node:
    __slots__ = ("gpus", "id", "idle_since", "ready_at", "released_at", "requested_at", "used")

    def __init__(self, node_id: int, *, gpus: int, requested_at: float, ready_at: float) -> None:
        self.id = node_id
        self.gpus = gpus
        self.used = 0
        self.requested_at = requested_at
        self.ready_at = ready_at
        self.idle_since: float | None = None
        self.released_at: float | None = None


class _Pod:
    __slots__ = ("created_at", "draining_since", "engine", "inflight", "load", "load_sq", "name", "node", "ready_at")

    def __init__(self, name: str, *, node: _Node, created_at: float, ready_at: float) -> None:
        self.name = name
        self.node = node
        self.created_at = created_at
        self.ready_at = ready_at
        self.engine: Engine | FluidEngine | None = None
        self.draining_since: float | None = None
        self.load = 0  # outstanding tokens routed here (prompt tokens on prefill, prompt + output on decode)
        self.inflight = 0  # outstanding requests
        self.load_sq = 0  # sum of squared outstanding prompt lengths (prefill attention work)


@dataclass(frozen=True, slots=True)
class CompletionRecord:
    """A request one pool finished, as that pool's vLLM histograms observe it."""

    at: float
    ttft_s: float  # from the request's arrival at this pool to its first token here
    itl_s: float  # mean inter-token latency here (0 when one token)
    itl_count: int  # inter-token gaps behind ``itl_s``
    prompt_tokens: int
    generated_tokens: int


@dataclass(frozen=True, slots=True)
class DecodeState:
    """What a per-request gateway reads of the decode pool (:meth:`SimCluster.decode_state`)."""

    replicas: int  # ready pods taking requests
    contexts: list[int]  # per decoding sequence: KV tokens held (prompt + generated)
    generated: list[int]  # per decoding sequence: output tokens so far
    waiting_tokens: list[int]  # per request routed to decode and not decoding: its KV context


@dataclass(slots=True)
class PoolCounters:
    """Cumulative counters of one pool, as vLLM's would sum over every pod that ever served."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    successes: int = 0
    preemptions: int = 0
    busy_s: float = 0.0  # engine compute seconds (what a GPU-busy exporter integrates)
    iterations: int = 0  # forward passes (vllm:iteration_tokens_total's count)

    @classmethod
    def of(cls, stats: EngineStats) -> PoolCounters:
        return cls(stats.prompt_tokens_total, stats.generation_tokens_total, stats.successes_total,
                   stats.preemptions_total, stats.busy_s, stats.iterations_total)

    def add(self, other: PoolCounters) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.generation_tokens += other.generation_tokens
        self.successes += other.successes
        self.preemptions += other.preemptions
        self.busy_s += other.busy_s
        self.iterations += other.iterations


class _Pool:
    def __init__(self, role: Role) -> None:
        self.role = role
        self.pods: list[_Pod] = []
        self.draining: list[_Pod] = []
        self.backlog: deque[Request] = deque()
        self.retired = PoolCounters()
        self.completions: deque[CompletionRecord] = deque()
        self.names = itertools.count()

    def serving(self) -> list[_Pod]:
        return [p for p in self.pods if p.engine is not None]


class Outcomes:
    """Per request of the trace: rejected or not, first token and finish times, tokens generated, retries."""

    def __init__(self, n: int) -> None:
        self.rejected = np.zeros(n, dtype=bool)
        self.first_token_s = np.full(n, np.nan)
        self.prefilled_s = np.full(n, np.nan)  # when its prefill finished (the prefill pod's first token)
        self.finish_s = np.full(n, np.nan)
        self.generated = np.zeros(n, dtype=np.int64)
        self.retries = np.zeros(n, dtype=np.int64)


class SimCluster:
    """One model served disaggregated: a prefill variant and a decode variant of the same profile."""

    def __init__(self, *, trace: Trace, scenario: Scenario, profile: PerformanceProfile,
                 kv_bytes_per_token: int, history_s: float | None = None, record_latencies: bool = False,
                 belief: PerformanceProfile | None = None) -> None:
        self.trace = trace
        self.scenario = scenario
        self.profile = profile
        """The truth: what the engines run (``Scenario.true_profile``)."""
        self.belief = belief or profile
        """What the gateway and router estimate with: the shipped profile, never the truth."""
        self.kv_bytes_per_token = kv_bytes_per_token
        self.pools = {role: _Pool(role) for role in ROLES}
        self.outcomes = Outcomes(len(trace))
        self.admission: Admission | None = None
        self.now = 0.0
        self._nodes: list[_Node] = []
        self._node_ids = itertools.count()
        self._gpu_seconds = 0.0
        self._next_arrival = 0
        self._history_s = history_s if history_s is not None else 2 * scenario.rate_window_s
        self._node_delay = scenario.node_delay(profile)
        self._pod_delay = scenario.pod_delay(profile)
        self._node_gpus = scenario.node_gpus(profile)
        self._kv_blocks = profile.kv_capacity_tokens // scenario.block_size
        self._tick_s = scenario.run_tick_s
        # vectors of the trace, as Python ints for speed in the per-request loop
        self._arrival = trace.arrival_s
        self._inputs = trace.input_tokens.tolist()
        self._outputs = np.maximum(trace.output_tokens, 1).tolist()  # a request yields at least one token
        self.rejected_too_long = 0
        self._changed = False
        self.record_latencies = record_latencies
        self.token_itl: list[tuple[np.ndarray, np.ndarray]] = []  # decode steps: (seconds, tokens), when recorded

    # ------------------------------------------------------------------ replicas (the Scaler's view)

    def replicas(self, role: Role) -> int:
        """Desired replicas (the Deployment's ``spec.replicas``): pods not being removed."""
        return len(self.pools[role].pods)

    def replica_counts(self, role: Role) -> ReplicaCounts:
        ready = starting = pending = 0
        for pod in self.pools[role].pods:
            if pod.engine is not None:
                ready += 1
            elif pod.node.ready_at > self.now:
                pending += 1
            else:
                starting += 1
        return ReplicaCounts(ready=ready, starting=starting, unschedulable=pending)

    def pod_ages(self, role: Role) -> list[tuple[str, float]]:
        """(name, seconds since ready) of the pods serving metrics (ready or draining)."""
        pool = self.pools[role]
        return [(p.name, self.now - p.ready_at) for p in pool.pods + pool.draining if p.engine is not None]

    def set_replicas(self, role: Role, replicas: int) -> None:
        """Scale a variant: new pods find or request nodes; removed pods drain."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        pool = self.pools[role]
        self._changed = True
        while len(pool.pods) < replicas:
            pool.pods.append(self._new_pod(pool, warm=False))
        if len(pool.pods) > replicas:
            self._remove(pool, len(pool.pods) - replicas)

    def warm_start(self, role: Role, replicas: int) -> None:
        """Pods (and their nodes) ready at the current time, as if the service had been running."""
        pool = self.pools[role]
        for _ in range(replicas):
            pod = self._new_pod(pool, warm=True)
            pool.pods.append(pod)
        self._lifecycle()

    # ------------------------------------------------------------------ nodes and pods

    def _new_pod(self, pool: _Pool, *, warm: bool) -> _Pod:
        need = self.profile.gpus_per_replica
        node = self._node_with_room(need) or self._request_node(warm=warm)
        node.used += need
        node.idle_since = None
        ready_at = self.now if warm else max(self.now, node.ready_at) + self._pod_delay
        return _Pod(f"{pool.role.value}-{next(pool.names)}", node=node, created_at=self.now, ready_at=ready_at)

    def _node_with_room(self, need: int, *, ready_only: bool = False) -> _Node | None:
        best = None
        for node in self._nodes:
            if node.gpus - node.used < need or (ready_only and node.ready_at > self.now):
                continue
            if best is None or node.ready_at < best.ready_at:
                best = node
        return best

    def _request_node(self, *, warm: bool) -> _Node:
        node = _Node(next(self._node_ids), gpus=self._node_gpus, requested_at=self.now,
                     ready_at=self.now if warm else self.now + self._node_delay)
        self._nodes.append(node)
        return node

    def _free(self, pod: _Pod) -> None:
        pod.node.used -= self.profile.gpus_per_replica
        if pod.node.used == 0:
            pod.node.idle_since = self.now

    def _remove(self, pool: _Pool, count: int) -> None:
        # Not-ready pods first (newest first), then the ready pods with the least outstanding work.
        order = sorted(range(len(pool.pods)), key=lambda i: (
            pool.pods[i].engine is not None, pool.pods[i].load, -i))
        doomed = {id(pool.pods[i]) for i in order[:count]}
        keep = []
        for pod in pool.pods:
            if id(pod) not in doomed:
                keep.append(pod)
            elif pod.engine is None:
                self._free(pod)
            else:
                pod.draining_since = self.now
                pool.draining.append(pod)
        pool.pods = keep

    def settle(self) -> None:
        """Apply replica changes made since the last step now (pods with no delay start serving at once)."""
        if self._changed:
            self._lifecycle()

    def _lifecycle(self) -> None:
        self._changed = False
        now = self.now
        coarse = self.scenario.engine_mode == COARSE
        for pool in self.pools.values():
            for pod in pool.pods:
                if pod.engine is not None:
                    continue
                if pod.node.ready_at > now:  # Pending: take room on a ready node if some freed up
                    better = self._node_with_room(self.profile.gpus_per_replica, ready_only=True)
                    if better is not None:
                        self._free(pod)
                        better.used += self.profile.gpus_per_replica
                        better.idle_since = None
                        pod.node = better
                        pod.ready_at = now + self._pod_delay
                record = self.record_latencies and pool.role is Role.DECODE
                if coarse and pod.ready_at < now + self._tick_s - 1e-9 and pod.node.ready_at <= now:
                    # A coarse tick is long: a pod ready within it serves from its ready time, not the next tick.
                    pod.engine = FluidEngine(profile=self.profile, role=pool.role, start_s=now,
                                             serve_from_s=pod.ready_at, block_size=self.scenario.block_size,
                                             record_latencies=record)
                elif not coarse and pod.ready_at <= now + 1e-9:
                    pod.engine = Engine(profile=self.profile, role=pool.role, start_s=now,
                                        block_size=self.scenario.block_size, record_latencies=record)
            if pool.draining:
                self._drain(pool)
        self._release_nodes()

    def _drain(self, pool: _Pool) -> None:
        still = []
        for pod in pool.draining:
            assert pod.engine is not None
            overdue = self.now - (pod.draining_since or self.now) >= self.scenario.drain_grace_s
            if pod.inflight and overdue:
                for request in pod.engine.evict_all():
                    self._retry(request)
                pod.inflight = pod.load = pod.load_sq = 0
            if pod.inflight == 0:
                self._retire(pool, pod)
            else:
                still.append(pod)
        pool.draining = still

    def _retire(self, pool: _Pool, pod: _Pod) -> None:
        assert pod.engine is not None
        stats = pod.engine.snapshot()
        pool.retired.add(PoolCounters.of(stats))
        self._free(pod)

    def _retry(self, request: Request) -> None:
        """An evicted request starts over at the prefill pool (its KV cache is gone with the pod)."""
        i = request.id
        self.outcomes.retries[i] += 1
        self.pools[Role.PREFILL].backlog.append(
            Request(id=i, prompt_tokens=self._inputs[i], output_tokens=self._outputs[i], arrival_s=self.now))

    def _release_nodes(self) -> None:
        keep = []
        for node in self._nodes:
            if node.used == 0 and node.idle_since is not None and \
                    self.now - node.idle_since >= self.scenario.node_release_delay_s - 1e-9:
                node.released_at = self.now
                self._gpu_seconds += node.gpus * (self.now - node.requested_at)
            else:
                keep.append(node)
        self._nodes = keep

    # ------------------------------------------------------------------ accounting

    def gpus_allocated(self) -> int:
        """GPUs of every node requested and not released (booting and idle ones included)."""
        return sum(n.gpus for n in self._nodes)

    def gpu_seconds(self, *, until: float | None = None) -> float:
        """GPU-seconds accrued so far, counting live nodes up to ``until`` (default: now)."""
        end = self.now if until is None else until
        return self._gpu_seconds + sum(n.gpus * (end - n.requested_at) for n in self._nodes)

    def counters(self, role: Role) -> PoolCounters:
        pool = self.pools[role]
        total = PoolCounters()
        total.add(pool.retired)
        for pod in pool.pods + pool.draining:
            if pod.engine is not None:
                total.add(PoolCounters.of(pod.engine.snapshot()))
        return total

    def completions(self, role: Role) -> deque[CompletionRecord]:
        return self.pools[role].completions

    def engines(self, role: Role) -> list[Engine | FluidEngine]:
        """Engines serving metrics (ready and draining pods)."""
        pool = self.pools[role]
        return [p.engine for p in pool.pods + pool.draining if p.engine is not None]

    # ------------------------------------------------------------------ time

    def step(self, t1: float) -> None:
        """Simulate from ``self.now`` to ``t1``."""
        t0 = self.now
        dt = t1 - t0
        if not dt > 0:
            raise ValueError(f"step must move forward: now={t0}, t1={t1}")
        if self._changed:  # replicas were set since the last step: pods with no delay serve from now
            self._lifecycle()
        self._arrive(t0, t1)
        prefill, decode = self.pools[Role.PREFILL], self.pools[Role.DECODE]
        self._route_backlog(prefill)
        for pod in prefill.pods + prefill.draining:
            if pod.engine is not None:
                self._prefilled(pod, pod.engine.advance(dt))
        self._route_backlog(decode)
        for pod in decode.pods + decode.draining:
            if pod.engine is not None:
                self._decoded(pod, pod.engine.advance(dt))
                if self.record_latencies:
                    seen = pod.engine.drain_latencies()
                    if seen.itl_s.size:
                        self.token_itl.append((seen.itl_s, seen.itl_count))
        self.now = t1
        self._lifecycle()
        self._forget(decode)
        self._forget(prefill)

    def _forget(self, pool: _Pool) -> None:
        horizon = self.now - self._history_s
        while pool.completions and pool.completions[0].at < horizon:
            pool.completions.popleft()

    def _arrive(self, t0: float, t1: float) -> None:
        end = int(np.searchsorted(self._arrival, t1, side="left"))
        prefill = self.pools[Role.PREFILL]
        admit = self.admission
        for i in range(self._next_arrival, end):
            at = float(self._arrival[i])
            prompt, output = self._inputs[i], self._outputs[i]
            if -(-(prompt + output) // self.scenario.block_size) > self._kv_blocks:
                self.outcomes.rejected[i] = True  # can never fit one replica's KV cache: vLLM refuses it
                self.rejected_too_long += 1
                continue
            if admit is not None and not admit(i, at):
                self.outcomes.rejected[i] = True
                continue
            self._route(prefill, Request(id=i, prompt_tokens=prompt, output_tokens=output, arrival_s=at))
        self._next_arrival = end

    def _route(self, pool: _Pool, request: Request) -> None:
        if self._tick_s > self.scenario.tick_s and pool.role is Role.PREFILL:
            best = self._coarse_prefill_pod(request)
        else:
            best = None
            for pod in pool.pods:  # (in a coarse tick, a pod ready later in it takes only later arrivals)
                if pod.engine is not None and pod.ready_at <= max(request.arrival_s, self.now) + 1e-9 and (
                        best is None or pod.load < best.load):
                    best = pod
        if best is None:
            pool.backlog.append(request)
            return
        assert best.engine is not None
        best.engine.submit(request)
        best.inflight += 1
        if pool.role is Role.PREFILL:
            best.load += request.prompt_tokens
            best.load_sq += request.prompt_tokens * request.prompt_tokens
        else:
            best.load += request.prompt_tokens + request.output_tokens

    def _coarse_prefill_pod(self, request: Request) -> _Pod | None:
        """The prefill pod with the fewest outstanding prompt tokens at the request's arrival, within a coarse
        tick: prefills planned to end by then no longer count, and a pod ready later in the tick is not a choice."""
        at = max(request.arrival_s, self.now)
        best, best_load = None, 0
        for pod in self.pools[Role.PREFILL].pods:
            engine = pod.engine
            if engine is None or pod.ready_at > at + 1e-9:
                continue
            load = pod.load - engine.prefilled_tokens_by(at) if isinstance(engine, FluidEngine) else pod.load
            if best is None or load < best_load:
                best, best_load = pod, load
        return best

    def _route_backlog(self, pool: _Pool) -> None:
        if not pool.backlog or not any(p.engine is not None for p in pool.pods):
            return
        waiting, pool.backlog = pool.backlog, deque()
        for request in waiting:
            self._route(pool, request)

    def predicted_ttft_s(self, prompt_tokens: int) -> float:
        """TTFT a new request of ``prompt_tokens`` would see on the least-loaded prefill pod, served after
        everything routed there (the gateway's view: outstanding prompt tokens per pod); inf with no pod."""
        best = None
        for pod in self.pools[Role.PREFILL].pods:
            if pod.engine is not None and (best is None or pod.load < best.load):
                best = pod
        if best is None:
            return float("inf")
        work = self._prefill_work_s(best.load + prompt_tokens, best.load_sq + prompt_tokens ** 2)
        return work + self.transfer_s(prompt_tokens) + self.belief.decode_step_time(1, prompt_tokens)

    def _prefill_work_s(self, tokens: int, tokens_sq: int) -> float:
        """Seconds to prefill ``tokens`` outstanding prompt tokens whose squares sum to ``tokens_sq``, in batches
        of the profile's ``max_num_batched_tokens``: the router's estimate of a pod's queue (from the belief)."""
        p = self.belief
        iterations = -(-tokens // p.max_num_batched_tokens)
        return iterations * p.prefill_a + p.prefill_b * tokens + p.prefill_c * tokens_sq

    def prefill_backlog_s(self) -> list[float]:
        """Per ready prefill pod taking requests, seconds of routed work it has left: the router's estimate from
        outstanding prompt tokens, as :meth:`predicted_ttft_s` makes it (read-only, for a per-request gateway)."""
        return [self._prefill_work_s(pod.load, pod.load_sq) for pod in self.pools[Role.PREFILL].pods
                if pod.engine is not None]

    def decode_state(self) -> DecodeState:
        """The decode pods taking requests, as a router sees them: each decoding sequence's KV and output so far,
        and the requests routed there that do not decode yet (KV in transfer, waiting for a seat, preempted)."""
        pool = self.pools[Role.DECODE]
        contexts: list[int] = []
        generated: list[int] = []
        # Prompts of requests with no ready decode pod yet: they wait at the door as well.
        waiting = [r.prompt_tokens for r in pool.backlog]
        replicas = 0
        for pod in pool.pods:
            engine = pod.engine
            if engine is None:
                continue
            replicas += 1
            pod_contexts, pod_generated, pod_waiting = engine.decode_view()
            contexts += pod_contexts
            generated += pod_generated
            waiting += pod_waiting
        return DecodeState(replicas=replicas, contexts=contexts, generated=generated, waiting_tokens=waiting)

    def transfer_s(self, prompt_tokens: int) -> float:
        """Seconds to move one prompt's KV cache from a prefill pod to a decode pod."""
        s = self.scenario
        return s.kv_latency_s + prompt_tokens * self.kv_bytes_per_token / s.kv_bandwidth_bytes_per_s

    def _prefilled(self, pod: _Pod, done: list[Completion]) -> None:
        if not done:
            return
        pool, decode = self.pools[Role.PREFILL], self.pools[Role.DECODE]
        for c in done:
            r = c.request
            pod.inflight -= 1
            pod.load -= r.prompt_tokens
            pod.load_sq -= r.prompt_tokens * r.prompt_tokens
            pool.completions.append(CompletionRecord(c.finish_s, c.ttft_s, 0.0, 0, r.prompt_tokens, 1))
            self.outcomes.prefilled_s[r.id] = c.finish_s
            self._route(decode, Request(id=r.id, prompt_tokens=r.prompt_tokens, output_tokens=r.output_tokens,
                                        arrival_s=c.finish_s + self.transfer_s(r.prompt_tokens)))

    def _decoded(self, pod: _Pod, done: list[Completion]) -> None:
        if not done:
            return
        pool, out = self.pools[Role.DECODE], self.outcomes
        for c in done:
            r = c.request
            pod.inflight -= 1
            pod.load -= r.prompt_tokens + r.output_tokens
            gaps = max(0, c.generated_tokens - 1)
            pool.completions.append(CompletionRecord(c.finish_s, c.ttft_s, c.time_per_output_token_s, gaps,
                                                     r.prompt_tokens, c.generated_tokens))
            out.first_token_s[r.id] = c.first_token_s
            out.finish_s[r.id] = c.finish_s
            out.generated[r.id] = c.generated_tokens

    @property
    def arrived(self) -> int:
        """Requests of the trace that have arrived so far."""
        return self._next_arrival

    def idle(self) -> bool:
        """Nothing in flight anywhere (every arrived request finished or was rejected)."""
        return all(not pool.backlog and all(p.inflight == 0 for p in pool.pods + pool.draining)
                   for pool in self.pools.values())


def ttft_and_itl(outcomes: Outcomes, arrival_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per request TTFT and mean ITL (NaN when it did not finish or was rejected)."""
    ttft = outcomes.first_token_s - arrival_s
    gaps = np.maximum(outcomes.generated - 1, 1)
    itl = np.where(outcomes.generated > 1, (outcomes.finish_s - outcomes.first_token_s) / gaps, 0.0)
    itl = np.where(np.isnan(outcomes.finish_s), np.nan, itl)
    return ttft, itl
