"""Checkers for leaks and drift under churn and slow consumers.

Inputs are probe figures (``/stats``, psutil, the injected Python probe) and
latency series the scenario collected; no history is needed.

Value checkers name their figure with the keyword ``what``, as every value
checker does.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from harness.checkers import stats
from harness.checkers._core import fmt_bytes, fmt_ms, fmt_num
from harness.checkers.bounds import percentile_within
from harness.checkers.registry import checker
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = [
    "IDLE_COUNTERS",
    "back_to_baseline",
    "counters_zero",
    "growth_per_1000",
    "latency_drift",
    "latency_within",
    "memory_bounded",
    "probe_agrees",
    "stats_unchanged",
]

#: The /stats counters that return to 0 once every client has gone (PROTOCOL.md "Introspection").
IDLE_COUNTERS = ("connections", "sessions", "active_requests", "subscriptions", "per_session_state")


def _number(x: Any) -> float | None:
    """A finite number, or None for anything a checker cannot compare."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _sample_data(sample: Any) -> tuple[dict | None, str | None]:
    """A sample's figures from a dict or a probes.Sample; (None, why) when it has none."""
    if sample is None:
        return None, "no sample"
    if isinstance(sample, dict):
        return sample, None
    if hasattr(sample, "ok") and hasattr(sample, "data"):
        if not sample.ok:
            return None, f"the {getattr(sample, 'source', 'probe')} sample failed: {sample.error}"
        return dict(sample.data), None
    return None, f"not a sample: {type(sample).__name__}"


@checker
def counters_zero(sample: Any, keys: Iterable[str] = IDLE_COUNTERS) -> Verdict:
    """Every counter in ``keys`` is 0 in the sample (a dict or a probes.Sample)."""
    name = "resources.counters_zero"
    data, why = _sample_data(sample)
    if data is None:
        return unknown(name, f"{why}: cannot judge {', '.join(keys)}")
    values = {k: data.get(k) for k in keys}
    nonzero = {k: v for k, v in values.items() if _number(v) not in (None, 0.0)}
    missing = [k for k, v in values.items() if _number(v) is None]
    figs = {"values": values, "nonzero": nonzero, "missing": missing}
    if nonzero:
        return fail(name, "not back to 0: " + ", ".join(f"{k}={v}" for k, v in nonzero.items()), **figs)
    if missing:
        return unknown(name, "missing or not a number in the sample: "
                             + ", ".join(f"{k}={values[k]!r}" for k in missing), **figs)
    return passed(name, "all 0: " + ", ".join(values), **figs)


@checker
def back_to_baseline(after: float | None, baseline: float | None, allowed: float, *, what: str,
                     cycles: int | None = None) -> Verdict:
    """``after`` is at most ``baseline + allowed`` (e.g. tasks, threads, fds after churn)."""
    check = "resources.back_to_baseline"
    b, a = _number(baseline), _number(after)
    figs = {"name": what, "baseline": baseline, "after": after, "allowed": allowed, "cycles": cycles}
    if b is None or a is None:
        return unknown(check, f"{what}: baseline {baseline!r}, after {after!r}: a figure is missing", **figs)
    when = f" after {cycles} cycles" if cycles is not None else ""
    msg = f"{what} {fmt_num(b)} -> {fmt_num(a)}{when} (baseline {fmt_num(b)}, allowed +{fmt_num(allowed)})"
    figs["delta"] = a - b
    return (fail if a > b + allowed else passed)(check, msg, **figs)


@checker
def growth_per_1000(series: Sequence[tuple[float, float]] | None, bound_per_1000: float, *, what: str,
                    warmup_fraction: float = 0.1, unit: str | None = None) -> Verdict:
    """Least-squares slope of (cycle, value) after warm-up, per 1000 cycles, is within the bound.

    ``unit="B"`` formats bytes (KiB/MiB), the default for a ``what`` mentioning rss,
    bytes or memory; the first ``warmup_fraction`` of the points is dropped
    because allocators and caches grow once before settling.
    """
    check = "resources.growth_per_1000"
    if unit is None:
        unit = "B" if any(w in what.lower() for w in ("rss", "bytes", "memory")) else ""
    pts = [(float(c), float(v)) for c, v in (series or []) if _number(c) is not None and _number(v) is not None]
    skip = int(len(pts) * warmup_fraction)
    used = pts[skip:]
    figs: dict[str, Any] = {"name": what, "points": len(pts), "used": len(used),
                            "bound_per_1000": bound_per_1000, "unit": unit}
    if len(used) < 3 or len({c for c, _ in used}) < 2:
        return unknown(check, f"{what}: {len(used)} usable points after warm-up, need at least 3 "
                              f"over different cycles", **figs)
    per_1000 = stats.slope(used) * 1000
    fmt = fmt_bytes if unit == "B" else (lambda x: f"{fmt_num(x)}{(' ' + unit) if unit else ''}")
    span = f"cycles {fmt_num(used[0][0])}-{fmt_num(used[-1][0])}"
    figs.update({"per_1000": per_1000, "first": used[0][1], "last": used[-1][1]})
    msg = (f"{what} grows {fmt(per_1000)} per 1000 cycles {'>' if per_1000 > bound_per_1000 else '<='} "
           f"bound {fmt(bound_per_1000)} ({span}, {fmt(used[0][1])} -> {fmt(used[-1][1])})")
    return (fail if per_1000 > bound_per_1000 else passed)(check, msg, **figs)


@checker
def latency_drift(latencies_ms: Sequence[float] | None, ratio: float = 1.5, *, floor_ms: float = 5.0) -> Verdict:
    """The last fifth of the series' median is at most ``ratio`` x the first fifth's, or within ``floor_ms`` of it.

    A fifth, not a tenth: three points a side let one scheduling hiccup on a
    loaded machine pass for drift. The absolute floor keeps a 2-4 ms round trip
    growing by a few ms on a busy machine (x1.5 of nothing) from failing a
    correct server; a real slowdown (a handler list growing per connection:
    2.7 ms to about 18 ms) is many times both.
    """
    name = "resources.latency_drift"
    xs = [float(x) for x in (latencies_ms or []) if _number(x) is not None]
    if len(xs) < 20:
        return unknown(name, f"{len(xs)} latency points, need at least 20", points=len(xs))
    part = len(xs) // 5
    first, last = stats.median(xs[:part]), stats.median(xs[-part:])
    got = last / first if first > 0 else (math.inf if last > 0 else 1.0)
    drifted = got > ratio and last - first > floor_ms
    figs = {"points": len(xs), "first_median_ms": first, "last_median_ms": last,
            "ratio": got, "bound_ratio": ratio, "floor_ms": floor_ms}
    msg = (f"median latency {fmt_ms(first)} (first {part}) -> {fmt_ms(last)} (last {part}) "
           f"over {len(xs)} points: x{got:.2f} {'>' if got > ratio else '<='} x{ratio:g}"
           + ("" if got <= ratio else f", {'more' if drifted else 'not more'} than {floor_ms:g} ms slower"))
    return (fail if drifted else passed)(name, msg, **figs)


@checker
def probe_agrees(stats_value: Any, probe_value: Any, *, what: str, tolerance: float = 0) -> Verdict:
    """The target's own figure (/stats) and the harness's probe agree within ``tolerance``."""
    check = "resources.probe_agrees"
    s, p = _number(stats_value), _number(probe_value)
    figs = {"name": what, "stats": stats_value, "probe": probe_value, "tolerance": tolerance}
    if s is None or p is None:
        return unknown(check, f"{what}: /stats {stats_value!r}, probe {probe_value!r}: a figure is missing",
                       **figs)
    diff = abs(s - p)
    figs["difference"] = diff
    msg = f"{what}: /stats says {fmt_num(s)}, probe says {fmt_num(p)} (difference {fmt_num(diff)}, " \
          f"tolerance {fmt_num(tolerance)})"
    return (fail if diff > tolerance else passed)(check, msg, **figs)


@checker
def memory_bounded(rss_series_bytes: Sequence[float] | None, bound_bytes: float, *,
                   relative: bool = True) -> Verdict:
    """RSS growth over the first sample (or, ``relative=False``, the peak) stays within ``bound_bytes``."""
    name = "resources.memory_bounded"
    xs = [float(x) for x in (rss_series_bytes or []) if _number(x) is not None]
    if len(xs) < 2:
        return unknown(name, f"{len(xs)} RSS samples, need at least 2", samples=len(xs))
    peak = max(xs)
    value = peak - xs[0] if relative else peak
    what = "RSS growth" if relative else "RSS peak"
    figs = {"samples": len(xs), "first": xs[0], "peak": peak, "last": xs[-1], "value": value,
            "bound_bytes": bound_bytes, "relative": relative}
    msg = (f"{what} {fmt_bytes(value)} {'>' if value > bound_bytes else '<='} bound {fmt_bytes(bound_bytes)} "
           f"over {len(xs)} samples ({fmt_bytes(xs[0])} -> peak {fmt_bytes(peak)}, last {fmt_bytes(xs[-1])})")
    return (fail if value > bound_bytes else passed)(name, msg, **figs)


@checker
def latency_within(latencies_ms: Sequence[float | None] | None, bound_ms: float,
                   percentile: float = 99) -> Verdict:
    """The p-th percentile latency is within ``bound_ms``; None entries (timeouts) fail."""
    name = "resources.latency_within"
    raw = list(latencies_ms or [])
    xs = [v for v in map(_number, raw) if v is not None]
    timeouts = len(raw) - len(xs)
    figs: dict[str, Any] = {"samples": len(raw), "timeouts": timeouts, "bound_ms": bound_ms,
                            "percentile": percentile}
    if not raw:
        return unknown(name, "no latency samples")
    if not xs:
        return fail(name, f"all {len(raw)} operations timed out", **figs)
    return percentile_within(
        name, xs, figs, bound_ms=bound_ms, p=percentile, missing=timeouts, noun="samples",
        missing_text=f"{timeouts} of {len(raw)} operations timed out")


@checker
def stats_unchanged(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *, keys: Collection[str],
                    expected_delta: Mapping[str, float] | None = None) -> Verdict:
    """Each key of /stats moved by exactly its expected delta (0 unless given)."""
    name = "resources.stats_unchanged"
    if before is None or after is None:
        which = "before" if before is None else "after"
        return unknown(name, f"no /stats sample {which}", before=before, after=after)
    deltas = dict(expected_delta or {})
    figs: dict[str, Any] = {k: [before.get(k), after.get(k)] for k in keys}
    missing = [k for k in keys if _number(before.get(k)) is None or _number(after.get(k)) is None]
    wrong = []
    for k in keys:
        b, a, want = _number(before.get(k)), _number(after.get(k)), deltas.get(k, 0)
        if b is not None and a is not None and a - b != want:
            wrong.append(f"{k} {fmt_num(b)} -> {fmt_num(a)} (expected {want:+g})")
    if wrong:
        return fail(name, "stats changed: " + "; ".join(wrong), **figs)
    if missing:
        return unknown(name, f"/stats has no number for {', '.join(missing)}", **figs)
    return passed(name, "stats as expected: " + ", ".join(f"{k} {before.get(k)} -> {after.get(k)}" for k in keys),
                  **figs)
