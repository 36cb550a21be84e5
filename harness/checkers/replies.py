"""Checkers for how each request's reply ends (PROTOCOL.md "Server -> client", interrupt rules 3 and 5).

One terminal frame per request, chunks in sequence, a request completing
normally (or untouched by a foreign INTERRUPT), and cancellation reaching the
agent in time: the upstream stream closed, a later request not held back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from harness.checkers._core import checker, fmt_ms, frames, request_label, request_ops, summarize
from harness.core.history import History
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = [
    "not_delayed",
    "one_terminal_per_request",
    "request_completes",
    "seq_gap_free",
    "untouched",
    "upstream_closed_within",
]


@checker("interrupts.one_terminal", needs_history=True)
def one_terminal_per_request(history: History) -> Verdict:
    """Each request (per client) ends with exactly one terminal frame: one final, or one ERROR."""
    name = "interrupts.one_terminal"
    ops: dict[tuple[str, Any], list] = defaultdict(list)
    for op in history.operations("request"):
        ops[(op.client, op.data.get("request_id"))].append(op)
    finals: dict[tuple[str, Any], int] = defaultdict(int)
    errors: dict[tuple[str, Any], int] = defaultdict(int)
    for f in frames(history):
        key = (f.client, f.get("request_id"))
        if f.get("kind") == "final":
            finals[key] += 1
        elif f.get("kind") == "error" and f.get("request_id") is not None:
            errors[key] += 1
    keys = set(ops) | set(finals)
    if not keys:
        return unknown(name, "no request and no final frame recorded")
    bad, unresolved = [], 0
    for key in sorted(keys, key=repr):
        want = max(len(ops.get(key, [])), 1)  # an id sent again counts once per REQUEST
        nf, ne = finals.get(key, 0), errors.get(key, 0)
        label = request_label(*key)
        if nf > want:
            bad.append(f"{label}: {nf} final frames")
        elif nf + ne > want:
            bad.append(f"{label}: {nf} final and {ne} ERROR frames")
        elif nf + ne < want:
            if all(op.outcome in ("ok", "fail") for op in ops.get(key, [])):
                bad.append(f"{label}: no terminal frame")
            else:
                unresolved += 1  # the connection died under it: nothing to hold the server to
    figs = {"requests": len(keys), "bad": len(bad), "unresolved": unresolved}
    if bad:
        return fail(name, f"{len(bad)} of {len(keys)} requests without exactly one terminal frame: "
                          f"{summarize(bad)}", **figs)
    return passed(name, f"{len(keys) - unresolved} requests each ended exactly once"
                        + (f" ({unresolved} unresolved: connection lost)" if unresolved else ""), **figs)


def _completion(history: History, request_id: str, client: str | None) -> tuple[str, str]:
    """("pass"|"fail"|"unknown", why) for one request's latest REQUEST."""
    ops = request_ops(history, request_id, client)
    if not ops:
        return "unknown", f"request {request_id}: no REQUEST recorded"
    op = max(ops, key=lambda o: o.started_ns)
    label = request_label(op.client, request_id)
    if op.outcome == "pending":
        return "fail", f"{label}: no final frame (still pending)"
    if op.outcome == "unknown":
        return "unknown", f"{label}: outcome unknown (connection ended before its final frame)"
    if op.outcome == "fail":
        return "fail", f"{label}: failed with {op.data.get('error_code') or op.data.get('error')}"
    if op.data.get("interrupted"):
        return "fail", f"{label}: ended interrupted (reason {op.data.get('reason')!r})"
    want = (op.data.get("options") or {}).get("chunks")
    got = op.data.get("chunks")
    if want is not None and got is not None and got != want:
        return "fail", f"{label}: completed with {got} chunks, asked for {want}"
    return "pass", f"{label}: completed, {got if got is not None else '?'} chunks in {fmt_ms(op.duration_ms)}"


@checker("interrupts.request_completes", needs_history=True)
def request_completes(history: History, request_id: str, client: str | None = None) -> Verdict:
    """That request (its latest REQUEST) completed normally: final frame, not interrupted."""
    name = "interrupts.request_completes"
    status, why = _completion(history, request_id, client)
    return {"pass": passed, "fail": fail, "unknown": unknown}[status](name, why, request_id=request_id)


@checker("interrupts.untouched", needs_history=True)
def untouched(history: History, request_ids: Collection[str], client: str | None = None) -> Verdict:
    """Those requests completed normally, not interrupted (e.g. after a foreign-id INTERRUPT)."""
    name = "interrupts.untouched"
    if not request_ids:
        return unknown(name, "no request ids given")
    results = [_completion(history, rid, client) for rid in request_ids]
    bad = [why for st, why in results if st == "fail"]
    unsure = [why for st, why in results if st == "unknown"]
    figs = {"requests": len(results), "bad": len(bad), "unknown": len(unsure)}
    if bad:
        return fail(name, f"{len(bad)} of {len(results)} requests did not complete untouched: "
                          f"{summarize(bad)}", **figs)
    if unsure:
        return unknown(name, summarize(unsure), **figs)
    return passed(name, f"all {len(results)} requests completed, not interrupted", **figs)


@checker("interrupts.seq_gap_free", needs_history=True)
def seq_gap_free(history: History) -> Verdict:
    """Each request's chunks carry seq 0, 1, 2, ... without gaps, repeats or reordering."""
    name = "interrupts.seq_gap_free"
    expect: dict[tuple[str, Any], int] = {}
    bad, chunks = [], 0
    for f in frames(history):
        key = (f.client, f.get("request_id"))
        if f.get("kind") == "final":
            expect.pop(key, None)  # a later REQUEST with this id starts again at 0
            continue
        if f.get("kind") != "chunk":
            continue
        chunks += 1
        want, seq = expect.get(key, 0), f.get("seq")
        if seq != want:
            bad.append(f"{request_label(*key)}: seq {seq} where {want} was due")
        expect[key] = (seq + 1) if isinstance(seq, int) else want + 1
    figs = {"chunks": chunks, "bad": len(bad)}
    if not chunks:
        return unknown(name, "no chunk frames recorded")
    if bad:
        return fail(name, f"{len(bad)} out-of-sequence chunks in {chunks}: {summarize(bad)}", **figs)
    return passed(name, f"{chunks} chunks, every request's seq from 0 without gaps", **figs)


@checker("interrupts.upstream_closed")
def upstream_closed_within(interrupt_sent_ns: int | None, closed_ns: int | None,
                           bound_ms: float) -> Verdict:
    """The upstream HTTP stream closed within ``bound_ms`` of the INTERRUPT; None (never) fails."""
    name = "interrupts.upstream_closed"
    if interrupt_sent_ns is None:
        return unknown(name, "no INTERRUPT send time recorded", bound_ms=bound_ms)
    if closed_ns is None:
        return fail(name, f"upstream stream still open (bound {bound_ms:g} ms after the INTERRUPT)",
                    closed_after_ms=None, bound_ms=bound_ms)
    dt = (closed_ns - interrupt_sent_ns) / 1e6
    figs = {"closed_after_ms": dt, "bound_ms": bound_ms}
    if dt < 0:
        return unknown(name, f"upstream closed {fmt_ms(-dt)} before the INTERRUPT was sent: "
                             f"the interrupt was not exercised", **figs)
    if dt > bound_ms:
        return fail(name, f"upstream closed {fmt_ms(dt)} after the INTERRUPT > bound {bound_ms:g} ms", **figs)
    return passed(name, f"upstream closed {fmt_ms(dt)} after the INTERRUPT <= bound {bound_ms:g} ms", **figs)


@checker("interrupts.not_delayed")
def not_delayed(first_chunk_ms: float | None, bound_ms: float | None, *, what: str = "first chunk") -> Verdict:
    """``what`` arrived within ``bound_ms``; None (never seen within the wait) fails."""
    name = "interrupts.not_delayed"
    if bound_ms is None:
        return unknown(name, f"{what}: no bound given", what=what)
    if first_chunk_ms is None:
        return fail(name, f"{what}: not seen within the wait (bound {bound_ms:g} ms)",
                    what=what, ms=None, bound_ms=bound_ms)
    figs = {"what": what, "ms": first_chunk_ms, "bound_ms": bound_ms}
    if first_chunk_ms < 0:
        return unknown(name, f"{what}: negative delay {fmt_ms(first_chunk_ms)}, clocks mixed up", **figs)
    if first_chunk_ms > bound_ms:
        return fail(name, f"{what} after {fmt_ms(first_chunk_ms)} > bound {bound_ms:g} ms", **figs)
    return passed(name, f"{what} after {fmt_ms(first_chunk_ms)} <= bound {bound_ms:g} ms", **figs)

