"""Socket primitives for ending or pausing a connection the way a broken peer does.

A leaf with no harness imports: the client uses them for its own
``abort``/``vanish``/``stop_reading``, the nemesis and the TCP proxy for the
faults they inject.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["fin_close", "pause_transport", "resume_transport", "rst_close"]


def rst_close(transport: asyncio.WriteTransport) -> None:
    """Close with a TCP RST: SO_LINGER on with 0 s, then abort (no close frame, no FIN)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed: nothing left to reset
    transport.abort()


def fin_close(transport: asyncio.WriteTransport) -> None:
    """Close with a FIN and nothing else, as a process that exits without closing does."""
    # shutdown(SHUT_WR) first: the FIN goes out even if unread bytes in the
    # receive buffer would turn a plain close() into an RST.
    if transport.can_write_eof():
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            pass
    transport.close()


def pause_transport(connection: Any) -> Callable[[], Any]:
    """Pause reading a websockets connection's transport; returns what resume needs.

    websockets' assembler resumes the transport when its frame queue drains,
    which would undo a deliberate pause: its resume hook is disabled until
    :func:`resume_transport`.
    """
    assembler = connection.recv_messages
    saved: Callable[[], Any] = getattr(assembler, "resume", _noop)
    assembler.resume = _noop
    connection.transport.pause_reading()
    return saved


def resume_transport(connection: Any, saved: Callable[[], Any]) -> None:
    assembler = connection.recv_messages
    assembler.resume = saved
    transport = connection.transport
    # Keep the pause websockets itself wants when its queue is still full.
    if not transport.is_closing() and not getattr(assembler, "paused", False):
        transport.resume_reading()


def _noop() -> None:
    return None
