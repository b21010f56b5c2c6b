"""Numbers as Kubernetes resource quantities, the form ``ExternalMetricValue.value`` takes on the wire.

The HPA reads every external value with ``Quantity.MilliValue()`` (rest_metrics_client.go), so thousandths are
what it sees; finer digits are still written so other clients get the value we computed.

    >>> format_quantity(3.0), format_quantity(0.5), format_quantity(0.0125), format_quantity(-2.25)
    ('3', '500m', '12500u', '-2250m')

Pure: no I/O.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["format_quantity"]

_NANO = Decimal("1e-9")
# Decimal SI suffixes finer than one, coarsest first: the first that makes the value whole is used.
_FRACTION_SUFFIXES = (("m", 3), ("u", 6), ("n", 9))


def format_quantity(value: float) -> str:
    """The shortest decimal-SI quantity equal to ``value`` rounded to nano units. NaN and infinities have
    no quantity form: they raise ``ValueError`` (the adapter never serves them)."""
    if not math.isfinite(value):
        raise ValueError(f"no quantity for {value!r}")
    exact = Decimal(repr(value)).quantize(_NANO, rounding=ROUND_HALF_EVEN)
    if exact == exact.to_integral_value():
        return str(int(exact))
    for suffix, digits in _FRACTION_SUFFIXES:
        scaled = exact.scaleb(digits)
        if scaled == scaled.to_integral_value():
            return f"{int(scaled)}{suffix}"
    raise AssertionError("unreachable: a value rounded to nano units is whole in nano units")  # pragma: no cover
