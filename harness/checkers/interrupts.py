"""Checkers for PROTOCOL.md "Interrupt semantics", read from the history.

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
    checker,
    frames,
    percentile_within,
    request_label,
    request_ops,
    summarize,
)
from harness.core.history import History
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = [
    "ack_latency",
    "ack_status",
    "final_before_ack",
    "no_double_claim",
    "no_frames_after_ack",
    "not_found",
    "one_ack_each",
]


def _claims(history: History) -> list[tuple[FrameRec, Any]]:
    """(ACK frame, claimed request id) for every id an INTERRUPT_ACK reported interrupted."""
    return [(f, rid) for f in frames(history) if f.get("kind") == "ack"
            for rid in (f.get("interrupted_ids") or [])]


@checker("interrupts.ack_latency", needs_history=True)
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


@checker("interrupts.ack_status")
def ack_status(ack: Any, status: str, interrupted: Collection[str] | None = None) -> Verdict:
    """One ACK (Frame, record dict or None) has ``status`` and, if given, exactly those interrupted ids."""
    name = "interrupts.ack_status"
    d = as_frame_dict(ack)
    want = None if interrupted is None else sorted(map(str, interrupted))
    if d is None:
        return fail(name, f"no INTERRUPT_ACK (expected {status})", expected_status=status, expected_ids=want)
    got_status, ids = d.get("status"), d.get("interrupted_ids")
    count = d.get("interrupted_count")
    figs = {"status": got_status, "ids": ids, "count": count, "expected_status": status,
            "expected_ids": want, "interrupt_id": d.get("request_id")}
    if d.get("kind") not in ("ack", None):
        code = f" {d['code']}" if d.get("code") else ""
        return fail(name, f"answered {d.get('kind')}{code}, expected an ACK {status}", **figs)
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


@checker("interrupts.one_ack_each", needs_history=True)
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


@checker("interrupts.final_before_ack", needs_history=True)
def final_before_ack(history: History) -> Verdict:
    """For every id an ACK claimed, that request's interrupted final frame arrived earlier on that client."""
    name = "interrupts.final_before_ack"
    claims = _claims(history)
    if not claims:
        return unknown(name, "no INTERRUPT_ACK claimed any request")
    finals: dict[tuple[str, Any], list[FrameRec]] = defaultdict(list)
    for f in frames(history):
        if f.get("kind") == "final" and f.get("interrupted") is True:
            finals[(f.client, f.get("request_id"))].append(f)
    bad = []
    for ack, rid in claims:
        got = finals.get((ack.client, rid), [])
        if any(f.pos < ack.pos for f in got):
            continue
        if got:
            dt = (got[0].t_ns - ack.t_ns) / 1e6
            bad.append(f"{request_label(ack.client, rid)}: final {dt:+.1f} ms after its ACK "
                       f"{ack.get('request_id')}")
        else:
            bad.append(f"{request_label(ack.client, rid)}: no interrupted final frame at all "
                       f"(ACK {ack.get('request_id')})")
    figs = {"claims": len(claims), "bad": len(bad)}
    if bad:
        return fail(name, f"{len(bad)} of {len(claims)} interrupted requests lack a final frame "
                          f"before their ACK: {summarize(bad)}", **figs)
    return passed(name, f"all {len(claims)} interrupted requests got their final frame before the ACK",
                  **figs)


@checker("interrupts.no_frames_after_ack", needs_history=True)
def no_frames_after_ack(history: History, grace_ms: float = 0) -> Verdict:
    """No frame for a claimed request id arrives after the ACK that claimed it (beyond ``grace_ms``)."""
    name = "interrupts.no_frames_after_ack"
    claims = _claims(history)
    if not claims:
        return unknown(name, "no INTERRUPT_ACK claimed any request")
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
        if late:
            late_total += len(late)
            seqs = ", ".join(str(f.get("seq")) if f.get("seq") is not None else str(f.get("kind"))
                             for f in late[:10]) + (", ..." if len(late) > 10 else "")
            first = (late[0].t_ns - ack.t_ns) / 1e6
            bad.append(f"{request_label(ack.client, rid)}: {len(late)} frames after its ACK at "
                       f"+{first:.1f} ms (seq {seqs})")
    figs = {"claims": len(claims), "requests_with_late_frames": len(bad), "late_frames": late_total,
            "grace_ms": grace_ms}
    if bad:
        return fail(name, summarize(bad), **figs)
    return passed(name, f"no frame after the ACK for any of {len(claims)} interrupted requests", **figs)


@checker("interrupts.no_double_claim", needs_history=True)
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


@checker("interrupts.not_found", needs_history=True)
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
