"""Correlating received frames with the operations waiting for them.

The client's reader hands every frame to :meth:`Correlator.dispatch`, which
ends the request it finishes, answers the INTERRUPT or HEARTBEAT it acknowledges,
and wakes predicate waiters; when the connection ends, :meth:`settle_all` ends
every operation still waiting as unknown. No I/O: the client sends and reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.core.history import Operation
from harness.protocol.frames import Frame, Reply

__all__ = ["Correlator", "Pending"]


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

    def reply(self) -> Reply:
        return Reply.assemble(self.request_id, self.chunks, self.final, self.error, self.sent_ns)

    def settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        for w in self.waiters:
            if not w.done():
                w.set_result(None)
        self.waiters.clear()


class Correlator:
    """Waiters by what they wait for; ``end(op, outcome, **data)`` ends an operation once."""

    def __init__(self, end: Callable[..., None]) -> None:
        self._end = end
        self.pending: dict[str, Pending] = {}
        self.dups: dict[str, list[Pending]] = {}
        self.answers: dict[str, asyncio.Future[Frame | None]] = {}
        self.heartbeats: list[asyncio.Future[Frame | None]] = []
        self.predicates: list[tuple[Callable[[Frame], bool], asyncio.Future[Frame | None]]] = []

    def dispatch(self, frame: Frame) -> None:
        rid = frame.request_id
        kind = frame.kind
        if rid is not None:
            pend = self.pending.get(rid)
            if pend is not None and not pend.done.done():
                if kind == "chunk":
                    pend.chunks.append(frame)
                elif kind == "final":
                    pend.final = frame
                    last = frame.seq if frame.seq is not None else (pend.chunks[-1].seq if pend.chunks else None)
                    self._end(pend.op, "ok", interrupted=bool(frame.interrupted), reason=frame.reason,
                                     chunks=len(pend.chunks), last_seq=last, error_code=None)
                    pend.settle()
                elif kind == "error" and not self.dups.get(rid) and frame.code != "DUPLICATE_REQUEST":
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
            if fut is not None and not fut.done() and kind in ("ack", "error", "heartbeat_ack"):
                fut.set_result(frame)
        if kind == "heartbeat_ack":
            # The protocol does not promise the ACK echoes an id: answer the oldest waiter.
            while self.heartbeats:
                fut = self.heartbeats.pop(0)
                if not fut.done():
                    fut.set_result(frame)
                    break
        if self.predicates:
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

    def end_request(self, pend: Pending, outcome: Any, **extra: Any) -> None:
        last = pend.chunks[-1].seq if pend.chunks else None
        data = {"interrupted": None, "reason": None, "chunks": len(pend.chunks), "last_seq": last,
                "error_code": None}
        data.update(extra)
        self._end(pend.op, outcome, **data)
        pend.settle()

    def settle_all(self) -> None:
        """The connection ended: every request still open is unknown, every waiter gets None."""
        for pend in (*self.pending.values(), *(d for ds in self.dups.values() for d in ds)):
            if not pend.done.done():
                self.end_request(pend, "unknown", error="connection closed before the final frame")
        for fut in (*self.answers.values(), *self.heartbeats, *(f for _, f in self.predicates)):
            if not fut.done():
                fut.set_result(None)
        self.heartbeats.clear()
        self.predicates.clear()
