"""The picows wire (:mod:`harness.client.wire`): picows's C client under wschaos's Client.

Its listener hands each message to the client in the frame's own callback: no
reader task, no queue. picows is imported only when this wire is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PicowsWire", "Take", "WireClosed"]

#: What the client hands a wire: ``take(raw, t_ns)`` for every message.
Take = Callable[[str | bytes, int], Any]


class WireClosed(Exception):
    """The connection ended before a message could be sent or received (the picows wire;
    the websockets wire raises websockets' own ``ConnectionClosed``)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code if code is not None else 'no close frame'}"
                         + (f" {reason}" if reason else "") + ")")
        self.code, self.reason = code, reason


_LISTENER: Any = None
_TEXT = _BINARY = _CLOSE = _CONTINUATION = _PING = _PONG = _CLOSE_OK = _TOO_BIG = None


def _listener_class() -> Any:
    """picows's listener, made once (picows is imported only when its wire is used)."""
    global _LISTENER, _TEXT, _BINARY, _CLOSE, _CONTINUATION, _PING, _PONG, _CLOSE_OK, _TOO_BIG
    if _LISTENER is None:
        from picows import WSCloseCode, WSListener, WSMsgType

        _TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
        _CONTINUATION, _PING, _PONG = WSMsgType.CONTINUATION, WSMsgType.PING, WSMsgType.PONG
        _CLOSE_OK, _TOO_BIG = WSCloseCode.OK, WSCloseCode.MESSAGE_TOO_BIG

        class Listener(WSListener):
            def __init__(self, wire: PicowsWire) -> None:
                super().__init__()
                self.wire = wire

            def on_ws_connected(self, transport: Any) -> None:
                # Before ws_connect returns: frames that came with the handshake's answer
                # are delivered at once and may need the transport (a CLOSE to echo).
                self.wire.ws = transport
                self.wire.transport = transport.underlying_transport

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                # Nothing may raise into picows: an exception through its callbacks
                # upsets the interpreter's recursion bookkeeping.
                try:
                    self.wire._frame(frame)
                except BaseException as exc:
                    self.wire._failed(exc)

            def on_ws_disconnected(self, transport: Any) -> None:
                try:
                    self.wire._disconnected()
                except BaseException as exc:
                    self.wire._failed(exc, ended=True)

            def pause_writing(self) -> None:
                if self.wire._writable is None:
                    self.wire._writable = asyncio.get_running_loop().create_future()

            def resume_writing(self) -> None:
                fut, self.wire._writable = self.wire._writable, None
                if fut is not None and not fut.done():
                    fut.set_result(None)

        _LISTENER = Listener
    return _LISTENER


def _on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


class PicowsWire:
    """picows's client: its listener hands each message to the client in the frame's callback."""

    def __init__(self) -> None:
        self.ws: Any = None
        self.transport: Any = None
        self.max_size: int | None = None
        #: How long to wait, once CLOSE frames were exchanged, for the server to end the TCP connection.
        self.close_timeout = 10.0
        self._take: Take | None = None
        self._on_closed: Callable[[], None] | None = None
        #: Messages before :meth:`start` (the handshake reads them with :meth:`recv`); None: ended.
        self._inbox: list[str | bytes | None] = []
        self._arrived: asyncio.Future[None] | None = None
        self._parts: list[bytes] = []
        self._part_type: Any = None
        self._close_rcvd: tuple[int | None, str] | None = None
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable: asyncio.Future[None] | None = None
        self._give_up: asyncio.TimerHandle | None = None
        self._reading_paused = False
        #: What a callback raised, if one did.
        self.error: BaseException | None = None

    @classmethod
    async def connect(cls, url: str, *, max_size: int | None, local_addr: tuple[str, int] | None,
                      close_timeout: float | None = None, ping_interval: float | None = None,
                      ping_timeout: float | None = None) -> PicowsWire:
        from picows import ws_connect

        wire = cls()
        wire.max_size = max_size
        wire.close_timeout = close_timeout if close_timeout is not None else 10.0

        kw: dict[str, Any] = {"websocket_handshake_timeout": None, "enable_auto_pong": True,
                              "max_frame_size": max_size if max_size is not None else 2**62}
        if local_addr is not None:
            kw["local_addr"] = local_addr
        if ping_interval is not None:
            # The client's own keepalive, as websockets' ping_interval / ping_timeout; picows
            # wants the pong within one interval, so a longer ping_timeout is cut to it.
            from picows import WSAutoPingStrategy

            reply = ping_interval if ping_timeout is None else min(ping_timeout, ping_interval)
            kw.update(enable_auto_ping=True, auto_ping_idle_timeout=ping_interval, auto_ping_reply_timeout=reply,
                      auto_ping_strategy=WSAutoPingStrategy.PING_PERIODICALLY)
        if _on_uvloop():
            # uvloop's own transports are the fast path there; aiofastnet's only add to them
            # (bench/churn.py: 211 against 133 us of client CPU a bare cycle).
            kw["use_aiofastnet"] = False
        ws, _listener = await ws_connect(lambda: _listener_class()(wire), url, **kw)
        if wire.ws is None:  # on_ws_connected did not run (picows calls it in the handshake's read)
            wire.ws, wire.transport = ws, ws.underlying_transport
        return wire

    # -- from picows's callbacks --------------------------------------------------
    def _frame(self, frame: Any) -> None:
        t_ns = time.monotonic_ns()
        kind = frame.msg_type
        if kind == _TEXT and frame.fin and not self._parts:
            # The common case first: one whole text message.
            raw: str | bytes = frame.get_payload_as_utf8_text()
            if self.max_size is not None and len(raw) > self.max_size:
                self._too_big()
            elif self._take is None:
                self._put(raw)
            else:
                self._take(raw, t_ns)
            return
        if kind == _CLOSE:
            got, message = frame.get_close_code(), frame.get_close_message()
            # picows gives an enum (its own class): the history holds plain ints, as websockets gives.
            code = int(got) if got is not None else None
            if self._close_rcvd is None:
                self._close_rcvd = (code, message.decode("utf-8", "replace") if message else "")
            # Echo it (nothing if ours went first) and leave the TCP close to the server
            # (RFC 6455 7.1.1), for close_timeout at most, as the websockets wire does.
            self.ws.send_close(got if code is not None and code >= 1000 else _CLOSE_OK)
            if self._give_up is None:
                self._give_up = asyncio.get_running_loop().call_later(self.close_timeout, self.ws.disconnect)
            return
        if kind in (_PING, _PONG):
            return  # picows answers pings itself
        if kind == _CONTINUATION:
            self._parts.append(frame.get_payload_as_bytes())
            kind = self._part_type
        elif not frame.fin:
            self._part_type = kind
            self._parts = [frame.get_payload_as_bytes()]
        if not frame.fin:
            if self.max_size is not None and sum(map(len, self._parts)) > self.max_size:
                self._too_big()
            return
        if self._parts:
            payload = b"".join(self._parts)
            self._parts = []
            raw = payload.decode("utf-8") if kind == _TEXT else payload
        elif kind == _TEXT:
            raw = frame.get_payload_as_utf8_text()
        else:
            raw = frame.get_payload_as_bytes()
        if self.max_size is not None and len(raw) > self.max_size:
            self._too_big()
            return
        if self._take is None:
            self._put(raw)
        else:
            self._take(raw, t_ns)

    def _failed(self, exc: BaseException, *, ended: bool = False) -> None:
        """A callback raised (a bug of wschaos's own, never the target's): kept as the
        wire's ``error``, reported by the loop's exception handler, and the connection ended."""
        if self.error is None:
            self.error = exc
            asyncio.get_running_loop().call_exception_handler(
                {"message": "wschaos: the picows wire's callback failed", "exception": exc})
        if self.ws is not None:
            self.ws.disconnect(graceful=False)  # on_ws_disconnected follows, and ends the client
        if ended and not self._ended.done():
            self._ended.set_result(None)

    def _too_big(self) -> None:
        self.ws.send_close(_TOO_BIG, b"message too big")
        self.ws.disconnect()

    def _disconnected(self) -> None:
        if self._give_up is not None:
            self._give_up.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._put(None)
        if self._on_closed is not None and not self._ended.done():
            self._on_closed()
        if not self._ended.done():
            self._ended.set_result(None)

    # -- the Wire ---------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return not self.ws.is_disconnected and not self.ws.is_close_frame_sent and self._close_rcvd is None

    @property
    def close_received(self) -> tuple[int | None, str] | None:
        return self._close_rcvd

    def _put(self, raw: str | bytes | None) -> None:
        self._inbox.append(raw)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def recv(self) -> str | bytes:
        while not self._inbox:
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        raw = self._inbox[0]
        if raw is None:  # ended: stays there for any later recv
            raise WireClosed(*(self._close_rcvd or (None, "")))
        del self._inbox[0]
        return raw

    def start(self, take: Take, on_closed: Callable[[], None], name: str = "") -> asyncio.Future[None]:
        self._on_closed = on_closed
        # Messages that came in with the handshake's, before the client took over.
        try:
            for raw in self._inbox:
                if raw is not None:
                    take(raw, time.monotonic_ns())
        except Exception as exc:  # as a reader task would: the connection ends, the error is kept
            self._failed(exc)
        self._inbox = []
        self._take = take
        if self._ended.done():  # it ended before the client took over
            on_closed()
        return self._ended

    def can_send_now(self, data: str | bytes) -> bool:
        return self._writable is None and self.open

    async def send(self, data: str | bytes) -> None:
        if not self.open:
            raise WireClosed(*(self._close_rcvd or (None, "")))
        while self._writable is not None:
            await asyncio.shield(self._writable)
            if not self.open:
                raise WireClosed(*(self._close_rcvd or (None, "")))
        if isinstance(data, str):
            self.ws.send(_TEXT, data.encode("utf-8"))
        else:
            self.ws.send(_BINARY, data)

    async def close(self, code: int) -> None:
        if not self.ws.is_disconnected:
            self.ws.send_close(code)
            # The server answers with its CLOSE and ends the TCP connection.
            await asyncio.shield(self._ended)

    def abort(self) -> None:
        self.ws.disconnect(graceful=False)

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.transport.is_closing():
            self.transport.pause_reading()
            self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
