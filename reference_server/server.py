"""The aiohttp application: /ws, /health and /stats on one port."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from . import faults as faultmod
from .session import Session, State
from .state import ServerState
from .stats import snapshot

__all__ = ["STATE", "build_app"]

STATE: web.AppKey[State] = web.AppKey("state", ServerState)

#: With the unbounded_buffer fault the writer never waits for the socket.
_NO_LIMIT = 1 << 62


def _json(data: object, status: int = 200) -> web.Response:
    resp = web.json_response(data, status=status)
    # One request per connection: probe traffic then never leaves idle
    # keep-alive connections (and their tasks) behind to skew /stats.
    resp.force_close()
    return resp


async def health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.shutting_down and not st.faults.health_ok_during_drain:
        return _json({"status": "shutting_down"}, 503)
    return _json({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    return _json(snapshot(request.app[STATE]))


async def websocket(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    cfg = st.cfg
    if st.shutting_down and not st.faults.accept_during_drain:
        return _json({"status": "shutting_down"}, 503)
    ws = web.WebSocketResponse(
        heartbeat=None if st.faults.no_keepalive else cfg.heartbeat_interval,
        max_msg_size=0 if st.faults.no_max_size else cfg.max_size,
        writer_limit=_NO_LIMIT if st.faults.unbounded_buffer else 64 * 1024,
        # How long a close waits for the peer's close frame before dropping it.
        timeout=min(2.0, cfg.grace / 3),
    )
    try:
        await ws.prepare(request)
    except (ConnectionError, RuntimeError):
        return ws
    st.connections += 1
    session = Session(st, request, ws)
    st.sessions[session.session_id] = session
    st.heartbeats[session.session_id] = asyncio.get_running_loop().time()
    if st.faults.leak_memory:
        faultmod.leak_block()
    if st.faults.leak_sockets:
        faultmod.leak_socket(request.transport)
    if st.faults.handler_growth:
        faultmod.add_frame_hook()
    writer = asyncio.ensure_future(session.outbox.run())
    try:
        session.send_ready()
        await session.read_loop()
    except Exception:
        if not st.faults.type_error_closes:
            raise
        with contextlib.suppress(Exception):
            await ws.close(code=1011, message=b"internal error")
    finally:
        st.connections -= 1
        session.release()
        if not writer.done():
            if not session.outbox.sending_close:
                # The peer is gone or closed: frames still queued have nowhere to go.
                writer.cancel()
            # A close handshake in progress gets a bounded wait for the peer's reply.
            await asyncio.wait([writer], timeout=min(2.0, cfg.grace / 3))
            if not writer.done():
                writer.cancel()
                session.abort()
                await asyncio.wait([writer], timeout=1.0)
        if writer.done() and not writer.cancelled():
            writer.exception()  # retrieved, so it is never reported as unhandled
    return ws


def build_app(st: State) -> web.Application:
    app = web.Application()
    app[STATE] = st
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    return app
