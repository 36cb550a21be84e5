"""The default adapter: the reference conversation protocol (PROTOCOL.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.protocol import frames as protocol
from harness.protocol.adapters.base import Adapter
from harness.protocol.frames import Frame

__all__ = ["ReferenceAdapter"]


class ReferenceAdapter(Adapter):
    """Delegates to :mod:`harness.protocol.frames`, which is written for this protocol."""

    name = "reference"

    def classify(self, raw: str | bytes, t_ns: int = 0) -> Frame:
        return protocol.classify(raw, t_ns)

    def encode_request(self, request_id: str, text: str, options: Mapping[str, Any],
                       session_id: str | None = None) -> str:
        return protocol.encode_request(request_id, text, options, session_id=session_id)

    def encode_interrupt(self, interrupt_id: str, target: str | None, reason: str,
                         session_id: str | None = None) -> str:
        return protocol.encode_interrupt(interrupt_id, target, reason, session_id=session_id)

    def encode_heartbeat(self, request_id: str, session_id: str | None = None) -> str:
        return protocol.encode_heartbeat(request_id, session_id=session_id)

    def encode_subscribe(self, topic: str, request_id: str, session_id: str | None = None) -> str:
        return protocol.encode_subscribe(topic, request_id, session_id=session_id)

    def encode_unsubscribe(self, topic: str, request_id: str, session_id: str | None = None) -> str:
        return protocol.encode_unsubscribe(topic, request_id, session_id=session_id)

    def encode_publish(self, topic: str, data: Any, request_id: str,
                       session_id: str | None = None) -> str:
        return protocol.encode_publish(topic, data, request_id, session_id=session_id)
