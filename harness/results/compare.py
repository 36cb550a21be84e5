"""A run against a baseline, and many runs summarised as percentiles.

:func:`compare` matches verdicts by case, check and label (the string
identifiers that tell ``resources.back_to_baseline`` for ``tasks`` from the one
for ``fds``) and compares **metrics only** (:mod:`harness.results.figures`):
never a port, a pid or a cycle count.

A case whose parameters differ between the runs (the profile, the time factor,
the case's own parameters, or a parameter a check recorded such as its bound)
is *not comparable*: listed with its differences, never a regression.

A metric regresses when it got worse by more than the relative tolerance **and**
by more than its floor, or by a meaningful share of its bound whatever the
relative change (:class:`Rule`).  The floor is the unit's (1 ms, 1 MiB, one
count, 0.1 of a ratio) or a tenth of the metric's bound where its verdict has
one: 0.3 ms against a 200 ms bound is noise.  With repeats (the release profile
runs three), the medians are compared and a one-sided rank test (Mann-Whitney
U) must also say the new values are larger, at ``p <= alpha``: every value of
the sides is used, and the report says how sure.  A verdict that went from
pass to fail or unknown is a regression of its own.

:func:`aggregate` turns the repeats of a release profile (one run or many)
into p50/p95/p99/min/max per figure, which is what a release sign-off quotes.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.text import Text

from harness.results.figures import CASE_CHECK, UNIT_FLOORS, figure_type, label_of
from harness.results.ranktest import rank_test_p
from harness.results.schema import CaseResult, RunResult, VerdictResult

__all__ = [
    "Comparison",
    "FigureChange",
    "FigureStats",
    "NotComparable",
    "Rule",
    "VerdictChange",
    "aggregate",
    "aggregate_markdown",
    "compare",
    "fmt_value",
    "percentile",
    "rank_test_p",
]


# -- the rule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """When a metric's change is a regression (docs/ci.md "Regressions against a baseline")."""

    #: The relative change that counts: 0.2 = worse by more than 20 %.
    tolerance: float = 0.2
    #: The floor from a bound: a change smaller than this share of the bound is noise.
    bound_floor: float = 0.1
    #: A change using at least this share of the bound counts, whatever the relative change.
    bound_share: float = 0.25
    #: With ``min_repeats`` values a side or more, the rank test's one-sided p must be at most this.
    alpha: float = 0.05
    min_repeats: int = 3

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and self.bound_floor >= 0 and self.bound_share > 0 and 0 < self.alpha <= 1):
            raise ValueError(f"bad comparison rule: {self}")

    def text(self) -> str:
        return (f"a metric regresses when it is worse by more than {self.tolerance:.0%} and by more than its floor "
                f"(the unit's: 1 ms, 1 MiB, 1 count, 0.1 of a ratio; or {self.bound_floor:.0%} of its bound, "
                f"if larger), or by "
                f"{self.bound_share:.0%} of its bound; with {self.min_repeats}+ values a side the medians are "
                f"compared and a one-sided rank test must give p <= {self.alpha:g}")


def fmt_value(x: float | None, unit: str = "") -> str:
    """A number in its unit: ``0.471 ms``, ``4.8 MiB``, ``3``, ``1.04``."""
    if x is None:
        return "n/a"
    if unit == "B":
        v, sign = abs(x), "-" if x < 0 else ""
        for u in ("B", "KiB", "MiB", "GiB"):
            if v < 1024 or u == "GiB":
                return f"{sign}{v:.3g} {u}" if u != "B" else f"{sign}{v:.0f} B"
            v /= 1024
    if unit == "count" and float(x).is_integer():
        return str(int(x))
    text = f"{x:.4g}"
    return f"{text} {unit}" if unit and unit not in ("count", "ratio") else text


# -- the records ---------------------------------------------------------------------


@dataclass(frozen=True)
class FigureChange:
    """One metric of one verdict, baseline against new: every repeat's value on each side."""

    case_id: str
    check: str
    label: str
    figure: str
    unit: str
    better: str
    base: tuple[float, ...]
    new: tuple[float, ...]
    bound: float | None
    floor: float
    regressed: bool
    #: Worse beyond the tolerance, but within the floor or not sure: shown as noise.
    noise: bool
    #: The rank test's one-sided p, when both sides had enough values to test.
    p_value: float | None = None

    @property
    def base_value(self) -> float:
        return statistics.median(self.base)

    @property
    def new_value(self) -> float:
        return statistics.median(self.new)

    @property
    def worse_by(self) -> float:
        """How much worse the new median is (negative when better)."""
        d = self.new_value - self.base_value
        return d if self.better == "lower" else -d

    @property
    def change(self) -> float | None:
        """Relative change of the median (0.25 = 25 % higher); None from a zero base."""
        return None if self.base_value == 0 else (self.new_value - self.base_value) / abs(self.base_value)

    @property
    def where(self) -> str:
        label = f"[{self.label}]" if self.label else ""
        return f"{self.case_id}::{self.check}{label}"

    @property
    def sure(self) -> str:
        """How sure the comparison is, in words."""
        nb, nn = len(self.base), len(self.new)
        if nb == nn == 1:
            return "one value a side"
        if self.p_value is None:
            return f"medians of {nb} vs {nn}, too few to test"
        return f"medians of {nb} vs {nn}, rank test p = {self.p_value:.2g}"

    def line(self) -> str:
        u = self.unit
        ch = f", {self.change:+.0%}" if self.change is not None else ", from 0"
        bound = f"; bound {fmt_value(self.bound, u)}" if self.bound is not None else ""
        diff = self.new_value - self.base_value
        sign = "+" if diff >= 0 else "-"
        return (f"{self.where} {self.figure}: {fmt_value(self.base_value, u)} → {fmt_value(self.new_value, u)} "
                f"({sign}{fmt_value(abs(diff), u)}{ch}{bound}; floor {fmt_value(self.floor, u)}; {self.sure})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(base=list(self.base), new=list(self.new), base_value=self.base_value, new_value=self.new_value,
                 change=self.change)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FigureChange:
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names}
        kw["base"], kw["new"] = tuple(d["base"]), tuple(d["new"])
        return cls(**kw)


@dataclass(frozen=True)
class VerdictChange:
    case_id: str
    check: str
    base: str
    new: str
    label: str = ""

    @property
    def regressed(self) -> bool:
        return self.base in ("pass", "known") and self.new in ("fail", "unknown", "stale")

    def line(self) -> str:
        label = f"[{self.label}]" if self.label else ""
        return f"{self.case_id}::{self.check}{label}: {self.base} → {self.new}"


@dataclass(frozen=True)
class NotComparable:
    """A case run differently in the two runs: what differs, baseline value and new value."""

    case_id: str
    differences: tuple[tuple[str, Any, Any], ...]

    def line(self) -> str:
        return f"{self.case_id}: " + "; ".join(f"{name} {_show(b)} → {_show(n)}" for name, b, n in self.differences)


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


@dataclass
class Comparison:
    base_id: str
    new_id: str
    rule: Rule = field(default_factory=Rule)
    base_profile: str = ""
    new_profile: str = ""
    base_repeats: int = 1
    new_repeats: int = 1
    #: Every metric compared (regressed, noise, or within the rule).
    figures: list[FigureChange] = field(default_factory=list)
    verdicts: list[VerdictChange] = field(default_factory=list)
    not_comparable: list[NotComparable] = field(default_factory=list)
    #: "case::check figure" for every figure the table does not type: not compared.
    untyped: list[str] = field(default_factory=list)
    #: (case, check) present in only one of the runs.
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    #: Cases run the same way in both runs, whose metrics and verdicts were compared.
    compared_cases: int = 0

    @property
    def tolerance(self) -> float:
        return self.rule.tolerance

    @property
    def regressions(self) -> list[FigureChange]:
        return [f for f in self.figures if f.regressed]

    @property
    def noise(self) -> list[FigureChange]:
        return [f for f in self.figures if f.noise]

    @property
    def verdict_regressions(self) -> list[VerdictChange]:
        return [v for v in self.verdicts if v.regressed]

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.verdict_regressions

    @property
    def comparable(self) -> bool:
        return self.compared_cases > 0

    def lines(self) -> list[str]:
        """One line per regression: verdicts first, then metrics."""
        return [v.line() for v in self.verdict_regressions] + [f.line() for f in self.regressions]

    def verdict_word(self) -> str:
        if not self.ok:
            n = len(self.verdict_regressions) + len(self.regressions)
            return f"REGRESSED: {n} regression{'s' if n != 1 else ''}"
        if not self.comparable:
            return f"NOT COMPARABLE: none of {len(self.not_comparable)} cases was run the same way in both runs"
        return f"OK: no regressions in {len(self.figures)} metrics over {self.compared_cases} cases"

    def report_lines(self, *, noise_limit: int = 20) -> list[tuple[str, str]]:
        """The whole comparison as (style, line) pairs: regressions, verdict changes, not comparable, noise."""
        def rep(n: int) -> str:
            return f"{n} repeat{'s' if n != 1 else ''}"

        out = [("bold", f"wschaos compare: {self.base_id} (profile {self.base_profile}, {rep(self.base_repeats)}) → "
                        f"{self.new_id} (profile {self.new_profile}, {rep(self.new_repeats)})"),
               ("dim", f"rule: {self.rule.text()}")]
        regs = self.regressions
        out.append(("bold red" if regs else "", f"regressions: {len(regs)}"))
        out += [("red", f"  {f.line()}") for f in regs]
        out.append(("", f"verdict changes: {len(self.verdicts)}"))
        out += [("red" if v.regressed else "", f"  {v.line()}" + (" (REGRESSED)" if v.regressed else ""))
                for v in self.verdicts]
        out.append(("yellow" if self.not_comparable else "", f"not comparable: {len(self.not_comparable)}"))
        out += [("yellow", f"  {nc.line()}") for nc in self.not_comparable]
        noise = self.noise
        out.append(("", f"noise: {len(noise)} metric change{'s' if len(noise) != 1 else ''} worse beyond "
                        f"{self.tolerance:.0%} within the rule, not regressions"))
        out += [("dim", f"  {f.line()}") for f in noise[:noise_limit]]
        if len(noise) > noise_limit:
            out.append(("dim", f"  ... and {len(noise) - noise_limit} more"))
        if self.untyped:
            out.append(("yellow", f"untyped (not compared; type them in harness/results/figures.py): "
                                  f"{', '.join(self.untyped)}"))
        if self.only_in_base or self.only_in_new:
            out.append(("dim", f"only in the baseline: {len(self.only_in_base)} checks; only in the new run: "
                               f"{len(self.only_in_new)} checks"))
        word = self.verdict_word()
        out.append(("bold red" if not self.ok else "bold green" if self.comparable else "bold yellow", word))
        return out

    def render_console(self, console: Console) -> None:
        for style, line in self.report_lines():
            console.print(Text(line, style=style), soft_wrap=True)

    def to_markdown(self) -> str:
        """Regressions first (both values, the bound, a bar of base against new), then verdict changes,
        then the cases that were not comparable."""
        head = f"### Against baseline `{self.base_id}`: {self.verdict_word()}"
        out = [head, "", f"<sub>{self.rule.text()}</sub>", ""]
        regs = self.regressions
        if regs:
            out += ["| check | figure | baseline | this run | bound | base ▸ new | how sure |",
                    "| --- | --- | ---: | ---: | ---: | --- | --- |"]
            for f in regs:
                bound = fmt_value(f.bound, f.unit) if f.bound is not None else "—"
                out.append(f"| ❌ `{f.where}` | {f.figure} | {fmt_value(f.base_value, f.unit)} | "
                           f"{fmt_value(f.new_value, f.unit)} | {bound} | `{text_bars(f)}` | {f.sure} |")
            out.append("")
        if self.verdicts:
            out += ["**Verdict changes**", ""]
            out += [f"- {'❌' if v.regressed else '↔️'} `{v.line()}`" for v in self.verdicts]
            out.append("")
        if self.not_comparable:
            out += ["**Not comparable** (run differently; not judged)", ""]
            out += [f"- `{nc.case_id}`: " + "; ".join(f"{n} {_show(b)} → {_show(v)}" for n, b, v in nc.differences)
                    for nc in self.not_comparable]
            out.append("")
        if self.noise:
            out.append(f"{len(self.noise)} metric changes beyond {self.tolerance:.0%} are within the noise rule.")
        if self.untyped:
            out.append(f"Untyped figures, not compared: {', '.join(f'`{u}`' for u in self.untyped)}.")
        return "\n".join(out).rstrip()

    # -- results.json ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": {"run_id": self.base_id, "profile": self.base_profile, "repeats": self.base_repeats},
            "run": {"run_id": self.new_id, "profile": self.new_profile, "repeats": self.new_repeats},
            "rule": asdict(self.rule),
            "ok": self.ok,
            "comparable": self.comparable,
            "compared_cases": self.compared_cases,
            "regressions": [f.to_dict() for f in self.regressions],
            "verdict_changes": [{**asdict(v), "regressed": v.regressed} for v in self.verdicts],
            "not_comparable": [{"case_id": nc.case_id,
                                "differences": [{"name": n, "base": b, "new": v} for n, b, v in nc.differences]}
                               for nc in self.not_comparable],
            "noise": [f.to_dict() for f in self.noise],
            "metrics": len(self.figures),
            "untyped": list(self.untyped),
            "only_in_base": list(self.only_in_base),
            "only_in_new": list(self.only_in_new),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        """Back from results.json: regressions, noise, verdict changes and not-comparable cases.

        The metrics that were within the rule are only counted in the file, not kept.
        """
        base, new = d.get("baseline") or {}, d.get("run") or {}
        rule = Rule(**{k: v for k, v in (d.get("rule") or {}).items() if k in Rule.__dataclass_fields__})
        figs = [FigureChange.from_dict(f) for f in [*d.get("regressions", []), *d.get("noise", [])]]
        cmp = cls(base.get("run_id", "?"), new.get("run_id", "?"), rule, base.get("profile", ""),
                  new.get("profile", ""), base.get("repeats", 1), new.get("repeats", 1), figures=figs)
        cmp.verdicts = [VerdictChange(v["case_id"], v["check"], v["base"], v["new"], v.get("label", ""))
                        for v in d.get("verdict_changes", [])]
        cmp.not_comparable = [NotComparable(nc["case_id"], tuple((x["name"], x["base"], x["new"])
                                                                  for x in nc.get("differences", [])))
                              for nc in d.get("not_comparable", [])]
        cmp.untyped = list(d.get("untyped", []))
        cmp.only_in_base, cmp.only_in_new = list(d.get("only_in_base", [])), list(d.get("only_in_new", []))
        cmp.compared_cases = int(d.get("compared_cases", 0))
        return cmp


def text_bars(f: FigureChange, width: int = 12) -> str:
    """Base against new as two bars on one scale (the bound's, when it is larger): ``▇▇▁▁ ▸ ▇▇▇▇``."""
    top = max(f.base_value, f.new_value, f.bound or 0.0, 1e-12)

    def bar(x: float) -> str:
        full = max(0, min(width, round(width * max(x, 0.0) / top)))
        return "█" * full + "░" * (width - full)

    return f"{bar(f.base_value)} ▸ {bar(f.new_value)}"


# -- comparing -------------------------------------------------------------------------

_RANK = {"pass": 0, "known": 1, "unknown": 2, "stale": 3, "fail": 4}

#: (case id, check, label, ordinal) -> the verdict in each repeat.
Key = tuple[str, str, str, int]


def _scalar(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _index(run: RunResult) -> tuple[dict[Key, list[VerdictResult]], dict[str, CaseResult]]:
    verdicts: dict[Key, list[VerdictResult]] = {}
    first: dict[str, CaseResult] = {}
    for case in run.cases:
        first.setdefault(case.case_id, case)
        seen: Counter[tuple[str, str]] = Counter()
        for v in case.verdicts:
            label = label_of(v.check, v.figures)
            n = seen[(v.check, label)]
            seen[(v.check, label)] += 1
            verdicts.setdefault((case.case_id, v.check, label, n), []).append(v)
    return verdicts, first


def _repeats(run: RunResult) -> int:
    return 1 + max((c.repeat for c in run.cases), default=0)


def _differences(base: RunResult, new: RunResult, bcase: CaseResult, ncase: CaseResult,
                 bv: dict[Key, list[VerdictResult]], nv: dict[Key, list[VerdictResult]]) -> list[tuple[str, Any, Any]]:
    diffs: list[tuple[str, Any, Any]] = []
    if base.profile != new.profile:
        diffs.append(("profile", base.profile, new.profile))
    if base.time_factor != new.time_factor:
        diffs.append(("time_factor", base.time_factor, new.time_factor))
    for name in sorted(bcase.params.keys() | ncase.params.keys()):
        b, n = bcase.params.get(name), ncase.params.get(name)
        if b != n:
            diffs.append((name, b, n))
    seen = {d[0] for d in diffs}
    for key in sorted(bv.keys() & nv.keys()):
        if key[0] != bcase.case_id:
            continue
        for fig in sorted({f for v in bv[key] + nv[key] for f in v.figures}):
            if figure_type(key[1], fig).role != "parameter":
                continue
            b_vals = _distinct(v.figures.get(fig) for v in bv[key])
            n_vals = _distinct(v.figures.get(fig) for v in nv[key])
            if b_vals != n_vals:
                # A case parameter a check repeats (cycles) is listed once, under its own name.
                if fig in seen and fig in bcase.params:
                    continue
                b_show, n_show = (b_vals[0] if len(b_vals) == 1 else b_vals), (n_vals[0] if len(n_vals) == 1 else n_vals)
                diffs.append((f"{key[1]} {fig}", b_show, n_show))
    return diffs


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _judge(rule: Rule, key: Key, fig: str, unit: str, better: str, bvals: list[float], nvals: list[float],
           bound: float | None, floor_share: float | None = None) -> FigureChange:
    share = rule.bound_floor if floor_share is None else floor_share
    floor = max(UNIT_FLOORS.get(unit, 1.0), share * bound if bound else 0.0)
    b_med, n_med = statistics.median(bvals), statistics.median(nvals)
    worse = (n_med - b_med) if better == "lower" else (b_med - n_med)
    rel = worse / abs(b_med) if b_med else (math.inf if worse > 0 else 0.0)
    beyond = rel > rule.tolerance
    big_share = bound is not None and bound > 0 and worse >= rule.bound_share * bound
    candidate = worse > floor and (beyond or big_share)
    p = None
    if len(bvals) >= rule.min_repeats and len(nvals) >= rule.min_repeats:
        signed = (lambda xs: xs) if better == "lower" else (lambda xs: [-x for x in xs])
        p = rank_test_p(signed(bvals), signed(nvals))
    regressed = candidate and (p is None or p <= rule.alpha)
    noise = not regressed and worse > 0 and beyond
    return FigureChange(key[0], key[1], key[2], fig, unit, better, tuple(bvals), tuple(nvals), bound, floor,
                        regressed, noise, p)


def compare(base: RunResult, new: RunResult, tolerance: float | None = None, *, rule: Rule | None = None) -> Comparison:
    """``new`` against ``base``: metric regressions, verdict changes, cases not comparable, untyped figures."""
    if rule is None:
        rule = Rule() if tolerance is None else Rule(tolerance=tolerance)
    elif tolerance is not None:
        raise ValueError("give a tolerance or a rule, not both")
    bv, bcases = _index(base)
    nv, ncases = _index(new)
    cmp = Comparison(base.run_id, new.run_id, rule, base.profile, new.profile, _repeats(base), _repeats(new))
    cmp.only_in_base = sorted({f"{k[0]}::{k[1]}" for k in bv.keys() - nv.keys()})
    cmp.only_in_new = sorted({f"{k[0]}::{k[1]}" for k in nv.keys() - bv.keys()})
    untyped: set[str] = set()
    for case_id in [c for c in ncases if c in bcases]:
        diffs = _differences(base, new, bcases[case_id], ncases[case_id], bv, nv)
        if diffs:
            cmp.not_comparable.append(NotComparable(case_id, tuple(diffs)))
            continue
        cmp.compared_cases += 1
        for key in [k for k in nv if k[0] == case_id and k in bv]:
            bl, nl = bv[key], nv[key]
            bstat = max((v.status for v in bl), key=lambda s: _RANK.get(s, 0))
            nstat = max((v.status for v in nl), key=lambda s: _RANK.get(s, 0))
            if bstat != nstat:
                cmp.verdicts.append(VerdictChange(case_id, key[1], bstat, nstat, key[2]))
            for fig in sorted({f for v in nl for f in v.figures} & {f for v in bl for f in v.figures}):
                ft = figure_type(key[1], fig)
                if ft.role == "untyped":
                    untyped.add(f"{case_id}::{key[1]} {fig}")
                if ft.role != "metric":
                    continue
                bvals = [x for x in (_scalar(v.figures.get(fig)) for v in bl) if x is not None]
                nvals = [x for x in (_scalar(v.figures.get(fig)) for v in nl) if x is not None]
                if not bvals or not nvals:
                    continue
                bound = _scalar(nl[0].figures.get(ft.bound)) if ft.bound else None
                cmp.figures.append(_judge(rule, key, fig, ft.unit_of(nl[0].figures), ft.better or "lower",
                                          bvals, nvals, bound, ft.floor_share))
        for case in (c for c in new.cases if c.case_id == case_id and c.repeat == 0):
            untyped |= {f"{case_id}::{CASE_CHECK} {n}" for n in case.figures
                        if figure_type(CASE_CHECK, n).role == "untyped"}
    cmp.untyped = sorted(untyped)
    cmp.figures.sort(key=lambda f: (not f.regressed, f.where, f.figure))
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
    filed under the check name ``"*"``.  Parameters and identifiers (a cycle
    count, a port) are not figures to quote percentiles of, and are left out,
    as are untyped ones.
    """
    pool: dict[tuple[str, str, str], list[float]] = {}
    for run in [runs] if isinstance(runs, RunResult) else runs:
        for case in run.cases:
            sources = [(v.check, v.figures) for v in case.verdicts] + [(CASE_CHECK, case.figures)]
            for check, figs in sources:
                for name, val in figs.items():
                    if figure_type(check, name).role not in ("metric", "observed"):
                        continue
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


def _n(x: float) -> str:
    return f"{x:.4g}"
