"""The one significance test ``compare`` uses: a one-sided Mann-Whitney U on two samples.

SciPy's ``mannwhitneyu`` (exact for the handful of repeats a run makes, the
normal approximation with tie correction beyond), not a hand-rolled test.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import mannwhitneyu

__all__ = ["rank_test_p"]


def rank_test_p(base: Sequence[float], new: Sequence[float]) -> float:
    """One-sided p-value that ``new`` tends to be larger than ``base``; 3 against 3 fully separated gives 0.05."""
    if not base or not new:
        raise ValueError("a rank test needs values on both sides")
    if len(set(base) | set(new)) == 1:
        return 1.0  # all equal: nothing tends to be larger
    return float(mannwhitneyu([float(x) for x in new], [float(x) for x in base], alternative="greater").pvalue)
