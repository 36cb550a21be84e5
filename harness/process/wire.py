"""What a client process put on the wire: its WebSocket close frame, seen at the TCP level.

A client that quits should end each WebSocket with a close frame (RFC 6455
section 7) before its socket goes; one that just lets the socket drop leaves
the server with a 1006. wschaos sees this from outside the client: the client
is pointed at a :class:`~harness.nemesis.faults.TcpProxy` in front of the
target, and :func:`tap_proxy` hands every byte crossing it to a
:class:`ClientWire`, which keeps one :class:`WireConnection` per TCP connection.

Each direction is read by a :class:`FrameScanner`, a small sans-I/O scanner:
fed the bytes of one direction, it finds the HTTP head (a request, or a
response; a body with a ``Content-Length`` is stepped over, so a keep-alive
request before the upgrade does not confuse it), and after a WebSocket
upgrade (``101``) it walks the frames: opcode, FIN, mask, length. Payloads are
skipped unread except a close frame's (at most 125 bytes), whose code and
reason are unmasked and decoded. Nothing is decompressed: a close frame is
never compressed, and the frame headers are all that is needed.

:meth:`WireConnection.summary` is what the checker
``client.closed_cleanly`` judges: plain values, no I/O.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.core.timing import Deadline, now_ns

__all__ = ["ClientWire", "FrameInfo", "FrameScanner", "WireConnection", "tap_proxy"]

OP_CLOSE = 0x8
#: An HTTP head longer than this is not one: the scanner stops rather than buffer without end.
MAX_HEAD = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.I | re.M)
_UPGRADE_WS = re.compile(rb"^upgrade:\s*websocket\s*$", re.I | re.M)
_STATUS = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})")


@dataclass(frozen=True)
class FrameInfo:
    """One WebSocket frame's header, and for a close frame its code and reason."""

    opcode: int
    fin: bool
    masked: bool
    length: int
    #: Close frames only: the status code (None when the payload is empty) and the reason.
    close_code: int | None = None
    close_reason: str = ""

    @property
    def is_close(self) -> bool:
        return self.opcode == OP_CLOSE


class FrameScanner:
    """Sans-I/O: the bytes of one direction of one TCP connection in, heads and frames out.

    ``side`` is who sends these bytes: ``"client"`` (HTTP requests, then
    masked frames after an upgrade request) or ``"server"`` (responses, then
    unmasked frames after a ``101``). Whether an upgrade was accepted is the
    server side's to say (:attr:`WireConnection.websocket`).
    """

    def __init__(self, side: Literal["client", "server"]) -> None:
        self.side = side
        self.heads: list[bytes] = []
        self.frames = 0
        self.close: FrameInfo | None = None
        #: Why scanning stopped early (a head too long, a body of unknown length, a bad frame).
        self.error: str | None = None
        self._buf = bytearray()
        self._skip = 0
        self._ws = False
        self._opaque = False

    @property
    def websocket(self) -> bool:
        """The head that switches this direction to WebSocket frames has been seen."""
        return self._ws

    def feed(self, data: bytes) -> list[bytes | FrameInfo]:
        """Scan ``data``; the heads (bytes) and frames completed by it, in order."""
        out: list[bytes | FrameInfo] = []
        if self._opaque or not data:
            return out
        self._buf += data
        while not self._opaque:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    break
                continue
            item = self._frame() if self._ws else self._head()
            if item is None:
                break
            out.append(item)
        return out

    # -- HTTP ------------------------------------------------------------------
    def _head(self) -> bytes | None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._stop(f"no end of an HTTP head in {len(self._buf)} bytes")
            return None
        head = bytes(self._buf[:end + 4])
        del self._buf[:end + 4]
        self.heads.append(head)
        status = _status(head) if self.side == "server" else None
        if status == 101 or (self.side == "client" and is_upgrade_request(head)):
            # A client sends frames after its upgrade request only; the server after its 101.
            self._ws = True
            return head
        cl = _CONTENT_LENGTH.search(head)
        if cl is not None:
            self._skip = int(cl.group(1))
        elif b"transfer-encoding:" in head.lower() or (status is not None and status >= 200
                                                        and status not in (204, 304)):
            # A chunked body, or one that lasts until the close: where a next head starts cannot be told.
            self._stop("an HTTP body of unknown length; later bytes not scanned")
        return head

    # -- WebSocket frames -----------------------------------------------------------
    def _frame(self) -> FrameInfo | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        opcode, fin, masked, length = b0 & 0x0F, bool(b0 & 0x80), bool(b1 & 0x80), b1 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key, pos = bytes(buf[pos:pos + 4]), pos + 4
        if opcode < OP_CLOSE:
            del buf[:pos]
            self._skip = length
            self.frames += 1
            return FrameInfo(opcode, fin, masked, length)
        if length > 125:
            self.frames += 1
            self._stop(f"a control frame (opcode {opcode:#x}) of {length} bytes (at most 125 allowed)")
            return FrameInfo(opcode, fin, masked, length)
        if len(buf) < pos + length:
            return None
        self.frames += 1
        payload = bytes(buf[pos:pos + length])
        del buf[:pos + length]
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        if opcode != OP_CLOSE:
            return FrameInfo(opcode, fin, masked, length)
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        frame = FrameInfo(opcode, fin, masked, length, close_code=code,
                          close_reason=payload[2:].decode("utf-8", errors="replace"))
        if self.close is None:
            self.close = frame
        return frame

    def _stop(self, why: str) -> None:
        self.error = why
        self._opaque = True
        self._buf.clear()


def is_upgrade_request(head: bytes) -> bool:
    """A GET asking for ``Upgrade: websocket``."""
    return head[:4] == b"GET " and _UPGRADE_WS.search(head) is not None


def _status(head: bytes) -> int | None:
    m = _STATUS.match(head)
    return int(m.group(1)) if m else None


Ended = Literal["fin", "rst"]


@dataclass
class WireConnection:
    """One TCP connection of the client through the proxy, both directions scanned."""

    n: int
    opened_ns: int
    client: FrameScanner = field(default_factory=lambda: FrameScanner("client"))
    server: FrameScanner = field(default_factory=lambda: FrameScanner("server"))
    #: When each side's first close frame was seen, monotonic ns.
    client_close_ns: int | None = None
    server_close_ns: int | None = None
    #: How and when the client's side of the socket ended (FIN: end of stream; RST: reset).
    client_ended: Ended | None = None
    client_ended_ns: int | None = None
    server_ended_ns: int | None = None

    @property
    def upgrade_requested(self) -> bool:
        return any(is_upgrade_request(h) for h in self.client.heads)

    @property
    def websocket(self) -> bool:
        """The server answered the upgrade with 101: WebSocket frames follow."""
        return self.server.websocket

    @property
    def ended(self) -> bool:
        return self.client_ended is not None

    def from_client(self, data: bytes) -> None:
        if self.client_ended is not None:
            return
        if not data:
            self._client_end("fin")
            return
        for item in self.client.feed(data):
            if isinstance(item, FrameInfo) and item.is_close and self.client_close_ns is None:
                self.client_close_ns = now_ns()

    def client_reset(self) -> None:
        self._client_end("rst")

    def from_server(self, data: bytes) -> None:
        if not data:
            if self.server_ended_ns is None:
                self.server_ended_ns = now_ns()
            return
        for item in self.server.feed(data):
            if isinstance(item, FrameInfo) and item.is_close and self.server_close_ns is None:
                self.server_close_ns = now_ns()

    def _client_end(self, how: Ended) -> None:
        if self.client_ended is None:
            self.client_ended, self.client_ended_ns = how, now_ns()

    def summary(self, since_ns: int | None = None) -> dict[str, Any]:
        """Plain values for ``client.closed_cleanly``; times in ms after ``since_ns`` (the keystroke)."""
        def ms(t: int | None) -> float | None:
            return None if t is None or since_ns is None else round((t - since_ns) / 1e6, 1)

        close = self.client.close
        server_first = (self.server_close_ns is not None
                        and (self.client_close_ns is None or self.server_close_ns < self.client_close_ns))
        # The server's socket went first, with no close frame from it: the client had nothing left to close.
        dropped_first = (self.server_close_ns is None and self.server_ended_ns is not None
                         and (self.client_ended_ns is None or self.server_ended_ns < self.client_ended_ns))
        return {
            "conn": self.n,
            "websocket": self.websocket,
            "upgrade_requested": self.upgrade_requested,
            "close_frame": close is not None,
            "masked": None if close is None else close.masked,
            "close_code": None if close is None else close.close_code,
            "close_reason": None if close is None else close.close_reason,
            "frames": self.client.frames,
            "server_closed_first": server_first,
            "server_dropped_first": dropped_first,
            "ended": self.client_ended,
            "close_ms": ms(self.client_close_ns),
            "ended_ms": ms(self.client_ended_ns),
            "scan_error": self.client.error or self.server.error,
        }


Way = Literal["up", "down"]


class ClientWire:
    """Every connection a client made through one proxy, in the order they were accepted.

    :meth:`feed` is the one way bytes come in: ``(connection number, "up" for
    client to server or "down", the bytes)``, with ``b""`` for the end of a
    direction and None for a reset, as a proxy reads them.
    """

    def __init__(self, name: str = "client") -> None:
        self.name = name
        self.connections: list[WireConnection] = []
        self._by_n: dict[int, WireConnection] = {}
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[str, WireConnection], None]] = []

    def on_event(self, listener: Callable[[str, WireConnection], None]) -> None:
        """Call ``listener("close_frame" | "ended", conn)`` as it happens (on the event loop)."""
        self._listeners.append(listener)

    def open(self, n: int) -> WireConnection:
        """Connection ``n`` (accepted now, unless it was already seen)."""
        conn = self._by_n.get(n)
        if conn is None:
            conn = self._by_n[n] = WireConnection(n=n, opened_ns=now_ns())
            self.connections.append(conn)
            self._changed.set()
        return conn

    def feed(self, n: int, way: Way, data: bytes | None) -> None:
        """Bytes of connection ``n`` seen by the proxy; ``b""``: that direction ended; None: reset."""
        conn = self.open(n)
        if way == "down":
            conn.from_server(data or b"")
            return
        had_close, was_ended = conn.client_close_ns is not None, conn.ended
        if data is None:
            conn.client_reset()
        else:
            conn.from_client(data)
        if not had_close and conn.client_close_ns is not None:
            self._poke("close_frame", conn)
        if not was_ended and conn.ended:
            self._poke("ended", conn)

    def since(self, t_ns: int) -> list[WireConnection]:
        """The connections opened at or after ``t_ns``."""
        return [c for c in self.connections if c.opened_ns >= t_ns]

    def websockets(self, since_ns: int = 0) -> list[WireConnection]:
        return [c for c in self.since(since_ns) if c.websocket]

    def summaries(self, since_ns: int = 0, *, keystroke_ns: int | None = None) -> list[dict[str, Any]]:
        return [c.summary(keystroke_ns) for c in self.since(since_ns)]

    async def wait_ended(self, timeout: float, since_ns: int = 0) -> bool:
        """Until the client side of every connection since ``since_ns`` has ended; False at the bound."""
        deadline = Deadline.after(timeout)
        while any(not c.ended for c in self.since(since_ns)):
            if deadline.expired():
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline.remaining())
            except asyncio.TimeoutError:
                return all(c.ended for c in self.since(since_ns))
        return True

    def _poke(self, event: str, conn: WireConnection) -> None:
        self._changed.set()
        for listener in self._listeners:
            listener(event, conn)


# -- the proxy side -------------------------------------------------------------------

def tap_proxy(proxy: Any, wire: ClientWire) -> ClientWire:
    """Record every connection through ``proxy`` (a TcpProxy) in ``wire``, through the proxy's byte tap."""

    def tap(n: int, way: str, data: bytes | None) -> None:
        if way == "open":
            wire.open(n)
        else:
            wire.feed(n, way, data)  # type: ignore[arg-type]  # "up" or "down"

    proxy.tap = tap
    return wire
