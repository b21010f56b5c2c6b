"""A per-request gateway for the simulated cluster: the planner's admission decision
(:func:`autoscaler.core.admission.assess_admission`) applied to each arriving request on what a router can see,
instead of admitting a random share of the cycle's admission ratio.

One engine: the planner calls ``assess_admission`` once a cycle on pool totals read from Prometheus and uses its
admission ratio; this gateway calls it at each arrival with the request's own prompt (``input_tokens``) on the
pools' live state and uses its ``admit``. The pools an arrival sees:

- prefill: per ready prefill pod, the seconds of work routed to it (its outstanding prompt tokens, as the router
  counts them: :meth:`SimCluster.prefill_backlog_s`) plus what this gateway admitted since the tick began; the
  requests this gateway admitted that have not finished prefill are the queue (their prompts the KV they bring);
- decode: the sequences decoding on the ready decode pods and the requests routed there that do not decode yet
  (KV in transfer, waiting for a seat), which are committed load, with their mean context;
- the mix: mean output of the last :data:`LENGTH_SAMPLE` finished requests (never the output of a request before
  it finishes), mean prompt of the requests in the pools.

Cheap by construction: the cluster changes only when it steps, so the pools are read once per tick with arrivals,
and each admission within the tick is booked onto them (the replica free soonest takes it) as a gateway books its
own admissions between scrapes of the engines.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from autoscaler.core.admission import (
    AdmissionConfig,
    AdmissionDecision,
    DecodePool,
    LatencySLO,
    PrefillPool,
    RejectionPolicy,
    TrafficMix,
    assess_admission,
    prefill_seconds,
)
from autoscaler.core.types import Role
from autoscaler.sim.cluster import SimCluster

__all__ = ["FIRST_MEAN_OUTPUT", "LENGTH_SAMPLE", "GatewayCounts", "LivePools", "SimGateway"]

LENGTH_SAMPLE = 500
"""Finished requests whose output lengths the gateway averages."""
FIRST_MEAN_OUTPUT = 256.0
"""Output tokens assumed until a request has finished (the warm-up replaces it long before measurement)."""


@dataclass
class GatewayCounts:
    admitted: int = 0
    rejected_for_ttft: int = 0  # predicted TTFT over the SLO (or no prefill pod)
    rejected_for_decode: int = 0  # decode load over the threshold when the request would start decoding


@dataclass
class LivePools:
    """The pools as the gateway sees them within one tick: what :func:`assess_admission` is given per arrival."""

    free_at: list[float]  # per ready prefill pod, when the work routed to it is done
    in_prefill: dict[int, tuple[float, float]]  # request index -> (prefill done at, prompt tokens)
    decode_replicas: int
    decoding: float  # sequences decoding or waiting at the decode door
    decode_context: float  # their mean KV context
    mean_output: float

    def prefill(self, *, now: float) -> tuple[float, float]:
        """Requests this gateway admitted that are still in prefill at ``now``, and their prompt tokens."""
        waiting = [tokens for done_at, tokens in self.in_prefill.values() if done_at > now]
        return float(len(waiting)), float(sum(waiting))


@dataclass
class SimGateway:
    """The admission hook (``SimCluster.admission``): ``gateway(index, arrival) -> admit?``."""

    cluster: SimCluster
    slo: LatencySLO
    policy: RejectionPolicy = RejectionPolicy.PREDICTIVE
    reject_above: float = 1.0
    counts: GatewayCounts = field(default_factory=GatewayCounts)
    _config: AdmissionConfig = field(init=False, repr=False)
    _prompts: list[int] = field(init=False, repr=False)
    _pools: LivePools | None = field(default=None, init=False, repr=False)
    _pools_at: float = field(default=math.nan, init=False, repr=False)
    _in_prefill: dict[int, tuple[float, float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._config = AdmissionConfig(policy=self.policy, reject_above=self.reject_above)
        self._prompts = self.cluster.trace.input_tokens.tolist()

    def __call__(self, index: int, at: float) -> bool:
        return self.judge(index, at).admit

    def judge(self, index: int, at: float) -> AdmissionDecision:
        """Decide on request ``index`` of the trace arriving at ``at``; an admission is booked on the pools."""
        pools = self._current_pools()
        prompt = float(self._prompts[index])
        decision = self.decide(pools, prompt_tokens=prompt, at=at)
        if decision.admit:
            self._book(pools, index=index, prompt_tokens=prompt, at=at)
        elif decision.prefill_load > self.reject_above:
            self.counts.rejected_for_ttft += 1
        else:
            self.counts.rejected_for_decode += 1
        return decision

    def decide(self, pools: LivePools, *, prompt_tokens: float, at: float) -> AdmissionDecision:
        """``assess_admission`` for one request of ``prompt_tokens`` arriving at ``at`` on ``pools``."""
        profile = self.cluster.belief
        queued, tokens = pools.prefill(now=at)
        prefill = PrefillPool(replicas=len(pools.free_at), profile=profile, queued_requests=queued,
                              queued_tokens=tokens, queued_context_tokens=tokens,
                              backlog_s=tuple(max(0.0, f - at) for f in pools.free_at))
        decode = DecodePool(replicas=pools.decode_replicas, profile=profile, running=pools.decoding,
                            mean_context_tokens=pools.decode_context)
        mean_input = tokens / queued if queued > 0 else prompt_tokens
        mix = TrafficMix(arrival_rate=0.0, mean_input_tokens=mean_input, mean_output_tokens=pools.mean_output)
        return assess_admission(prefill=prefill, decode=decode, mix=mix, slo=self.slo, config=self._config,
                                input_tokens=prompt_tokens)

    def _book(self, pools: LivePools, *, index: int, prompt_tokens: float, at: float) -> None:
        free = pools.free_at
        if free:
            replica = min(range(len(free)), key=free.__getitem__)
            free[replica] = max(free[replica], at) + prefill_seconds(self.cluster.belief, tokens=prompt_tokens)
            done_at = free[replica]
        else:
            done_at = math.inf
        pools.in_prefill[index] = (done_at, prompt_tokens)
        self.counts.admitted += 1

    def _current_pools(self) -> LivePools:
        now = self.cluster.now
        if self._pools is not None and self._pools_at == now:
            return self._pools
        prefilled = self.cluster.outcomes.prefilled_s
        for i in [i for i in self._in_prefill if not math.isnan(prefilled[i])]:
            del self._in_prefill[i]
        state = self.cluster.decode_state()
        contexts = [*state.contexts, *state.waiting_tokens]
        pools = LivePools(free_at=[now + s for s in self.cluster.prefill_backlog_s()], in_prefill=self._in_prefill,
                          decode_replicas=state.replicas, decoding=float(len(contexts)),
                          decode_context=float(sum(contexts)) / len(contexts) if contexts else 0.0,
                          mean_output=self._mean_output())
        self._pools, self._pools_at = pools, now
        return pools

    def _mean_output(self) -> float:
        finished = self.cluster.completions(Role.DECODE)
        recent = [max(r.generated_tokens, 1) for r in itertools.islice(reversed(finished), LENGTH_SAMPLE)]
        return sum(recent) / len(recent) if recent else FIRST_MEAN_OUTPUT
