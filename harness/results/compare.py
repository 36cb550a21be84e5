"""A run against a baseline, and many runs summarised as percentiles.

:func:`compare` matches figures by (case, check, figure name) and flags the
ones that got worse by more than ``tolerance`` (a ratio: 0.2 = 20 %), plus
every verdict that went from pass to something else.  Only "lower is better"
figures can regress: times, latencies, percentiles, deltas, growth, drift,
ratios.  The direction of any other figure is not known, so its change is
shown but never flagged.

:func:`aggregate` turns the repeats of a release profile (one run or many)
into p50/p95/p99/min/max per figure, which is what a release sign-off quotes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.results.schema import RunResult

__all__ = [
    "Comparison",
    "FigureChange",
    "FigureStats",
    "VerdictChange",
    "aggregate",
    "aggregate_markdown",
    "compare",
    "lower_is_better",
    "percentile",
]

_LOWER = re.compile(r"ms|latency|p50|p95|p99|growth|delta|drift|ratio|exit", re.I)


#: Limits a check was held to (bound_ms, limit_s) are configuration, not measurements.
_CONFIG = re.compile(r"bound|limit|budget|threshold|tolerance|allowed", re.I)


def lower_is_better(name: str) -> bool:
    """Times, latencies, percentiles, leak deltas, growth and drift: smaller is better."""
    return bool(_LOWER.search(name)) and not _CONFIG.search(name)


def _scalar(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class FigureChange:
    case_id: str
    check: str
    figure: str
    base: float
    new: float
    lower_is_better: bool
    regressed: bool

    @property
    def change(self) -> float | None:
        """Relative change (0.25 = 25 % higher); None from a zero base."""
        return None if self.base == 0 else (self.new - self.base) / abs(self.base)


@dataclass(frozen=True)
class VerdictChange:
    case_id: str
    check: str
    base: str
    new: str

    @property
    def regressed(self) -> bool:
        return self.base in ("pass", "known") and self.new in ("fail", "unknown", "stale")


@dataclass
class Comparison:
    base_id: str
    new_id: str
    tolerance: float
    figures: list[FigureChange] = field(default_factory=list)
    verdicts: list[VerdictChange] = field(default_factory=list)
    #: (case, check) present in only one of the runs.
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[FigureChange]:
        return [f for f in self.figures if f.regressed]

    @property
    def verdict_regressions(self) -> list[VerdictChange]:
        return [v for v in self.verdicts if v.regressed]

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.verdict_regressions

    def lines(self) -> list[str]:
        out = [f"{v.case_id}::{v.check}: {v.base} -> {v.new}" for v in self.verdict_regressions]
        for f in self.regressions:
            pct = f" (+{f.change:.0%})" if f.change is not None else " (from 0)"
            out.append(f"{f.case_id}::{f.check} {f.figure}: {_n(f.base)} -> {_n(f.new)}{pct}")
        return out

    def to_markdown(self) -> str:
        head = f"### Against baseline `{self.base_id}` (tolerance {self.tolerance:.0%})"
        if self.ok:
            return f"{head}\n\nNo regressions in {len(self.figures)} figures and {len(self.verdicts)} verdict changes."
        out = [head, ""]
        out += [f"- ❌ `{line}`" for line in self.lines()]
        return "\n".join(out)

    def render_console(self, console: Console) -> None:
        table = Table(title=Text(f"against baseline {self.base_id} (tolerance {self.tolerance:.0%})"))
        for col in ("case::check", "figure", "base", "new", "change"):
            table.add_column(col, overflow="fold")
        for v in self.verdicts:
            table.add_row(Text(f"{v.case_id}::{v.check}"), "verdict", v.base, v.new,
                          Text("REGRESSED" if v.regressed else "improved", style="bold red" if v.regressed else "green"))
        for f in self.figures:
            if f.regressed or (f.change is not None and abs(f.change) > self.tolerance):
                ch = f"{f.change:+.0%}" if f.change is not None else "from 0"
                table.add_row(Text(f"{f.case_id}::{f.check}"), Text(f.figure), _n(f.base), _n(f.new),
                              Text(ch, style="bold red" if f.regressed else ""))
        console.print(table)
        console.print(Text("no regressions" if self.ok else f"{len(self.lines())} regression(s)",
                           style="green" if self.ok else "bold red"))


def _n(x: float) -> str:
    return f"{x:.4g}"


def _index(run: RunResult) -> dict[tuple[str, str], Any]:
    # Repeats share a case id: the first repeat stands for the case in a comparison.
    out: dict[tuple[str, str], Any] = {}
    for case, v in run.checks():
        out.setdefault((case.case_id, v.check), v)
    return out


def compare(base: RunResult, new: RunResult, tolerance: float = 0.2, *, min_delta: float = 0.0) -> Comparison:
    """Figures of ``new`` against ``base``; a lower-is-better figure regresses when
    ``new > base * (1 + tolerance)`` and ``new - base > min_delta`` (from a zero
    base: any increase above ``min_delta``, e.g. a leak delta going 0 -> 3)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, not {tolerance}")
    b, n = _index(base), _index(new)
    cmp = Comparison(base.run_id, new.run_id, tolerance)
    cmp.only_in_base = sorted(f"{c}::{k}" for c, k in b.keys() - n.keys())
    cmp.only_in_new = sorted(f"{c}::{k}" for c, k in n.keys() - b.keys())
    for key in sorted(b.keys() & n.keys()):
        bv, nv = b[key], n[key]
        if bv.status != nv.status:
            cmp.verdicts.append(VerdictChange(key[0], key[1], bv.status, nv.status))
        for fig in sorted(bv.figures.keys() & nv.figures.keys()):
            x, y = _scalar(bv.figures[fig]), _scalar(nv.figures[fig])
            if x is None or y is None:
                continue
            lib = lower_is_better(fig)
            worse = y > x * (1 + tolerance) if x > 0 else y > x
            regressed = lib and worse and (y - x) > min_delta
            cmp.figures.append(FigureChange(key[0], key[1], fig, x, y, lib, regressed))
    return cmp


# -- aggregation -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class FigureStats:
    case_id: str
    check: str
    figure: str
    n: int
    p50: float
    p95: float
    p99: float
    min: float
    max: float


def aggregate(runs: RunResult | Iterable[RunResult]) -> dict[tuple[str, str, str], FigureStats]:
    """Per (case, check, figure) over every repeat of every run.

    Scalar figures contribute one value per repeat; list figures (``exit_ms_samples``,
    ``ack_latencies_ms``) contribute all their samples.  Case-level figures are
    filed under the check name ``"*"``.
    """
    pool: dict[tuple[str, str, str], list[float]] = {}
    for run in [runs] if isinstance(runs, RunResult) else runs:
        for case in run.cases:
            sources = [(v.check, v.figures) for v in case.verdicts] + [("*", case.figures)]
            for check, figs in sources:
                for name, val in figs.items():
                    vals = val if isinstance(val, (list, tuple)) else [val]
                    nums = [x for x in (_scalar(v) for v in vals) if x is not None]
                    if nums:
                        pool.setdefault((case.case_id, check, name), []).extend(nums)
    return {
        key: FigureStats(*key, n=len(xs), p50=percentile(xs, 50), p95=percentile(xs, 95),
                         p99=percentile(xs, 99), min=min(xs), max=max(xs))
        for key, xs in sorted(pool.items())
    }


def aggregate_markdown(stats: dict[tuple[str, str, str], FigureStats]) -> str:
    out = ["| case | check | figure | n | p50 | p95 | p99 | min | max |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in stats.values():
        out.append(f"| `{s.case_id}` | `{s.check}` | {s.figure} | {s.n} | {_n(s.p50)} | {_n(s.p95)} | {_n(s.p99)} | {_n(s.min)} | {_n(s.max)} |")
    return "\n".join(out)
