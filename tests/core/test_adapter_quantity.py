"""Values as Kubernetes quantities: what the HPA reads with Quantity.MilliValue()."""

import math

import pytest

from autoscaler.adapter.quantity import format_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0.0, "0", id="zero"),
        pytest.param(3.0, "3", id="whole"),
        pytest.param(12.0, "12", id="whole-two-digits"),
        pytest.param(0.5, "500m", id="half"),
        pytest.param(1.25, "1250m", id="milli"),
        pytest.param(0.0125, "12500u", id="micro"),
        pytest.param(2 / 3, "666666667n", id="nano-rounded"),
        pytest.param(0.1 + 0.2, "300m", id="binary-float-noise-rounded-away"),
        pytest.param(-2.25, "-2250m", id="negative"),
        pytest.param(4e-10, "0", id="below-nano"),
        pytest.param(123456789.0, "123456789", id="large"),
    ],
)
def test_formats_the_shortest_equal_quantity(value, expected):
    assert format_quantity(value) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_refuses_values_without_a_quantity(value):
    with pytest.raises(ValueError, match="no quantity"):
        format_quantity(value)
