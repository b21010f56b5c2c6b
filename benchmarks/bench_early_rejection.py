"""Early rejection under overload: reactive vs early vs prediction-based (Mooncake, arXiv 2407.00079, §7, Table 3).

What the paper did (§8, Table 3): 8 prefill + 8 decode instances, one instance per node of 8 A800-SXM4-80GB GPUs,
a dummy model of LLaMA2-70B's shape, its real 23k-request trace replayed at 2x to overload the cluster; rejected
requests: 4183 baseline (reject before each stage on that stage's load), 3771 early rejection, 3589 prediction-based.
SLOs as in its real-trace replay (§8): TTFT 30 s, TBT 0.1 s. (Read from the paper as summarised in public
reviews found with the search tool; the PDF itself was not reachable from here.)

What this models, as close to that as the repository allows:
- instances: ``llama-3.1-70b/a100-tp8`` from ``models/profiles`` for both pools (Llama-3.1-70B has LLaMA2-70B's
  shape: 80 layers, 8 KV heads; an A800 is an A100-80GB with slower NVLink, so the roofline profile applies):
  KV cache 1,356,928 tokens and 256 sequences per decode instance;
- trace: the shipped Mooncake conversation trace (FAST'25 release; 12,031 requests in an hour, mean prompt 12k
  tokens, mean output 343), at 2x. The paper's 23k-request arXiv trace is not shipped (see
  ``autoscaler/data/traces/README.md``), and its absolute capacities came from Moonshot's engine, so the pool counts
  that overload *this* model are searched (``--pools``); with the profile, 8P+8D never loads decode on this trace;
- prefill: each instance runs its FIFO queue one request at a time for ``prefill_seconds(new, cached)``; prompts
  are 512-token blocks and blocks prefilled before count as cached (a global pool, as Mooncake's; 37% of tokens),
  but attention over the cached prefix is still paid. A request goes to the instance with the shortest queue;
- decode: continuous batching per instance; a step lasts the profile's ``decode_step_time(batch, context)`` and
  every sequence gains a token (its KV grows). A finished prefill goes to the instance where its load would be
  lowest and is admitted there if ``admit_to_decode`` holds: step time within the TBT SLO, prompt plus a mean
  output within the KV cache, a free sequence slot. Otherwise it is rejected and its prefill GPU-seconds wasted.
  Every policy keeps this decode-time check (Mooncake's step 4);
- policies see what a scheduler sees: queue backlogs, the decode batch, recent mean prompt/output lengths and
  arrival rate; never the output length of the request being admitted.

Policies (all through :func:`autoscaler.core.admission.assess_admission`):
- ``reactive``: admit on TTFT; the decode-time check does the rest (the paper's baseline);
- ``early``: also reject at arrival while decode, with this request, is over the threshold now;
- ``predictive``: reject at arrival when decode is predicted over the threshold when this request gets there
  (in-flight prefills are committed load; the running batch drains memorylessly with mean t_d);
- ``predictive-uniform``: the same with the paper's assumption that every request decodes for exactly t_d;
- ``predictive-ratio``: a gateway admits, per ``--gate`` seconds, the ``admission_ratio`` share of arrivals
  (a smooth rate instead of a per-request yes/no), still subject to each request's TTFT check;
- ``clairvoyant`` (diagnostic, ``--clairvoyant``): the predictive rule fed the *true* remaining output of every
  running and in-flight request, i.e. the best any departure prediction could do.

What it shows (numbers in the printed table; the pools overloaded are 8P+1D, 6P+1D, 5P+1D):
- the paper's oscillation is there: early rejection swings prefill load in anti-phase with decode (correlation
  -0.29 to -0.45; prefill load std 2.5x reactive's when prefill is busy), and the prediction-based variant damps
  the prefill swings (std down 31% at 6P, 47% at 5P; up 7% at 8P, where prefill is nearly idle) though not always
  decode's (down at 6P, up at 5P);
- both arrival-time policies cut wasted prefill; the prediction-based one to about half of reactive's;
- but neither rejects fewer than reactive (early ties it at 8P), and the prediction-based one rejects 35-70% more.
  Reasons, each visible in the table:
  (1) with decode the bottleneck, the fewest rejections possible is arrivals minus what decode can complete;
  reactive comes closest because it decides at the decode door with exact knowledge and there is always a
  prefilled request ready for a freed slot: the prefilled requests it turns away are that buffer. Wasted prefill
  costs rejections only through the TTFT check, so removing it all could save at most reactive's TTFT rejections
  (80 / 347 / 726 of its 2458 / 2237 / 1970), while the arrival-time decisions lose more at decode;
  (2) an arrival-time decision is one TTFT (5-30 s) ahead; the predicted decode load misses the load met at entry
  by a standard deviation of 0.07-0.09, about ten times one request's share of the pool, so decisions at the
  margin are close to coin flips and decode runs at 0.90-0.94 against reactive's 0.94-0.96. With decode pinned
  at its limit (8P), the load at admission predicts the load at entry better than the model does;
  (3) the KV cache binds (prompts of 12k tokens on average, up to 126k): reactive's door check and its long TTFT
  queue turn away the largest requests first, so it completes more, smaller requests (8.4-9.1k-token prompts
  against 9.3-10.6k); in prompt tokens served, reactive and predictive are within 2% of each other;
  (4) better departure prediction is not the fix: the clairvoyant variant, which knows every output length,
  rejects from 4% fewer to 20% more than the predictive one. What no prediction at arrival knows is which requests
  now in prefill will be turned away at decode, and which later arrivals will overtake on a shorter prefill queue;
- admitting a buffer above the prediction (``predictive+x``) trades waste for rejections along a curve that ends
  at reactive; at 0.2 it rejects fewer than early at 6P and 5P (with more waste) and holds decode steadier than
  early everywhere, but no point on it beats reactive's count;
- an admission *ratio* applied by a gateway for a whole interval (``predictive-ratio``) is worse than the per-
  request decision, the more so the longer the interval: decode runs at 0.83-0.87 with a 5 s gate.

Load oscillation: prefill load is the mean over instances of (queued seconds + mean own prefill) / TTFT SLO, decode
load the mean over instances of max(step / TBT SLO, KV share, seat share), sampled each second from 2 min into the
trace to its end; amplitude is their standard deviation and the mean peak-to-peak over 60 s windows, and
``corr`` their correlation (negative: anti-phase).

Run: ``/work/main/.venv/bin/python benchmarks/bench_early_rejection.py [--pools 8x8,8x1,6x1,5x1] [--plot-pools 6x1]``
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

from autoscaler.core.admission import (
    AdmissionConfig,
    DecodePool,
    DepartureModel,
    LatencySLO,
    PrefillPool,
    RejectionPolicy,
    TrafficMix,
    admit_to_decode,
    assess_admission,
    decode_load,
    prefill_seconds,
)
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import default_profiles
from autoscaler.traces import Trace, rate_scale, read_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "autoscaler" / "data" / "traces" / "mooncake_conversation_trace.jsonl"
PLOT = ROOT / "benchmarks" / "results" / "early_rejection.png"
PROFILE = "llama-3.1-70b/a100-tp8"  # one 8-GPU A800 node per instance, as the paper's testbed
BLOCK_TOKENS = 512  # Mooncake trace hash_ids cover 512-token blocks
SLO = LatencySLO(ttft_s=30.0, tbt_s=0.1)  # Mooncake §8.1.3: real-trace replay thresholds
SAMPLE_S = 1.0  # load sampling period
WINDOW_S = 60.0  # window for peak-to-peak amplitude
WARMUP_S = 120.0  # loads before this are left out of the amplitude (the pools start empty)
RATE_WINDOW_S = 30.0  # the arrival rate a gateway sees: arrivals over the last 30 s
EWMA = 0.02  # weight of a new observation in the scheduler's running means

POLICIES = ("reactive", "early", "predictive", "predictive-uniform", "predictive-ratio")


@dataclass
class Outcome:
    policy: str
    arrivals: int = 0
    rejected_at_arrival: int = 0
    rejected_for_ttft: int = 0  # of those at arrival: the prefill queue was too long
    rejected_after_prefill: int = 0
    completed: int = 0
    served_prompt_tokens: float = 0.0
    served_output_tokens: float = 0.0
    prefill_gpu_s: float = 0.0
    wasted_prefill_gpu_s: float = 0.0
    ttft_violations: int = 0
    decode_instance_s: float = 0.0
    tbt_over_slo_s: float = 0.0  # decode-instance seconds with the step time over the TBT SLO
    kv_over_s: float = 0.0  # decode-instance seconds with KV beyond capacity (outputs outgrew the reservation)
    # predicted - actual decode load when an admitted request enters decode: the model's prediction for that
    # moment, and the load at admission (what early rejection goes by)
    prediction_error: list[float] = field(default_factory=list)
    persistence_error: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    prefill_load: list[float] = field(default_factory=list)
    decode_load: list[float] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.rejected_at_arrival + self.rejected_after_prefill


@dataclass(frozen=True)
class Setup:
    prefill: int
    decode: int
    profile: PerformanceProfile
    slo: LatencySLO = SLO
    threshold: float = 1.0
    dt: float = 0.05
    gate_s: float = 5.0

    def __str__(self) -> str:
        return f"{self.prefill}P+{self.decode}D"


def cached_prefix(hashes: tuple[int, ...], seen: set[int], prompt: float) -> float:
    blocks = 0
    for h in hashes:
        if h not in seen:
            break
        blocks += 1
    return min(blocks * BLOCK_TOKENS, prompt - 1.0)


class Decode:
    """The decode instances: one row per running sequence."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.remaining = np.empty(0)  # tokens still to generate
        self.context = np.empty(0)  # KV tokens held
        self.instance = np.empty(0, dtype=np.int64)
        self.output = np.empty(0)  # total output tokens (for the scheduler's mean once finished)

    def per_instance(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.setup.decode
        return (np.bincount(self.instance, minlength=n).astype(np.float64),
                np.bincount(self.instance, weights=self.context, minlength=n))

    def step_times(self) -> np.ndarray:
        p = self.setup.profile
        counts, kv = self.per_instance()
        return np.where(counts > 0, p.decode_alpha + p.decode_beta * counts + p.decode_gamma * kv, np.inf)

    def pool(self) -> DecodePool:
        running = float(len(self.remaining))
        return DecodePool(replicas=self.setup.decode, profile=self.setup.profile, running=running,
                          mean_context_tokens=float(self.context.mean()) if running else 0.0)

    def instance_pool(self, j: int, counts: np.ndarray, kv: np.ndarray) -> DecodePool:
        return DecodePool(replicas=1, profile=self.setup.profile, running=float(counts[j]),
                          mean_context_tokens=float(kv[j] / counts[j]) if counts[j] else 0.0)

    def loads(self) -> np.ndarray:
        counts, kv = self.per_instance()
        return np.array([decode_load(self.instance_pool(j, counts, kv), slo=self.setup.slo, running=counts[j],
                                     context_tokens=kv[j] / counts[j] if counts[j] else 0.0)
                         for j in range(self.setup.decode)])

    def add(self, *, j: int, prompt: float, output: float) -> None:
        self.remaining = np.append(self.remaining, output - 1.0)  # the first token came out of prefill
        self.context = np.append(self.context, prompt)
        self.instance = np.append(self.instance, j)
        self.output = np.append(self.output, output)

    def advance(self, dt: float) -> np.ndarray:
        """One time step; returns the output lengths of the sequences that finished."""
        if not len(self.remaining):
            return np.empty(0)
        tokens = dt / self.step_times()[self.instance]
        self.remaining = self.remaining - tokens
        self.context = self.context + np.minimum(tokens, np.maximum(self.remaining + tokens, 0.0))
        done = self.remaining <= 0
        finished = self.output[done]
        if done.any():
            keep = ~done
            self.remaining, self.context = self.remaining[keep], self.context[keep]
            self.instance, self.output = self.instance[keep], self.output[keep]
        return finished


def simulate(trace: Trace, *, policy: str, setup: Setup) -> Outcome:
    out = Outcome(policy=policy)
    profile, slo, threshold = setup.profile, setup.slo, setup.threshold
    module_policy = {"reactive": RejectionPolicy.REACTIVE, "early": RejectionPolicy.EARLY}.get(
        policy, RejectionPolicy.PREDICTIVE)
    departures = DepartureModel.UNIFORM if policy == "predictive-uniform" else DepartureModel.EXPONENTIAL
    overcommit = float(policy.partition("+")[2] or 0.0)  # "predictive+0.1": admit up to 0.1 over the threshold
    config = AdmissionConfig(policy=module_policy, reject_above=threshold, departures=departures,
                             interval_s=setup.gate_s, overcommit=overcommit)
    n = len(trace)
    arrival = trace.arrival_s
    prompts = trace.input_tokens.astype(np.float64)
    outputs = trace.output_tokens.astype(np.float64)
    hashes = trace.hash_ids or tuple(() for _ in range(n))
    seen: set[int] = set()
    free_at = np.zeros(setup.prefill)  # when each prefill instance's queue empties
    inflight: list[tuple[float, int, float]] = []  # heap of (prefill done, request, prefill seconds)
    inflight_new_tokens = inflight_prompt_tokens = 0.0
    new_tokens = np.zeros(n)
    decode = Decode(setup)
    recent: deque[float] = deque()
    mean_output = 256.0  # what the scheduler believes until requests finish; then an EWMA of finished ones
    mean_input = float(prompts[: min(n, 50)].mean())
    mean_cached = 0.0
    mean_own_prefill = prefill_seconds(profile, tokens=mean_input)
    predicted_at_entry: dict[int, tuple[float, float]] = {}
    gate_ratio, gate_until, credit = 1.0, -math.inf, 0.0
    next_arrival, next_sample, t = 0, 0.0, 0.0
    end = float(arrival[-1]) + 900.0

    def mix() -> TrafficMix:
        return TrafficMix(arrival_rate=len(recent) / RATE_WINDOW_S, mean_input_tokens=mean_input,
                          mean_output_tokens=mean_output, mean_cached_tokens=min(mean_cached, mean_input))

    def prefill_pool(at: float) -> PrefillPool:
        return PrefillPool(replicas=setup.prefill, profile=profile, queued_requests=float(len(inflight)),
                           queued_tokens=inflight_new_tokens, queued_context_tokens=inflight_prompt_tokens,
                           backlog_s=tuple(float(b) for b in np.maximum(free_at - at, 0.0)))

    def enter_decode(request: int, prefill_s: float) -> None:
        if outputs[request] <= 1:
            out.completed += 1
            out.served_prompt_tokens += prompts[request]
            out.served_output_tokens += outputs[request]
            return
        counts, kv = decode.per_instance()
        candidates = [decode.instance_pool(j, counts, kv) for j in range(setup.decode)]
        with_it = [decode_load(c, slo=slo, running=c.running + 1, context_tokens=(kv[j] + prompts[request])
                               / (c.running + 1), kv_tokens=kv[j] + prompts[request] + mean_output)
                   for j, c in enumerate(candidates)]
        j = int(np.argmin(with_it))
        if request in predicted_at_entry:
            actual = float(np.mean([decode_load(c, slo=slo, running=c.running, context_tokens=c.mean_context_tokens)
                                    for c in candidates]))
            then, now = predicted_at_entry.pop(request)
            out.prediction_error.append(then - actual)
            out.persistence_error.append(now - actual)
        if not admit_to_decode(decode=candidates[j], slo=slo, context_tokens=prompts[request], threshold=threshold,
                               reserve_tokens=mean_output):
            out.rejected_after_prefill += 1
            out.wasted_prefill_gpu_s += prefill_s * profile.gpus_per_replica
            return
        decode.add(j=j, prompt=prompts[request], output=outputs[request])
        out.served_prompt_tokens += prompts[request]

    while t < end and (next_arrival < n or inflight or len(decode.remaining)):
        t_next = t + setup.dt
        while next_arrival < n and arrival[next_arrival] < t_next:
            i = next_arrival
            next_arrival += 1
            at = float(arrival[i])
            out.arrivals += 1
            recent.append(at)
            while recent and recent[0] < at - RATE_WINDOW_S:
                recent.popleft()
            cached = cached_prefix(hashes[i], seen, prompts[i])
            new_tokens[i] = prompts[i] - cached
            mean_input += EWMA * (prompts[i] - mean_input)
            mean_cached += EWMA * (cached - mean_cached)
            pool = prefill_pool(at)
            if policy == "clairvoyant":
                prefill_ok, decode_ok = _clairvoyant_admit(
                    at, pool=pool, decode=decode, inflight=inflight, setup=setup, prompt=prompts[i], cached=cached,
                    outputs=outputs, prompts=prompts, mean_output=mean_output)
                admit = prefill_ok and decode_ok
            else:
                decision = assess_admission(prefill=pool, decode=decode.pool(), mix=mix(), slo=slo, config=config,
                                            input_tokens=prompts[i], cached_tokens=cached)
                admit = decision.admit
                prefill_ok = decision.prefill_load <= threshold
                if policy == "predictive-ratio":
                    if at >= gate_until:  # the gateway refreshes the ratio every gate_s from the mean request
                        gate_ratio = assess_admission(prefill=pool, decode=decode.pool(), mix=mix(), slo=slo,
                                                      config=config).admission_ratio
                        gate_until = at + setup.gate_s
                    credit = min(1.0, credit + gate_ratio)
                    admit = decision.prefill_load <= threshold and credit >= 1.0 - 1e-9
                    if admit:
                        credit -= 1.0
                if admit:
                    predicted_at_entry[i] = (decision.decode_load_at_horizon, decision.decode_load_now)
            if not admit:
                out.rejected_at_arrival += 1
                out.rejected_for_ttft += not prefill_ok
                continue
            replica = int(np.argmin(free_at))
            seconds = prefill_seconds(profile, tokens=new_tokens[i], cached_tokens=cached)
            free_at[replica] = max(free_at[replica], at) + seconds
            heapq.heappush(inflight, (float(free_at[replica]), i, seconds))
            inflight_new_tokens += new_tokens[i]
            inflight_prompt_tokens += prompts[i]
            out.prefill_gpu_s += seconds * profile.gpus_per_replica
            mean_own_prefill += EWMA * (seconds - mean_own_prefill)

        while inflight and inflight[0][0] < t_next:
            done_at, i, seconds = heapq.heappop(inflight)
            inflight_new_tokens = max(0.0, inflight_new_tokens - new_tokens[i])
            inflight_prompt_tokens = max(0.0, inflight_prompt_tokens - prompts[i])
            seen.update(hashes[i])
            if done_at - arrival[i] > slo.ttft_s + 1e-9:
                out.ttft_violations += 1
            enter_decode(i, seconds)

        if len(decode.remaining):
            steps = decode.step_times()
            counts, kv = decode.per_instance()
            busy = counts > 0
            out.decode_instance_s += setup.dt * busy.sum()
            out.tbt_over_slo_s += setup.dt * (busy & (steps > slo.tbt_s)).sum()
            out.kv_over_s += setup.dt * (kv > profile.kv_capacity_tokens).sum()
            for length in decode.advance(setup.dt):  # what a scheduler learns: lengths of finished requests
                mean_output += EWMA * (length - mean_output)
                out.completed += 1
                out.served_output_tokens += length

        t = t_next
        if t >= next_sample:
            next_sample += SAMPLE_S
            out.times.append(t)
            out.prefill_load.append(float(np.mean(np.maximum(free_at - t, 0.0)) + mean_own_prefill) / slo.ttft_s)
            out.decode_load.append(float(decode.loads().mean()))
    return out


def _clairvoyant_admit(at: float, *, pool: PrefillPool, decode: Decode, inflight: list, setup: Setup,
                       prompt: float, cached: float, outputs: np.ndarray, prompts: np.ndarray,
                       mean_output: float) -> tuple[bool, bool]:
    """The predictive rule with every output length known: who is still decoding when this request gets there.
    Returns (prefill ok, decode ok).

    Step times are held at today's per instance; requests in prefill that will be rejected at decode are still
    counted (their fate is not known before they get there), and requests admitted later that overtake ``i`` on
    another prefill instance are not (they have not arrived).
    """
    from autoscaler.core.admission import predicted_ttft

    slo = setup.slo
    ttft = predicted_ttft(pool, input_tokens=prompt, cached_tokens=cached)
    if ttft / slo.ttft_s > setup.threshold:
        return False, True
    steps = decode.step_times()
    running = kv = 0.0
    if len(decode.remaining):
        ahead = ttft / steps[decode.instance]
        alive = decode.remaining > ahead
        running = float(alive.sum())
        kv = float((decode.context[alive] + ahead[alive]).sum())
    finite = steps[np.isfinite(steps)]
    step = float(finite.mean()) if len(finite) else setup.profile.decode_step_time(1.0, prompt)
    for done_at, j, _ in inflight:
        entered = done_at - at
        if entered <= ttft and outputs[j] * step > ttft - entered:
            running += 1
            kv += prompts[j] + (ttft - entered) / step
    pool_d = DecodePool(replicas=setup.decode, profile=setup.profile)
    total = running + 1
    with_it = decode_load(pool_d, slo=slo, running=total, context_tokens=(kv + prompt) / total,
                          kv_tokens=kv + prompt + mean_output)
    return True, with_it <= setup.threshold


def amplitude(values: list[float], times: list[float], *, start: float, stop: float) -> tuple[float, float]:
    """(standard deviation, mean peak-to-peak over WINDOW_S windows) of a load series within [start, stop)."""
    v, t = np.asarray(values), np.asarray(times)
    v = v[(t >= start) & (t < stop)]
    per_window = int(WINDOW_S / SAMPLE_S)
    windows = [v[i:i + per_window] for i in range(0, len(v) - per_window + 1, per_window)]
    peak_to_peak = float(np.mean([w.max() - w.min() for w in windows])) if windows else math.nan
    return float(np.std(v)), peak_to_peak


def anti_phase(o: Outcome, *, start: float, stop: float) -> float:
    t = np.asarray(o.times)
    keep = (t >= start) & (t < stop)
    p, d = np.asarray(o.prefill_load)[keep], np.asarray(o.decode_load)[keep]
    return float(np.corrcoef(p, d)[0, 1]) if p.std() > 0 and d.std() > 0 else math.nan


def smoothed(values: list[float], width: int) -> np.ndarray:
    v = np.asarray(values)
    if width <= 1 or len(v) < width:
        return v
    return np.convolve(v, np.ones(width) / width, mode="same")


def plot(outcomes: list[Outcome], *, path: Path, title: str, threshold: float, stop: float) -> None:
    fig, axes = plt.subplots(len(outcomes), 1, figsize=(13, 2.6 * len(outcomes)), sharex=True, sharey=True)
    for ax, o in zip(np.atleast_1d(axes), outcomes, strict=True):
        t = np.asarray(o.times) / 60.0
        ax.plot(t, o.prefill_load, color="tab:blue", alpha=0.25, linewidth=0.6)
        ax.plot(t, o.decode_load, color="tab:red", alpha=0.25, linewidth=0.6)
        ax.plot(t, smoothed(o.prefill_load, 15), color="tab:blue", linewidth=1.3, label="prefill load (TTFT / SLO)")
        ax.plot(t, smoothed(o.decode_load, 15), color="tab:red", linewidth=1.3,
                label="decode load (max of TBT / SLO, KV share)")
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label="rejection threshold")
        p_std, _ = amplitude(o.prefill_load, o.times, start=WARMUP_S, stop=stop)
        d_std, _ = amplitude(o.decode_load, o.times, start=WARMUP_S, stop=stop)
        ax.set_title(f"{o.policy}: rejected {o.rejected} ({o.rejected_at_arrival} at arrival, "
                     f"{o.rejected_after_prefill} after prefill = {o.wasted_prefill_gpu_s / 3600:.1f} GPU-h of "
                     f"prefill wasted); load std prefill {p_std:.3f}, decode {d_std:.3f}", fontsize=9.5)
        ax.set_ylabel("load")
        ax.set_ylim(0, 1.15)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(loc="lower center", fontsize=8, ncol=3, framealpha=0.9)
    np.atleast_1d(axes)[-1].set_xlabel("minutes (thin: 1 s samples, thick: 15 s moving mean)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_pools(text: str) -> tuple[int, int]:
    prefill, _, decode = text.partition("x")
    return int(prefill), int(decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default="8x8,8x1,6x1,5x1",
                        help="comma-separated PxD instance counts (8 GPUs each); default: the paper's 8P+8D (decode "
                             "needs about 1.6 instances here, so it never binds), then one decode instance with "
                             "prefill demand at 1.07x, 1.43x and 1.72x capacity (most of it a few very long prompts "
                             "that fail the TTFT check)")
    parser.add_argument("--plot-pools", default="6x1", help="the PxD whose loads are plotted")
    parser.add_argument("--speed", type=float, default=2.0, help="trace replay speed (Mooncake Table 3: 2x)")
    parser.add_argument("--threshold", type=float, default=1.0, help="load above which requests are rejected")
    parser.add_argument("--tbt", type=float, default=SLO.tbt_s, help="TBT SLO, seconds (paper: 0.1)")
    parser.add_argument("--gate", type=float, default=5.0, help="seconds between admission-ratio updates")
    parser.add_argument("--overcommit", default="0.1,0.2", help="comma-separated decode loads over the threshold "
                        "that extra predictive runs still admit at arrival (a buffer in prefill against departures "
                        "the prediction missed); '' for none")
    parser.add_argument("--dt", type=float, default=0.05, help="time step, seconds")
    parser.add_argument("--clairvoyant", action="store_true", help="also run the predictor that knows every "
                        "output length (an upper bound on what better departure prediction can buy)")
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()

    profile = default_profiles()[PROFILE]
    slo = LatencySLO(ttft_s=SLO.ttft_s, tbt_s=args.tbt)
    pools = [parse_pools(p) for p in args.pools.split(",")]
    plotted = parse_pools(args.plot_pools)
    if plotted not in pools:
        pools.append(plotted)
    buffered = tuple(f"predictive+{float(x):g}" for x in args.overcommit.split(",") if x.strip())
    policies = (*POLICIES, *buffered, *(("clairvoyant",) if args.clairvoyant else ()))
    trace = rate_scale(read_trace(TRACE), args.speed)
    stop = float(trace.duration_s)
    console = Console(width=330)
    results: dict[Setup, list[Outcome]] = {}
    started = time.perf_counter()
    with console.status("simulating") as status:
        for p, d in pools:
            setup = Setup(prefill=p, decode=d, profile=profile, slo=slo, threshold=args.threshold, dt=args.dt,
                          gate_s=args.gate)
            for policy in policies:
                status.update(f"simulating {setup} {policy}")
                results.setdefault(setup, []).append(simulate(trace, policy=policy, setup=setup))

    table = Table(title=f"{TRACE.name} at {args.speed:g}x ({len(trace)} requests, {len(trace) / stop:.2f} req/s); "
                        f"{PROFILE} per instance; SLO TTFT {slo.ttft_s:g} s, TBT {slo.tbt_s:g} s; "
                        f"p2p = mean peak-to-peak per minute; corr < 0 = anti-phase")
    columns = ("pools", "policy", "rejected", "for TTFT", "for decode at arrival", "after prefill",
               "wasted prefill GPU-h", "waste %", "completed", "prompt ktok / completed", "served prompt Mtok",
               "served output Mtok", "err predicted mean/sd", "err now mean/sd", "prefill std", "prefill p2p", "decode mean", "decode std",
               "decode p2p", "corr")
    for column in columns:
        table.add_column(column, justify="left" if column in ("pools", "policy") else "right",
                         no_wrap=column == "policy")
    for setup, outcomes in results.items():
        best = min(o.rejected for o in outcomes)
        for o in outcomes:
            p_std, p_p2p = amplitude(o.prefill_load, o.times, start=WARMUP_S, stop=stop)
            d_std, d_p2p = amplitude(o.decode_load, o.times, start=WARMUP_S, stop=stop)
            d_t = np.asarray(o.times)
            d_mean = float(np.mean(np.asarray(o.decode_load)[(d_t >= WARMUP_S) & (d_t < stop)]))
            err, now_err = np.asarray(o.prediction_error), np.asarray(o.persistence_error)
            table.add_row(
                str(setup), o.policy, f"[bold]{o.rejected}[/bold]" if o.rejected == best else str(o.rejected),
                str(o.rejected_for_ttft), str(o.rejected_at_arrival - o.rejected_for_ttft),
                str(o.rejected_after_prefill), f"{o.wasted_prefill_gpu_s / 3600:.2f}",
                f"{100 * o.wasted_prefill_gpu_s / max(o.prefill_gpu_s, 1e-9):.0f}", str(o.completed),
                f"{o.served_prompt_tokens / max(o.completed, 1) / 1e3:.2f}", f"{o.served_prompt_tokens / 1e6:.1f}",
                f"{o.served_output_tokens / 1e6:.2f}",
                f"{err.mean():+.3f}/{err.std():.3f}" if len(err) else "-",
                f"{now_err.mean():+.3f}/{now_err.std():.3f}" if len(now_err) else "-",
                f"{p_std:.3f}", f"{p_p2p:.3f}", f"{d_mean:.2f}", f"{d_std:.3f}", f"{d_p2p:.3f}",
                f"{anti_phase(o, start=WARMUP_S, stop=stop):+.2f}")
        table.add_section()
    console.print(table)
    everything = [o for outcomes in results.values() for o in outcomes]
    console.print(f"SLO checks over all runs: admitted requests over the TTFT SLO {sum(o.ttft_violations for o in everything)}; "
                  f"decode-instance time over the TBT SLO "
                  f"{100 * sum(o.tbt_over_slo_s for o in everything) / max(sum(o.decode_instance_s for o in everything), 1e-9):.2f}%; "
                  f"over the KV capacity (outputs outgrew the reservation) "
                  f"{100 * sum(o.kv_over_s for o in everything) / max(sum(o.decode_instance_s for o in everything), 1e-9):.2f}%")
    for setup, outcomes in results.items():
        by = {o.policy: o for o in outcomes}
        pred, early, reactive = by["predictive"], by["early"], by["reactive"]
        fewest = min(outcomes, key=lambda o: o.rejected)
        calmer = (amplitude(pred.prefill_load, pred.times, start=WARMUP_S, stop=stop)[0]
                  < amplitude(early.prefill_load, early.times, start=WARMUP_S, stop=stop)[0])
        console.print(f"{setup}: fewest rejections: {fewest.policy}; predictive vs reactive "
                      f"{pred.rejected - reactive.rejected:+d} rejected, wasted prefill "
                      f"{pred.wasted_prefill_gpu_s / max(reactive.wasted_prefill_gpu_s, 1e-9):.2f}x; vs early "
                      f"{pred.rejected - early.rejected:+d} rejected, prefill load calmer than early's: "
                      f"{'yes' if calmer else 'no'}")
    console.print("Mooncake Table 3 (its 23k-request trace at 2x, 8P+8D): rejected 4183 baseline, 3771 early, "
                  "3589 prediction-based.")
    setup = next(s for s in results if (s.prefill, s.decode) == plotted)
    panels = ("reactive", "early", "predictive", buffered[-1] if buffered else "", "predictive-ratio")
    shown = [o for o in results[setup] if o.policy in panels]
    plot(shown, path=args.plot, threshold=args.threshold, stop=stop,
         title=f"Prefill and decode load per policy: {TRACE.name} at {args.speed:g}x, {setup} ({PROFILE}), "
               f"TTFT SLO {slo.ttft_s:g} s, TBT SLO {slo.tbt_s:g} s")
    console.print(f"plot ({setup}): {args.plot}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
