"""What the client needs from a protocol: the :class:`Adapter` interface.

An adapter is stateless and shared by every client of a run (hundreds of
them), so everything per-connection — the session id, the ids in flight —
lives in the client and is passed in. Adapters do no socket I/O: the opening
handshake gets ``send`` and ``recv`` callables from the client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from harness.protocol.frames import Frame
from harness.protocol.session import SessionSpec

__all__ = [
    "ANSWERS",
    "CORRELATIONS",
    "OPTIONAL_MESSAGES",
    "Adapter",
    "AdapterError",
    "HandshakeError",
    "Recv",
    "Send",
    "Unsupported",
]

#: Client messages a protocol may lack.
OPTIONAL_MESSAGES = ("heartbeat", "subscribe", "unsubscribe", "publish")
#: How received frames find their request: by the id they carry, or by order.
CORRELATIONS = ("id", "order")
#: How a service answers an interrupt (``interrupt_answer``):
#: ``final_then_ack`` (PROTOCOL.md) and ``ack_then_final``: a final frame for each
#: stopped reply and an ACK; ``final``: no ACK, the stopped reply's final frame is the
#: answer; ``ack``: an ACK and no final frame for the stopped reply.
ANSWERS = ("final_then_ack", "ack_then_final", "final", "ack")

#: Sends one frame (text or bytes) on the connection.
Send = Callable[[str | bytes], Awaitable[None]]
#: Receives the next frame, already stamped, classified and recorded by the client.
Recv = Callable[[], Awaitable[Frame]]


class AdapterError(ValueError):
    """An adapter could not be built: the message names the bad key or path."""


class Unsupported(NotImplementedError):
    """The target's protocol has no such message (e.g. no heartbeat)."""


class HandshakeError(RuntimeError):
    """The opening handshake got an error or an unexpected frame; ``frame`` says which."""

    def __init__(self, message: str, frame: Frame | None = None) -> None:
        super().__init__(message)
        self.frame = frame


class Adapter(ABC):
    """Encode client messages and classify server frames for one protocol."""

    #: Short name for reports ("reference", "declarative", "module:Class").
    name: str = "adapter"
    #: ``"id"``: frames carry the request (or interrupt) id; ``"order"``: they carry
    #: none, and a session's frames belong to its oldest unfinished request.
    correlation: str = "id"
    #: How the service answers an interrupt: one of :data:`ANSWERS`.
    interrupt_answer: str = "final_then_ack"
    #: False when the interrupt frame names no request: it stops whatever runs.
    interrupt_targets: bool = True
    #: How a session is made before the WebSocket opens (None: the WebSocket is the session).
    session: SessionSpec | None = None

    async def handshake(self, send: Send, recv: Recv) -> Frame:
        """Open the session; return the frame that says it is ready.

        The default waits for the first ``ready`` frame, as the reference
        protocol does; an ``error`` frame before it fails the handshake.
        """
        while True:
            frame = await recv()
            if frame.kind == "ready":
                return frame
            if frame.kind == "error":
                raise HandshakeError(f"error before the session was ready: {frame.code}", frame)

    @abstractmethod
    def classify(self, raw: str | bytes, t_ns: int = 0) -> Frame:
        """Turn one received frame into a :class:`Frame`; never raises on bad input."""

    @abstractmethod
    def encode_request(self, request_id: str, text: str, options: Mapping[str, Any],
                       session_id: str | None = None) -> str | bytes: ...

    @abstractmethod
    def encode_interrupt(self, interrupt_id: str, target: str | None, reason: str,
                         session_id: str | None = None) -> str | bytes: ...

    def encode_heartbeat(self, request_id: str, session_id: str | None = None) -> str | bytes:
        raise Unsupported(f"{self.name}: no heartbeat message")

    def encode_subscribe(self, topic: str, request_id: str, session_id: str | None = None) -> str | bytes:
        raise Unsupported(f"{self.name}: no subscribe message")

    def encode_unsubscribe(self, topic: str, request_id: str, session_id: str | None = None) -> str | bytes:
        raise Unsupported(f"{self.name}: no unsubscribe message")

    def encode_publish(self, topic: str, data: Any, request_id: str,
                       session_id: str | None = None) -> str | bytes:
        raise Unsupported(f"{self.name}: no publish message")

    @property
    def messages(self) -> frozenset[str]:
        """What this protocol has, as ``message:NAME`` needs name it.

        The client messages (``request``, ``interrupt`` and the optional ones: by
        default every message whose encoder the adapter defines), and what the service
        sends back: ``interrupt_target`` (an interrupt names the request it stops),
        ``ack`` (interrupts are acknowledged), ``final`` (a stopped reply ends with a
        final frame), ``seq`` (chunks carry a sequence number). A case that needs one
        the target lacks is skipped with the reason, before anything starts.
        """
        own = type(self)
        return frozenset({"request", "interrupt", "seq"} | {
            m for m in OPTIONAL_MESSAGES if getattr(own, f"encode_{m}") is not getattr(Adapter, f"encode_{m}")
        } | self.answer_messages())

    def answer_messages(self) -> set[str]:
        """``interrupt_target``, ``ack`` and ``final`` as the interrupt attributes say."""
        out = {"interrupt_target"} if self.interrupt_targets else set()
        if self.interrupt_answer != "final":
            out.add("ack")
        if self.interrupt_answer != "ack":
            out.add("final")
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
