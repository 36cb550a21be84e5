"""One session per WebSocket connection: validation, dispatch, interrupts.

The reader loop (:meth:`Session.read_loop`) handles each frame as it arrives.
A REQUEST becomes a task of its own, so the reader is free at once; an
INTERRUPT is handled right in the reader, synchronously: it claims its target
requests (marks them dead and cancels their tasks), queues each one's final
frame and then the ACK, all without an await. Request tasks queue a chunk
only after checking, with no await in between, that their request is still
alive; so nothing of a claimed request can follow its ACK, and a request can
be claimed only once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from . import agents
from . import faults as faultmod
from .config import AGENTS
from .outbox import Outbox
from .state import SERVER_NAME, SERVER_VERSION, ServerState

__all__ = ["RequestState", "Session", "State"]

SOFT_LIMIT = 256 * 1024
MAX_CHUNKS = 100_000


class BadMessage(Exception):
    """A required field missing or of the wrong type."""


class RequestState:
    __slots__ = ("cancel_seen", "dead", "request_id", "seq", "session", "task")

    def __init__(self, session: Session, request_id: str) -> None:
        self.session = session
        self.request_id = request_id
        self.seq = 0
        self.dead = False
        self.cancel_seen = False
        self.task: asyncio.Task[None] | None = None


#: The server's tables, holding this module's sessions and requests.
State = ServerState["Session", RequestState]


class Session:
    def __init__(self, state: State, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.state = state
        self.cfg = state.cfg
        self.faults = state.faults
        self.request = request
        self.ws = ws
        self.session_id = uuid.uuid4().hex
        self.requests: dict[str, RequestState] = {}
        self.topics: set[str] = set()
        self.sticky_reason: str | None = None
        self.outbox = Outbox(
            ws,
            soft_limit=SOFT_LIMIT,
            hard_limit=None if self.faults.unbounded_buffer else max(4 * 1024 * 1024, 4 * self.cfg.max_size),
            on_overflow=self.abort,
            # handler_growth: the hooks run on every frame sent too ("every later frame").
            on_frame_sent=faultmod.run_frame_hooks if self.faults.handler_growth else None,
            send_lock=faultmod.shared_send_lock() if self.faults.global_send_lock else None,
        )
        self._side_tasks: set[asyncio.Task[None]] = set()

    # --- sending -------------------------------------------------------------

    def frame(self, msg_type: str, request_id: str | None = None, payload: dict[str, Any] | None = None) -> str:
        return json.dumps({
            "msg_type": msg_type,
            "session_id": self.session_id,
            "request_id": request_id,
            "payload": payload if payload is not None else {},
            "timestamp": time.time(),
        })

    def send(self, msg_type: str, request_id: str | None = None, payload: dict[str, Any] | None = None) -> bool:
        return self.outbox.put(self.frame(msg_type, request_id, payload))

    def control(self, msg_type: str, request_id: str | None = None, payload: dict[str, Any] | None = None) -> bool:
        return self.outbox.put_control(self.frame(msg_type, request_id, payload))

    def error(self, code: str, message: str, request_id: str | None = None) -> None:
        self.control("ERROR", request_id, {"code": code, "message": message})

    def send_ready(self) -> None:
        self.send("SESSION_READY", None, {
            "session_id": self.session_id,
            "server": {"name": SERVER_NAME, "version": SERVER_VERSION, "pid": os.getpid()},
            "heartbeat_interval_s": self.cfg.heartbeat_interval,
            "max_concurrent_requests": self.cfg.max_concurrent_requests,
        })

    def abort(self) -> None:
        """Drop the connection without a close frame (slow consumer, shutdown fallback)."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # --- requests ------------------------------------------------------------

    def _forget(self, req: RequestState) -> None:
        if self.requests.get(req.request_id) is req:
            del self.requests[req.request_id]
        if self.state.global_requests.get(req.request_id) is req:
            del self.state.global_requests[req.request_id]

    async def emit_chunk(self, req: RequestState, delta: str) -> bool:
        """Queue one chunk of ``req``; False once the request is over."""
        await self.outbox.wait_space()
        if self.faults.late_chunks:
            # The bug: the cancel flag is looked at only every fifth chunk.
            if req.seq % 5 == 0 and req.dead:
                return False
        elif req.dead:
            return False
        if self.outbox.closed:
            # The leak_tasks bug: nobody told the agent its client left, so it goes on
            # producing into a dead connection until its reply is done.
            return bool(self.faults.leak_tasks)
        self.outbox.put(self.frame("RESPONSE", req.request_id, {"seq": req.seq, "delta": delta, "final": False}), req)
        # The seq_gap bug: a counter bumped twice on one path skips a number.
        req.seq += 2 if self.faults.seq_gap and req.seq == 3 else 1
        return True

    def finish(self, req: RequestState, *, interrupted: bool, reason: str | None) -> bool:
        """Queue the one final frame of ``req`` unless it already ended.

        A normal end queues behind the request's chunks; an interrupted one
        first drops the chunks not yet sent (the final's seq follows the last
        chunk that does go out) and jumps the data queue.
        """
        if req.dead:
            return False
        req.dead = True
        self._forget(req)
        payload = {"seq": req.seq, "delta": "", "final": True, "interrupted": interrupted, "reason": reason}
        if interrupted:
            req.seq -= self.outbox.purge(req)
            payload["seq"] = req.seq
            self.control("RESPONSE", req.request_id, payload)
        else:
            self.send("RESPONSE", req.request_id, payload)
            if self.faults.double_final:
                # The bug: a completion callback and the stream's end both report the end.
                self.send("RESPONSE", req.request_id, payload)
        return True

    def claim(self, req: RequestState, reason: str | None) -> bool:
        """End an active request as interrupted: final frame queued, task cancelled."""
        if not self.finish(req, interrupted=True, reason=reason):
            return False
        if req.task is not None and not self.faults.late_chunks:
            req.task.cancel()
        return True

    def interrupt_all(self, reason: str) -> list[str]:
        return [r.request_id for r in list(self.requests.values()) if self.claim(r, reason)]

    async def _run_request(self, req: RequestState, agent: str, text: str, opts: dict[str, Any]) -> None:
        chunks = opts.get("chunks", 20)
        delay_s = opts.get("chunk_delay_ms", 20) / 1000.0

        async def emit(delta: str) -> bool:
            return await self.emit_chunk(req, delta)

        try:
            if agent == "async":
                await agents.async_agent(text, chunks, delay_s, emit)
            elif agent == "upstream":
                assert self.state.http is not None
                await agents.upstream_agent(
                    self.state.http, os.environ.get("OPENAI_BASE_URL", ""), text, emit, self.faults
                )
            else:
                late = self._late_output(req) if self.faults.blocking_output_leak else None
                await agents.blocking_agent(
                    text, chunks, delay_s, opts.get("block_ms", 0) / 1000.0, emit, self.faults,
                    name=f"blocking-agent-{req.request_id[:32]}", late_output=late,
                )
            self.finish(req, interrupted=False, reason=None)
        except agents.UpstreamError as exc:
            if not req.dead:
                req.dead = True
                self._forget(req)
                # Behind the request's own chunks: it is this request's last frame.
                self.send("ERROR", req.request_id, {"code": "UPSTREAM_ERROR", "message": str(exc)})
        finally:
            if self.faults.cancel_before_start_leak:
                # The bug: the books are kept in the body, which a task cancelled
                # before its first step never runs.
                self.state.live_requests.discard(req)

    def _request_done(self, req: RequestState, task: asyncio.Task[None]) -> None:
        """Take ``req`` off the books however its task ended, even cancelled before its first step."""
        self.state.live_requests.discard(req)
        if req.dead:
            return
        exc = None if task.cancelled() else task.exception()
        # Ended without its final frame: cancelled by nobody who claimed it, or a bug of ours.
        req.dead = True
        self._forget(req)
        if exc is not None:
            self.send("ERROR", req.request_id, {"code": "INTERNAL", "message": f"{type(exc).__name__}: {exc}"})

    def _late_output(self, req: RequestState):  # type: ignore[no-untyped-def]
        def leak() -> None:
            # blocking_output_leak: the thread's result is sent whatever became of the request.
            self.outbox.put(self.frame("RESPONSE", req.request_id, {"seq": req.seq, "delta": "late ", "final": False}))
            req.seq += 1
        return leak

    # --- the reader ----------------------------------------------------------

    async def read_loop(self) -> None:
        ws = self.ws
        async for msg in ws:
            self.state.heartbeats[self.session_id] = time.monotonic()
            if self.faults.handler_growth:
                faultmod.run_frame_hooks(msg.data if isinstance(msg.data, str) else "")
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                if self.faults.crash_on_binary:
                    # The bug: a decode of the frame that nothing catches takes the process down.
                    os._exit(70)
                self.error("BAD_MESSAGE", "binary frames are not part of the protocol; send text JSON")
            elif msg.type == WSMsgType.ERROR:
                return

    async def on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            if self.faults.bad_json_closes:
                await self.ws.close(code=1003, message=b"not JSON")
                return
            # The wrong_error_code bug: every refusal reported with one catch-all code.
            self.error("BAD_MESSAGE" if self.faults.wrong_error_code else "BAD_JSON", "the frame is not a JSON object")
            return
        rid = msg.get("request_id")
        echo = rid if isinstance(rid, str) else None
        try:
            await self.dispatch(msg)
        except BadMessage as exc:
            self.error("BAD_MESSAGE", str(exc), echo)
        except Exception as exc:
            if self.faults.type_error_closes:
                raise  # the bug: an unexpected exception takes the connection down
            # A bug of ours must not cost the client its connection.
            self.error("INTERNAL", f"{type(exc).__name__}: {exc}", echo)

    async def dispatch(self, msg: dict[str, Any]) -> None:
        mtype = msg.get("msg_type")
        if not isinstance(mtype, str):
            raise BadMessage("msg_type is required and must be a string")
        handler = _HANDLERS.get(mtype)
        rid = msg.get("request_id")
        if handler is None:
            self.error("UNKNOWN_TYPE", f"unknown msg_type {mtype!r}", rid if isinstance(rid, str) else None)
            return
        payload = msg.get("payload", {})
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise BadMessage("payload must be an object")
        if rid is not None and not isinstance(rid, str):
            raise BadMessage("request_id must be a string")
        await handler(self, rid, payload)

    # --- message handlers ----------------------------------------------------

    async def on_request(self, rid: str | None, payload: dict[str, Any]) -> None:
        if not rid:
            raise BadMessage("REQUEST needs a non-empty string request_id")
        text = payload.get("text")
        if self.faults.type_error_closes:
            text = text.strip()  # the bug: no type check; a non-string raises here
        if not isinstance(text, str):
            raise BadMessage("REQUEST needs payload.text, a string")
        opts = _options(payload.get("options"), self.cfg.agent)
        agent = opts.get("agent", self.cfg.agent)
        if rid in self.requests:
            self.error("DUPLICATE_REQUEST", f"request {rid!r} is already active in this session", rid)
            return
        if len(self.requests) >= self.cfg.max_concurrent_requests:
            self.error("BUSY", f"{self.cfg.max_concurrent_requests} requests already active", rid)
            return
        if agent == "upstream" and not os.environ.get("OPENAI_BASE_URL"):
            self.error("NO_UPSTREAM", "the server has no OPENAI_BASE_URL to stream from", rid)
            return
        req = RequestState(self, rid)
        self.requests[rid] = req
        if self.faults.global_request_ids:
            self.state.global_requests[rid] = req
        if self.faults.sticky_interrupt and self.sticky_reason is not None:
            reason, self.sticky_reason = self.sticky_reason, None
            self.finish(req, interrupted=True, reason=reason)
            return
        self.state.live_requests.add(req)
        req.task = asyncio.ensure_future(self._run_request(req, agent, text, opts))
        if not self.faults.cancel_before_start_leak:
            req.task.add_done_callback(functools.partial(self._request_done, req))
        if self.faults.interrupt_inline:
            # The bug: the reader waits for the stream, so an INTERRUPT queues behind it.
            await asyncio.wait([req.task])

    async def on_interrupt(self, rid: str | None, payload: dict[str, Any]) -> None:
        if not rid:
            raise BadMessage("INTERRUPT needs a non-empty string request_id")
        if "target_request_id" not in payload:
            raise BadMessage("INTERRUPT needs payload.target_request_id (a string, or null for all)")
        target = payload["target_request_id"]
        if target is not None and not isinstance(target, str):
            raise BadMessage("payload.target_request_id must be a string or null")
        reason = payload.get("reason", "user")
        if reason is not None and not isinstance(reason, str):
            raise BadMessage("payload.reason must be a string")
        if self.faults.sticky_interrupt:
            self.sticky_reason = reason
        if self.faults.double_claim:
            self._spawn(self._interrupt_racy(rid, target, reason))
            return
        table = self.state.global_requests if self.faults.global_request_ids else self.requests
        if target is None:
            targets = list(self.requests.values())
        else:
            found = table.get(target)
            targets = [found] if found is not None else []
        if self.faults.ack_without_cancel:
            ids = [r.request_id for r in targets if not r.dead]
            self._ack(rid, ids)
            return
        if self.faults.ack_before_final:
            live = [r for r in targets if not r.dead]
            self._ack(rid, [r.request_id for r in live])
            for r in live:
                r.session.claim(r, reason)
            return
        claimed = [r.request_id for r in targets if r.session.claim(r, reason)]
        self._ack(rid, claimed)

    def _ack(self, rid: str, ids: list[str]) -> None:
        payload = {
            # The wrong_ack_status bug: the status read from a stale variable.
            "status": ("SUCCESS" if ids else "NOT_FOUND") if not self.faults.wrong_ack_status else "NOT_FOUND",
            "interrupted": ids,
            "interrupted_count": len(ids),
        }
        if self.faults.slow_ack:
            # slow_ack: the ACK leaves 50 ms late (a slower interrupt path, not a broken one).
            asyncio.get_running_loop().call_later(0.05, self.control, "INTERRUPT_ACK", rid, payload)
            return
        self.control("INTERRUPT_ACK", rid, payload)

    async def _interrupt_racy(self, rid: str, target: str | None, reason: str | None) -> None:
        # double_claim: look up, then await (a store round trip), then act on the stale view.
        targets = list(self.requests.values()) if target is None else (
            [self.requests[target]] if target in self.requests else [])
        await asyncio.sleep(0.02)
        ids = []
        for r in targets:
            r.dead = False  # the stale view believes it is still active
            r.session.claim(r, reason)
            ids.append(r.request_id)
        self._ack(rid, ids)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def on_heartbeat(self, rid: str | None, payload: dict[str, Any]) -> None:
        self.control("HEARTBEAT_ACK", rid, {"server_time": time.time()})

    def _topic(self, payload: dict[str, Any]) -> str:
        topic = payload.get("topic")
        if not isinstance(topic, str) or not topic:
            raise BadMessage("payload.topic must be a non-empty string")
        return topic

    def subscribe(self, topic: str) -> None:
        self.state.add_subscriber(topic, self)
        self.topics.add(topic)

    def unsubscribe(self, topic: str) -> None:
        self.state.remove_subscriber(topic, self)
        self.topics.discard(topic)

    async def on_subscribe(self, rid: str | None, payload: dict[str, Any]) -> None:
        self.subscribe(self._topic(payload))

    async def on_unsubscribe(self, rid: str | None, payload: dict[str, Any]) -> None:
        self.unsubscribe(self._topic(payload))

    async def on_publish(self, rid: str | None, payload: dict[str, Any]) -> None:
        topic = self._topic(payload)
        if "data" not in payload:
            raise BadMessage("PUBLISH needs payload.data")
        for sub in self.state.subscribers(topic):
            # Queued, never awaited: a slow subscriber cannot stall the publisher.
            sub.outbox.put(sub.frame("EVENT", None, {"topic": topic, "data": payload["data"]}))

    # --- release -------------------------------------------------------------

    def release(self) -> None:
        """Let go of everything this session holds; called once, when the connection ends."""
        st = self.state
        if not self.faults.leak_tasks:
            for req in list(self.requests.values()):
                req.dead = True
                if req.task is not None:
                    req.task.cancel()
                st.live_requests.discard(req)
                self._forget(req)
            for task in list(self._side_tasks):
                task.cancel()
        if not self.faults.leak_subscriptions:
            for topic in list(self.topics):
                self.unsubscribe(topic)
        st.sessions.pop(self.session_id, None)
        if not self.faults.leak_session_table:
            st.heartbeats.pop(self.session_id, None)


_HANDLERS = {
    "REQUEST": Session.on_request,
    "INTERRUPT": Session.on_interrupt,
    "HEARTBEAT": Session.on_heartbeat,
    "SUBSCRIBE": Session.on_subscribe,
    "UNSUBSCRIBE": Session.on_unsubscribe,
    "PUBLISH": Session.on_publish,
}


def _number(opts: dict[str, Any], key: str, default: float, *, integer: bool = False, cap: float | None = None) -> float:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise BadMessage(f"options.{key} must be a {'whole ' if integer else ''}number")
    if value < 0 or (cap is not None and value > cap):
        raise BadMessage(f"options.{key} must be between 0 and {cap if cap is not None else 'infinity'}")
    return value


def _options(raw: Any, default_agent: str) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadMessage("payload.options must be an object")
    agent = raw.get("agent", default_agent)
    if agent not in AGENTS:
        raise BadMessage(f"options.agent must be one of {', '.join(AGENTS)}")
    return {
        "agent": agent,
        "chunks": int(_number(raw, "chunks", 20, integer=True, cap=MAX_CHUNKS)),
        "chunk_delay_ms": _number(raw, "chunk_delay_ms", 20, cap=3_600_000),
        "block_ms": _number(raw, "block_ms", 0, cap=3_600_000),
    }
