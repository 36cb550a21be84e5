"""The one significance test ``compare`` uses: a one-sided Mann-Whitney U on two samples.

Standard library only (``statistics.NormalDist`` for large samples): the exact
permutation distribution for the handful of repeats a run makes, the normal
approximation with tie and continuity corrections beyond 20 000 splits.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Sequence

__all__ = ["rank_test_p"]

#: Up to this many ways of splitting the pooled values, the rank test is exact (a permutation test).
_EXACT_SPLITS = 20_000


def _midranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_test_p(base: Sequence[float], new: Sequence[float]) -> float:
    """One-sided p-value that ``new`` tends to be larger than ``base`` (Mann-Whitney U, ties as mid-ranks).

    Exact (every split of the pooled values enumerated) while there are at most
    20 000 splits, which covers any number of repeats a run makes; beyond that
    the normal approximation with tie and continuity corrections
    (``statistics.NormalDist``).  3 against 3 fully separated gives 0.05.
    """
    m, n = len(base), len(new)
    if not m or not n:
        raise ValueError("a rank test needs values on both sides")
    pooled = [float(x) for x in (*base, *new)]
    ranks = _midranks(pooled)
    r_new = sum(ranks[m:])
    splits = math.comb(m + n, n)
    if splits <= _EXACT_SPLITS:
        hits = sum(1 for idx in itertools.combinations(range(m + n), n) if sum(ranks[i] for i in idx) >= r_new - 1e-9)
        return hits / splits
    u = r_new - n * (n + 1) / 2
    ties = sum(t**3 - t for t in Counter(pooled).values())
    var = m * n / 12 * ((m + n + 1) - ties / ((m + n) * (m + n - 1)))
    if var <= 0:
        return 1.0
    z = (u - m * n / 2 - 0.5) / math.sqrt(var)
    return 1 - statistics.NormalDist().cdf(z)
