"""variant-autoscaler: SLO-aware, cost-optimal autoscaling for disaggregated vLLM serving.

Layers (enforced by tests/core/test_layers.py, whose ``ALLOWED`` table says which parts each part may import;
each package's docstring repeats its row):

- ``autoscaler.core`` and ``autoscaler.perf``: pure decisions and performance math. No I/O, no clock,
  no Kubernetes, Prometheus or HTTP imports.
- Adapters: ``autoscaler.signals`` (Prometheus), ``autoscaler.kube`` (Kubernetes API),
  ``autoscaler.emulator`` (a vLLM metrics emulator), ``autoscaler.localstack`` (real local components).
- Shell: ``autoscaler.controller`` (the loop), ``autoscaler.cli``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
