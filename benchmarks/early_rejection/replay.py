"""The replay of ``benchmarks/bench_early_rejection.py``: Mooncake's trace through prefill and decode instances,
each arrival decided by a gateway rule (:mod:`autoscaler.sim.gateway_rules`), the decode door's check the admission
engine's (:func:`autoscaler.core.admission.admit_to_decode`). The policies, the regimes and what is measured are
described in that file's docstring."""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np

from autoscaler.core.admission import (
    DecodePool,
    LatencySLO,
    RejectionPolicy,
    admit_to_decode,
    decode_load,
    prefill_seconds,
)
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.gateway_rules import (
    DecodingSequence,
    DoorRule,
    GatewayConfig,
    LaterArrivals,
    OutputLengths,
    PoolsView,
    PrefillJob,
    door_patience,
    judge_request,
    seat_from_door,
)
from autoscaler.traces import Trace

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "autoscaler" / "data" / "traces" / "mooncake_conversation_trace.jsonl"
PLOTS = ROOT / "benchmarks" / "results"  # early_rejection.png (KV-bound), early_rejection_tbt.png (TBT-bound)
PROFILE = "llama-3.1-70b/a100-tp8"  # one 8-GPU A800 node per instance, as the paper's testbed
BLOCK_TOKENS = 512  # Mooncake trace hash_ids cover 512-token blocks
SLO = LatencySLO(ttft_s=30.0, tbt_s=0.1)  # Mooncake section 8: real-trace replay thresholds
SAMPLE_S = 1.0  # load sampling period
WINDOW_S = 60.0  # window for peak-to-peak amplitude
WARMUP_S = 120.0  # loads before this are left out of the amplitude (the pools start empty)
EWMA = 0.02  # weight of a new observation in the gateway's running means
LENGTH_SAMPLE = 500  # finished requests whose output lengths predictive-spread uses
FIRST_MEAN_OUTPUT = 256.0  # what the gateway assumes until requests finish
MISS_SAMPLE = 500  # recent forecast misses the probability rule calibrates its extra error on
ADMITTED_SAMPLE = 500  # recent admissions whose prefill times and prompts the overtaker forecast draws on
RATE_WINDOW_S = 60.0  # the admitted arrival rate is the admissions over this window



@dataclass(frozen=True)
class Regime:
    """Which decode limit binds: the SLOs and the pool sizes that overload this profile under them."""

    name: str
    slo: LatencySLO
    pools: str
    plot_pools: str
    plot: Path


REGIMES = {
    # Mooncake's real-trace SLOs: with 12k-token prompts the KV cache fills (step ~0.07 s) before the step time
    # reaches 0.1 s. One decode instance is 1.6x overloaded; prefill at 1.07x to 2.15x of demand.
    "kv": Regime("KV-bound", SLO, "8x8,8x1,6x1,5x1,4x1", "6x1", PLOTS / "early_rejection.png"),
    # Mooncake's decode load is predicted TBT / TBT SLO (its decode is TBT-bound). A full cache of this profile
    # steps in 0.060-0.073 s (0.0176 + 0.000118 B + 3.09e-8 x 1.36M tokens, B = 20-110), so a 50 ms SLO binds at
    # 50-65% of the cache. Decode then needs ~1.9 instances: 1D is 1.9x overloaded, 2D about at capacity (the
    # paper's 18% rejected sits between).
    "tbt": Regime("TBT-bound", LatencySLO(ttft_s=30.0, tbt_s=0.05), "8x8,8x2,8x1,6x1,4x1", "8x2",
                  PLOTS / "early_rejection_tbt.png"),
}


@dataclass(frozen=True)
class Policy:
    rule: RejectionPolicy
    door_rejects: bool  # a prefilled request that does not fit decode is rejected (True) or waits for a seat
    spread: bool = False  # predict with the finished requests' output lengths instead of one mean
    probability: float | None = None  # admit when P(decode load at entry <= threshold) reaches this
    door: DoorRule = DoorRule.FIFO  # who takes a freed seat among the admitted requests waiting for one
    overtakers: bool = False  # the forecast also counts later admissions that finish prefill first
    break_even: bool = False  # admit when P(fit at entry) beats the break-even level (GatewayConfig.break_even)
    patience: bool = False  # a prefilled request waits at the door at most door_patience, then is rejected there
    seat_odds: bool = False  # requests in prefill count at the fit probability they were admitted on
    # (PrefillJob.seat_probability): the door may turn them away


POLICIES = {
    "reactive": Policy(RejectionPolicy.REACTIVE, door_rejects=True),
    "early": Policy(RejectionPolicy.EARLY, door_rejects=False),
    "predictive": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False),
    "predictive-spread": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True),
    "early+door": Policy(RejectionPolicy.EARLY, door_rejects=True),
    "predictive+door": Policy(RejectionPolicy.PREDICTIVE, door_rejects=True),
    "predictive-p25": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True, probability=0.25),
    "predictive-p75": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True, probability=0.75),
    "predictive-fit": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True, door=DoorRule.FIRST_FIT),
    "predictive-ahead": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, overtakers=True),
    "spread-ahead": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True, overtakers=True),
    # Mooncake's prediction with the Conductor's double-check at the door, the door bounded by the TBT slack:
    "break-even": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True, overtakers=True,
                         break_even=True, patience=True, door=DoorRule.FIRST_FIT, seat_odds=True),
    # ... and its bounded door alone, behind reactive admission and behind spread-ahead's expected-load rule.
    "reactive+wait": Policy(RejectionPolicy.REACTIVE, door_rejects=False, patience=True, door=DoorRule.FIRST_FIT),
    "spread-ahead+wait": Policy(RejectionPolicy.PREDICTIVE, door_rejects=False, spread=True, overtakers=True,
                                patience=True, door=DoorRule.FIRST_FIT),
}


@dataclass
class Outcome:
    policy: str
    arrivals: int = 0
    rejected_at_arrival: int = 0
    rejected_for_ttft: int = 0  # of those at arrival: the prefill queue was too long
    rejected_after_prefill: int = 0
    completed: int = 0
    good: int = 0  # completed within the TTFT and TBT SLOs
    good_output_tokens: float = 0.0
    served_prompt_tokens: float = 0.0
    prefill_gpu_s: float = 0.0
    wasted_prefill_gpu_s: float = 0.0
    ttft_violations: int = 0
    tpot_violations: int = 0
    door_waits: list[float] = field(default_factory=list)  # seconds each admitted request waited for a decode seat
    decode_instance_s: float = 0.0
    tbt_over_slo_s: float = 0.0  # decode-instance seconds with the step time over the TBT SLO
    kv_over_s: float = 0.0  # decode-instance seconds with KV beyond capacity (outputs outgrew the reservation)
    tbt_binding_s: float = 0.0  # decode-instance seconds where step / TBT SLO is the highest of the three limits
    length_sd: list[float] = field(default_factory=list)  # forecast sd from the output lengths, per admission
    prediction_error: list[float] = field(default_factory=list)  # predicted - actual decode load at entry
    persistence_error: list[float] = field(default_factory=list)  # load at arrival - actual at entry
    overtaken_load: list[float] = field(default_factory=list)  # of the actual load at entry: requests admitted later
    entry_prompts: list[float] = field(default_factory=list)  # prompt of the request each miss above belongs to
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
        self.output = np.empty(0)  # total output tokens
        self.request = np.empty(0, dtype=np.int64)

    def per_instance(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.setup.decode
        return (np.bincount(self.instance, minlength=n).astype(np.float64),
                np.bincount(self.instance, weights=self.context, minlength=n))

    def step_times(self) -> np.ndarray:
        p = self.setup.profile
        counts, kv = self.per_instance()
        return np.where(counts > 0, p.decode_alpha + p.decode_beta * counts + p.decode_gamma * kv, np.inf)

    def instance_pool(self, j: int, counts: np.ndarray, kv: np.ndarray) -> DecodePool:
        return DecodePool(replicas=1, profile=self.setup.profile, running=float(counts[j]),
                          mean_context_tokens=float(kv[j] / counts[j]) if counts[j] else 0.0)

    def loads(self) -> np.ndarray:
        counts, kv = self.per_instance()
        return np.array([decode_load(self.instance_pool(j, counts, kv), slo=self.setup.slo, running=counts[j],
                                     context_tokens=kv[j] / counts[j] if counts[j] else 0.0)
                         for j in range(self.setup.decode)])

    def sequences(self) -> tuple[DecodingSequence, ...]:
        generated = (self.output - self.remaining).tolist()
        return tuple(DecodingSequence(context_tokens=c, generated_tokens=g)
                     for c, g in zip(self.context.tolist(), generated, strict=True))

    def add(self, *, j: int, request: int, prompt: float, output: float) -> None:
        self.remaining = np.append(self.remaining, output - 1.0)  # the first token came out of prefill
        self.context = np.append(self.context, prompt)
        self.instance = np.append(self.instance, j)
        self.output = np.append(self.output, output)
        self.request = np.append(self.request, request)

    def advance(self, dt: float) -> np.ndarray:
        """One time step; returns the requests that finished."""
        if not len(self.remaining):
            return np.empty(0, dtype=np.int64)
        tokens = dt / self.step_times()[self.instance]
        self.remaining = self.remaining - tokens
        self.context = self.context + np.minimum(tokens, np.maximum(self.remaining + tokens, 0.0))
        done = self.remaining <= 0
        finished = self.request[done]
        if done.any():
            keep = ~done
            self.remaining, self.context = self.remaining[keep], self.context[keep]
            self.instance, self.output, self.request = self.instance[keep], self.output[keep], self.request[keep]
        return finished


def pool_load_with(decode: Decode, *, prompt: float, reserve: float, arrived_by: int | None = None) -> float:
    """Decode load over the pool with one more sequence of ``prompt`` (and ``reserve`` KV for its output); with
    ``arrived_by``, counting only the sequences of requests that arrived no later than that one."""
    kept = np.ones(len(decode.request), dtype=bool) if arrived_by is None else decode.request <= arrived_by
    running = float(kept.sum()) + 1.0
    kv = float(decode.context[kept].sum()) + prompt
    pool = DecodePool(replicas=decode.setup.decode, profile=decode.setup.profile)
    return decode_load(pool, slo=decode.setup.slo, running=running, context_tokens=kv / running,
                       kv_tokens=kv + reserve)


def simulate(trace: Trace, *, policy: str, setup: Setup) -> Outcome:
    out = Outcome(policy=policy)
    kind = POLICIES[policy]
    profile, slo, threshold = setup.profile, setup.slo, setup.threshold
    config = GatewayConfig(slo=slo, policy=kind.rule, reject_above=threshold, admit_probability=kind.probability,
                           break_even=kind.break_even)
    n = len(trace)
    arrival = trace.arrival_s
    prompts = trace.input_tokens.astype(np.float64)
    outputs = trace.output_tokens.astype(np.float64)
    hashes = trace.hash_ids or tuple(() for _ in range(n))
    seen: set[int] = set()
    free_at = np.zeros(setup.prefill)  # when each prefill instance's queue empties
    inflight: list[tuple[float, int, float]] = []  # heap of (prefill done, request, prefill seconds)
    door: deque[tuple[int, float]] = deque()  # prefilled, waiting for a decode seat: (request, prefill seconds)
    give_up_at: dict[int, float] = {}  # with patience: when each request at the door is rejected there
    seat_chance: dict[int, float] = {}  # with seat_odds: the fit probability each request was admitted on
    ready_at = np.full(n, math.nan)  # when each request's prefill finished (its first token)
    decode = Decode(setup)
    finished_lengths: deque[float] = deque(maxlen=LENGTH_SAMPLE)
    lengths_cache: dict[tuple[int, float], OutputLengths] = {}
    mean_output = FIRST_MEAN_OUTPUT
    mean_own_prefill = prefill_seconds(profile, tokens=float(prompts[: min(n, 50)].mean()))
    # The unit of wasted prefill for break-even: the prefill of an arriving request, admitted or not (the admitted
    # mean would shrink as the rule turns long prompts away and raise every level in turn).
    mean_arrival_prefill = mean_own_prefill
    predicted: dict[int, tuple[float, float, float]] = {}  # request: (load at entry, load now, sd from lengths)
    misses: deque[float] = deque(maxlen=MISS_SAMPLE)
    length_variances: deque[float] = deque(maxlen=MISS_SAMPLE)
    door_changed = False  # a seat can free or a new request wait only then: the door is checked again
    admitted: deque[tuple[float, float, float]] = deque(maxlen=ADMITTED_SAMPLE)  # (at, prefill s, prompt)
    empty_instance = DecodePool(replicas=1, profile=profile)
    next_arrival, next_sample, t = 0, 0.0, 0.0
    end = float(arrival[-1]) + 900.0

    def output_lengths() -> OutputLengths:
        if not kind.spread or not finished_lengths:
            return OutputLengths.fixed(mean_output)
        key = (out.completed, mean_output)
        if key not in lengths_cache:
            lengths_cache.clear()
            lengths_cache[key] = OutputLengths.from_sample(finished_lengths)
        return lengths_cache[key]

    def later_arrivals(now: float) -> LaterArrivals | None:
        """The admitted rate over the last minute and the last admissions' prefill times and prompts."""
        if not kind.overtakers or not admitted:
            return None
        recent = sum(1 for at, _, _ in admitted if at > now - RATE_WINDOW_S)
        return LaterArrivals.from_sample(rate_per_s=recent / min(RATE_WINDOW_S, max(now, 1.0)),
                                         admitted=((s, p) for _, s, p in admitted))

    def view(now: float) -> PoolsView:
        jobs = [PrefillJob(done_at=done, prompt_tokens=prompts[i], seat_probability=seat_chance.get(i, 1.0))
                for done, i, _ in inflight]
        jobs += [PrefillJob(done_at=ready_at[i], prompt_tokens=prompts[i], seat_probability=seat_chance.get(i, 1.0))
                 for i, _ in door]
        return PoolsView(prefill_profile=profile, decode_profile=profile, prefill_free_at=tuple(free_at.tolist()),
                         decode_replicas=setup.decode, outputs=output_lengths(), prefill_jobs=tuple(jobs),
                         decoding=decode.sequences(), later_arrivals=later_arrivals(now),
                         mean_prefill_s=mean_arrival_prefill)

    def finish(i: int, at: float) -> None:
        out.completed += 1
        out.served_prompt_tokens += prompts[i]
        ttft_ok = ready_at[i] - arrival[i] <= slo.ttft_s + 1e-9
        tpot_ok = outputs[i] <= 1 or (at - ready_at[i]) / (outputs[i] - 1) <= slo.tbt_s + 1e-9
        out.tpot_violations += not tpot_ok
        if ttft_ok and tpot_ok:
            out.good += 1
            out.good_output_tokens += outputs[i]

    def pick(waiting: list[float], rule: DoorRule) -> tuple[int, int] | None:
        """Who of ``waiting`` (prompts) takes a seat, on the instance where its load would be lowest."""
        counts, kv = decode.per_instance()
        instances = [decode.instance_pool(j, counts, kv) for j in range(setup.decode)]
        return seat_from_door(instances=instances, waiting=waiting, slo=slo, reserve_tokens=mean_output,
                              threshold=threshold, rule=rule)

    def seat(i: int, j: int, at: float) -> None:
        decode.add(j=j, request=i, prompt=prompts[i], output=outputs[i])
        out.door_waits.append(at - ready_at[i])

    def fits_empty(i: int) -> bool:
        return admit_to_decode(decode=empty_instance, slo=slo, context_tokens=prompts[i], threshold=threshold,
                               reserve_tokens=mean_output)

    def reject_at_door(i: int, seconds: float) -> None:
        out.rejected_after_prefill += 1
        out.wasted_prefill_gpu_s += seconds * profile.gpus_per_replica

    def open_door(at: float) -> None:
        while door:
            chosen = pick([prompts[i] for i, _ in door], kind.door)
            if chosen is None:
                return
            position, j = chosen
            i, _ = door[position]
            del door[position]
            seat(i, j, at)

    while t < end and (next_arrival < n or inflight or door or len(decode.remaining)):
        t_next = t + setup.dt
        while next_arrival < n and arrival[next_arrival] < t_next:
            i = next_arrival
            next_arrival += 1
            at = float(arrival[i])
            out.arrivals += 1
            cached = cached_prefix(hashes[i], seen, prompts[i])
            verdict = judge_request(view(at), prompt_tokens=prompts[i], cached_tokens=cached, now=at, config=config)
            seconds = prefill_seconds(profile, tokens=prompts[i] - cached, cached_tokens=cached)
            mean_arrival_prefill += EWMA * (seconds - mean_arrival_prefill)
            if not verdict.admit:
                out.rejected_at_arrival += 1
                out.rejected_for_ttft += verdict.prefill_load > threshold
                continue
            predicted[i] = (verdict.decode_load_at_entry, verdict.decode_load_now, verdict.decode_load_sd_at_entry)
            if kind.seat_odds and math.isfinite(verdict.fit_probability):
                seat_chance[i] = verdict.fit_probability
            replica = int(np.argmin(free_at))
            admitted.append((at, seconds, float(prompts[i])))
            free_at[replica] = max(free_at[replica], at) + seconds
            heapq.heappush(inflight, (float(free_at[replica]), i, seconds))
            out.prefill_gpu_s += seconds * profile.gpus_per_replica
            mean_own_prefill += EWMA * (seconds - mean_own_prefill)

        while inflight and inflight[0][0] < t_next:
            done_at, i, seconds = heapq.heappop(inflight)
            seen.update(hashes[i])
            ready_at[i] = done_at
            if done_at - arrival[i] > slo.ttft_s + 1e-9:
                out.ttft_violations += 1
            then, now, length_sd = predicted.pop(i)
            actual = pool_load_with(decode, prompt=prompts[i], reserve=mean_output)
            out.prediction_error.append(then - actual)
            # Requests admitted after this one that reached decode first: no arrival-time forecast can see them.
            out.overtaken_load.append(actual - pool_load_with(decode, prompt=prompts[i], reserve=mean_output,
                                                              arrived_by=i))
            out.entry_prompts.append(float(prompts[i]))
            out.persistence_error.append(now - actual)
            out.length_sd.append(length_sd)
            if (kind.probability is not None or kind.break_even) and math.isfinite(then - actual):
                # The error the output lengths do not explain: the misses' variance less the lengths' share.
                misses.append(then - actual)
                length_variances.append(length_sd ** 2)
                extra = float(np.var(misses) - np.mean(length_variances)) if len(misses) > 1 else 0.0
                config = replace(config, forecast_error_sd=math.sqrt(max(extra, 0.0)))
            if outputs[i] <= 1:  # done at its first token
                finish(i, done_at)
            elif kind.door_rejects:
                chosen = pick([prompts[i]], DoorRule.FIFO)
                if chosen is None:
                    reject_at_door(i, seconds)
                else:
                    seat(i, chosen[1], done_at)
            elif not fits_empty(i):  # fits no instance even empty: waiting cannot help
                reject_at_door(i, seconds)
            else:
                door.append((i, seconds))
                door_changed = True
                if kind.patience:  # the slack a mean output leaves at today's step (the door's exact check
                    steps = decode.step_times()  # keeps its own step within the SLO)
                    busy_steps = steps[np.isfinite(steps)]
                    step = float(busy_steps.mean()) if len(busy_steps) else profile.decode_step_time(1.0, 0.0)
                    give_up_at[i] = done_at + door_patience(slo=slo, step_s=step, output_tokens=mean_output)
        if door_changed:  # loads only grow until a sequence finishes: nothing new can fit before
            open_door(t_next)
            door_changed = False
        if kind.patience and door and min(give_up_at[i] for i, _ in door) < t_next:
            waiting = list(door)
            door.clear()
            for i, seconds in waiting:
                if give_up_at[i] < t_next:
                    reject_at_door(i, seconds)
                else:
                    door.append((i, seconds))

        if len(decode.remaining):
            steps = decode.step_times()
            counts, kv = decode.per_instance()
            busy = counts > 0
            out.decode_instance_s += setup.dt * busy.sum()
            out.tbt_over_slo_s += setup.dt * (busy & (steps > slo.tbt_s)).sum()
            out.kv_over_s += setup.dt * (kv > profile.kv_capacity_tokens).sum()
            tbt_load = steps / slo.tbt_s
            binding = (tbt_load >= kv / profile.kv_capacity_tokens) & (tbt_load >= counts / profile.max_num_seqs)
            out.tbt_binding_s += setup.dt * (busy & binding).sum()
            for i in decode.advance(setup.dt).tolist():  # what the gateway learns: lengths of finished requests
                mean_output += EWMA * (outputs[i] - mean_output)
                finished_lengths.append(float(outputs[i]))
                finish(i, t_next)
                door_changed = True

        t = t_next
        if t >= next_sample:
            next_sample += SAMPLE_S
            out.times.append(t)
            out.prefill_load.append(float(np.mean(np.maximum(free_at - t, 0.0)) + mean_own_prefill) / slo.ttft_s)
            out.decode_load.append(float(decode.loads().mean()))
    return out

