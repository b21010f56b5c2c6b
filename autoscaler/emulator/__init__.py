"""A vLLM metrics emulator: emulated pods that serve vLLM v1's real metric names to a real Prometheus.

Each pod runs the performance model of :mod:`autoscaler.perf.engine` and serves ``/metrics`` on its own
loopback port; the emulator lists ready pods in a Prometheus ``file_sd`` file. Pods follow a replica count
(for example a Deployment's, through :mod:`autoscaler.emulator.kube_follow`).

Owns the emulated pods and their metrics endpoint. May import: core, errors, perf.
"""

from autoscaler.emulator.emulator import Emulator, PodView
from autoscaler.emulator.variant import EmulatedVariant, TrafficSampler, constant_load

__all__ = ["EmulatedVariant", "Emulator", "PodView", "TrafficSampler", "constant_load"]
