"""The one percentile every bench and load test reports (devstack.load.percentile)."""

from __future__ import annotations

import math
import random

import pytest

from devstack.load import percentile, percentile_ms


def test_nearest_rank_on_a_hundred_values() -> None:
    values = [float(n) for n in range(1, 101)]
    random.Random(3).shuffle(values)
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0  # the smallest, never an index of -1


@pytest.mark.parametrize("count", [1, 2, 7, 1000, 1001])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_at_least_the_fraction_is_at_or_below_and_no_smaller_value_qualifies(
    count: int, fraction: float
) -> None:
    rng = random.Random(count)
    values = [rng.random() for _ in range(count)]
    p = percentile(values, fraction)
    at_or_below = sum(v <= p for v in values)
    assert at_or_below >= fraction * count
    assert sum(v < p for v in values) < fraction * count


def test_no_values() -> None:
    assert math.isnan(percentile([], 0.99))
    assert percentile_ms([], 0.99) == 0.0
    assert percentile_ms([0.002, 0.001, 0.003], 0.5) == 2.0
