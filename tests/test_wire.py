"""Each wire under the Client keeps RFC 6455 as a client must: fragments, size limit, pings,
flow control and the source address, against a plain websockets server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from harness.client.connection import Client, ClientError, ClientTimeout
from harness.client.wire import WIRES, use_wire, wire_available
from harness.core.history import History
from harness.protocol.adapters import ReferenceAdapter

READY = json.dumps({"msg_type": "SESSION_READY", "request_id": None, "session_id": "s1",
                    "payload": {"session_id": "s1"}})


@pytest.fixture(params=WIRES)
def wire(request: pytest.FixtureRequest) -> str:
    why = wire_available(request.param)
    if why is not None:
        pytest.skip(why)
    return str(request.param)


def run(body: Callable[[], Awaitable[Any]], bound: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(body(), bound))


async def _server(handler: Callable[[ServerConnection], Awaitable[None]], **kw: Any) -> Any:
    kw.setdefault("compression", None)
    return await serve(handler, "127.0.0.1", 0, **kw)


def _url(server: Any) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


def test_a_fragmented_message_is_one_frame(wire: str) -> None:
    """SESSION_READY sent in three fragments reaches the client as one message."""
    async def handler(ws: ServerConnection) -> None:
        await ws.send([READY[:10], READY[10:20], READY[20:]])
        await ws.wait_closed()

    async def body() -> None:
        async with await _server(handler) as srv:
            c = Client(_url(srv), history=History(), wire=wire)
            ready = await c.connect(timeout=5)
            assert ready.kind == "ready" and ready.session_id == "s1"
            await c.close(timeout=5)
    run(body)


def test_a_message_over_max_size_closes_with_1009(wire: str) -> None:
    """A 5,000-byte message to a client whose max_size is 1,000: it closes with 1009."""
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(READY)
        await ws.send("x" * 5000)
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            codes.append(exc.rcvd.code if exc.rcvd is not None else None)

    async def body() -> None:
        async with await _server(handler) as srv:
            c = Client(_url(srv), history=History(), wire=wire, max_size=1000)
            await c.connect(timeout=5)
            assert await c.wait_closed(5) is not None
        assert codes == [1009]
    run(body)


def test_pings_are_answered(wire: str) -> None:
    """The server's ping gets its pong while the client does nothing."""
    async def handler(ws: ServerConnection) -> None:
        await ws.send(READY)
        waiter = await ws.ping()
        await asyncio.wait_for(waiter, 5)
        await ws.send(json.dumps({"msg_type": "EVENT", "request_id": None,
                                  "payload": {"topic": "pong", "data": "seen"}}))
        await ws.wait_closed()

    async def body() -> None:
        async with await _server(handler) as srv:
            c = Client(_url(srv), history=History(), wire=wire)
            await c.connect(timeout=5)
            frame = await c.wait_frame(lambda f: f.kind == "event", 5)
            assert frame is not None and frame.payload["data"] == "seen"
            await c.close(timeout=5)
    run(body)


def test_a_send_to_a_peer_that_stopped_reading_is_bounded(wire: str) -> None:
    """The server never reads: sends fill the buffers and one ends at send_timeout, unknown."""
    async def handler(ws: ServerConnection) -> None:
        await ws.send(READY)
        ws.transport.pause_reading()
        await ws.wait_closed()

    async def body() -> None:
        async with await _server(handler, max_size=None) as srv:
            h = History()
            c = Client(_url(srv), history=h, wire=wire, send_timeout=0.5, close_timeout=1)
            await c.connect(timeout=5)
            with pytest.raises(ClientTimeout):
                for _ in range(200):
                    await c.send_raw("x" * 2**20)
            assert h.operations("send_raw")[-1].outcome == "unknown"
            await c.abort()
    run(body)


def test_a_client_connects_from_the_source_address_it_is_given(wire: str) -> None:
    """local_addr=127.0.0.2: the server sees the connection come from there."""
    peers: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        peers.append(ws.remote_address[0])
        await ws.send(READY)
        await ws.wait_closed()

    async def body() -> None:
        async with await _server(handler) as srv:
            c = Client(_url(srv), history=History(), wire=wire, local_addr=("127.0.0.2", 0))
            await c.connect(timeout=5)
            await c.close(timeout=5)
        assert peers == ["127.0.0.2"]
    run(body)


def test_an_unknown_wire_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wire name nobody knows: the client refuses it naming the choices, and so does --wire."""
    with pytest.raises(ClientError, match=r"unknown wire 'carrier-pigeon' \(one of: websockets, picows\)"):
        Client("ws://127.0.0.1:1/ws", wire="carrier-pigeon")
    monkeypatch.delenv("WSCHAOS_WIRE", raising=False)
    assert use_wire("carrier-pigeon") is not None
    assert use_wire("websockets") is None


def test_the_close_code_the_server_sent_is_recorded_as_a_plain_int(wire: str) -> None:
    """The server closes with 4001 "bye": the closed observation says 4001 (an int) and "bye"."""
    async def handler(ws: ServerConnection) -> None:
        await ws.send(READY)
        await ws.close(4001, "bye")

    async def body() -> None:
        async with await _server(handler) as srv:
            h = History()
            c = Client(_url(srv), history=h, wire=wire)
            await c.connect(timeout=5)
            assert await c.wait_closed(5) == (4001, "bye")
            (obs,) = h.observations("closed")
            assert type(obs.data["code"]) is int and obs.data["reason"] == "bye"
    run(body)


class _Brittle(ReferenceAdapter):
    """Raises on a frame it cannot read: a bug of wschaos's own, under the wire's callback."""

    def classify(self, raw: str | bytes, t_ns: int = 0) -> Any:
        if raw == "boom":
            raise ValueError("boom")
        return super().classify(raw, t_ns)


def test_a_failure_of_wschaos_under_the_wire_ends_the_connection_and_nothing_else(wire: str) -> None:
    """The adapter raises on one frame: the connection ends, the client says it is closed, the
    error reaches the loop's handler (or the reader task), and the interpreter is unharmed."""
    async def handler(ws: ServerConnection) -> None:
        await ws.send(READY)
        await ws.send("boom")
        await ws.wait_closed()

    errors: list[Any] = []

    async def body() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx.get("exception")))
        async with await _server(handler) as srv:
            c = Client(_url(srv), history=History(), wire=wire, adapter=_Brittle())
            await c.connect(timeout=5)
            assert await c.wait_closed(5) is not None
            assert c.closed
            if wire == "picows":
                assert isinstance(c.connection.error, ValueError)  # type: ignore[attr-defined]
    run(body)
    compile("x = 1\n" * 100, "<after>", "exec")  # a picows callback that raised once broke this


def test_the_clients_own_keepalive_ends_a_connection_whose_peer_stopped_reading(wire: str) -> None:
    """ping_interval / ping_timeout on either wire: the server stops reading (no pongs), and the
    client ends the connection on its own within a few intervals."""
    async def handler(ws: ServerConnection) -> None:
        await ws.send(READY)
        ws.transport.pause_reading()
        await ws.wait_closed()

    async def body() -> None:
        # The server's own close must not wait its default 10 s on the client that is gone.
        async with await _server(handler, close_timeout=0.2) as srv:
            c = Client(_url(srv), history=History(), wire=wire, ping_interval=0.2, ping_timeout=0.3,
                       close_timeout=0.5)
            await c.connect(timeout=5)
            assert await c.wait_closed(5) is not None, "the client's keepalive never gave up"
    run(body)


def test_compression_the_wire_lacks_is_a_clear_connect_error() -> None:
    """permessage-deflate on picows: refused by name, not silently left out."""
    if wire_available("picows") is not None:
        pytest.skip("picows is not installed")

    async def body() -> None:
        c = Client("ws://127.0.0.1:9/ws", wire="picows", compression="deflate")
        with pytest.raises(ClientError, match="picows wire has no 'deflate' compression"):
            await c.connect(timeout=5)
    run(body)
