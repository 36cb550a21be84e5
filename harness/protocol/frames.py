"""The conversation protocol without I/O: encode frames, classify received ones.

Everything here takes and returns plain values (websockets' ``protocol.py``
habit), so the parsing rules are tested without a server and the asyncio
client stays a thin layer. A received frame becomes a :class:`Frame` whose
``kind`` is one of :data:`KINDS`; malformed input is never an exception but a
frame of kind ``invalid``, because a server sending garbage is an observation
for the checkers, not a harness crash.

The encoders speak the reference protocol (``docs/PROTOCOL.md``);
other protocols go through ``harness.protocol.adapters``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KINDS",
    "MSG_KINDS",
    "REPLY_KINDS",
    "Frame",
    "InterruptResult",
    "Reply",
    "classify",
    "encode",
    "encode_heartbeat",
    "encode_interrupt",
    "encode_publish",
    "encode_request",
    "encode_subscribe",
    "encode_unsubscribe",
    "frame_record",
    "invalid",
]

#: Every kind a received frame can have. ``meta`` belongs to a reply without being a
#: piece of it nor its end (a "start" frame, a transcript beside audio).
KINDS = ("ready", "chunk", "final", "meta", "ack", "heartbeat_ack", "event", "error", "unknown", "invalid")

#: The kinds that belong to one request's reply.
REPLY_KINDS = frozenset({"chunk", "final", "meta"})

#: Reference msg_type -> kind; RESPONSE is split into chunk / final by payload.final.
MSG_KINDS: Mapping[str, str] = {
    "SESSION_READY": "ready",
    "RESPONSE": "chunk",
    "INTERRUPT_ACK": "ack",
    "HEARTBEAT_ACK": "heartbeat_ack",
    "EVENT": "event",
    "ERROR": "error",
}



@dataclass(frozen=True)
class Frame:
    """One received frame, classified.

    ``payload`` is the frame's own payload object. ``fields`` holds values an
    adapter extracted from elsewhere in the frame (a declarative protocol may
    keep its sequence number at ``payload.text_stream_seq``); the derived
    properties look there first, then in ``payload`` under the reference names.
    """

    kind: str
    msg_type: str | None
    request_id: str | None
    session_id: str | None
    payload: Mapping[str, Any]
    raw: str | bytes
    t_ns: int
    fields: Mapping[str, Any] | None = field(default=None, repr=False)
    #: Why a frame is ``invalid`` (not JSON, not an object, ...); None otherwise.
    problem: str | None = None
    #: Values the client worked out because the service does not send them (an ACK's
    #: interrupt id and claimed ids for a service that names none, ``kind`` for an answer
    #: made of a final frame); recorded in the history so checkers can tell.
    derived: tuple[str, ...] = ()

    def _get(self, name: str) -> Any:
        if self.fields and name in self.fields:
            return self.fields[name]
        return self.payload.get(name)

    @property
    def seq(self) -> int | None:
        v = self._get("seq")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def delta(self) -> str | None:
        v = self._get("delta")
        return v if isinstance(v, str) else None

    @property
    def final(self) -> bool | None:
        if self.kind == "final":
            return True
        if self.kind == "chunk":
            return False
        return None

    @property
    def interrupted(self) -> bool | None:
        """True/False on a final frame; None elsewhere, and where the service does not say."""
        if self.kind != "final":
            return None
        if self.fields and "interrupted" in self.fields and self.fields["interrupted"] is None:
            return None  # the target file says the service does not mark interrupted replies
        return bool(self._get("interrupted"))

    @property
    def reason(self) -> str | None:
        v = self._get("reason")
        return v if isinstance(v, str) else None

    @property
    def status(self) -> str | None:
        v = self._get("status")
        return v if isinstance(v, str) else None

    @property
    def interrupted_ids(self) -> list[str] | None:
        # INTERRUPT_ACK names the ids under "interrupted"; a final frame uses the
        # same key for a bool, so only an ack's list counts.
        if self.fields and "interrupted_ids" in self.fields:
            v = self.fields["interrupted_ids"]
        elif self.kind == "ack":
            v = self.payload.get("interrupted")
        else:
            return None
        return [str(i) for i in v] if isinstance(v, list) else None

    @property
    def interrupted_count(self) -> int | None:
        v = self._get("interrupted_count")
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        ids = self.interrupted_ids
        return None if ids is None else len(ids)

    @property
    def code(self) -> str | None:
        if self.kind != "error":
            return None
        v = self._get("code")
        return None if v is None else str(v)

    @property
    def message(self) -> str | None:
        v = self._get("message")
        return v if isinstance(v, str) else None

    @property
    def topic(self) -> str | None:
        v = self._get("topic")
        return v if isinstance(v, str) else None

    @property
    def data(self) -> Any:
        return self._get("data") if self.kind == "event" else None


@dataclass
class Reply:
    """Everything received for one request, as far as it got (built by the client)."""

    request_id: str
    chunks: list[Frame]
    final: Frame | None
    interrupted: bool
    reason: str | None
    complete: bool  # the final frame arrived
    error: Frame | None
    first_chunk_ms: float | None  # from send to the first chunk
    total_ms: float | None  # from send to the final frame
    seqs: list[int | None]

    @property
    def text(self) -> str:
        return "".join(c.delta or "" for c in self.chunks)

    @classmethod
    def assemble(cls, request_id: str, chunks: list[Frame], final: Frame | None,
                 error: Frame | None, sent_ns: int) -> Reply:
        first = chunks[0].t_ns if chunks else None
        return cls(
            request_id=request_id,
            chunks=list(chunks),
            final=final,
            interrupted=bool(final is not None and final.interrupted),
            reason=None if final is None else final.reason,
            complete=final is not None,
            error=error,
            first_chunk_ms=None if first is None else (first - sent_ns) / 1e6,
            total_ms=None if final is None else (final.t_ns - sent_ns) / 1e6,
            seqs=[c.seq for c in chunks],
        )


@dataclass
class InterruptResult:
    """The answer to one INTERRUPT: the ACK frame, or None when none came in time.

    For a service that sends no ACK (``interrupt.answer = "final"``) ``ack`` is the
    answer the client derived from the stopped reply's final frame (``answer`` is that
    frame, ``answered_by`` says ``"final"``), and the latency runs to it.
    """

    interrupt_id: str
    target: str | None
    ack: Frame | None  # None: no ACK within the bound, or the connection died
    latency_ms: float | None  # from send to ACK receipt
    sent_ns: int
    acked_ns: int | None
    error: Frame | None = None  # an ERROR answered the INTERRUPT
    #: What answered it: "ack" (the service's ACK), "final" (the end of the stopped
    #: reply, for a service without ACKs), "nothing" (no ACK is sent and nothing was
    #: running to stop), or None (no answer).
    answered_by: str | None = None
    #: The frame that answered, as received (the ACK, or the final frame).
    answer: Frame | None = None

    @property
    def status(self) -> str | None:
        return None if self.ack is None else self.ack.status

    @property
    def interrupted_ids(self) -> list[str]:
        return (self.ack.interrupted_ids or []) if self.ack is not None else []


def frame_record(frame: Frame) -> dict[str, Any]:
    """The ``data`` of a ``frame`` observation (ARCHITECTURE.md, History conventions).

    A frame with values the client derived carries ``derived`` (their names) too.
    """
    if frame.fields is None and not frame.derived:
        return _plain_record(frame)
    rec = {
        "kind": frame.kind,
        "msg_type": frame.msg_type,
        "request_id": frame.request_id,
        "session_id": frame.session_id,
        "seq": frame.seq,
        "final": frame.final,
        "interrupted": frame.interrupted,
        "reason": frame.reason,
        "status": frame.status,
        "interrupted_ids": frame.interrupted_ids,
        "code": frame.code,
        "topic": frame.topic,
        "data": frame.data,
    }
    if frame.derived:
        rec["derived"] = list(frame.derived)
    return rec


def _plain_record(frame: Frame) -> dict[str, Any]:
    """:func:`frame_record` of a frame whose values all sit in its payload (no ``fields``):
    the same dict, read from the payload once per key instead of through the properties
    (one record a frame, thousands of frames a second under churn)."""
    get = frame.payload.get
    kind = frame.kind
    seq = get("seq")
    interrupted = get("interrupted")
    code = get("code") if kind == "error" else None
    reason, status, topic = get("reason"), get("status"), get("topic")
    return {
        "kind": kind,
        "msg_type": frame.msg_type,
        "request_id": frame.request_id,
        "session_id": frame.session_id,
        "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        "final": True if kind == "final" else False if kind == "chunk" else None,
        "interrupted": bool(interrupted) if kind == "final" else None,
        "reason": reason if isinstance(reason, str) else None,
        "status": status if isinstance(status, str) else None,
        "interrupted_ids": ([str(i) for i in interrupted] if isinstance(interrupted, list) else None)
        if kind == "ack" else None,
        "code": None if code is None else str(code),
        "topic": topic if isinstance(topic, str) else None,
        "data": get("data") if kind == "event" else None,
    }


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def invalid(raw: str | bytes, t_ns: int, problem: str) -> Frame:
    return Frame("invalid", None, None, None, {}, raw, t_ns, problem=problem)


def classify(raw: str | bytes, t_ns: int = 0) -> Frame:
    """Classify one received frame of the reference protocol."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        # The contract is text frames only; a binary frame is a violation to record.
        return invalid(bytes(raw), t_ns, "binary frame")
    try:
        obj = json.loads(raw)
    except ValueError:
        return invalid(raw, t_ns, "not JSON")
    if not isinstance(obj, dict):
        return invalid(raw, t_ns, f"JSON {type(obj).__name__}, not an object")
    msg_type = obj.get("msg_type")
    if not isinstance(msg_type, str):
        return invalid(raw, t_ns, "msg_type missing or not a string")
    payload = obj.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return Frame("invalid", msg_type, _str_or_none(obj.get("request_id")),
                     _str_or_none(obj.get("session_id")), {}, raw, t_ns,
                     problem="payload is not an object")
    kind = MSG_KINDS.get(msg_type, "unknown")
    if kind == "chunk" and payload.get("final") is True:
        kind = "final"
    session_id = _str_or_none(obj.get("session_id"))
    if kind == "ready" and session_id is None:
        session_id = _str_or_none(payload.get("session_id"))
    return Frame(kind, msg_type, _str_or_none(obj.get("request_id")), session_id, payload, raw, t_ns)


# -- encoders (client -> server) ---------------------------------------------

#: One encoder for every frame: ``json.dumps`` with ``separators`` builds a new one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def encode(msg_type: str, payload: Mapping[str, Any] | None = None, *,
           request_id: str | None = None, session_id: str | None = None) -> str:
    """One envelope as compact JSON; ``timestamp`` is informational wall clock."""
    obj: dict[str, Any] = {"msg_type": msg_type}
    if request_id is not None:
        obj["request_id"] = request_id
    if session_id is not None:
        obj["session_id"] = session_id
    obj["payload"] = dict(payload) if payload else {}
    obj["timestamp"] = time.time()
    return _COMPACT(obj)


def encode_request(request_id: str, text: str, options: Mapping[str, Any] | None = None,
                   *, session_id: str | None = None) -> str:
    payload: dict[str, Any] = {"text": text}
    if options:
        payload["options"] = dict(options)
    return encode("REQUEST", payload, request_id=request_id, session_id=session_id)


def encode_interrupt(interrupt_id: str, target: str | None, reason: str = "user",
                     *, session_id: str | None = None) -> str:
    return encode("INTERRUPT", {"target_request_id": target, "reason": reason},
                  request_id=interrupt_id, session_id=session_id)


def encode_heartbeat(request_id: str | None = None, *, session_id: str | None = None) -> str:
    return encode("HEARTBEAT", None, request_id=request_id, session_id=session_id)


def encode_subscribe(topic: str, request_id: str | None = None, *, session_id: str | None = None) -> str:
    return encode("SUBSCRIBE", {"topic": topic}, request_id=request_id, session_id=session_id)


def encode_unsubscribe(topic: str, request_id: str | None = None, *, session_id: str | None = None) -> str:
    return encode("UNSUBSCRIBE", {"topic": topic}, request_id=request_id, session_id=session_id)


def encode_publish(topic: str, data: Any, request_id: str | None = None,
                   *, session_id: str | None = None) -> str:
    return encode("PUBLISH", {"topic": topic, "data": data}, request_id=request_id, session_id=session_id)
