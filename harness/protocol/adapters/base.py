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

__all__ = ["OPTIONAL_MESSAGES", "Adapter", "AdapterError", "HandshakeError", "Recv", "Send", "Unsupported"]

#: Client messages a protocol may lack.
OPTIONAL_MESSAGES = ("heartbeat", "subscribe", "unsubscribe", "publish")

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
        """The client messages this protocol has: ``request``, ``interrupt`` and the optional ones.

        A case that needs one the target lacks is skipped with the reason, before
        anything starts. By default: every message whose encoder the adapter defines.
        """
        own = type(self)
        return frozenset({"request", "interrupt"} | {
            m for m in OPTIONAL_MESSAGES if getattr(own, f"encode_{m}") is not getattr(Adapter, f"encode_{m}")})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
