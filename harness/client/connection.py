"""The asyncio client: every action an operation in the history.

The wire under it (:mod:`harness.client.wire`: websockets, or picows) hands
every message to the client as it arrives; the client stamps it on the
monotonic clock, classifies them through the adapter, records one ``frame``
observation each and wakes whoever waits: the request a chunk belongs to, the
interrupt an ACK answers, a ``wait_frame`` predicate. Operations end ``ok``,
``fail`` or ``unknown`` exactly as the History conventions of
docs/ARCHITECTURE.md say; an outcome the client cannot know (the connection
died before the answer) is recorded as ``unknown``, never guessed.

The client is built for churn: hundreds per process, thousands of cycles a
minute. Per frame it does one JSON parse, one small dict and no logging.

A protocol that makes a session before the WebSocket (``Adapter.session``)
gets one per client: made when the client connects, its id put in the URL's
``{session_id}``, removed once the connection has ended
(:mod:`harness.client.session`); both are operations in the history.

Fault actions that act on this client's own socket live here because they
need its transport: :meth:`Client.abort` (TCP RST), :meth:`Client.vanish`
(FIN, no close frame), :meth:`Client.stop_reading` (a slow reader: no reads,
so no pongs, and the server's send buffer fills).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from harness.client.correlate import Correlator, Pending
from harness.client.session import create_session, delete_session, session_url
from harness.client.wire import CLOSED, WIRES, Wire, open_wire, wire_available
from harness.core.history import History, Operation
from harness.core.sockets import fin_close, rst_close
from harness.core.timing import now_ns, scaled
from harness.protocol.adapters import Adapter, ReferenceAdapter
from harness.protocol.frames import Frame, InterruptResult, Reply, frame_record
from harness.protocol.shape import shape_marker
from harness.target.spec import check_loopback

__all__ = [
    "DEFAULT_MAX_SIZE",
    "Client",
    "ClientError",
    "ClientTimeout",
    "ConnectError",
    "ConnectionLost",
    "InterruptResult",
    "Reply",
]

#: Large, so frames far over a server's limit can come back in oversize tests.
DEFAULT_MAX_SIZE = 64 * 2**20
_REFERENCE = ReferenceAdapter()

if sys.version_info >= (3, 11):
    async def _bounded(aw: Any, timeout: float) -> Any:
        """``wait_for`` without its cost: on 3.11 ``wait_for`` wraps every coroutine in a
        new Task (and an extra loop round trip), which the churn bench showed as a good
        part of the client's per-cycle CPU; ``asyncio.timeout`` bounds it in place."""
        async with asyncio.timeout(timeout):
            return await aw
else:  # pragma: no cover - 3.10 has no asyncio.timeout
    async def _bounded(aw: Any, timeout: float) -> Any:
        return await asyncio.wait_for(aw, timeout)


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _within(fut: asyncio.Future[Any], timeout: float) -> bool:
    """Wait until ``fut`` is done, ``timeout`` at most, never cancelling it: whether it is.

    One timer handle and one future of its own, where ``asyncio.timeout`` over a
    shielded future takes a Timeout, a task lookup, a reschedule and a second future
    (the churn bench's client CPU per cycle)."""
    if fut.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: Any) -> None:
        _expire(waiter)

    fut.add_done_callback(wake)
    timer = loop.call_later(timeout, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        fut.remove_done_callback(wake)
    return fut.done()


#: URLs already found to be on loopback: the check parses the address, and a
#: churn run builds thousands of clients for one URL. Cleared when it grows.
_LOOPBACK_OK: set[str] = set()


class ClientError(RuntimeError):
    """Base of the client's typed errors."""


class ConnectError(ClientError):
    """The connection or its opening handshake failed (refused, timed out, error frame)."""


class ConnectionLost(ClientError):
    """The connection was closed before the message could be sent."""


class ClientTimeout(ClientError, TimeoutError):
    """No answer within the bound; the operation was recorded as unknown."""


class Client:
    """A WebSocket client of one session; see ARCHITECTURE.md for the contract."""

    def __init__(
        self,
        url: str,
        *,
        adapter: Adapter | None = None,
        history: History | None = None,
        name: str = "c0",
        allow_remote: bool = False,
        max_size: int | None = DEFAULT_MAX_SIZE,
        open_timeout: float | None = None,
        close_timeout: float | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        compression: str | None = None,
        keep_frames: bool = True,
        send_timeout: float | None = None,
        shape_upstream: bool = False,
        local_addr: tuple[str, int] | None = None,
        wire: str | None = None,
    ) -> None:
        if not allow_remote and url not in _LOOPBACK_OK:
            check_loopback(url, where=f"client {name}")
            if len(_LOOPBACK_OK) > 1024:
                _LOOPBACK_OK.clear()
            _LOOPBACK_OK.add(url)
        self.url = url
        self.allow_remote = allow_remote
        #: The WebSocket library under this client (:mod:`harness.client.wire`): as given,
        #: else ``WSCHAOS_WIRE`` (``wschaos run --wire``), else websockets.
        self.wire = wire or os.environ.get("WSCHAOS_WIRE") or WIRES[0]
        why = wire_available(self.wire)
        if why is not None:
            raise ClientError(f"client {name}: {why}")
        #: Carry each request's reply shape in its text to the target's (fake) LLM upstream.
        self.shape_upstream = shape_upstream
        self.adapter = adapter or _REFERENCE
        self.history = history if history is not None else History()
        self.name = name
        self.session_id: str | None = None
        self.ready: Frame | None = None
        self.frames: list[Frame] = []
        self._keep_frames = keep_frames
        self.send_timeout = send_timeout if send_timeout is not None else scaled(5)
        self._kw: dict[str, Any] = {
            "max_size": max_size,
            "open_timeout": open_timeout if open_timeout is not None else scaled(10),
            "close_timeout": close_timeout if close_timeout is not None else scaled(5),
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            # permessage-deflate costs CPU on both sides and tests nothing here.
            "compression": compression,
            # The source address to connect from (a loopback alias: 127.0.0.2, ...).
            "local_addr": local_addr,
        }
        self._conn: Wire | None = None
        self._reader: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[tuple[int | None, str]] | None = None
        # Who is waiting for which frame: replies, ACKs, heartbeats, predicates.
        self._waiting = Correlator(self._end, correlation=getattr(self.adapter, "correlation", "id"),
                                   answer=getattr(self.adapter, "interrupt_answer", "final_then_ack"))
        #: False when the protocol's interrupt names no request: every interrupt stops all.
        self._targets = bool(getattr(self.adapter, "interrupt_targets", True))
        #: The session made for this client before its WebSocket (None: none was made).
        self.made_session: str | None = None
        self._session_spec = getattr(self.adapter, "session", None)
        self._session_removal: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._reading = True

    # -- connection ----------------------------------------------------------
    async def connect(self, timeout: float | None = None) -> Frame:
        """Open the connection and the session; returns the ready frame."""
        if self._conn is not None:
            raise ClientError(f"client {self.name} is already connected")
        bound = timeout if timeout is not None else scaled(10)
        op = self.history.begin(self.name, "connect", url=self.url)
        loop = asyncio.get_running_loop()
        try:
            ready = await _bounded(self._open(), bound)
        except asyncio.CancelledError:
            self.history.end(op, "fail", session_id=None, error="cancelled")
            self._hard_close()
            raise
        except Exception as exc:
            error = _describe(exc)
            self.history.end(op, "fail", session_id=None, error=error)
            self._hard_close()
            self._remove_session_later()
            await self.session_removed()
            raise ConnectError(f"client {self.name}: connect to {self.url} failed: {error}") from exc
        self.ready = ready
        self.session_id = ready.session_id
        self._closed = loop.create_future()
        assert self._conn is not None
        self._reader = self._conn.start(self._take, self._on_closed, self.name)
        self.history.end(op, "ok", session_id=self.session_id, error=None)
        return ready

    async def _open(self) -> Frame:
        # One bound over the session's creation, the WebSocket opening and the protocol's handshake.
        url = self.url
        if self._session_spec is not None:
            url = session_url(url, await self._make_session())
        self._conn = await open_wire(self.wire, url, **self._kw)
        ready = await self.adapter.handshake(self._send_raw_frame, self._handshake_recv)
        if ready.session_id is None and self.made_session is not None:
            ready = replace(ready, session_id=self.made_session)
        return ready

    async def _make_session(self) -> str:
        """Make this client's session (bounded by the connect's own bound); recorded as ``session_create``."""
        assert self._session_spec is not None
        op = self.history.begin(self.name, "session_create", url=self.url)
        try:
            sid, info = await create_session(self._session_spec.create, self.url, client=self.name,
                                             timeout=self._kw["open_timeout"] or scaled(10),
                                             allow_remote=self.allow_remote)
        except BaseException as exc:
            self.history.end(op, "fail", session_id=None, error=_describe(exc))
            raise
        self.made_session = sid
        self.history.end(op, "ok", session_id=sid, **info)
        return sid

    def _remove_session_later(self) -> None:
        """After the connection has ended: remove the session made for it (best effort, bounded)."""
        spec = self._session_spec
        if spec is None or spec.delete is None or self.made_session is None or self._session_removal is not None:
            return
        self._session_removal = asyncio.get_running_loop().create_task(
            self._remove_session(), name=f"wschaos-session-delete-{self.name}")

    async def _remove_session(self) -> None:
        spec = self._session_spec
        assert spec is not None and spec.delete is not None and self.made_session is not None
        op = self.history.begin(self.name, "session_delete", session_id=self.made_session)
        try:
            info = await delete_session(spec.delete, self.url, self.made_session, client=self.name,
                                        timeout=scaled(2), allow_remote=self.allow_remote)
        except Exception as exc:  # best effort: the service may be gone (its shutdown closed us)
            self.history.end(op, "fail", status=None, error=_describe(exc))
            return
        self.history.end(op, "ok" if info["removed"] else "fail", **info)

    async def session_removed(self, timeout: float | None = None) -> None:
        """Wait (bounded) until the session made for this client has been removed, if it is being."""
        task = self._session_removal
        if task is None or task.done():
            return
        try:
            await _bounded(asyncio.shield(task), timeout if timeout is not None else scaled(3))
        except asyncio.TimeoutError:
            task.cancel()

    async def _handshake_recv(self) -> Frame:
        assert self._conn is not None
        raw = await self._conn.recv()
        return self._take(raw, time.monotonic_ns())

    async def _send_raw_frame(self, data: str | bytes) -> None:
        assert self._conn is not None
        await self._conn.send(data)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None and not self.closed:
            await self.close()

    @property
    def connection(self) -> Wire:
        """The WebSocket under this client; its ``transport`` is the TCP connection's."""
        if self._conn is None:
            raise ClientError(f"client {self.name} is not connected")
        return self._conn

    @property
    def closed(self) -> bool:
        return self._closed is not None and self._closed.done()

    # -- the reader: the wire hands every message to _take as it arrives ------
    def _take(self, raw: str | bytes, t_ns: int) -> Frame:
        frame, records = self._waiting.dispatch(self.adapter.classify(raw, t_ns))
        for rec in records:
            self._record(rec)
        return frame

    def _record(self, frame: Frame) -> None:
        """One ``frame`` observation (received, or derived from one), and the waiters it wakes."""
        if self._keep_frames:
            self.frames.append(frame)
        # Passed after creation: the record has a "kind" key, which is also
        # History.observe's own parameter name.
        self.history.observe(self.name, "frame", frame.t_ns).data = frame_record(frame)
        self._waiting.wake(frame)

    def _on_closed(self) -> None:
        conn = self._conn
        code: int | None = None
        reason = ""
        rcvd = conn.close_received if conn is not None else None
        if rcvd is not None:
            code, reason = rcvd
        self.history.observe(self.name, "closed", code=code, reason=reason)
        self._waiting.settle_all()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result((code, reason))
        self._remove_session_later()

    # -- sending -------------------------------------------------------------
    async def _send(self, op: Operation, data: str | bytes) -> None:
        """Send, or end ``op`` fail and raise ConnectionLost when the connection is gone."""
        conn = self._conn
        if conn is None or not conn.open:
            self._end(op, "fail", error="connection closed")
            raise ConnectionLost(f"client {self.name}: connection closed; {op.kind} not sent")
        try:
            # A peer that stopped reading fills the socket buffers and would hold this
            # send forever; the bound turns that into an answer.
            if conn.can_send_now(data):
                # The frame only goes to the buffer and cannot wait on the peer, so the
                # timer (a heap entry armed and cancelled per frame) is skipped.
                await conn.send(data)
            else:
                await _bounded(conn.send(data), self.send_timeout)
        except asyncio.TimeoutError:
            self._end(op, "unknown", error=f"send blocked for {self.send_timeout:g} s: the peer is not reading")
            raise ClientTimeout(f"client {self.name}: {op.kind} could not be sent within {self.send_timeout:g} s") from None
        except CLOSED as exc:
            # Whether the bytes left before the close is unknowable from here.
            self._end(op, "unknown", error=_describe(exc))
            raise ConnectionLost(f"client {self.name}: connection closed while sending {op.kind}") from exc

    def _end(self, op: Operation, outcome: Any, **data: Any) -> None:
        # The reader (connection lost) and a failing send can both try to end
        # one operation; the first outcome recorded stands.
        if op.outcome == "pending":
            self.history.end(op, outcome, **data)

    def _next_id(self, prefix: str) -> str:
        return f"{self.name}-{prefix}{next(self._ids)}"

    async def request(self, text: str = "hello", *, request_id: str | None = None, **options: Any) -> str:
        """Send a request; returns its id. Collect the answer with :meth:`reply`."""
        rid = request_id or self._next_id("r")
        if self.shape_upstream:
            # The target forwards the text to its LLM upstream (wschaos's fake), which
            # shapes the reply from this marker: the options reach it whatever the service.
            text = text + shape_marker(options)
        data = self.adapter.encode_request(rid, text, options, self.session_id)
        op = self.history.begin(self.name, "request", request_id=rid, text=text, options=options)
        pend = Pending(rid, op, now_ns(), asyncio.get_running_loop().create_future())
        self._waiting.add_request(pend)
        try:
            await self._send(op, data)
        except ConnectionLost:
            pend.settle()
            raise
        return rid

    async def reply(self, request_id: str, timeout: float | None = None) -> Reply:
        """Wait (bounded) for the request's final frame, its ERROR or the connection's end."""
        pend = self._waiting.pending.get(request_id)
        if pend is None:
            raise ClientError(f"client {self.name}: no request {request_id!r} was sent")
        if not pend.done.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            pend.waiters.append(waiter)
            # The bound ends only this caller's waiter, never ``done``.
            timer = loop.call_later(timeout if timeout is not None else scaled(30), _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if waiter in pend.waiters:
                    pend.waiters.remove(waiter)
        return pend.reply()

    async def interrupt(self, target: str | None, *, reason: str = "user",
                        timeout: float | None = None) -> InterruptResult:
        """Interrupt one request (or all, with None); waits for the ACK, bounded."""
        iid = self._next_id("i")
        data = self.adapter.encode_interrupt(iid, target, reason, self.session_id)
        op = self.history.begin(self.name, "interrupt", interrupt_id=iid, target=target)
        fut: asyncio.Future[Frame | None] = asyncio.get_running_loop().create_future()
        # A protocol whose interrupt names no request stops every one of them.
        it = self._waiting.add_interrupt(iid, target if self._targets else None, fut)
        sent_ns = now_ns()
        try:
            try:
                await self._send(op, data)
            except ConnectionLost:
                self._waiting.drop_interrupt(it)
                raise
            # A service without ACKs says nothing when nothing runs: nothing to wait for.
            nothing = self._waiting.nothing_to_stop(it, now_ns())
            if nothing is not None:
                self._record(nothing)
            answer = await self._wait(fut, timeout if timeout is not None else scaled(5))
        finally:
            if not fut.done():
                self._waiting.expire(it)
        if answer is None or answer.kind == "error":
            error = answer
            if error is not None:
                self.history.end(op, "fail", status=None, interrupted=[], interrupted_count=0,
                                 latency_ms=None, error_code=error.code)
            else:
                self.history.end(op, "unknown", status=None, interrupted=None, interrupted_count=None,
                                 latency_ms=None, error="no ACK" if not self.closed else "connection closed")
            return InterruptResult(iid, target, None, None, sent_ns, None, error)
        ids = answer.interrupted_ids or []
        by = it.answered_by or "ack"
        if by == "nothing":
            # No answer was received, so no latency was measured.
            self.history.end(op, "ok", status=answer.status, interrupted=ids,
                             interrupted_count=answer.interrupted_count, answered_by=by, chunks_after=0)
            return InterruptResult(iid, target, answer, None, sent_ns, None, answered_by=by)
        latency = (answer.t_ns - sent_ns) / 1e6
        self.history.end(op, "ok", status=answer.status, interrupted=ids,
                         interrupted_count=answer.interrupted_count, latency_ms=latency, answered_by=by,
                         chunks_after=it.chunks_after)
        return InterruptResult(iid, target, answer, latency, sent_ns, answer.t_ns, answered_by=by,
                               answer=it.answer)

    async def heartbeat(self, timeout: float | None = None) -> Frame:
        """Send a heartbeat; returns its HEARTBEAT_ACK (or the ERROR that answered)."""
        hid = self._next_id("h")
        data = self.adapter.encode_heartbeat(hid, self.session_id)
        op = self.history.begin(self.name, "heartbeat", request_id=hid)
        self._waiting.sent_other()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Frame | None] = loop.create_future()
        self._waiting.answers[hid] = fut
        self._waiting.heartbeats.append(fut)
        try:
            await self._send(op, data)
            answer = await self._wait(fut, timeout if timeout is not None else scaled(5))
        finally:
            self._waiting.answers.pop(hid, None)
            if fut in self._waiting.heartbeats:
                self._waiting.heartbeats.remove(fut)
        if answer is None:
            self.history.end(op, "unknown", error_code=None, error="no HEARTBEAT_ACK")
            raise ClientTimeout(f"client {self.name}: no HEARTBEAT_ACK")
        self.history.end(op, "fail" if answer.kind == "error" else "ok", error_code=answer.code)
        return answer

    async def _simple(self, kind: str, frame: str | bytes, **fields: Any) -> None:
        op = self.history.begin(self.name, kind, **fields)
        self._waiting.sent_other()
        await self._send(op, frame)
        # The protocol answers these only on error, so "sent" is the outcome.
        self.history.end(op, "ok", error_code=None)

    async def subscribe(self, topic: str) -> None:
        rid = self._next_id("s")
        await self._simple("subscribe", self.adapter.encode_subscribe(topic, rid, self.session_id),
                           topic=topic, request_id=rid)

    async def unsubscribe(self, topic: str) -> None:
        rid = self._next_id("u")
        await self._simple("unsubscribe", self.adapter.encode_unsubscribe(topic, rid, self.session_id),
                           topic=topic, request_id=rid)

    async def publish(self, topic: str, data: Any) -> None:
        rid = self._next_id("p")
        await self._simple("publish", self.adapter.encode_publish(topic, data, rid, self.session_id),
                           topic=topic, data=data, request_id=rid)

    async def send_raw(self, data: str | bytes) -> bool:
        """Send bytes as they are (bad input, oversize frames). Returns whether it was sent.

        Unlike the other sends this does not raise on a closed connection: its
        purpose is often to get the connection closed, and the outcome is in
        the history either way.
        """
        preview = data[:200] if isinstance(data, str) else repr(bytes(data[:200]))
        op = self.history.begin(self.name, "send_raw", size=len(data), binary=not isinstance(data, str),
                                preview=preview)
        self._waiting.sent_other()
        try:
            await self._send(op, data)
        except ConnectionLost:
            return False
        self.history.end(op, "ok", error_code=None)
        return True

    async def _wait(self, fut: asyncio.Future[Frame | None], timeout: float) -> Frame | None:
        return fut.result() if await _within(fut, timeout) else None

    async def wait_frame(self, predicate: Callable[[Frame], bool], timeout: float,
                         *, since: int | None = 0) -> Frame | None:
        """The first frame matching ``predicate``, or None at the bound or the close.

        Frames already received from index ``since`` of :attr:`frames` count too
        (so a frame that arrived while the caller was sending is not missed);
        pass ``since=len(client.frames)`` to look only at later ones, or None.
        """
        if since is not None:
            for frame in self.frames[since:]:
                if predicate(frame):
                    return frame
        if self.closed:
            return None
        fut: asyncio.Future[Frame | None] = asyncio.get_running_loop().create_future()
        item = (predicate, fut)
        self._waiting.predicates.append(item)
        try:
            return await self._wait(fut, timeout)
        finally:
            if item in self._waiting.predicates:
                self._waiting.predicates.remove(item)

    # -- ending --------------------------------------------------------------
    async def close(self, code: int = 1000, timeout: float | None = None) -> None:
        """The closing handshake, bounded; a peer that never answers is aborted."""
        op = self.history.begin(self.name, "close", code=code)
        conn = self._conn
        if conn is None:
            self.history.end(op, "fail", close_code=None, error="not connected")
            return
        bound = timeout if timeout is not None else scaled(5)
        try:
            await _bounded(conn.close(code), bound)
            await self._reader_done(bound)
        except asyncio.TimeoutError:
            self._hard_close()
            await self._reader_done(scaled(1))
            self.history.end(op, "unknown", close_code=self._close_code(), error="closing handshake timed out")
            await self.session_removed()
            return
        self.history.end(op, "ok", close_code=self._close_code())
        await self.session_removed()

    async def abort(self) -> None:
        """End the connection with a TCP RST (SO_LINGER on, 0 s): no close frame."""
        op = self.history.begin(self.name, "abort")
        rst_close(self.connection.transport)
        await self._reader_done(scaled(2))
        self.history.end(op, "ok", close_code=self._close_code())
        await self.session_removed()

    async def vanish(self) -> None:
        """End the connection with a FIN and no close frame, as a killed process would."""
        op = self.history.begin(self.name, "vanish")
        fin_close(self.connection.transport)
        await self._reader_done(scaled(2))
        self.history.end(op, "ok", close_code=self._close_code())
        await self.session_removed()

    def stop_reading(self) -> None:
        """Stop reading the socket: no frames, no pongs; the server's send buffer fills."""
        if self._reading:
            self.connection.pause_reading()
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self.connection.resume_reading()
            self._reading = True

    @property
    def reading(self) -> bool:
        return self._reading

    async def wait_closed(self, timeout: float) -> tuple[int | None, str] | None:
        """``(code, reason)`` once the connection has ended (code None: no close frame), or None at the bound."""
        if self._closed is None:
            return None
        return self._closed.result() if await _within(self._closed, timeout) else None

    @property
    def close_code(self) -> int | None:
        """The close code received once the connection has ended (None: none came, or not ended)."""
        return self._close_code()

    def _close_code(self) -> int | None:
        if self._closed is not None and self._closed.done():
            return self._closed.result()[0]
        return None

    async def _reader_done(self, timeout: float) -> None:
        if self._reader is not None and not await _within(self._reader, timeout):
            self._hard_close()

    def _hard_close(self) -> None:
        if self._conn is not None:
            self._conn.abort()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
