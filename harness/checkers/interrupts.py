"""Checkers for PROTOCOL.md "Interrupt semantics", read from the history.

The ACK rules (one ACK each, its status, final before ACK, nothing after it,
no double claim, NOT_FOUND) and how each request's reply ends (one terminal
frame, chunks in sequence, completing normally or untouched by a foreign
INTERRUPT, cancellation reaching the agent: the upstream stream closed, a
later request not held back).

Order questions (final before ACK, nothing after ACK) are answered per client
from the order its reader recorded frames in, which is the order they came off
that socket; times are only used to say how far apart things were.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from harness.checkers._core import (
    FrameRec,
    as_frame_dict,
    fmt_ms,
    frames,
    request_label,
    request_ops,
    summarize,
)
from harness.checkers.bounds import duration_within, percentile_within
from harness.checkers.registry import checker
from harness.core.history import History
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = [
    "ORDERS",
    "ack_latency",
    "ack_status",
    "final_before_ack",
    "no_double_claim",
    "no_frames_after_ack",
    "not_delayed",
    "not_found",
    "one_ack_each",
    "one_terminal",
    "one_terminal_per_request",
    "request_completes",
    "seq_gap_free",
    "untouched",
    "upstream_closed",
    "upstream_closed_within",
]


def _claims(history: History) -> list[tuple[FrameRec, Any]]:
    """(ACK frame, claimed request id) for every id an INTERRUPT_ACK reported interrupted."""
    return [(f, rid) for f in frames(history) if f.get("kind") == "ack"
            for rid in (f.get("interrupted_ids") or [])]


@checker
def ack_latency(history: History, bound_ms: float, percentile: float = 99) -> Verdict:
    """The p-th percentile of INTERRUPT->ACK latency is within ``bound_ms``; unanswered INTERRUPTs fail."""
    name = "interrupts.ack_latency"
    ops = history.operations("interrupt")
    if not ops:
        return unknown(name, "no INTERRUPT was sent")
    lat = []
    for op in ops:
        if op.outcome == "ok":
            v = op.data.get("latency_ms", op.duration_ms)
            if v is not None:
                lat.append(float(v))
    missing = len(ops) - len(lat)
    p = percentile
    figs: dict[str, Any] = {"interrupts": len(ops), "answered": len(lat), "unanswered": missing,
                            "bound_ms": bound_ms, "percentile": p}
    if not lat:
        return fail(name, f"none of {len(ops)} INTERRUPTs got an ACK", **figs)
    return percentile_within(
        name, lat, figs, bound_ms=bound_ms, p=p, missing=missing, noun="interrupts", label="ACK ",
        missing_text=f"{missing} of {len(ops)} INTERRUPTs got no ACK (timeout or connection lost)")


@checker
def ack_status(ack: Any, status: str, interrupted: Collection[str] | None = None) -> Verdict:
    """One ACK (Frame, record dict or None) has ``status`` and, if given, exactly those interrupted ids.

    The answer may be the ERROR frame that answered the INTERRUPT instead (an
    ``InterruptResult`` is read as its ACK, else its ERROR): the failure then quotes its
    code and message, never "no ACK".
    """
    name = "interrupts.ack_status"
    if hasattr(ack, "interrupt_id") and hasattr(ack, "error"):  # an InterruptResult
        ack = ack.ack if ack.ack is not None else ack.error
    d = as_frame_dict(ack)
    want = None if interrupted is None else sorted(map(str, interrupted))
    if d is None:
        return fail(name, f"no INTERRUPT_ACK (expected {status})", expected_status=status, expected_ids=want)
    got_status, ids = d.get("status"), d.get("interrupted_ids")
    count = d.get("interrupted_count")
    figs = {"status": got_status, "ids": ids, "count": count, "expected_status": status,
            "expected_ids": want, "interrupt_id": d.get("request_id")}
    if d.get("kind") == "error":
        code, message = d.get("code"), d.get("message")
        figs.update(error_code=code, error_message=message)
        said = f" {code}" if code else " without a code"
        said += f": {str(message)[:200]!r}" if message else ""
        which = f"INTERRUPT {d['request_id']}" if d.get("request_id") else "INTERRUPT"
        return fail(name, f"the {which} was answered with an ERROR{said}, expected an ACK {status}", **figs)
    if d.get("kind") not in ("ack", None):
        return fail(name, f"answered {d.get('kind')}, expected an ACK {status}", **figs)
    if got_status is None:
        return unknown(name, f"ACK record without a status: {sorted(d)}", **figs)
    problems = []
    if got_status != status:
        problems.append(f"status {got_status}, expected {status}")
    if want is not None and sorted(map(str, ids or [])) != want:
        problems.append(f"interrupted {sorted(map(str, ids or []))}, expected {want}")
    if count is not None and ids is not None and count != len(ids):
        problems.append(f"interrupted_count {count} but {len(ids)} ids listed")
    label = f"ACK {d.get('request_id')}"
    if problems:
        return fail(name, f"{label}: " + "; ".join(problems), **figs)
    return passed(name, f"{label}: {status}, interrupted {sorted(map(str, ids or []))}", **figs)


@checker
def one_ack_each(history: History) -> Verdict:
    """Every INTERRUPT sent got exactly one INTERRUPT_ACK on its client, and no ACK is unmatched."""
    name = "interrupts.one_ack_each"
    ops = history.operations("interrupt")
    if not ops:
        return unknown(name, "no INTERRUPT was sent")
    acks: dict[tuple[str, Any], int] = defaultdict(int)
    for f in frames(history):
        if f.get("kind") == "ack":
            acks[(f.client, f.get("request_id"))] += 1
    sent = {(op.client, op.data.get("interrupt_id")) for op in ops}
    bad = [f"INTERRUPT {iid} of {c}: {acks.get((c, iid), 0)} ACKs" for c, iid in sorted(sent, key=repr)
           if acks.get((c, iid), 0) != 1]
    stray = [f"ACK {iid} on {c} for no INTERRUPT sent" for c, iid in acks if (c, iid) not in sent]
    figs = {"interrupts": len(ops), "acks": sum(acks.values()), "bad": len(bad), "stray": len(stray),
            "unanswered": sum(1 for k in sent if not acks.get(k))}
    if bad or stray:
        return fail(name, f"{len(bad)} of {len(sent)} INTERRUPTs without exactly one ACK, {len(stray)} stray "
                          f"ACKs: {summarize(bad + stray)}", **figs)
    return passed(name, f"all {len(sent)} INTERRUPTs got exactly one ACK", **figs)


#: How a target may order an interrupted request's final frame and the ACK (``conventions.interrupt_order``).
ORDERS = ("final_then_ack", "ack_then_final", "either")


def _order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"interrupt order {order!r} is not one of {', '.join(ORDERS)}")
    return order


@checker
def final_before_ack(history: History, *, order: str = "final_then_ack", grace_ms: float = 0) -> Verdict:
    """For every id an ACK claimed, that request's interrupted final frame arrived earlier on that client.

    ``order`` is what the target declared (``conventions.interrupt_order``):
    ``final_then_ack`` (PROTOCOL.md) wants the final before the ACK, or within
    ``grace_ms`` after it (``conventions.after_ack_grace_ms``); ``ack_then_final`` and
    ``either`` accept it on either side of the ACK, but it must come.
    """
    name = "interrupts.final_before_ack"
    order = _order(order)
    claims = _claims(history)
    if not claims:
        return unknown(name, "no INTERRUPT_ACK claimed any request", order=order)
    finals: dict[tuple[str, Any], list[FrameRec]] = defaultdict(list)
    for f in frames(history):
        if f.get("kind") == "final" and f.get("interrupted") is True:
            finals[(f.client, f.get("request_id"))].append(f)
    bad, after = [], 0
    for ack, rid in claims:
        got = finals.get((ack.client, rid), [])
        if any(f.pos < ack.pos for f in got):
            continue
        if got:
            dt = (got[0].t_ns - ack.t_ns) / 1e6
            if order != "final_then_ack" or dt <= grace_ms:
                after += 1
                continue
            bad.append(f"{request_label(ack.client, rid)}: final {dt:+.1f} ms after its ACK "
                       f"{ack.get('request_id')}")
        else:
            bad.append(f"{request_label(ack.client, rid)}: no interrupted final frame at all "
                       f"(ACK {ack.get('request_id')})")
    figs = {"claims": len(claims), "bad": len(bad), "order": order, "grace_ms": grace_ms,
            "final_after_ack": after}
    rule = ("before their ACK" + (f" (or within {grace_ms:g} ms after it)" if grace_ms else "")
            if order == "final_then_ack" else f"(order {order}: before or after the ACK)")
    if bad:
        return fail(name, f"{len(bad)} of {len(claims)} interrupted requests lack a final frame "
                          f"{rule}: {summarize(bad)}", **figs)
    where = "before the ACK" if not after else f"before the ACK, {after} of them after it as declared ({order})" \
        if order != "final_then_ack" else f"before the ACK, {after} of them within the {grace_ms:g} ms grace"
    return passed(name, f"all {len(claims)} interrupted requests got their final frame {where}", **figs)


@checker
def no_frames_after_ack(history: History, grace_ms: float = 0, *, order: str = "final_then_ack") -> Verdict:
    """No frame for a claimed request id arrives after the ACK that claimed it (beyond ``grace_ms``).

    With ``order`` ``ack_then_final`` or ``either`` (declared), the request's one
    interrupted final frame may follow the ACK; nothing else may.
    """
    name = "interrupts.no_frames_after_ack"
    order = _order(order)
    claims = _claims(history)
    if not claims:
        return unknown(name, "no INTERRUPT_ACK claimed any request", order=order)
    by_key: dict[tuple[str, Any], list[FrameRec]] = defaultdict(list)
    for f in frames(history):
        if f.get("kind") != "ack":
            by_key[(f.client, f.get("request_id"))].append(f)
    bad, late_total = [], 0
    for ack, rid in claims:
        # A later REQUEST reusing the id legitimately gets frames again: stop there.
        reuse = [op.started_ns for op in request_ops(history, rid, ack.client) if op.started_ns > ack.t_ns]
        cutoff = min(reuse, default=None)
        late = [f for f in by_key.get((ack.client, rid), [])
                if f.pos > ack.pos and (f.t_ns - ack.t_ns) / 1e6 > grace_ms
                and (cutoff is None or f.t_ns < cutoff)]
        if order != "final_then_ack":
            # The declared order lets the interrupted final follow the ACK: its first one, if
            # no earlier final ended the request.
            earlier_final = any(f.get("kind") == "final" and f.pos < ack.pos for f in by_key.get((ack.client, rid), []))
            first_final = next((f for f in late if f.get("kind") == "final" and f.get("interrupted") is True), None)
            if first_final is not None and not earlier_final:
                late = [f for f in late if f is not first_final]
        if late:
            late_total += len(late)
            seqs = ", ".join(str(f.get("seq")) if f.get("seq") is not None else str(f.get("kind"))
                             for f in late[:10]) + (", ..." if len(late) > 10 else "")
            first = (late[0].t_ns - ack.t_ns) / 1e6
            bad.append(f"{request_label(ack.client, rid)}: {len(late)} frames after its ACK at "
                       f"+{first:.1f} ms (seq {seqs})")
    figs = {"claims": len(claims), "requests_with_late_frames": len(bad), "late_frames": late_total,
            "grace_ms": grace_ms, "order": order}
    if bad:
        return fail(name, summarize(bad), **figs)
    allowed = "" if order == "final_then_ack" else " but the interrupted final (declared order " + order + ")"
    return passed(name, f"no frame after the ACK{allowed} for any of {len(claims)} interrupted requests", **figs)


@checker
def no_double_claim(history: History) -> Verdict:
    """No request id (per client session) is reported interrupted by two ACKs."""
    name = "interrupts.no_double_claim"
    acks = [f for f in frames(history) if f.get("kind") == "ack"]
    if not acks:
        return unknown(name, "no INTERRUPT_ACK recorded")
    claimed: dict[tuple[str, Any, Any], list[Any]] = defaultdict(list)
    for f in acks:
        for rid in f.get("interrupted_ids") or []:
            claimed[(f.client, f.get("session_id"), rid)].append(f.get("request_id"))
    if not claimed:
        return unknown(name, f"{len(acks)} ACKs claimed no request; nothing to judge", acks=len(acks))
    twice = {k: v for k, v in claimed.items() if len(v) > 1}
    figs = {"acks": len(acks), "claimed": len(claimed), "double_claimed": len(twice)}
    if twice:
        desc = [f"{request_label(c, rid)}: claimed by {len(v)} ACKs ({', '.join(map(str, v))})"
                for (c, _s, rid), v in twice.items()]
        return fail(name, f"{len(twice)} requests claimed by more than one ACK: {summarize(desc)}", **figs)
    return passed(name, f"{len(claimed)} requests each claimed by one of {len(acks)} ACKs", **figs)


@checker
def not_found(history: History, interrupt_ids: Collection[str]) -> Verdict:
    """Those INTERRUPTs were answered status NOT_FOUND with interrupted_count 0."""
    name = "interrupts.not_found"
    if not interrupt_ids:
        return unknown(name, "no INTERRUPT ids given")
    ops = {op.data.get("interrupt_id"): op for op in history.operations("interrupt")}
    bad, missing = [], []
    for iid in interrupt_ids:
        op = ops.get(iid)
        if op is None or op.outcome != "ok":
            missing.append(f"{iid}: {'not sent' if op is None else 'no ACK (' + op.outcome + ')'}")
            continue
        status, count = op.data.get("status"), op.data.get("interrupted_count")
        if status != "NOT_FOUND" or count not in (0, None) or op.data.get("interrupted"):
            bad.append(f"INTERRUPT {iid} of {op.client}: status {status}, interrupted_count {count} "
                       f"({', '.join(map(str, op.data.get('interrupted') or [])) or 'none'})")
    figs = {"interrupts": len(interrupt_ids), "bad": len(bad), "unanswered": len(missing)}
    if bad:
        return fail(name, f"{len(bad)} of {len(interrupt_ids)} INTERRUPTs for unknown ids changed "
                          f"something: {summarize(bad)}", **figs)
    if missing:
        return unknown(name, f"{len(missing)} INTERRUPTs have no ACK to judge: {summarize(missing)}", **figs)
    return passed(name, f"all {len(interrupt_ids)} INTERRUPTs answered NOT_FOUND, count 0", **figs)


# -- how each reply ends ---------------------------------------------------------
@checker
def one_terminal(history: History) -> Verdict:
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


@checker
def request_completes(history: History, request_id: str, client: str | None = None) -> Verdict:
    """That request (its latest REQUEST) completed normally: final frame, not interrupted."""
    name = "interrupts.request_completes"
    status, why = _completion(history, request_id, client)
    return {"pass": passed, "fail": fail, "unknown": unknown}[status](name, why, request_id=request_id)


@checker
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


@checker
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


@checker
def upstream_closed(interrupt_sent_ns: int | None, closed_ns: int | None, bound_ms: float) -> Verdict:
    """The upstream HTTP stream closed within ``bound_ms`` of the INTERRUPT; None (never) fails."""
    name = "interrupts.upstream_closed"
    if interrupt_sent_ns is None:
        return unknown(name, "no INTERRUPT send time recorded", bound_ms=bound_ms)
    closed_after_ms = None if closed_ns is None else (closed_ns - interrupt_sent_ns) / 1e6
    return duration_within(name, closed_after_ms, bound_ms, what="upstream close", key="closed_after_ms",
                           context={}, took="upstream closed {value} after the INTERRUPT",
                           never="upstream stream still open (bound {bound} ms after the INTERRUPT)",
                           no_bound="upstream close after the INTERRUPT: no bound given",
                           early="upstream closed {early} before the INTERRUPT was sent: "
                                 "the interrupt was not exercised")


@checker
def not_delayed(first_chunk_ms: float | None, bound_ms: float | None, *, what: str = "first chunk") -> Verdict:
    """``what`` arrived within ``bound_ms``; None (never seen within the wait) fails."""
    return duration_within("interrupts.not_delayed", first_chunk_ms, bound_ms, what=what, key="ms",
                           took="{what} after {value}",
                           never="{what}: not seen within the wait (bound {bound} ms)",
                           early="{what}: negative delay {value}, clocks mixed up")


# The names scenarios call them by.
one_terminal_per_request = one_terminal
upstream_closed_within = upstream_closed
