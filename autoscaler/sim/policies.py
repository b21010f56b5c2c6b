"""The policies the simulator knows by name, as ``variant-autoscaler simulate --policy NAME`` takes them.

``default`` is the product's controller with its planner (:mod:`autoscaler.sim.controlled`); it is pluggable:
:func:`register` replaces a factory. Its ablations show what each part contributes. Factories import what they
build when called, so checking a name costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from autoscaler.errors import ConfigError
from autoscaler.sim.runner import SimPolicy

__all__ = ["ABLATIONS", "BASELINES", "DEFAULT_MODES", "NAIVE", "RELEASED", "STANDARD", "check_names", "make_policy",
           "policy_names", "register"]

BASELINES = ("hpa-tuned", "wva", "dynamo", "best-static", "static-peak", "saturation")
"""The peers ``default`` is compared with, each configured as its users would (``best-static`` and ``hpa-tuned``
are the references: the cheapest constant fleet near the ceiling, and HPAs tuned on the shipped traces). ``wva``
and ``dynamo`` run the settings their sweeps chose with the budget ``hpa-tuned`` got (``benchmarks/sweep_wva.py``,
``benchmarks/sweep_dynamo.py``); :data:`RELEASED` runs them as shipped."""
RELEASED = ("wva-released", "dynamo-released")
"""WVA with its shipped saturation ConfigMap, Dynamo's planner told exactly the SLOs: what the tuned ``wva`` and
``dynamo`` are measured against in their sweeps."""
DEFAULT_MODES = ("dynamo-load",)
"""Peers in the mode their current release defaults to where it is not the one tuned above: Dynamo's planner with
``optimization_target="throughput"``, load-based easy mode on static queue and KV thresholds every 5 s."""
STANDARD = ("default", *BASELINES, "clairvoyant-model")
"""What ``simulate`` runs when no ``--policy`` is given, in report order. ``clairvoyant-model`` is last: it shows
agreement with the project's own capacity model, not a bound."""
NAIVE = ("hpa-queue-naive", "hpa-kv-naive")
"""HPAs nobody should deploy (one metric on both pools, default behaviour), kept to show why."""
ABLATIONS = ("default-no-rejection", "default-mean-forecast", "default-gateway")
"""The default policy without one of its parts: early rejection at the gateway; the upper quantile (it sizes for
the mean forecast). Without the forecaster (and so without early rejection) it is ``saturation``.
``default-gateway`` swaps a part instead: its gateway decides each request on the pools' state (the planner's own
admission decision, :func:`autoscaler.core.admission.assess_admission`, applied per request by
:mod:`autoscaler.sim.gateway`) rather than admitting the cycle's ratio at random: what the controller achieves
behind a gateway that runs the same decision per request."""


def _clairvoyant_model() -> SimPolicy:
    from autoscaler.sim.baselines import ClairvoyantModel

    return ClairvoyantModel()


def _static_peak() -> SimPolicy:
    from autoscaler.sim.baselines import StaticPeak

    return StaticPeak()


def _hpa_tuned() -> SimPolicy:
    from autoscaler.sim.baselines import hpa_tuned

    return hpa_tuned()


def _hpa_naive(metric: str) -> Callable[[], SimPolicy]:
    def make() -> SimPolicy:
        from autoscaler.sim.baselines import hpa_naive

        return hpa_naive(metric)
    return make


def _wva() -> SimPolicy:
    from autoscaler.sim.wva import WVA_TUNED, Wva

    return Wva(thresholds=WVA_TUNED)


def _wva_released() -> SimPolicy:
    from autoscaler.sim.wva import Wva

    return Wva(name="wva-released")


def _dynamo() -> SimPolicy:
    from autoscaler.sim import dynamo

    return dynamo.Dynamo(ttft_target_factor=dynamo.DYNAMO_TUNED_TTFT_TARGET_FACTOR,
                         itl_target_factor=dynamo.DYNAMO_TUNED_ITL_TARGET_FACTOR,
                         adjustment_interval_s=dynamo.DYNAMO_TUNED_ADJUSTMENT_INTERVAL_S)


def _dynamo_released() -> SimPolicy:
    from autoscaler.sim.dynamo import Dynamo

    return Dynamo(name="dynamo-released")


def _dynamo_load() -> SimPolicy:
    from autoscaler.sim.dynamo_load import DynamoLoad

    return DynamoLoad()


def _best_static() -> SimPolicy:
    from autoscaler.sim.best_static import BestStatic

    return BestStatic()


def _controller(name: str, **options: object) -> Callable[[], SimPolicy]:
    def make() -> SimPolicy:
        from autoscaler.sim.controlled import ControllerPolicy

        return ControllerPolicy(name=name, **options)  # type: ignore[arg-type]
    return make


def _saturation() -> SimPolicy:
    from autoscaler.forecast import Method
    from autoscaler.sim.controlled import ControllerPolicy

    # Reactive: the planner still feeds its forecaster but uses nothing of it; the cheapest method will do.
    # As WVA scales: at once (the HPA's scale-up default), not with this product's node-boot window.
    return ControllerPolicy(name="saturation", predictive=False, methods=(Method.LAST_VALUE,),
                            overrides={"behavior": {"scale_up": {"stabilization_window_s": 0.0}}})


_FACTORIES: dict[str, Callable[[], SimPolicy]] = {
    "default": _controller("default"),
    "hpa-tuned": _hpa_tuned,
    "wva": _wva,
    "dynamo": _dynamo,
    "best-static": _best_static,
    "static-peak": _static_peak,
    "saturation": _saturation,
    "clairvoyant-model": _clairvoyant_model,
    "wva-released": _wva_released,
    "dynamo-released": _dynamo_released,
    "dynamo-load": _dynamo_load,
    "hpa-queue-naive": _hpa_naive("queue"),
    "hpa-kv-naive": _hpa_naive("kv"),
    "default-no-rejection": _controller("default-no-rejection", apply_admission=False),
    "default-mean-forecast": _controller("default-mean-forecast", quantile=0.5),
    "default-gateway": _controller("default-gateway", per_request_gateway=True),
    # The product on a model and accelerator nobody has profiled: it starts reactive and learns the engine.
    "default-unprofiled": _controller("default-unprofiled", profiled=False),
}


def policy_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def register(name: str, factory: Callable[[], SimPolicy]) -> None:
    """Add or replace the policy called ``name`` (e.g. a newer ``default``)."""
    _FACTORIES[name] = factory


def check_names(names: list[str]) -> None:
    """ConfigError naming the first unknown policy and the known ones."""
    for name in names:
        if name not in _FACTORIES:
            raise ConfigError(f"policy: unknown policy {name!r}; known: {', '.join(_FACTORIES)}", field="policy")


def make_policy(name: str) -> SimPolicy:
    """A fresh policy object called ``name``; ConfigError naming the known ones otherwise."""
    check_names([name])
    return _FACTORIES[name]()
