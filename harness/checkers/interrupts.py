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
    "acks_name_requests",
    "chunks_after_interrupt",
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


def _interrupts_sent(history: History) -> dict[tuple[str, Any], int]:
    """(client, interrupt id) -> when that INTERRUPT was sent (an ACK's ``request_id`` is its INTERRUPT's)."""
    return {(op.client, op.data.get("interrupt_id")): op.started_ns for op in history.operations("interrupt")}


def _sent_before(ack: FrameRec, sent: dict[tuple[str, Any], int]) -> int:
    """When the INTERRUPT this ACK answers was sent; the ACK's own time when it is not in the history."""
    return sent.get((ack.client, ack.get("request_id")), ack.t_ns)


def _claimed_request(history: History, ack: FrameRec, rid: Any, before_ns: int) -> Any:
    """Which request a claim of ``rid`` names: the last REQUEST with that id its client sent
    before the INTERRUPT (and the server did not refuse). An id reused after an INTERRUPT
    freed it is another request, claimed afresh; the bare id when no REQUEST is recorded."""
    ops = [op for op in request_ops(history, rid, ack.client) if op.started_ns <= before_ns
           and not (op.outcome == "fail" and op.data.get("error_code") in ("BUSY", "DUPLICATE_REQUEST"))]
    return (rid, ops[-1].started_ns) if ops else (rid, None)


def _derived(f: FrameRec) -> set[str]:
    """The values of a frame record the client worked out (``derived``), not the service."""
    d = f.get("derived")
    return set(d) if isinstance(d, (list, tuple)) else set()


def _ack_said(ack: FrameRec) -> str | None:
    """None when the service itself sent this ACK naming the requests it stopped; else why not."""
    d = _derived(ack)
    if "kind" in d:
        return "ACKs the client derived from the stopped replies' ends (the service sends none)"
    if "interrupted_ids" in d:
        return "ACKs without the ids of the requests they stopped (the client listed the replies it saw stopped)"
    return None


def _said_claims(history: History) -> tuple[list[tuple[FrameRec, Any]], dict[str, int]]:
    """The claims of ACKs the service sent with the ids it named; and, per reason, the ACKs left out.

    What the client derived cannot be judged against itself: it assigns each stopped
    reply to one interrupt, after that reply's end, by construction.
    """
    said: list[tuple[FrameRec, Any]] = []
    left: dict[str, int] = defaultdict(int)
    for f in frames(history):
        if f.get("kind") != "ack":
            continue
        why = _ack_said(f)
        if why is not None:
            left[why] += 1
            continue
        said += [(f, rid) for rid in (f.get("interrupted_ids") or [])]
    return said, dict(left)


def acks_name_requests(history: History) -> bool:
    """True when some ACK in the history is the service's own, listing the requests it stopped.

    Without one, ``final_before_ack`` and ``no_double_claim`` have only what the client
    worked out to read, and would be unknown: a scenario makes them where this holds.
    """
    return any(f.get("kind") == "ack" and _ack_said(f) is None for f in frames(history))


#: Why a claim is left out of final_before_ack: the client ended the reply at the ACK.
_ENDED_AT_ACK = "claims of replies the client ended at the ACK (the service sends them no final)"


def _nothing_said(left: dict[str, int], extra: str = "") -> str:
    parts = [f"{n} {why}" for why, n in sorted(left.items())]
    return "the service's answers carry no ids to judge: " + "; ".join(parts + ([extra] if extra else []))


@checker
def ack_latency(history: History, bound_ms: float, percentile: float = 99) -> Verdict:
    """The p-th percentile of INTERRUPT->ACK latency is within ``bound_ms``; unanswered INTERRUPTs fail."""
    name = "interrupts.ack_latency"
    ops = history.operations("interrupt")
    if not ops:
        return unknown(name, "no INTERRUPT was sent")
    # Answered by nothing: a service without ACKs had nothing running to stop, so the client
    # answered it itself at once; nothing was received, nothing was measured.
    nothing = sum(1 for op in ops if op.data.get("answered_by") == "nothing")
    ops = [op for op in ops if op.data.get("answered_by") != "nothing"]
    if not ops:
        return unknown(name, f"none of {nothing} INTERRUPTs had a reply to stop, and the target answers "
                             "no other: no latency was measured", nothing_to_stop=nothing)
    lat = []
    for op in ops:
        if op.outcome == "ok":
            v = op.data.get("latency_ms", op.duration_ms)
            if v is not None:
                lat.append(float(v))
    missing = len(ops) - len(lat)
    p = percentile
    figs: dict[str, Any] = {"interrupts": len(ops), "answered": len(lat), "unanswered": missing,
                            "nothing_to_stop": nothing, "bound_ms": bound_ms, "percentile": p}
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
    """Every INTERRUPT sent got exactly one INTERRUPT_ACK on its client, and no ACK is unmatched.

    An INTERRUPT still waiting when its own client ended the connection (close, RST,
    FIN: the harness's doing) is not judged for a missing ACK; one whose wait had
    already ended unanswered is.
    """
    name = "interrupts.one_ack_each"
    ops = history.operations("interrupt")
    if not ops:
        return unknown(name, "no INTERRUPT was sent")
    acks: dict[tuple[str, Any], int] = defaultdict(int)
    for f in frames(history):
        if f.get("kind") == "ack":
            acks[(f.client, f.get("request_id"))] += 1
    sent = {(op.client, op.data.get("interrupt_id")) for op in ops}
    # An INTERRUPT whose client itself ended the connection (close, RST, FIN) while still
    # waiting for the ACK may have had its ACK sent and never read: the harness cut it short.
    ends: dict[str, list[int]] = defaultdict(list)
    for op in history.operations():
        if op.kind in ("close", "abort", "vanish"):
            ends[op.client].append(op.started_ns)
    cut = {(op.client, op.data.get("interrupt_id")) for op in ops if not acks.get((op.client, op.data.get("interrupt_id")))
           and any(op.started_ns <= t and (op.ended_ns is None or op.ended_ns >= t) for t in ends[op.client])}
    judged = sent - cut
    bad = [f"INTERRUPT {iid} of {c}: {acks.get((c, iid), 0)} ACKs" for c, iid in sorted(judged, key=repr)
           if acks.get((c, iid), 0) != 1]
    stray = [f"ACK {iid} on {c} for no INTERRUPT sent" for c, iid in acks if (c, iid) not in sent]
    figs = {"interrupts": len(ops), "acks": sum(acks.values()), "bad": len(bad), "stray": len(stray),
            "unanswered": sum(1 for k in judged if not acks.get(k)), "cut_by_client": len(cut)}
    if bad or stray:
        return fail(name, f"{len(bad)} of {len(judged)} INTERRUPTs without exactly one ACK, {len(stray)} stray "
                          f"ACKs: {summarize(bad + stray)}", **figs)
    if not judged:
        return unknown(name, f"every INTERRUPT's connection was ended by its own client before the ACK was "
                             f"read ({len(cut)}): nothing to judge", **figs)
    cut_note = f" ({len(cut)} not judged: their client ended the connection before reading an ACK)" if cut else ""
    return passed(name, f"all {len(judged)} INTERRUPTs got exactly one ACK{cut_note}", **figs)


#: How a target may order an interrupted request's final frame and the ACK (``conventions.interrupt_order``).
ORDERS = ("final_then_ack", "ack_then_final", "either")


def _order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"interrupt order {order!r} is not one of {', '.join(ORDERS)}")
    return order


@checker
def final_before_ack(history: History, *, order: str = "final_then_ack", grace_ms: float = 0,
                     require_flag: bool = True) -> Verdict:
    """For every id an ACK claimed, that request's interrupted final frame arrived earlier on that client.

    ``order`` is what the target declared (``conventions.interrupt_order``):
    ``final_then_ack`` (PROTOCOL.md) wants the final before the ACK, or within
    ``grace_ms`` after it (``conventions.after_ack_grace_ms``); ``ack_then_final`` and
    ``either`` accept it on either side of the ACK, but it must come.
    ``require_flag=False`` is for a service whose final frames do not say they were
    interrupted (``fields.interrupted = false``): any final of the claimed request counts.

    Only what the service said is judged: an ACK the client derived (from a stopped
    reply's end) or whose ids it worked out, and a final frame it made up (at an ACK
    that ends the reply), cannot come out of order by construction; with nothing else,
    the verdict is unknown.
    """
    name = "interrupts.final_before_ack"
    order = _order(order)
    if not _claims(history):
        return unknown(name, "no INTERRUPT_ACK claimed any request", order=order)
    said, left = _said_claims(history)
    finals: dict[tuple[str, Any], list[FrameRec]] = defaultdict(list)
    made_up: set[tuple[str, Any]] = set()
    for f in frames(history):
        if f.get("kind") != "final":
            continue
        key = (f.client, f.get("request_id"))
        if "kind" in _derived(f):
            made_up.add(key)
        elif f.get("interrupted") is True or (not require_flag and f.get("interrupted") is not False):
            finals[key].append(f)
    claims = []
    for ack, rid in said:
        if (ack.client, rid) in made_up and not finals.get((ack.client, rid)):
            left[_ENDED_AT_ACK] = left.get(_ENDED_AT_ACK, 0) + 1
            continue
        claims.append((ack, rid))
    if not claims:
        return unknown(name, _nothing_said(left), order=order, left_out=sum(left.values()))
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
            which = "interrupted final frame" if require_flag else "final frame"
            bad.append(f"{request_label(ack.client, rid)}: no {which} at all "
                       f"(ACK {ack.get('request_id')})")
    figs = {"claims": len(claims), "bad": len(bad), "order": order, "grace_ms": grace_ms,
            "final_after_ack": after, "left_out": sum(left.values()), "require_flag": require_flag}
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
    sent = _interrupts_sent(history)
    bad, late_total, unjudged = [], 0, []
    for ack, rid in claims:
        # A later REQUEST reusing the id is another request with frames of its own. Sent after
        # the ACK, it ends the watch. Sent between the INTERRUPT and its ACK (pipelined, as
        # rule 5 allows), both streams share the id from before the ACK on: their frames
        # cannot be told apart, and that claim is not judged (said, never passed).
        asked = _sent_before(ack, sent)
        reuse = [op.started_ns for op in request_ops(history, rid, ack.client) if op.started_ns > asked]
        if any(t <= ack.t_ns for t in reuse):
            unjudged.append(request_label(ack.client, rid))
            continue
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
            "grace_ms": grace_ms, "order": order, "not_judged": len(unjudged)}
    if bad:
        return fail(name, summarize(bad), **figs)
    if len(unjudged) == len(claims):
        return unknown(name, f"every claimed id was sent again in a new REQUEST before its ACK came back: "
                             f"the two replies' frames cannot be told apart ({summarize(unjudged)})", **figs)
    allowed = "" if order == "final_then_ack" else " but the interrupted final (declared order " + order + ")"
    skipped = f" ({len(unjudged)} not judged: their id reused before the ACK)" if unjudged else ""
    judged = len(claims) - len(unjudged)
    return passed(name, f"no frame after the ACK{allowed} for any of {judged} interrupted requests{skipped}",
                  **figs)


#: How an interrupt was answered when the service did the answering (not ``nothing``, not an ERROR).
_ANSWERED = ("ack", "final")


@checker
def chunks_after_interrupt(history: History, limit: int = 0, *, in_flight_ms: float | None = None) -> Verdict:
    """At most ``limit`` chunks of the replies an INTERRUPT aimed at arrive after it, before its answer.

    Reads ``chunks_after`` of every INTERRUPT the service answered (by an ACK, or by
    the stopped replies' ends; one that had nothing to stop is left out). Chunks the
    target had sent before the INTERRUPT reached it were on their way already: with
    ``in_flight_ms`` (the time the target is given to act on an INTERRUPT, its ACK
    bound), only the chunks that arrived later than that after it count against
    ``limit`` (``limits.chunks_after_interrupt``; 1 lets one chunk in flight through);
    the others are figures. A reply's frames after its own end are
    ``no_frames_after_ack``'s business, not counted here.
    """
    name = "interrupts.chunks_after_interrupt"
    ops = history.operations("interrupt")
    if not ops:
        return unknown(name, "no INTERRUPT was sent", limit=limit)
    judged = [op for op in ops if op.outcome == "ok" and op.data.get("answered_by", "ack") in _ANSWERED
              and isinstance(op.data.get("chunks_after"), int)]
    stopping = [op for op in judged if op.data.get("interrupted") or op.data["chunks_after"]]
    figs: dict[str, Any] = {"interrupts": len(ops), "judged": len(judged), "stopping": len(stopping),
                            "limit": limit, "in_flight_ms": in_flight_ms}
    if not stopping:
        why = (f"none of {len(ops)} INTERRUPTs stopped a reply the service answered for"
               if judged else f"none of {len(ops)} INTERRUPTs was answered by the service with a chunk count "
                              "(nothing to stop, an ERROR, or no answer)")
        return unknown(name, why, **figs)
    by_client: dict[str, list[FrameRec]] = defaultdict(list)
    for f in frames(history):
        by_client[f.client].append(f)
    bad, most, most_late = [], 0, 0
    for op in judged:
        counted = int(op.data["chunks_after"])
        late = counted if in_flight_ms is None else min(counted, _late_chunks(history, op, by_client, in_flight_ms))
        most, most_late = max(most, counted), max(most_late, late)
        if late > limit:
            answer = _answer_ns(op, by_client)
            at = f", answered {fmt_ms((answer - op.started_ns) / 1e6)} after it" if answer is not None else ""
            later = "" if in_flight_ms is None else f" more than {in_flight_ms:g} ms after it ({counted} in all)"
            bad.append(f"INTERRUPT {op.data.get('interrupt_id')} of {op.client}: {late} chunks of the replies "
                       f"it stopped{later}{at}")
    figs.update(bad=len(bad), most_chunks_after=most, most_late=most_late)
    allowed = f"at most {limit}" if limit else "none"
    if bad:
        window = "" if in_flight_ms is None else f" more than {in_flight_ms:g} ms after them"
        return fail(name, f"{len(bad)} of {len(judged)} INTERRUPTs were followed by more chunks of the replies they "
                          f"stopped{window} than allowed ({allowed}): {summarize(bad)}", **figs)
    window = "" if in_flight_ms is None else f" more than {in_flight_ms:g} ms after"
    head = "no chunk" if not most_late else f"at most {most_late} chunks (allowed {limit})"
    inflight = "" if in_flight_ms is None or not most else f"; up to {most} arrived sooner, in flight"
    return passed(name, f"{head} of a stopped reply arrived{window or ' after'} its INTERRUPT, over "
                        f"{len(judged)} answered INTERRUPTs{inflight}", **figs)


def _answer_ns(op: Any, by_client: dict[str, list[FrameRec]]) -> int | None:
    """When the answer of an interrupt operation arrived: its ACK (received or derived), else its end."""
    iid = op.data.get("interrupt_id")
    for f in by_client.get(op.client, []):
        if f.get("kind") == "ack" and f.get("request_id") == iid and f.t_ns >= op.started_ns:
            return f.t_ns
    return op.ended_ns


def _late_chunks(history: History, op: Any, by_client: dict[str, list[FrameRec]], in_flight_ms: float) -> int:
    """Chunks of the replies ``op`` aimed at, later than ``in_flight_ms`` after it, before its answer and their end."""
    answer = _answer_ns(op, by_client)
    if answer is None:
        return 0
    target = op.data.get("target")
    aimed = set(map(str, op.data.get("interrupted") or []))
    if target is None:
        aimed |= {str(r.data.get("request_id")) for r in request_ops(history, None, op.client)
                  if r.started_ns < op.started_ns}
    else:
        aimed.add(str(target))
    after_ns = op.started_ns + in_flight_ms * 1e6
    ended: set[str] = set()
    late = 0
    for f in by_client.get(op.client, []):
        if f.t_ns <= op.started_ns or f.t_ns > answer:
            continue
        rid = str(f.get("request_id"))
        if rid not in aimed or rid in ended:
            continue
        if f.get("kind") == "final":
            ended.add(rid)
        elif f.get("kind") == "chunk" and f.t_ns > after_ns:
            late += 1
    return late


@checker
def no_double_claim(history: History) -> Verdict:
    """No request (per client session) is reported interrupted by two ACKs.

    A request is its REQUEST, not its id: an ACK's claim names the last REQUEST of that
    id sent before its INTERRUPT, so an id reused after being freed is claimed afresh.
    """
    name = "interrupts.no_double_claim"
    acks = [f for f in frames(history) if f.get("kind") == "ack"]
    if not acks:
        return unknown(name, "no INTERRUPT_ACK recorded")
    # Ids the client worked out give each stopped reply to one interrupt by construction.
    left: dict[str, int] = defaultdict(int)
    said = []
    for f in acks:
        why = _ack_said(f)
        if why is None:
            said.append(f)
        else:
            left[why] += 1
    if not said:
        return unknown(name, _nothing_said(left), acks=len(acks), left_out=len(acks))
    acks = said
    # Claims are of requests, not ids: an id claimed, sent again and claimed again is two requests.
    sent = _interrupts_sent(history)
    claimed: dict[tuple[str, Any, Any], list[Any]] = defaultdict(list)
    for f in acks:
        before = _sent_before(f, sent)
        for rid in f.get("interrupted_ids") or []:
            claimed[(f.client, f.get("session_id"), _claimed_request(history, f, rid, before))].append(
                f.get("request_id"))
    if not claimed:
        return unknown(name, f"{len(acks)} ACKs claimed no request; nothing to judge", acks=len(acks))
    twice = {k: v for k, v in claimed.items() if len(v) > 1}
    figs = {"acks": len(acks), "claimed": len(claimed), "double_claimed": len(twice),
            "left_out": sum(left.values())}
    if twice:
        desc = [f"{request_label(c, rid)}: claimed by {len(v)} ACKs ({', '.join(map(str, v))})"
                for (c, _s, (rid, _at)), v in twice.items()]
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
