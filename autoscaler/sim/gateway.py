"""A per-request gateway for the simulated cluster: :func:`autoscaler.core.gateway_admission.judge_request` on
what a router can see at each arrival, instead of admitting a random share of the cycle's admission ratio.

The :class:`~autoscaler.core.gateway_admission.PoolsView` of an arrival holds:

- per ready prefill pod, when the work routed to it is done (its outstanding prompt tokens, as the router counts
  them: :meth:`SimCluster.prefill_backlog_s`), plus what this gateway admitted since the tick began;
- the requests this gateway admitted that have not finished prefill, each due when its booking said;
- the requests routed to decode that do not decode yet (KV in transfer, waiting for a seat): entering now;
- each decoding sequence's KV and output so far, over the ready decode pods;
- the output lengths of recently finished requests (never the output length of a request before it finishes).

Mooncake's prediction-based rule (Qin et al., FAST'25, arXiv 2407.00079, section 7) at threshold 1: every
request is taken to decode for the same length, the mean of the last :data:`LENGTH_SAMPLE` finished; with
``length_spread`` (as the ``default-gateway`` policy runs it) for their spread of lengths instead.

Cheap by construction: the cluster changes only when it steps, so the pools are read once per tick with
arrivals, and each admission within the tick is booked onto that view (:func:`book_prefill`) as a gateway books
its own admissions between scrapes. ``judge_request``'s forecast walks every decoding sequence; a request is
admitted without it when an upper bound of its loads is already within the threshold (see
:meth:`SimGateway._surely_admits`), which leaves the decision unchanged. ``GatewayConfig.break_even`` is not used: it assumes a decode door that
rejects what does not fit, and the simulated decode pods queue such requests (as vLLM does) instead.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from autoscaler.core.admission import LatencySLO, RejectionPolicy
from autoscaler.core.gateway_admission import (
    DecodingSequence,
    GatewayConfig,
    OutputLengths,
    PoolsView,
    PrefillJob,
    RequestVerdict,
    book_prefill,
    decode_load_with,
    decode_step_now,
    judge_request,
    request_ttft,
)
from autoscaler.core.types import Role
from autoscaler.sim.cluster import SimCluster

__all__ = ["FIRST_MEAN_OUTPUT", "LENGTH_SAMPLE", "GatewayCounts", "SimGateway", "pools_view"]

LENGTH_SAMPLE = 500
"""Finished requests whose output lengths the gateway averages (as ``benchmarks/bench_early_rejection.py``)."""
FIRST_MEAN_OUTPUT = 256.0
"""Output tokens assumed until a request has finished (the warm-up replaces it long before measurement)."""


def pools_view(cluster: SimCluster, *, now: float, prefill_jobs: tuple[PrefillJob, ...],
               outputs: OutputLengths) -> PoolsView:
    """The view of ``cluster``'s pools at ``now`` (its last step), with ``prefill_jobs`` the gateway's own
    admissions not yet prefilled."""
    state = cluster.decode_state()
    decoding = tuple(DecodingSequence(context_tokens=float(c), generated_tokens=float(g))
                     for c, g in zip(state.contexts, state.generated, strict=True))
    at_door = tuple(PrefillJob(done_at=now, prompt_tokens=float(t)) for t in state.waiting_tokens)
    return PoolsView(prefill_profile=cluster.belief, decode_profile=cluster.belief,
                     prefill_free_at=tuple(now + s for s in cluster.prefill_backlog_s()),
                     decode_replicas=state.replicas, outputs=outputs, prefill_jobs=prefill_jobs + at_door,
                     decoding=decoding)


@dataclass
class GatewayCounts:
    admitted: int = 0
    rejected_for_ttft: int = 0  # predicted TTFT over the SLO (or no prefill pod)
    rejected_for_decode: int = 0  # decode load over the threshold when the request would start decoding


@dataclass
class SimGateway:
    """The admission hook (``SimCluster.admission``): ``gateway(index, arrival) -> admit?``."""

    cluster: SimCluster
    slo: LatencySLO
    policy: RejectionPolicy = RejectionPolicy.PREDICTIVE
    reject_above: float = 1.0
    length_spread: bool = False
    """Forecast with the spread of recent output lengths (``OutputLengths.from_sample``) instead of their mean
    for every request (Mooncake's one t_d)."""
    counts: GatewayCounts = field(default_factory=GatewayCounts)
    _config: GatewayConfig = field(init=False, repr=False)
    _prompts: list[int] = field(init=False, repr=False)
    _view: PoolsView | None = field(default=None, init=False, repr=False)
    _view_at: float = field(default=math.nan, init=False, repr=False)
    _in_prefill: dict[int, PrefillJob] = field(default_factory=dict, init=False, repr=False)
    # Totals of the view for the bound: sequences and jobs, the KV and prompts they hold, the decode step now.
    _count: float = field(default=0.0, init=False, repr=False)
    _held: float = field(default=0.0, init=False, repr=False)
    _step_s: float = field(default=math.nan, init=False, repr=False)

    def __post_init__(self) -> None:
        self._config = GatewayConfig(slo=self.slo, policy=self.policy, reject_above=self.reject_above)
        self._prompts = self.cluster.trace.input_tokens.tolist()

    def __call__(self, index: int, at: float) -> bool:
        view = self._current_view()
        prompt = float(self._prompts[index])
        if self._surely_admits(view, prompt_tokens=prompt, at=at):
            self._book(view, index=index, prompt_tokens=prompt, at=at)
            return True
        return self.judge(index, at).admit

    def judge(self, index: int, at: float) -> RequestVerdict:
        """Decide on request ``index`` of the trace arriving at ``at``; an admission is booked on the view."""
        view = self._current_view()
        prompt = float(self._prompts[index])
        verdict = judge_request(view, prompt_tokens=prompt, now=at, config=self._config)
        if verdict.admit:
            self._book(view, index=index, prompt_tokens=prompt, at=at)
        elif verdict.prefill_load > self.reject_above:
            self.counts.rejected_for_ttft += 1
        else:
            self.counts.rejected_for_decode += 1
        return verdict

    def _book(self, view: PoolsView, *, index: int, prompt_tokens: float, at: float) -> None:
        booked = book_prefill(view, prompt_tokens=prompt_tokens, now=at)
        self._view = booked
        self._in_prefill[index] = booked.prefill_jobs[-1]
        self._count += 1.0
        self._held += prompt_tokens
        self.counts.admitted += 1

    def _surely_admits(self, view: PoolsView, *, prompt_tokens: float, at: float) -> bool:
        """Would ``judge_request`` admit, on a bound that needs no walk over the sequences? The TTFT check is its
        own; for decode, every sequence and job is taken to stay and to grow a token per step until the request
        enters. Every decode load rises with the count and the KV, so a bound within the threshold means the
        forecast is too (now, for EARLY, as well). False when unsure: then ``judge_request`` decides."""
        if view.decode_replicas == 0 or not self._step_s > 0:
            return False
        ttft = request_ttft(view, prompt_tokens=prompt_tokens, now=at)
        if not ttft / self.slo.ttft_s <= self.reject_above:
            return False
        grown = self._held + self._count * ttft / self._step_s
        load = decode_load_with(view, slo=self.slo, running=self._count, kv_tokens=grown, prompt_tokens=prompt_tokens)
        return load <= self.reject_above * (1.0 - 1e-9)  # a margin for rounding: the bound must not tie

    def _current_view(self) -> PoolsView:
        now = self.cluster.now
        if self._view is not None and self._view_at == now:
            return self._view
        prefilled = self.cluster.outcomes.prefilled_s
        for i in [i for i in self._in_prefill if not math.isnan(prefilled[i])]:
            del self._in_prefill[i]
        view = pools_view(self.cluster, now=now, prefill_jobs=tuple(self._in_prefill.values()),
                          outputs=self._outputs())
        self._count = float(len(view.decoding) + len(view.prefill_jobs))
        self._held = (sum(seq.context_tokens for seq in view.decoding)
                      + sum(job.prompt_tokens for job in view.prefill_jobs))
        self._step_s = decode_step_now(view)  # judge_request's
        self._view, self._view_at = view, now
        return view

    def _outputs(self) -> OutputLengths:
        finished = self.cluster.completions(Role.DECODE)
        recent = [max(r.generated_tokens, 1) for r in itertools.islice(reversed(finished), LENGTH_SAMPLE)]
        if not recent:
            return OutputLengths.fixed(FIRST_MEAN_OUTPUT)
        if self.length_spread:
            return OutputLengths.from_sample(recent)
        return OutputLengths.fixed(sum(recent) / len(recent))
