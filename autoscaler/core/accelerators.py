"""One spelling per accelerator type: the key every comparison of accelerators uses.

Clusters name one GPU many ways: a VariantAutoscaling says ``H100``, NVIDIA's GPU feature discovery labels
nodes ``NVIDIA-H100-80GB-HBM3`` (``nvidia.com/gpu.product``), GKE ``nvidia-h100-80gb``
(``cloud.google.com/gke-accelerator``), llm-d's charts ``llm-d.ai/accelerator-variant``, a policy file
whatever its author typed. :func:`canonical_accelerator` maps all of them to one name, and every place an
accelerator enters the controller (the CRDs, Prometheus labels, the policy's variants, quotas and prices,
profiles, MachineSet labels) passes it through here, so two spellings of one GPU are one accelerator
everywhere and nothing compares raw strings.

The rule, in order: upper case; ``_`` and spaces become ``-``; a leading vendor or product-line word
(``NVIDIA``, ``AMD``, ``INTEL``, ``GOOGLE``, ``TESLA``, ``INSTINCT``, ``RADEON``, ``GEFORCE``) is dropped;
trailing memory sizes (``80GB``, ``141G``), memory kinds (``HBM3``, ``HBM3E``, ``GDDR6``) and board form
factors (``SXM``, ``SXM4``, ``SXM5``, ``PCIE``; GKE's ``mega``, a machine shape of the same chip) are dropped. What remains names the chip (``H100``,
``A100``, ``L40S``, ``MI300X``, ``H100-NVL``). Form factors go because a quota or a profile is kept per
chip; a product that is a different chip keeps its word (``NVL``, ``GH200``). Pure and cached: the
Prometheus parser calls it for every series.
"""

from __future__ import annotations

import functools
import re

__all__ = ["accelerators_equal", "canonical_accelerator"]

_VENDOR_WORDS = frozenset({"NVIDIA", "AMD", "INTEL", "GOOGLE", "TESLA", "INSTINCT", "RADEON", "GEFORCE"})
_SUFFIX = re.compile(r"^(\d+(\.\d+)?(GB|G|GIB)|HBM\d*E?|GDDR\d*X?|SXM\d*|PCIE|MEGA)$")


@functools.lru_cache(maxsize=4096)
def canonical_accelerator(name: str) -> str:
    """The canonical name of an accelerator type (``nvidia-h100-80gb`` and ``NVIDIA-H100-80GB-HBM3`` ->
    ``H100``). An empty or blank name stays empty (unknown is not a type)."""
    words = [w for w in re.split(r"[-_\s]+", name.strip().upper()) if w]
    while len(words) > 1 and words[0] in _VENDOR_WORDS:
        words.pop(0)
    while len(words) > 1 and _SUFFIX.match(words[-1]):
        words.pop()
    return "-".join(words)


def accelerators_equal(a: str, b: str) -> bool:
    return canonical_accelerator(a) == canonical_accelerator(b)
