"""Small, dependency-free statistics the checkers report in their messages.

Kept in pure Python (no numpy) so the checkers import in a bare interpreter
and a percentile in a verdict means the same thing on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["median", "percentile", "slope"]


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks.

    This is numpy's default ("linear", Hyndman & Fan type 7): p=0 is the
    minimum, p=100 the maximum, p=50 the median. Interpolation rather than
    nearest rank because with the 20-100 samples a scenario collects, nearest
    rank makes p99 simply the maximum and hides how the tail is shaped.
    Raises ValueError on no values or p outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100 or math.isnan(p):
        raise ValueError(f"percentile p={p} is outside 0..100")
    xs = sorted(float(v) for v in values)
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x; ValueError when x does not vary."""
    n = len(points)
    if n < 2:
        raise ValueError("a slope needs at least two points")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        raise ValueError("a slope needs at least two distinct x values")
    return sum((x - mx) * (y - my) for x, y in points) / sxx
