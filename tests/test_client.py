"""The asyncio client against an in-process server: operations and observations as the conventions say."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.client.connection import Client, ConnectError, ConnectionLost
from harness.core.history import History
from harness.protocol.adapters import load_adapter
from harness.target.spec import RemoteAddressError, load_target

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "servers"))
from decl_ws import TalkServer
from mini_ws import MiniServer

ROOT = Path(__file__).resolve().parent.parent


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
