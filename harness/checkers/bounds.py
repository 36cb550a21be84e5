"""A value against a bound: the one judgement of "within a bound" every such check words its own way.

:func:`duration_within` judges a duration (ms) against a bound: no bound is
``unknown``; a duration of None (it never happened within the wait) fails,
carrying hang stacks where the check collects them; a negative one is
``unknown`` where the check can tell (its clocks were mixed up, or the event
came before its cause); over the bound fails; otherwise it passes. Each
duration check (``shutdown.exit_time``, ``client.exit_time``,
``keepalive.dropped_within``, ``input.dropped_within``,
``interrupts.upstream_closed``, ``interrupts.not_delayed``) is a thin
registered wrapper that supplies its words and figure names.

:func:`percentile_within` does the same for a percentile of many latencies.

``bounds.within`` is the generic check. ``within_bound(..., check=NAME)``
hands the judgement to the registered duration check NAME and refuses a name
no checker registered, so a call site cannot invent a check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.checkers import stats
from harness.checkers._core import fmt_ms, stack_lines, summarize
from harness.checkers.registry import RegistryError, checker, resolve
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["duration_within", "percentile_within", "within", "within_bound"]


def duration_within(check: str, value_ms: float | None, bound_ms: float | None, *, what: str,
                    key: str = "value_ms", context: Mapping[str, Any] | None = None,
                    took: str = "{what} took {value}",
                    never: str = "{what}: did not happen within {bound} ms",
                    no_bound: str = "{what}: no bound given",
                    early: str | None = None, note: str = "", stacks: Any = None) -> Verdict:
    """``value_ms`` against ``bound_ms``, as the verdict of ``check``.

    The words are templates filled with ``{what}``, ``{value}`` (the duration,
    e.g. "812.4 ms"), ``{early}`` (how far it was negative) and ``{bound}``
    (e.g. "3000"). ``took`` starts the message of a measured duration, which
    goes on "> bound B ms" or "<= bound B ms" (then ``note``, on a pass only).
    ``never`` is the failure for None; ``early``, when given, makes a negative
    duration ``unknown``. Figures: ``context`` (default ``{"what": what}``),
    the duration under ``key`` and ``bound_ms``; with ``stacks`` (anything but
    None, even empty) also ``hung`` and, for None, the stack lines.
    """
    figs: dict[str, Any] = {**({"what": what} if context is None else context),
                            key: value_ms, "bound_ms": bound_ms}
    words = {"what": what, "bound": "?" if bound_ms is None else f"{bound_ms:g}",
             "value": fmt_ms(value_ms), "early": fmt_ms(None if value_ms is None else -value_ms)}
    if bound_ms is None:
        return unknown(check, no_bound.format(**words), **figs)
    if value_ms is None:
        msg = never.format(**words)
        if stacks is None:
            return fail(check, msg, **figs)
        lines = stack_lines(stacks)
        tail = f"; stacks: {summarize(lines, 3)}" if lines else ""
        return fail(check, msg + tail, hung=True, stacks=lines[:200], **figs)
    if stacks is not None:
        figs["hung"] = False
    if early is not None and value_ms < 0:
        return unknown(check, early.format(**words), **figs)
    measured = took.format(**words)
    if value_ms > bound_ms:
        return fail(check, f"{measured} > bound {words['bound']} ms", **figs)
    return passed(check, f"{measured} <= bound {words['bound']} ms{note}", **figs)


def percentile_within(name: str, values: list[float], figs: dict[str, Any], *, bound_ms: float, p: float,
                      missing: int, missing_text: str, noun: str, label: str = "") -> Verdict:
    """The p-th percentile of ``values`` within ``bound_ms``; ``missing`` answers fail too.

    One judgement for every latency bound (ACKs, replies): the figures and the
    message name the percentile, the median, the maximum and how many never answered.
    """
    pv, p50, mx = stats.percentile(values, p), stats.median(values), max(values)
    figs.update({f"p{p:g}_ms": pv, "p50_ms": p50, "max_ms": mx})
    spread = f"over {len(values)} {noun} (p50 {fmt_ms(p50)}, max {fmt_ms(mx)})"
    problems = []
    if pv > bound_ms:
        problems.append(f"{label}p{p:g} {fmt_ms(pv)} > bound {bound_ms:g} ms {spread}")
    if missing:
        problems.append(missing_text)
    if problems:
        return fail(name, "; ".join(problems), **figs)
    return passed(name, f"{label}p{p:g} {fmt_ms(pv)} <= bound {bound_ms:g} ms {spread}", **figs)


@checker
def within(value_ms: float | None, bound_ms: float | None, *, what: str, check: str = "bounds.within",
           stacks: Any = ()) -> Verdict:
    """``what`` happened within ``bound_ms``; None (it never happened) fails, naming the key stack lines.

    ``check`` (until call sites call that check itself) names the registered
    duration check to judge with, e.g. ``keepalive.dropped_within``: its verdict
    is that check's own. An unregistered name raises :class:`UnknownCheck`.
    ``stacks`` may be lines, a raw dump or a forensics object.
    """
    name = "bounds.within"
    target = resolve(check)
    if target.name != name:
        try:
            target.signature.bind(value_ms, bound_ms, what=what, stacks=stacks)
        except TypeError:
            raise RegistryError(f"within_bound(check={check!r}): {target.name} is not a duration check "
                                f"taking (value_ms, bound_ms, *, what, stacks)") from None
        return target.function(value_ms, bound_ms, what=what, stacks=stacks)
    return duration_within(name, value_ms, bound_ms, what=what, stacks=stacks)


#: The name scenarios call it by.
within_bound = within
