"""The asyncio client against an in-process server: operations and observations as the conventions say."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.client.connection import Client, ConnectError, ConnectionLost
from harness.client.wire import WIRES, wire_available
from harness.core.history import History
from harness.protocol.adapters import load_adapter
from harness.target.spec import RemoteAddressError, load_target

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "servers"))
from decl_ws import TalkServer
from mini_ws import MiniServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, params=WIRES)
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test of the client on each wire: the same history whichever library moves the bytes."""
    why = wire_available(request.param)
    if why is not None:
        pytest.skip(why)
    monkeypatch.setenv("WSCHAOS_WIRE", request.param)
    return str(request.param)


def run(test: Callable[[], Awaitable[Any]], bound: float = 20.0) -> Any:
    """Run one async test body under a hard bound."""
    return asyncio.run(asyncio.wait_for(test(), bound))


def ops(h: History, kind: str):
    return h.operations(kind)


def test_connect_returns_the_ready_frame_and_records_it():
    """connect ends ok at SESSION_READY, with the session id; the frame is an observation."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            c = Client(srv.url, history=h, name="alice")
            ready = await c.connect(timeout=5)
            assert ready.kind == "ready" and c.session_id == "s1"
            (op,) = ops(h, "connect")
            assert (op.client, op.outcome, op.data["url"], op.data["session_id"]) == ("alice", "ok", srv.url, "s1")
            (obs,) = h.observations("frame", "alice")
            assert obs.data["kind"] == "ready" and obs.t_ns == ready.t_ns
            await c.close()
    run(body)


def test_request_reply_streams_every_chunk_in_order():
    """A request ends ok at its final frame; the reply holds gapless seqs and timings."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h) as c:
                rid = await c.request("hello", chunks=4, chunk_delay_ms=2)
                reply = await c.reply(rid, timeout=5)
            assert reply.complete and not reply.interrupted and reply.error is None
            assert reply.seqs == [0, 1, 2, 3]
            assert 0 < reply.first_chunk_ms <= reply.total_ms
            (op,) = ops(h, "request")
            assert op.outcome == "ok"
            assert op.data["options"] == {"chunks": 4, "chunk_delay_ms": 2}
            assert (op.data["chunks"], op.data["interrupted"], op.data["error_code"]) == (4, False, None)
    run(body)


def test_interrupt_records_the_ack_and_its_latency():
    """The interrupted final comes before the ACK; the interrupt op holds status, ids and latency."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h) as c:
                rid = await c.request("long", chunks=1000, chunk_delay_ms=5)
                assert await c.wait_frame(lambda f: f.kind == "chunk", 5) is not None
                result = await c.interrupt(rid, reason="user", timeout=5)
                reply = await c.reply(rid, 5)
                nothing = await c.interrupt("no-such-id", timeout=5)
            assert result.status == "SUCCESS" and result.interrupted_ids == [rid]
            assert result.latency_ms == pytest.approx((result.acked_ns - result.sent_ns) / 1e6)
            assert reply.interrupted and reply.reason == "user"
            assert reply.final.t_ns <= result.ack.t_ns
            assert nothing.status == "NOT_FOUND" and nothing.interrupted_ids == []
            first, second = ops(h, "interrupt")
            assert first.outcome == "ok" and first.data["interrupt_id"] == result.interrupt_id
            assert (first.data["target"], first.data["status"], first.data["interrupted"],
                    first.data["interrupted_count"]) == (rid, "SUCCESS", [rid], 1)
            assert first.data["latency_ms"] == result.latency_ms
            assert second.data["status"] == "NOT_FOUND"
    run(body)


def test_an_error_answer_fails_the_request():
    """ERROR for a request ends it fail with the error code."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h) as c:
                reply = await c.reply(await c.request("fail"), 5)
            assert reply.error.code == "REFUSED" and not reply.complete
            (op,) = ops(h, "request")
            assert (op.outcome, op.data["error_code"]) == ("fail", "REFUSED")
    run(body)


def test_a_duplicate_request_id_fails_alone():
    """Reusing an active id: the duplicate ends fail DUPLICATE_REQUEST, the first still completes."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h) as c:
                rid = await c.request("first", request_id="dup-1", chunks=5, chunk_delay_ms=5)
                await c.request("again", request_id="dup-1")
                reply = await c.reply(rid, 5)
            assert reply.complete and reply.seqs == [0, 1, 2, 3, 4]
            first, dup = ops(h, "request")
            assert (first.outcome, dup.outcome, dup.data["error_code"]) == ("ok", "fail", "DUPLICATE_REQUEST")
    run(body)


def test_heartbeat_subscribe_publish_and_raw_input():
    """Heartbeat is answered; an event reaches the subscriber; non-JSON gets BAD_JSON."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h, name="a") as a, Client(srv.url, history=h, name="b") as b:
                assert (await a.heartbeat(timeout=5)).kind == "heartbeat_ack"
                await a.subscribe("news")
                await a.heartbeat(timeout=5)  # the subscription is in place once this is answered
                await b.publish("news", {"n": 1})
                event = await a.wait_frame(lambda f: f.kind == "event", 5)
                assert (event.topic, event.data) == ("news", {"n": 1})
                assert await b.send_raw("{not json") is True
                err = await b.wait_frame(lambda f: f.kind == "error", 5)
                assert err.code == "BAD_JSON"
                await a.unsubscribe("news")
            assert [o.outcome for o in ops(h, "heartbeat")] == ["ok", "ok"]
            assert ops(h, "publish")[0].data["topic"] == "news"
            raw = ops(h, "send_raw")[0]
            assert (raw.outcome, raw.data["size"], raw.data["binary"]) == ("ok", 9, False)
    run(body)


def test_connection_dying_first_leaves_the_request_unknown():
    """The server drops the connection mid-reply: the request is unknown, closed code None."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            c = Client(srv.url, history=h)
            await c.connect()
            rid = await c.request("long", chunks=1000, chunk_delay_ms=5)
            await c.wait_frame(lambda f: f.kind == "chunk", 5)
            srv.abort_all()
            reply = await c.reply(rid, 5)
            assert not reply.complete and reply.chunks
            assert await c.wait_closed(5) == (None, "")
            (op,) = ops(h, "request")
            assert op.outcome == "unknown"
            (closed,) = h.observations("closed")
            assert closed.data == {"code": None, "reason": ""}
            with pytest.raises(ConnectionLost):
                await c.request("after")
            assert ops(h, "request")[-1].outcome == "fail"
    run(body)


def test_server_close_code_is_reported():
    """A server close with 1001 is seen as (1001, reason)."""
    async def body():
        async with MiniServer() as srv:
            c = Client(srv.url)
            await c.connect()
            await srv.close_all(1001, "going away")
            assert await c.wait_closed(5) == (1001, "going away")
    run(body)


def test_reply_timeout_returns_what_arrived_and_leaves_the_op_open():
    """A reply wait that times out is incomplete; the op ends later when the final arrives."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h) as c:
                rid = await c.request("slow", chunks=3, chunk_delay_ms=100)
                early = await c.reply(rid, timeout=0.05)
                assert not early.complete and ops(h, "request")[0].outcome == "pending"
                late = await c.reply(rid, timeout=5)
                assert late.complete and ops(h, "request")[0].outcome == "ok"
                assert await c.wait_frame(lambda f: False, 0.05) is None
    run(body)


def test_connect_refused_is_a_typed_failure():
    """Nothing listening: ConnectError, and the connect op ends fail with the error."""
    async def body():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        h = History()
        with pytest.raises(ConnectError, match="failed"):
            await Client(f"ws://127.0.0.1:{port}/ws", history=h).connect(timeout=5)
        (op,) = ops(h, "connect")
        assert op.outcome == "fail" and op.data["error"]
    run(body)


def test_remote_urls_are_refused_unless_allowed():
    """The loopback guard: no traffic outside 127.0.0.0/8 and ::1 without allow_remote."""
    with pytest.raises(RemoteAddressError):
        Client("ws://10.1.2.3:80/ws")
    Client("ws://10.1.2.3:80/ws", allow_remote=True)
    Client("ws://localhost:80/ws")


@pytest.mark.parametrize("action, seen", [("close", "close_frame"), ("abort", "rst"), ("vanish", "fin")])
def test_how_a_client_leaves_is_what_the_server_sees(action, seen):
    """close sends a close frame, abort a TCP RST, vanish a FIN without a close frame."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            c = Client(srv.url, history=h)
            await c.connect()
            await getattr(c, action)()
            record = await srv.wait_ended(timeout=5)
            assert record.how == seen
            (op,) = ops(h, action)
            assert op.outcome == "ok"
            assert op.data["close_code"] == (1000 if action == "close" else None)
    run(body)


def test_stop_reading_sends_no_pongs():
    """A client that stops reading is dropped by the server's keepalive (1011)."""
    async def body():
        async with MiniServer(ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2) as srv:
            c = Client(srv.url)
            await c.connect()
            c.stop_reading()
            assert not c.reading
            record = await srv.wait_ended(timeout=5)
            assert record.close_code_sent == 1011
            c.resume_reading()
            assert await c.wait_closed(5) is not None
    run(body)


def test_declarative_adapter_end_to_end():
    """The example target's adapter speaks the talk protocol: handshake, reply, cancel, ping."""
    adapter = load_adapter(load_target(ROOT / "examples" / "declarative_target.toml"))

    async def body():
        async with TalkServer() as srv:
            h = History()
            async with Client(srv.url, adapter=adapter, history=h) as c:
                assert c.session_id == "t1"
                reply = await c.reply(await c.request("hi", chunks=3), 5)
                assert reply.complete and reply.seqs == [0, 1, 2] and reply.text == "w0 w1 w2 "
                rid = await c.request("long", chunks=1000, chunk_delay_ms=5)
                await c.wait_frame(lambda f: f.kind == "chunk" and f.request_id == rid, 5)
                result = await c.interrupt(rid, reason="enough", timeout=5)
                assert result.status == "SUCCESS" and result.interrupted_ids == [rid]
                cut = await c.reply(rid, 5)
                assert cut.interrupted and cut.reason == "enough"
                assert (await c.heartbeat(timeout=5)).kind == "heartbeat_ack"
            assert srv.received[0]["type"] == "REGISTER"
            assert srv.received[1]["payload"]["options"] == {"chunks": 3}
            assert [o.outcome for o in ops(h, "request")] == ["ok", "ok"]
    run(body)


def test_declarative_handshake_refused():
    """A wrong token gets FAULT before the ACK: connect fails with the code."""
    cfg = dict(load_target(ROOT / "examples" / "declarative_target.toml").adapter_config)
    cfg["handshake"] = {**cfg["handshake"], "send": {"type": "REGISTER", "id": "{handshake_id}",
                                                     "payload": {"token": "wrong"}}}
    adapter = load_adapter("declarative", config=cfg)

    async def body():
        async with TalkServer() as srv:
            h = History()
            with pytest.raises(ConnectError, match="AUTH"):
                await Client(srv.url, adapter=adapter, history=h).connect(timeout=5)
            assert ops(h, "connect")[0].outcome == "fail"
    run(body)


# -- agent back ends: sessions made first, no ids, other answers to an interrupt ---------

class ToyAgent:
    """An in-process aiohttp agent back end in the shapes real ones have.

    Sessions: ``POST /api/sessions`` -> 201 ``{"session": {"id"}}`` (``create_status``
    overrides it), ``DELETE /api/sessions/{id}``, the socket at ``/ws/{id}``, and
    ``/control``, a WebSocket that makes one on ``{"type": "new"}``. Frames carry no id
    unless ``ids``: ``ask`` streams ``n`` tokens then ``end``; ``stop`` ends the reply by
    ``answer``: ``final_then_ack`` (``end stopped`` then ``stopped``), ``final`` (``end``
    alone), ``ack`` (``stopped`` alone; ``late`` more binary frames and an ``end`` follow it,
    as a defect would). Binary tokens (``binary``) are ``T`` + a 4-byte frame number.
    """

    def __init__(self, *, answer: str = "final_then_ack", ids: bool = False, binary: bool = False,
                 late: int = 0, create_status: int = 201) -> None:
        self.answer, self.ids, self.binary, self.late = answer, ids, binary, late
        self.create_status = create_status
        self.sessions: set[str] = set()
        self.deleted: list[str] = []
        self._n = itertools.count(1)
        self._runner: Any = None

    async def __aenter__(self) -> ToyAgent:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/api/sessions", self._create)
        app.router.add_delete("/api/sessions/{id}", self._delete)
        app.router.add_get("/ws/{id}", self._socket)
        app.router.add_get("/control", self._control)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{{session_id}}"

    async def _create(self, request: Any) -> Any:
        from aiohttp import web

        if self.create_status != 201:
            return web.json_response({"error": "no sessions today"}, status=self.create_status)
        sid = f"s{next(self._n)}"
        self.sessions.add(sid)
        return web.json_response({"session": {"id": sid}}, status=201)

    async def _delete(self, request: Any) -> Any:
        from aiohttp import web

        sid = request.match_info["id"]
        self.deleted.append(sid)
        if sid not in self.sessions:
            return web.json_response({"error": "no such session"}, status=404)
        self.sessions.discard(sid)
        return web.Response(status=204)

    async def _control(self, request: Any) -> Any:
        from aiohttp import web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if json.loads(msg.data).get("type") == "new":
                sid = f"w{next(self._n)}"
                self.sessions.add(sid)
                await ws.send_json({"type": "hello"})
                await ws.send_json({"type": "made", "session": sid})
        return ws

    async def _socket(self, request: Any) -> Any:
        from aiohttp import web

        if request.match_info["id"] not in self.sessions:
            return web.json_response({"error": "no such session"}, status=404)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        turn: asyncio.Task[None] | None = None
        mid: list[Any] = [None]

        def tag(obj: dict[str, Any]) -> dict[str, Any]:
            return {**obj, "id": mid[0]} if self.ids else obj

        async def stream(n: int) -> None:
            for i in range(n):
                await asyncio.sleep(0.005)
                if self.binary:
                    await ws.send_bytes(b"T" + i.to_bytes(4, "little"))
                else:
                    await ws.send_json(tag({"type": "tok", "text": f"w{i} "}))
            await ws.send_json(tag({"type": "end"}))

        async for msg in ws:
            obj = json.loads(msg.data)
            if obj["type"] == "ask":
                if turn is not None and not turn.done():
                    await ws.send_json({"type": "error", "message": "busy"})
                    continue
                mid[0] = obj.get("id")
                turn = asyncio.create_task(stream((obj.get("opts") or {}).get("n", 5)))
            elif obj["type"] == "stop":
                running = turn is not None and not turn.done()
                if running:
                    turn.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await turn
                if running and self.answer in ("final_then_ack", "final"):
                    await ws.send_json(tag({"type": "end", "stopped": True}))
                if self.answer != "final":
                    await ws.send_json({"type": "stopped"})
                if running and self.late:
                    for i in range(100, 100 + self.late):  # carries on where the cancelled one was
                        await ws.send_bytes(b"T" + i.to_bytes(4, "little"))
                    await ws.send_json({"type": "end"})
        if turn is not None:
            turn.cancel()
        return ws


def toy_adapter(**change: Any) -> Any:
    """The declarative description of a ToyAgent; ``change`` replaces top-level keys."""
    cfg: dict[str, Any] = {
        "msg_type_path": "type",
        "correlation": "order",
        "handshake": {"wait": False},
        "request": {"template": {"type": "ask", "text": "{text}"}, "options_path": "opts"},
        "interrupt": {"template": {"type": "stop"}},
        "fields": {"delta": "text", "interrupted": "stopped", "message": "message"},
        "match": [{"kind": "error", "when": {"type": "error"}}, {"kind": "ack", "when": {"type": "stopped"}},
                  {"kind": "final", "when": {"type": "end"}}, {"kind": "chunk", "when": {"type": "tok"}}],
        "session": {"create": {"method": "POST", "path": "/api/sessions", "id_path": "session.id",
                               "status": 201},
                    "delete": {"method": "DELETE", "path": "/api/sessions/{session_id}"}},
    }
    cfg.update(change)
    return load_adapter("declarative", config=cfg)


def test_a_session_is_made_over_http_before_the_websocket_and_removed_after():
    """POST makes the session, its id goes in the WebSocket path; DELETE follows the close; both recorded."""
    async def body():
        async with ToyAgent() as srv:
            h = History()
            c = Client(srv.url, adapter=toy_adapter(), history=h, name="c1")
            await c.connect(timeout=5)
            assert c.session_id == c.made_session == "s1"
            reply = await c.reply(await c.request("hi"), 5)
            assert reply.complete and reply.text == "w0 w1 w2 w3 w4 "
            await c.close()
            assert srv.deleted == ["s1"] and not srv.sessions
            (made,) = ops(h, "session_create")
            (gone,) = ops(h, "session_delete")
            assert (made.outcome, made.data["session_id"], made.data["status"]) == ("ok", "s1", 201)
            assert made.data["url"] == f"http://127.0.0.1:{srv.port}/api/sessions"
            assert (gone.outcome, gone.data["status"], gone.data["removed"]) == ("ok", 204, True)
            (closed,) = h.observations("closed", "c1")
            assert made.ended_ns <= ops(h, "connect")[0].ended_ns <= closed.t_ns <= gone.started_ns
    run(body)


def test_a_refused_session_is_a_connect_error_quoting_the_answer():
    """A creation answered 503 fails connect with the status and the body; no WebSocket is tried."""
    async def body():
        async with ToyAgent(create_status=503) as srv:
            h = History()
            with pytest.raises(ConnectError, match=r"answered 503, expected 201: \{.*no sessions today"):
                await Client(srv.url, adapter=toy_adapter(), history=h).connect(timeout=5)
            assert [op.outcome for op in ops(h, "session_create")] == ["fail"]
            assert not ops(h, "session_delete")
    run(body)


def test_a_session_can_be_made_by_a_frame_on_another_websocket():
    """session.create.ws: a frame on /control is answered by one carrying the session id."""
    async def body():
        async with ToyAgent() as srv:
            adapter = toy_adapter(session={"create": {"ws": "/control", "send": {"type": "new", "who": "{client}"},
                                                      "id_path": "session"}})
            async with Client(srv.url, adapter=adapter, name="c7") as c:
                assert c.session_id == "w1"
                assert (await c.reply(await c.request("hi"), 5)).complete
    run(body)


def test_frames_without_ids_go_to_the_oldest_unfinished_request_and_acks_get_their_interrupt():
    """Order correlation: tokens and ends find their request; the id-less ACK answers the interrupt, with what it stopped."""
    async def body():
        async with ToyAgent() as srv:
            h = History()
            async with Client(srv.url, adapter=toy_adapter(), history=h, name="c1") as c:
                first = await c.reply(await c.request("one"), 5)
                rid = await c.request("two", n=1000)
                assert await c.wait_frame(lambda f: f.request_id == rid and f.kind == "chunk", 5)
                result = await c.interrupt(None, timeout=5)
                stopped = await c.reply(rid, 5)
                idle = await c.interrupt(None, timeout=5)
            assert first.complete and len(first.chunks) == 5 and not first.interrupted
            assert stopped.interrupted and stopped.final.t_ns <= result.ack.t_ns
            assert (result.status, result.interrupted_ids, result.answered_by) == ("SUCCESS", [rid], "ack")
            assert result.ack.request_id == result.interrupt_id
            assert (idle.status, idle.interrupted_ids) == ("NOT_FOUND", [])
            recs = [o.data for o in h.observations("frame", "c1")]
            assert {r["request_id"] for r in recs if r["kind"] in ("chunk", "final")} == {"c1-r1", rid}
            acks = [r for r in recs if r["kind"] == "ack"]
            assert [a["request_id"] for a in acks] == [result.interrupt_id, idle.interrupt_id]
            assert acks[0]["derived"] == ["request_id", "interrupted_ids", "status"]
            assert all(r["derived"] == ["request_id"] for r in recs if r["kind"] == "chunk")
    run(body)


def test_an_error_without_an_id_refuses_the_request_just_sent():
    """A busy ERROR answers the second request; the first streams on to its end."""
    async def body():
        async with ToyAgent() as srv:
            async with Client(srv.url, adapter=toy_adapter()) as c:
                long = await c.request("one", n=40)
                await c.wait_frame(lambda f: f.kind == "chunk", 5)
                refused = await c.reply(await c.request("two"), 5)
                done = await c.reply(long, 5)
            assert refused.error is not None and refused.error.message == "busy" and not refused.chunks
            assert done.complete and len(done.chunks) == 40
    run(body)


def test_without_an_ack_the_stopped_replys_end_answers_and_is_measured():
    """interrupt.answer = "final": latency runs to the end of the reply; nothing running is answered at once."""
    cfg_fields = {"delta": "text", "interrupted": False}
    adapter = toy_adapter(
        correlation="id", request_id_path="id", fields=cfg_fields,
        request={"template": {"type": "ask", "id": "{request_id}", "text": "{text}"}, "options_path": "opts"},
        interrupt={"template": {"type": "stop", "id": "{target}"}, "answer": "final"})

    async def body():
        async with ToyAgent(answer="final", ids=True) as srv:
            h = History()
            async with Client(srv.url, adapter=adapter, history=h, name="c1") as c:
                rid = await c.request("long", n=1000)
                assert await c.wait_frame(lambda f: f.request_id == rid and f.kind == "chunk", 5)
                result = await c.interrupt(rid, timeout=5)
                reply = await c.reply(rid, 5)
                nothing = await c.interrupt("no-such-request", timeout=5)
            assert (result.answered_by, result.status, result.interrupted_ids) == ("final", "SUCCESS", [rid])
            assert result.answer is reply.final and result.acked_ns == reply.final.t_ns
            assert result.latency_ms == pytest.approx((reply.final.t_ns - result.sent_ns) / 1e6)
            assert reply.interrupted  # the service does not say; it ended after a stop aimed at it
            assert (nothing.answered_by, nothing.status, nothing.latency_ms) == ("nothing", "NOT_FOUND", None)
            recs = [o.data for o in h.observations("frame", "c1")]
            final_at = next(i for i, r in enumerate(recs) if r["kind"] == "final")
            assert recs[final_at]["derived"] == ["interrupted"]
            assert recs[final_at + 1]["kind"] == "ack" and "kind" in recs[final_at + 1]["derived"]
            first, second = ops(h, "interrupt")
            assert (first.data["answered_by"], first.data["latency_ms"]) == ("final", result.latency_ms)
            assert "latency_ms" not in second.data and second.data["answered_by"] == "nothing"
    run(body)


def test_an_ack_without_a_final_ends_the_cancelled_reply_and_its_late_frames_stay_its_own():
    """interrupt.answer = "ack": the reply ends at the ACK; late numbered frames after it are the cancelled one's."""
    adapter = toy_adapter(binary=[{"kind": "chunk", "prefix": "T", "size": 5, "seq": {"offset": 1, "format": "<I"}}],
                          interrupt={"template": {"type": "stop"}, "answer": "ack"})

    async def body():
        async with ToyAgent(answer="ack", binary=True, late=3) as srv:
            h = History()
            async with Client(srv.url, adapter=adapter, history=h, name="c1") as c:
                rid = await c.request("long", n=1000)
                assert await c.wait_frame(lambda f: f.request_id == rid and f.kind == "chunk", 5)
                result = await c.interrupt(None, timeout=5)
                cut = await c.reply(rid, 1)
                nxt = await c.request("next")  # sent before the late frames are read
                assert await c.wait_frame(lambda f: f.request_id == nxt and f.kind == "final", 5)
            assert (result.status, result.interrupted_ids) == ("SUCCESS", [rid])
            assert cut.complete and cut.interrupted and cut.final.derived == ("kind", "request_id", "interrupted")
            recs = [o.data for o in h.observations("frame", "c1")]
            ack_at = next(i for i, r in enumerate(recs) if r["kind"] == "ack")
            assert recs[ack_at - 1]["kind"] == "final" and recs[ack_at - 1]["request_id"] == rid
            after = [(r["request_id"], r["kind"], r["seq"]) for r in recs[ack_at + 1:]]
            # The late frames (100, 101, 102 and an end) are the cancelled request's; the next starts at 0.
            assert after[:4] == [(rid, "chunk", 100), (rid, "chunk", 101), (rid, "chunk", 102), (rid, "final", None)]
            assert next(a for a in after[4:] if a[1] == "chunk") == (nxt, "chunk", 0)
            assert after[-1] == (nxt, "final", None)
    run(body)


def test_concurrent_heartbeats_each_get_the_ack_that_echoes_their_id():
    """Two heartbeats in flight: an ACK naming one answers that one, never the other too."""
    async def body():
        async with MiniServer() as srv:
            h = History()
            async with Client(srv.url, history=h) as c:
                first, second = await asyncio.gather(c.heartbeat(timeout=5), c.heartbeat(timeout=5))
            assert first.request_id != second.request_id
            assert [op.data["request_id"] for op in ops(h, "heartbeat")] == [first.request_id, second.request_id]
    run(body)
