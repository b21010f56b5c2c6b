"""``dynamo-load``: NVIDIA Dynamo's planner in the mode its current release defaults to, in the simulator.

``PlannerConfig.optimization_target`` defaults to ``"throughput"``, and any target other than ``"sla"`` forces
``enable_load_scaling=True`` and ``enable_throughput_scaling=False``: the default planner is the reactive,
load-based "easy mode" with static thresholds, not the throughput (SLA) sizing :mod:`autoscaler.sim.dynamo` runs.
Dynamo's docs call load-based scaling experimental and throughput-based scaling the primary mode for production,
so both are peers here. Read from ai-dynamo/dynamo (components/src/dynamo/planner):

- ``config/planner_config.py`` (1366ebb2f4c7): ``optimization_target`` default ``"throughput"``; the validator
  that turns load scaling on and throughput scaling off unless the target is ``"sla"`` (``ttft``/``itl`` are then
  ignored).
- ``config/defaults.py`` (1ca601557ebf): ``load_adjustment_interval = 5`` s, ``min_endpoint = 1`` per pool,
  ``max_gpu_budget = 8``, ``mode = "disagg"``. ``load_metric_samples = 10`` and
  ``load_scaling_down_sensitivity = 80`` exist but the easy-mode path below reads neither (the sensitivity is
  the ``"sla"`` load path's).
- ``core/load_scaling.py`` (0c6da1ec762c; also at 936d81959016, where only the ``"sla"`` paths differ): the
  thresholds and ``_advance_load_disagg``. Each load tick reads each worker's forward-pass metrics (FPM). Prefill:
  ``ratio = queued_requests.sum_prefill_tokens / context_length``; one more replica (``ready + 1``) when ANY
  worker has ``ratio >= 1.0``, one fewer (not below ``min_endpoint``) when there are 2+ and ALL have
  ``ratio < 0.1``. Decode: ``util = (scheduled + queued sum_decode_kv_tokens) / max_kv_tokens``; one more when
  ANY ``util > 1.0``, one fewer when 2+ and ALL ``< 0.6``. A pool with no decision keeps its ready count; both
  are raised to ``min_endpoint`` and clamped by the GPU budget; when neither differs from the ready counts
  nothing is sent, else ONE decision sets both pools. ``optimization_target="latency"`` uses 0.1 / ``== 0``
  (prefill) and 0.4 / 0.1 (decode) instead (:data:`LATENCY`).
- ``core/state_machine.py`` (0272cbdd7e81): the ready counts are the workers' ready replicas; a decision is
  skipped when the workers sending FPM are not the ready count (``_reconcile_fpm_worker_count``);
  ``_scaling_in_progress`` (expected != ready) is checked only in the single-pool and ``agg`` paths, not in
  ``disagg``.
- ``connectors/kubernetes.py`` (``set_component_replicas``, e.g. at 059237235453): while the
  DynamoGraphDeployment is not ready (a pod of either pool not ready) a decision is ignored. That is how
  "scaling in progress" acts in ``disagg``: no step in either pool until every pod asked for is ready.

Mapping to the simulated engines (the harness's choices):

- *Queued prefill tokens*: the prompt tokens of the requests routed to the pod that have not started prefilling
  (vLLM's waiting queue; not yet arrived in the tick included). The coarse (fluid) engine has no queue, so
  there it is the pod's outstanding prompt tokens less one scheduler batch (``max_num_batched_tokens``).
- *Decode KV*: the KV tokens of the decoding sequences plus the prompts of the requests routed there that do not
  decode yet (KV in transfer, waiting for a seat, preempted): :meth:`Engine.decode_view`, what a router sees.
- *max_kv_tokens*: the profile's ``kv_capacity_tokens``. *context_length*: what vLLM reports as
  ``max_model_len`` by default, the model's own context (Llama 3.1: ``max_position_embeddings`` 131,072 in
  meta-llama/Llama-3.1-8B-Instruct's and -70B-Instruct's ``config.json``), or the pod's KV capacity where that is
  smaller; ``context_length_tokens`` overrides it. (The KV capacity alone, 436,080 tokens on llama-3.1-8b/h100,
  put the prefill threshold 3.3x higher: Mooncake conversation 6.28 GPU-h / 4.50% against 6.13 / 47.44%.)
- *Interval*: the load loop's 5 s (``cycle_s``; the coarse engine's step is the control interval, so there it
  runs every 15 s). *Budget*: each pool clamped to the scenario's bounds, as :class:`autoscaler.sim.dynamo.Dynamo`
  does (Dynamo's 8-GPU default is a per-deployment setting an operator raises).
- Draining pods send no FPM and count for nothing; the ready pods are those serving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from autoscaler.core.types import Role
from autoscaler.perf.fluid import FluidEngine
from autoscaler.sim.runner import SimContext
from autoscaler.sim.sizing import Sizing

__all__ = ["LATENCY", "THROUGHPUT", "DynamoLoad", "EasyThresholds", "decode_easy_decision", "easy_disagg_decision",
           "prefill_easy_decision"]

LOAD_ADJUSTMENT_INTERVAL_S = 5.0  # config/defaults.py: load_adjustment_interval
MIN_ENDPOINT = 1  # config/defaults.py: min_endpoint
MODEL_CONTEXT_TOKENS = 131_072
"""Llama 3.1's context (``max_position_embeddings``), the ``max_model_len`` vLLM reports for every shipped profile."""


@dataclass(frozen=True, slots=True)
class EasyThresholds:
    """Easy mode's static thresholds (``core/load_scaling.py``). Prefill on queued prompt tokens over the context
    length: up at ``>= prefill_up``, down when all ``< prefill_down`` (``<=`` when ``prefill_down_inclusive``, the
    latency target's "all queues empty"). Decode on KV utilisation: up at ``> decode_up``, down when all
    ``< decode_down``."""

    prefill_up: float
    prefill_down: float
    decode_up: float
    decode_down: float
    prefill_down_inclusive: bool = False


THROUGHPUT = EasyThresholds(prefill_up=1.0, prefill_down=0.1, decode_up=1.0, decode_down=0.6)
"""``optimization_target="throughput"``, the default."""
LATENCY = EasyThresholds(prefill_up=0.1, prefill_down=0.0, decode_up=0.4, decode_down=0.1,
                         prefill_down_inclusive=True)
"""``optimization_target="latency"``."""
TARGETS = {"throughput": THROUGHPUT, "latency": LATENCY}


def prefill_easy_decision(queued_tokens: Sequence[float], *, context_length: int,
                          thresholds: EasyThresholds = THROUGHPUT, min_endpoint: int = MIN_ENDPOINT) -> int | None:
    """Prefill replicas from each ready worker's queued prompt tokens (one entry per worker); None: no change
    (or nothing to decide on)."""
    ready = len(queued_tokens)
    if ready == 0 or context_length <= 0:
        return None
    ratios = [q / context_length for q in queued_tokens]
    if any(r >= thresholds.prefill_up for r in ratios):
        return ready + 1
    below = (lambda r: r <= thresholds.prefill_down) if thresholds.prefill_down_inclusive else (
        lambda r: r < thresholds.prefill_down)
    if ready > 1 and all(below(r) for r in ratios):
        return max(ready - 1, min_endpoint)
    return None


def decode_easy_decision(kv_tokens: Sequence[float], *, max_kv_tokens: int, thresholds: EasyThresholds = THROUGHPUT,
                         min_endpoint: int = MIN_ENDPOINT) -> int | None:
    """Decode replicas from each ready worker's scheduled + queued decode KV tokens; None: no change."""
    ready = len(kv_tokens)
    if ready == 0 or max_kv_tokens <= 0:
        return None
    utils = [k / max_kv_tokens for k in kv_tokens]
    if any(u > thresholds.decode_up for u in utils):
        return ready + 1
    if ready > 1 and all(u < thresholds.decode_down for u in utils):
        return max(ready - 1, min_endpoint)
    return None


def easy_disagg_decision(*, queued_prefill_tokens: Sequence[float], decode_kv_tokens: Sequence[float],
                         context_length: int, max_kv_tokens: int, thresholds: EasyThresholds = THROUGHPUT,
                         min_endpoint: int = MIN_ENDPOINT, max_prefill: int = 64, max_decode: int = 64,
                         deployment_ready: bool = True) -> Sizing | None:
    """``_advance_load_disagg`` in easy mode, then the connector's readiness gate: the replicas to set for both
    pools, or None (nothing differs from the ready counts, or the deployment is still scaling). The ready counts
    are the lengths of the per-worker lists; ``max_*``: the budget per pool."""
    if not deployment_ready:
        return None
    ready_p, ready_d = len(queued_prefill_tokens), len(decode_kv_tokens)
    if ready_p == 0 and ready_d == 0:
        return None  # no FPM from either pool
    p = prefill_easy_decision(queued_prefill_tokens, context_length=context_length, thresholds=thresholds,
                              min_endpoint=min_endpoint)
    d = decode_easy_decision(decode_kv_tokens, max_kv_tokens=max_kv_tokens, thresholds=thresholds,
                             min_endpoint=min_endpoint)
    final_p = min(max(ready_p if p is None else p, min_endpoint), max_prefill)
    final_d = min(max(ready_d if d is None else d, min_endpoint), max_decode)
    if final_p == ready_p and final_d == ready_d:
        return None
    return Sizing(final_p, final_d)


@dataclass
class DynamoLoad:
    """Dynamo's default planner (``optimization_target`` ``"throughput"``, or ``"latency"``): easy-mode load
    scaling every ``cycle_s`` on the ready pods' forward-pass numbers."""

    optimization_target: str = "throughput"
    cycle_s: float = LOAD_ADJUSTMENT_INTERVAL_S
    """Dynamo's ``load_adjustment_interval``; the runner calls :meth:`cycle` on this grid."""
    context_length_tokens: int | None = None
    """The engines' context length for the prefill ratio; None: :data:`MODEL_CONTEXT_TOKENS` or the profile's KV
    capacity, whichever is smaller (see the module doc)."""
    name: str = "dynamo-load"
    instant_capacity: bool = False
    _ctx: SimContext | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.optimization_target not in TARGETS:
            raise ValueError(f"DynamoLoad.optimization_target must be one of {', '.join(TARGETS)}, "
                             f"got {self.optimization_target!r}")
        if not 0.0 < self.cycle_s < math.inf:
            raise ValueError(f"DynamoLoad.cycle_s must be a finite number > 0, got {self.cycle_s!r}")
        if self.context_length_tokens is not None and self.context_length_tokens < 1:
            raise ValueError(f"DynamoLoad.context_length_tokens must be >= 1, got {self.context_length_tokens!r}")

    def initial(self, ctx: SimContext) -> Sizing | None:
        return None

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx

    def _queued_prefill_tokens(self) -> list[float]:
        ctx = self._ctx
        assert ctx is not None
        batch = ctx.profile.max_num_batched_tokens
        queued: list[float] = []
        for pod in ctx.cluster.pools[Role.PREFILL].pods:
            engine = pod.engine
            if engine is None:
                continue
            if isinstance(engine, FluidEngine):  # no queue to read: outstanding work less the batch running
                outstanding = pod.load - engine.prefilled_tokens_by(ctx.cluster.now)
                queued.append(float(max(0, outstanding - batch)))
            else:
                queued.append(float(sum(engine.decode_view()[2])))  # waiting (and not yet arrived) prompts
        return queued

    def _decode_kv_tokens(self) -> list[float]:
        ctx = self._ctx
        assert ctx is not None
        kv: list[float] = []
        for pod in ctx.cluster.pools[Role.DECODE].pods:
            if pod.engine is None:
                continue
            contexts, _, waiting = pod.engine.decode_view()
            kv.append(float(sum(contexts) + sum(waiting)))
        return kv

    def _deployment_ready(self) -> bool:
        cluster = self._ctx.cluster  # type: ignore[union-attr]
        return all(cluster.replica_counts(role).ready == cluster.replicas(role) for role in (Role.PREFILL, Role.DECODE))

    def cycle(self, now: float) -> None:
        ctx = self._ctx
        assert ctx is not None
        if now < ctx.live_from_s - 1e-9:
            return  # observing: easy mode keeps no history, there is nothing to learn
        p_spec, d_spec = ctx.variants.specs[Role.PREFILL], ctx.variants.specs[Role.DECODE]
        kv_capacity = ctx.profile.kv_capacity_tokens
        sizing = easy_disagg_decision(
            queued_prefill_tokens=self._queued_prefill_tokens(), decode_kv_tokens=self._decode_kv_tokens(),
            context_length=self.context_length_tokens or min(MODEL_CONTEXT_TOKENS, kv_capacity), max_kv_tokens=kv_capacity,
            thresholds=TARGETS[self.optimization_target], min_endpoint=max(MIN_ENDPOINT, p_spec.min_replicas),
            max_prefill=p_spec.max_replicas, max_decode=d_spec.max_replicas,
            deployment_ready=self._deployment_ready())
        if sizing is None:
            return
        ctx.scaler.scale(p_spec, max(p_spec.min_replicas, sizing.prefill))
        ctx.scaler.scale(d_spec, max(d_spec.min_replicas, sizing.decode))
