"""The WebSocket under a :class:`~harness.client.connection.Client`: which library moves its bytes.

Two wires give the client the same few things — open, send (bounded when the
peer stops reading), take every message as it arrives, close with a code, end
with an RST or a FIN, stop reading — and the client above them records the
same history on either:

* ``websockets`` (the default): the pure-Python library the whole suite runs
  on; a reader task takes its messages off ``recv()``.
* ``picows`` (:mod:`harness.client.picows_wire`): a C-accelerated client on asyncio (``pip install wschaos[fast]``).
  It calls back on every frame, so there is no reader task and no message
  queue: the client's per-cycle CPU in ``bench/churn.py`` is what it buys.

One difference stays: a server that drops the TCP connection before answering the
upgrade fails a websockets connect at once ("did not receive a valid HTTP
response") but a picows one only at the connect's bound ("timed out"): picows does
not end its handshake wait when the connection is lost. So picows is for load
(churn, storms, soaks); the default stays websockets, whose failures describe the
target exactly.

Both keep to RFC 6455 as the client sees it: a CLOSE from the server is echoed
and the TCP connection left for the server to end; a message over ``max_size``
closes with 1009; pings are answered.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from harness.client.picows_wire import PicowsWire, Take, WireClosed
from harness.core.sockets import pause_transport, resume_transport

__all__ = ["CLOSED", "WIRES", "WIRE_HELP", "WebsocketsWire", "Wire", "WireClosed", "event_loop_from_env",
           "open_wire", "use_wire", "wire_available"]

#: Every wire by name; the first is the default.
WIRES = ("websockets", "picows")



#: What a closed connection raises, on either wire.
CLOSED = (ConnectionClosed, WireClosed)


class Wire(Protocol):
    """What the client needs of a WebSocket connection."""

    #: The TCP transport (for RST, FIN, socket options and addresses).
    transport: asyncio.Transport

    @property
    def open(self) -> bool: ...

    @property
    def close_received(self) -> tuple[int | None, str] | None:
        """(code, reason) of the CLOSE frame the peer sent; None when none came (yet)."""

    async def recv(self) -> str | bytes:
        """The next message; only before :meth:`start` (the protocol's handshake reads with it)."""

    def start(self, take: Take, on_closed: Callable[[], None], name: str = "") -> asyncio.Future[None]:
        """From now on every message goes to ``take(raw, t_ns)`` as it arrives, and
        ``on_closed()`` runs once when the connection has ended; returns a future done then."""

    def can_send_now(self, data: str | bytes) -> bool:
        """Whether sending ``data`` cannot wait on the peer (no bound needed)."""

    async def send(self, data: str | bytes) -> None:
        """Send one message; waits while the peer does not read (the caller bounds it)."""

    async def close(self, code: int) -> None:
        """Send a CLOSE with ``code`` and wait for the peer's (the caller bounds it)."""

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


_AVAILABLE: dict[str, str | None] = {"websockets": None}


def wire_available(name: str) -> str | None:
    """None when the wire ``name`` can be used here; else why not, in one line."""
    if name in _AVAILABLE:
        return _AVAILABLE[name]
    if name != "picows":
        return f"unknown wire {name!r} (one of: {', '.join(WIRES)})"
    try:
        import picows  # noqa: F401
    except ImportError:
        _AVAILABLE[name] = "the picows wire needs picows: pip install 'wschaos[fast]'"
    else:
        _AVAILABLE[name] = None
    return _AVAILABLE[name]


def use_wire(name: str | None) -> str | None:
    """Make ``name`` the wire of every client this process (and the workers it starts)
    builds without naming one; None when it is usable, else why not, in one line."""
    if name is None:
        return None
    why = wire_available(name)
    if why is None:
        os.environ["WSCHAOS_WIRE"] = name
    return why


def event_loop_from_env() -> str | None:
    """Install the event loop ``WSCHAOS_LOOP`` names (``uvloop``; unset: asyncio's own) for
    the next ``asyncio.run`` of this process: a fleet worker or a bench child. The name
    installed, None for asyncio's; an unknown name or a missing uvloop is a ValueError."""
    name = os.environ.get("WSCHAOS_LOOP") or None
    if name in (None, "asyncio"):
        return None
    if name != "uvloop":
        raise ValueError(f"WSCHAOS_LOOP={name!r}: one of asyncio, uvloop")
    try:
        import uvloop
    except ImportError:
        raise ValueError("WSCHAOS_LOOP=uvloop needs uvloop: pip install 'wschaos[fast]'") from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return name


#: The help text of ``--wire``.
WIRE_HELP = ("the WebSocket library of wschaos's clients: websockets (default, pure Python) or picows "
             "(C-accelerated, pip install 'wschaos[fast]'); also WSCHAOS_WIRE")


async def open_wire(name: str, url: str, *, max_size: int | None, open_timeout: float | None,
                    close_timeout: float | None, ping_interval: float | None, ping_timeout: float | None,
                    compression: str | None, local_addr: tuple[str, int] | None = None) -> Wire:
    """Open a WebSocket to ``url`` on the wire ``name`` (the caller bounds the whole)."""
    if name == "picows":
        if compression is not None:
            raise ValueError(f"the picows wire has no {compression!r} compression; use --wire websockets")
        return await PicowsWire.connect(url, max_size=max_size, local_addr=local_addr,
                                        close_timeout=close_timeout, ping_interval=ping_interval,
                                        ping_timeout=ping_timeout)
    kw: dict[str, Any] = {"max_size": max_size, "open_timeout": open_timeout, "close_timeout": close_timeout,
                          "ping_interval": ping_interval, "ping_timeout": ping_timeout,
                          # permessage-deflate costs CPU on both sides and tests nothing here.
                          "compression": compression,
                          # No HTTP proxy from the environment: traffic stays on loopback.
                          "proxy": None}
    if local_addr is not None:
        kw["local_addr"] = local_addr  # handed on to loop.create_connection
    return WebsocketsWire(await connect(url, **kw))


# -- websockets -------------------------------------------------------------------
class WebsocketsWire:
    """websockets' asyncio client, read by one task."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.transport = conn.transport
        self._paused: Any = None

    @property
    def open(self) -> bool:
        return self.conn.state is State.OPEN

    @property
    def close_received(self) -> tuple[int | None, str] | None:
        rcvd = self.conn.protocol.close_rcvd
        return None if rcvd is None else (rcvd.code, rcvd.reason)

    async def recv(self) -> str | bytes:
        return await self.conn.recv()

    def start(self, take: Take, on_closed: Callable[[], None], name: str = "") -> asyncio.Future[None]:
        conn = self.conn

        async def read() -> None:
            try:
                while True:
                    raw = await conn.recv()
                    take(raw, time.monotonic_ns())
            except ConnectionClosed:
                pass
            finally:
                on_closed()

        return asyncio.get_running_loop().create_task(read(), name=f"wschaos-reader-{name}")

    def can_send_now(self, data: str | bytes) -> bool:
        """Writes are not paused and, even if none of it reached the socket, the buffer
        would stay under the high-water mark, so flow control cannot pause the send midway."""
        conn = self.conn
        if getattr(conn, "paused", True):
            return False
        try:
            high = conn.transport.get_write_buffer_limits()[1]
            size = conn.transport.get_write_buffer_size()
        except (AttributeError, NotImplementedError):
            return False
        # A str is at most 4 bytes a character in UTF-8; 14 bytes is the largest frame header.
        return size + 4 * len(data) + 14 < high

    async def send(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def close(self, code: int) -> None:
        await self.conn.close(code)

    def abort(self) -> None:
        self.transport.abort()

    def pause_reading(self) -> None:
        if self._paused is None:
            self._paused = pause_transport(self.conn)

    def resume_reading(self) -> None:
        if self._paused is not None:
            resume_transport(self.conn, self._paused)
            self._paused = None
