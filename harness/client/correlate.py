"""Correlating received frames with the operations waiting for them.

The client's reader hands every frame to :meth:`Correlator.dispatch`, which
ends the request it finishes, answers the INTERRUPT or HEARTBEAT it acknowledges,
and returns what to record; :meth:`Correlator.wake` then wakes predicate waiters;
when the connection ends, :meth:`settle_all` ends every operation still waiting
as unknown. No I/O: the client sends and reads.

Services that carry no ids are correlated too (``Adapter.correlation``):

* ``"order"``: a reply frame without a request id belongs to the oldest
  unfinished request of the session; a chunk carrying a sequence number goes on
  the reply whose last chunk had the number before it (so the late audio of a
  cancelled utterance is told from the next one's), a number without a
  predecessor starts the oldest request that has no chunk yet, and a final
  frame ends the reply of the chunk before it. An ERROR without an id refuses
  the request just sent, if that request got nothing yet.
* An ACK without an interrupt id answers the oldest unanswered interrupt of
  the session, whatever the correlation.

What the service does not say, the client works out and marks
(``Frame.derived``): the ACK's interrupt id, the requests it stopped (the
replies that ended interrupted since it was sent; for ``interrupt_answer =
"ack"``, the targeted replies still running) and its status; for
``interrupt_answer = "final"`` the stopped reply's final frame is the answer,
recorded once more as a derived ACK; for ``"ack"`` the stopped reply ends at
the ACK, with a derived final frame recorded just before it. So every history
has the reference protocol's shape, and the checkers read one shape.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from harness.core.history import Operation
from harness.protocol.frames import REPLY_KINDS, Frame, Reply

__all__ = ["Correlator", "Pending", "PendingInterrupt"]

#: Requests ended by an interrupt's answer, kept to take their late frames.
_STALE_KEPT = 8


@dataclass(eq=False)
class Pending:
    request_id: str
    op: Operation
    sent_ns: int
    done: asyncio.Future[None]
    chunks: list[Frame] = field(default_factory=list)
    final: Frame | None = None
    error: Frame | None = None
    #: reply() callers' own futures, resolved with ``done`` by the reader itself: one
    #: event-loop round trip to wake a caller, where a shielded ``done`` takes two.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Send order among this client's requests and interrupts.
    tick: int = 0
    #: Reply frames taken so far (chunks, meta, final).
    frames: int = 0
    last_seq: int | None = None
    #: Ended by an interrupt's answer without a final of its own: late frames may follow.
    stale: bool = False

    def reply(self) -> Reply:
        return Reply.assemble(self.request_id, self.chunks, self.final, self.error, self.sent_ns)

    def settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        for w in self.waiters:
            if not w.done():
                w.set_result(None)
        self.waiters.clear()


@dataclass(eq=False)
class PendingInterrupt:
    """One INTERRUPT waiting for its answer."""

    interrupt_id: str
    #: The request it stops; None: every request of the session.
    target: str | None
    fut: asyncio.Future[Frame | None]
    tick: int = 0
    #: ``interrupt_answer = "final"``: the targeted replies whose end answers it.
    awaiting: set[str] = field(default_factory=set)
    #: The requests it stopped, in the order their ends arrived.
    claimed: list[str] = field(default_factory=list)
    #: Chunks of the replies it aims at received after it was sent and before its answer.
    chunks_after: int = 0
    #: The frame that answered it as received (the ACK, or the stopped reply's final).
    answer: Frame | None = None
    #: "ack", "final" or "nothing" once answered.
    answered_by: str | None = None
    #: Its wait ended unanswered: a late ACK is still its own, not the next one's.
    expired: bool = False

    def aims_at(self, pend: Pending) -> bool:
        return pend.tick < self.tick and (self.target is None or self.target == pend.request_id)


class Correlator:
    """Waiters by what they wait for; ``end(op, outcome, **data)`` ends an operation once."""

    def __init__(self, end: Callable[..., None], *, correlation: str = "id",
                 answer: str = "final_then_ack") -> None:
        self._end = end
        self.correlation = correlation
        self.answer = answer
        self.pending: dict[str, Pending] = {}
        self.dups: dict[str, list[Pending]] = {}
        #: Heartbeats (and interrupts) answered by an id of their own.
        self.answers: dict[str, asyncio.Future[Frame | None]] = {}
        self.heartbeats: list[asyncio.Future[Frame | None]] = []
        self.predicates: list[tuple[Callable[[Frame], bool], asyncio.Future[Frame | None]]] = []
        #: Unanswered interrupts, in send order.
        self.interrupts: dict[str, PendingInterrupt] = {}
        #: Unfinished requests in send order (finished ones are dropped lazily).
        self._live: dict[str, Pending] = {}
        self._stale: deque[Pending] = deque(maxlen=_STALE_KEPT)
        self._claimed: set[str] = set()
        self._ticks = itertools.count(1)
        self._last_owner: Pending | None = None
        #: The request id of the last frame sent, while nothing else was sent after it.
        self.last_sent: str | None = None

    # -- registration ------------------------------------------------------------
    def add_request(self, pend: Pending) -> bool:
        """Register a request about to be sent; False when it reuses a running request's id."""
        pend.tick = next(self._ticks)
        active = self.pending.get(pend.request_id)
        if active is not None and not active.done.done():
            # A deliberate duplicate id: the stream stays with the first
            # request; the next ERROR for the id answers this one.
            self.dups.setdefault(pend.request_id, []).append(pend)
            return False
        self.pending[pend.request_id] = pend
        self._live[pend.request_id] = pend
        self.last_sent = pend.request_id
        return True

    def add_interrupt(self, interrupt_id: str, target: str | None,
                      fut: asyncio.Future[Frame | None]) -> PendingInterrupt:
        """Register an interrupt about to be sent (``target`` None: every request)."""
        it = PendingInterrupt(interrupt_id, target, fut, next(self._ticks))
        if self.answer == "final":
            it.awaiting = {p.request_id for p in self._live_requests() if it.aims_at(p)}
        self.interrupts[interrupt_id] = it
        self.answers[interrupt_id] = fut
        self.last_sent = None
        return it

    def drop_interrupt(self, it: PendingInterrupt) -> None:
        """It was never sent (the connection was gone)."""
        self.interrupts.pop(it.interrupt_id, None)
        self.answers.pop(it.interrupt_id, None)

    def expire(self, it: PendingInterrupt) -> None:
        """Its wait is over; an answer arriving later is still taken as its own."""
        self.answers.pop(it.interrupt_id, None)
        if it.interrupt_id in self.interrupts:
            it.expired = True

    def nothing_to_stop(self, it: PendingInterrupt, t_ns: int) -> Frame | None:
        """For a service without ACKs: an interrupt with no reply to stop is answered at once.

        Such a service says nothing then, so there is nothing to wait for; the derived
        answer (status NOT_FOUND) keeps one answer per interrupt in the history.
        """
        if self.answer != "final" or it.awaiting or it.answered_by is not None:
            return None
        ack = Frame("ack", None, it.interrupt_id, None, {}, "", t_ns,
                    {"status": "NOT_FOUND", "interrupted_ids": []},
                    derived=("kind", "request_id", "status", "interrupted_ids"))
        self._answer(it, ack, "nothing", None)
        return ack

    def sent_other(self) -> None:
        """Something else than a request went out: an id-less ERROR is no longer the request's."""
        self.last_sent = None

    # -- dispatch ------------------------------------------------------------------
    def dispatch(self, frame: Frame) -> tuple[Frame, list[Frame]]:
        """Correlate one received frame: (the frame as attributed, every frame to record in order)."""
        kind = frame.kind
        if kind == "ack":
            return self._on_ack(frame)
        if frame.request_id is None and self.correlation == "order" and (kind in REPLY_KINDS or kind == "error"):
            owner = self._owner(frame)
            if owner is not None:
                frame = replace(frame, request_id=owner.request_id, derived=(*frame.derived, "request_id"))
        out = [frame]
        rid = frame.request_id
        by_id = False
        if rid is not None:
            pend = self.pending.get(rid)
            if pend is not None and kind in REPLY_KINDS:
                if kind != "final":
                    self._last_owner = pend
                if not pend.done.done():
                    pend.frames += 1
                    if kind == "chunk":
                        pend.chunks.append(frame)
                        if frame.seq is not None:
                            pend.last_seq = frame.seq
                        if self.interrupts:
                            for it in self.interrupts.values():
                                if it.answered_by is None and it.aims_at(pend):
                                    it.chunks_after += 1
                    elif kind == "final":
                        frame, after = self._on_final(pend, frame)
                        out = [frame, *after]
                elif kind == "chunk" and frame.seq is not None:
                    pend.last_seq = frame.seq  # a stale reply's late chunk: keep its numbering
            elif pend is not None and kind == "error" and not pend.done.done() \
                    and not self.dups.get(rid) and frame.code != "DUPLICATE_REQUEST":
                # DUPLICATE_REQUEST refuses another frame that reused this
                # id, not the request already streaming under it.
                pend.error = frame
                self.end_request(pend, "fail", error_code=frame.code)
            dups = self.dups.get(rid)
            if dups and kind == "error":
                dup = dups.pop(0)
                dup.error = frame
                self.end_request(dup, "fail", error_code=frame.code)
            fut = self.answers.get(rid)
            if fut is not None and not fut.done() and kind in ("error", "heartbeat_ack"):
                fut.set_result(frame)
                by_id = True
                refused: PendingInterrupt | None = self.interrupts.pop(rid, None)
                if refused is not None:
                    refused.answer, refused.answered_by = frame, "error"
        if kind == "heartbeat_ack" and not by_id:
            # The protocol does not promise the ACK echoes an id: answer the oldest waiter.
            while self.heartbeats:
                fut = self.heartbeats.pop(0)
                if not fut.done():
                    fut.set_result(frame)
                    break
        return frame, out

    def wake(self, frame: Frame) -> None:
        """Wake the ``wait_frame`` callers whose predicate the frame meets."""
        if not self.predicates:
            return
        for item in list(self.predicates):
            pred, fut = item
            if fut.done():
                self.predicates.remove(item)
                continue
            try:
                hit = pred(frame)
            except Exception as exc:  # a broken predicate fails its own wait, not the reader
                fut.set_exception(exc)
                self.predicates.remove(item)
                continue
            if hit:
                fut.set_result(frame)
                self.predicates.remove(item)

    # -- order correlation ---------------------------------------------------------
    def _live_requests(self) -> Iterator[Pending]:
        for rid, p in list(self._live.items()):
            if p.done.done():
                del self._live[rid]
            else:
                yield p

    def _owner(self, frame: Frame) -> Pending | None:
        """The request an id-less frame belongs to, by order (see the module's docstring)."""
        live = list(self._live_requests())
        if frame.kind == "error":
            p = self.pending.get(self.last_sent) if self.last_sent else None
            return p if p is not None and not p.done.done() and p.frames == 0 else None
        if frame.kind == "chunk" and frame.seq is not None:
            for p in reversed([*self._stale, *live]):
                if p.last_seq is not None and p.last_seq == frame.seq - 1:
                    return p
            for p in live:
                if p.last_seq is None:
                    return p
        if frame.kind == "final" and self._last_owner is not None and self._last_owner.stale:
            return self._last_owner  # the end of the late frames just taken
        if live:
            return live[0]
        return self._stale[-1] if self._stale else None

    # -- interrupts ----------------------------------------------------------------
    def _oldest_unanswered(self) -> PendingInterrupt | None:
        for it in self.interrupts.values():
            if it.answered_by is None:
                return it
        return None

    def _on_final(self, pend: Pending, frame: Frame) -> tuple[Frame, list[Frame]]:
        """A reply's final frame: which interrupt stopped it, and what it answers."""
        after: list[Frame] = []
        stopped_by: PendingInterrupt | None = None
        if frame.interrupted is not False and pend.request_id not in self._claimed:
            for it in self.interrupts.values():
                if it.aims_at(pend):
                    stopped_by = it
                    break
        if stopped_by is not None:
            stopped_by.claimed.append(pend.request_id)
            self._claimed.add(pend.request_id)
            if frame.interrupted is None:
                # The service does not mark stopped replies: this one ended after a stop aimed at it.
                frame = replace(frame, fields={**(frame.fields or {}), "interrupted": True},
                                derived=(*frame.derived, "interrupted"))
        pend.final = frame
        last = frame.seq if frame.seq is not None else (pend.chunks[-1].seq if pend.chunks else None)
        self._end(pend.op, "ok", interrupted=bool(frame.interrupted), reason=frame.reason,
                  chunks=len(pend.chunks), last_seq=last, error_code=None)
        pend.settle()
        self._live.pop(pend.request_id, None)
        if self.answer == "final":
            for it in list(self.interrupts.values()):
                if it.answered_by is None and pend.request_id in it.awaiting:
                    it.awaiting.discard(pend.request_id)
                    if not it.awaiting:
                        ack = self._derived_ack(it, frame)
                        self._answer(it, ack, "final", frame)
                        after.append(ack)
        return frame, after

    def _derived_ack(self, it: PendingInterrupt, final: Frame) -> Frame:
        ids = list(it.claimed)
        return Frame("ack", final.msg_type, it.interrupt_id, final.session_id, final.payload, final.raw,
                     final.t_ns, {"status": "SUCCESS" if ids else "NOT_FOUND", "interrupted_ids": ids},
                     derived=("kind", "request_id", "status", "interrupted_ids"))

    def _on_ack(self, frame: Frame) -> tuple[Frame, list[Frame]]:
        rid = frame.request_id
        it = self.interrupts.get(rid) if rid is not None else None
        if it is None and (rid is None or rid in self.pending):
            # No id, or the stopped request's own: the oldest interrupt still unanswered.
            it = self._oldest_unanswered()
        if it is None:
            # An id of no interrupt of ours: recorded as it came (a stray ACK for the checks).
            fut = self.answers.get(frame.request_id) if frame.request_id is not None else None
            if fut is not None and not fut.done():
                fut.set_result(frame)
            return frame, [frame]
        derived = list(frame.derived)
        fields = dict(frame.fields or {})
        if rid != it.interrupt_id:
            derived.append("request_id")
        before: list[Frame] = []
        if self.answer in ("ack", "ack_then_final"):
            # The replies it stops are the targeted ones still running now.
            for p in self._live_requests():
                if it.aims_at(p) and p.request_id not in self._claimed:
                    it.claimed.append(p.request_id)
                    self._claimed.add(p.request_id)
                    if self.answer == "ack":
                        before.append(self._end_at_ack(p, frame))
        if frame.interrupted_ids is None:
            fields["interrupted_ids"] = list(it.claimed)
            derived.append("interrupted_ids")
        if frame.status is None:
            ids = fields.get("interrupted_ids", frame.interrupted_ids) or []
            fields["status"] = "SUCCESS" if ids else "NOT_FOUND"
            derived.append("status")
        if derived != list(frame.derived):
            frame = replace(frame, request_id=it.interrupt_id, fields=fields, derived=tuple(derived))
        self._answer(it, frame, "ack", frame)
        return frame, [*before, frame]

    def _end_at_ack(self, pend: Pending, ack: Frame) -> Frame:
        """``interrupt_answer = "ack"``: the stopped reply gets no final; it ends at the ACK."""
        final = Frame("final", None, pend.request_id, ack.session_id, {}, "", ack.t_ns, {"interrupted": True},
                      derived=("kind", "request_id", "interrupted"))
        pend.final = final
        self._end(pend.op, "ok", interrupted=True, reason=None, chunks=len(pend.chunks),
                  last_seq=pend.chunks[-1].seq if pend.chunks else None, error_code=None)
        pend.settle()
        self._live.pop(pend.request_id, None)
        pend.stale = True
        self._stale.append(pend)
        return final

    def _answer(self, it: PendingInterrupt, ack: Frame, by: str, answer: Frame | None) -> None:
        it.answered_by, it.answer = by, answer
        self.interrupts.pop(it.interrupt_id, None)
        fut = self.answers.pop(it.interrupt_id, None)
        if fut is not None and not fut.done():
            fut.set_result(ack)
        elif not it.fut.done():
            it.fut.set_result(ack)

    # -- ending --------------------------------------------------------------------
    def end_request(self, pend: Pending, outcome: Any, **extra: Any) -> None:
        last = pend.chunks[-1].seq if pend.chunks else None
        data = {"interrupted": None, "reason": None, "chunks": len(pend.chunks), "last_seq": last,
                "error_code": None}
        data.update(extra)
        self._end(pend.op, outcome, **data)
        pend.settle()
        self._live.pop(pend.request_id, None)

    def settle_all(self) -> None:
        """The connection ended: every request still open is unknown, every waiter gets None."""
        for pend in (*self.pending.values(), *(d for ds in self.dups.values() for d in ds)):
            if not pend.done.done():
                self.end_request(pend, "unknown", error="connection closed before the final frame")
        for it in self.interrupts.values():
            if not it.fut.done():
                it.fut.set_result(None)
        self.interrupts.clear()
        for fut in (*self.answers.values(), *self.heartbeats, *(f for _, f in self.predicates)):
            if not fut.done():
                fut.set_result(None)
        self.heartbeats.clear()
        self.predicates.clear()
