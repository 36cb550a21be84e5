"""Generic checkers: a time within a bound, a terminal left usable, stats unchanged, errors for all.

Scenarios import these from here directly (``from harness.checkers.bounds
import within_bound``) as well as through ``harness.checkers``; the
signatures and check names are theirs and stay stable.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from harness.checkers._core import checker, fmt_ms, fmt_num, stack_lines, summarize
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["bounded", "errors_for_all", "process_alive", "stats_unchanged", "terminal_usable", "within_bound"]


def bounded(check: str, value_ms: float | None, bound_ms: float | None, *, what: str, stacks: Any = (),
            never: str = "did not happen within", key: str = "value_ms") -> Verdict:
    """The shared judgement of a duration: None is "not within the bound", a failure carrying stacks."""
    figs: dict[str, Any] = {"what": what, key: value_ms, "bound_ms": bound_ms}
    if bound_ms is None:
        return unknown(check, f"{what}: no bound given", **figs)
    if value_ms is None:
        lines = stack_lines(stacks)
        tail = f"; stacks: {summarize(lines, 3)}" if lines else ""
        return fail(check, f"{what}: {never} {bound_ms:g} ms{tail}", hung=True, stacks=lines[:200], **figs)
    figs["hung"] = False
    if value_ms > bound_ms:
        return fail(check, f"{what} took {fmt_ms(value_ms)} > bound {bound_ms:g} ms", **figs)
    return passed(check, f"{what} took {fmt_ms(value_ms)} <= bound {bound_ms:g} ms", **figs)


@checker("bounds.within")
def within_bound(value_ms: float | None, bound_ms: float | None, *, what: str, check: str = "bounds.within",
                 stacks: Any = ()) -> Verdict:
    """``what`` happened within ``bound_ms``; None (it never happened) fails, naming the key stack lines.

    ``check`` names the verdict for the rule it stands for (e.g. ``keepalive.dropped_within``);
    ``stacks`` may be lines, a raw dump or a forensics object.
    """
    return bounded(check, value_ms, bound_ms, what=what, stacks=stacks)


@checker("client.terminal_usable")
def terminal_usable(state: Any) -> Verdict:
    """After the client exited, the terminal has echo and canonical line editing on (TerminalState or dict)."""
    name = "client.terminal_usable"
    if not state:
        return unknown(name, "the terminal's state could not be read", state=None)
    get = state.get if isinstance(state, Mapping) else (lambda k: getattr(state, k, None))
    figs = {k: get(k) for k in ("echo", "icanon", "isig")}
    off = [k for k in ("echo", "icanon") if figs[k] is False]
    missing = [k for k in ("echo", "icanon") if figs[k] is None]
    if off:
        return fail(name, f"terminal left with {', '.join(off)} off: typing is invisible or unbuffered", **figs)
    if missing:
        why = get("error") or f"no value for {', '.join(missing)}"
        return unknown(name, f"terminal state unreadable: {why}", **figs)
    return passed(name, "terminal left with echo and icanon on", **figs)


@checker("input.errors_for_all")
def errors_for_all(errors: int | None, sent: int | None) -> Verdict:
    """Every malformed frame sent was answered by exactly one ERROR."""
    name = "input.errors_for_all"
    if errors is None or not sent:
        return unknown(name, f"nothing to compare: {errors} ERRORs for {sent} frames sent", errors=errors, sent=sent)
    if errors != sent:
        how = f"{sent - errors} unanswered" if errors < sent else f"{errors - sent} extra"
        return fail(name, f"{errors} ERROR frames for {sent} malformed frames ({how})", errors=errors, sent=sent)
    return passed(name, f"{errors} ERROR frames for {sent} malformed frames", errors=errors, sent=sent)


@checker("process.alive")
def process_alive(alive: bool | None, *, what: str = "the target") -> Verdict:
    """The process is still running."""
    if alive is None:
        return unknown("process.alive", f"cannot tell whether {what} runs")
    if alive:
        return passed("process.alive", f"{what} still runs", alive=True)
    return fail("process.alive", f"{what} died", alive=False)


def _num(x: Any) -> float | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


@checker("resources.stats_unchanged")
def stats_unchanged(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *, keys: Collection[str],
                    expected_delta: Mapping[str, float] | None = None) -> Verdict:
    """Each key of /stats moved by exactly its expected delta (0 unless given)."""
    name = "resources.stats_unchanged"
    if before is None or after is None:
        which = "before" if before is None else "after"
        return unknown(name, f"no /stats sample {which}", before=before, after=after)
    deltas = dict(expected_delta or {})
    figs: dict[str, Any] = {k: [before.get(k), after.get(k)] for k in keys}
    missing = [k for k in keys if _num(before.get(k)) is None or _num(after.get(k)) is None]
    wrong = []
    for k in keys:
        b, a, want = _num(before.get(k)), _num(after.get(k)), deltas.get(k, 0)
        if b is not None and a is not None and a - b != want:
            wrong.append(f"{k} {fmt_num(b)} -> {fmt_num(a)} (expected {want:+g})")
    if wrong:
        return fail(name, "stats changed: " + "; ".join(wrong), **figs)
    if missing:
        return unknown(name, f"/stats has no number for {', '.join(missing)}", **figs)
    return passed(name, "stats as expected: " + ", ".join(f"{k} {before.get(k)} -> {after.get(k)}" for k in keys),
                  **figs)
