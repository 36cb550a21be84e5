"""Client-side faults: each one acts, refuses to nest, and restores on exit."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.client.connection import Client, ClientTimeout
from harness.core.history import History
from harness.nemesis.faults import (
    FaultNestingError,
    PeerProcess,
    TcpProxy,
    frozen_process,
    paused_reading,
)

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "servers"))
from mini_ws import MiniServer


def run(test: Callable[[], Awaitable[Any]], bound: float = 25.0) -> Any:
    """Run one async test body under a hard bound."""
    return asyncio.run(asyncio.wait_for(test(), bound))


def test_paused_reading_holds_frames_until_it_ends():
    """While paused nothing is read; on exit the held reply arrives whole; nesting is refused."""
    async def body():
        async with MiniServer() as srv, Client(srv.url) as c:
            with paused_reading(c):
                assert not c.reading
                with pytest.raises(FaultNestingError), paused_reading(c):
                    pass
                rid = await c.request("held", chunks=3)
                # Timeline: the server streams at once; the client reads none of it.
                assert await c.wait_frame(lambda f: f.request_id == rid, 0.3) is None
            assert c.reading
            reply = await c.reply(rid, 5)
            assert reply.complete and reply.seqs == [0, 1, 2]
    run(body)


def test_frozen_peer_is_dropped_by_keepalive_and_continued_after():
    """1. a peer process connects; 2. SIGSTOP: it sends no pongs; 3. the server drops it;
    4. on exit it runs again. Result: the freeze is visible to the server and undone."""
    async def body():
        async with MiniServer(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.2) as srv:
            async with PeerProcess(srv.url, "idle") as peer:
                assert peer.session_id == srv.conns[0].session_id
                proc = psutil.Process(peer.pid)
                with frozen_process(peer.pid):
                    assert proc.status() == psutil.STATUS_STOPPED
                    with pytest.raises(FaultNestingError), frozen_process(peer.pid):
                        pass
                    record = await srv.wait_ended(0, timeout=5)
                    assert record.close_code_sent == 1011  # keepalive ping timeout
                assert proc.status() != psutil.STATUS_STOPPED
            assert peer.proc.returncode is not None
    run(body)


def test_peer_stream_mode_keeps_a_reply_flowing():
    """In stream mode the peer has a request in flight as soon as it is connected."""
    async def body():
        async with MiniServer() as srv, PeerProcess(srv.url, "stream"):
            request = await srv.wait_received("REQUEST", 0, timeout=5)
            assert request["payload"]["options"]["chunks"] > 1000
    run(body)


def test_proxy_passes_traffic():
    """Through the proxy in pass mode, a request completes as it would directly."""
    async def body():
        async with MiniServer() as srv, TcpProxy("127.0.0.1", srv.port) as proxy, Client(proxy.url()) as c:
            reply = await c.reply(await c.request("via proxy", chunks=5), 5)
            assert reply.complete and proxy.connections == 1
    run(body)


def test_blackhole_holds_both_directions_then_releases():
    """Black-holed: the heartbeat never reaches the server; after, held bytes flow on."""
    async def body():
        async with MiniServer() as srv, TcpProxy("127.0.0.1", srv.port) as proxy:
            h = History()
            async with Client(proxy.url(), history=h) as c:
                with proxy.blackhole():
                    assert proxy.mode == "blackhole"
                    with pytest.raises(FaultNestingError), proxy.delay(10):
                        pass
                    with pytest.raises(ClientTimeout):
                        await c.heartbeat(timeout=0.3)
                    assert not any(m.get("msg_type") == "HEARTBEAT" for m in srv.conns[0].received)
                assert proxy.mode == "pass"
                assert await c.wait_frame(lambda f: f.kind == "heartbeat_ack", 5) is not None
            assert ops_outcomes(h, "heartbeat") == ["unknown"]
    run(body)


def ops_outcomes(h: History, kind: str) -> list[str]:
    return [o.outcome for o in h.operations(kind)]


def test_delay_adds_latency_each_way():
    """delay(100) puts at least 200 ms on a round trip, and is gone after."""
    async def body():
        async with MiniServer() as srv, TcpProxy("127.0.0.1", srv.port) as proxy:
            h = History()
            async with Client(proxy.url(), history=h) as c:
                with proxy.delay(100):
                    await c.heartbeat(timeout=5)
                await c.heartbeat(timeout=5)
            slow, fast = h.operations("heartbeat")
            assert slow.duration_ms >= 195
            assert fast.duration_ms < 100
    run(body)


def test_reset_all_sends_rst_both_ways():
    """reset_all: the client sees an abnormal close, the server a TCP reset."""
    async def body():
        async with MiniServer() as srv, TcpProxy("127.0.0.1", srv.port) as proxy:
            c = Client(proxy.url())
            await c.connect()
            assert proxy.reset_all() == 1
            assert await c.wait_closed(5) == (None, "")
            record = await srv.wait_ended(timeout=5)
            assert record.how == "rst"
    run(body)


def test_proxy_to_nothing_refuses_like_a_closed_port():
    """An upstream that is down looks like a reset connection to the client."""
    async def body():
        async with MiniServer() as srv:
            port = srv.port
        async with TcpProxy("127.0.0.1", port) as proxy:
            with pytest.raises(Exception, match="failed"):
                await Client(proxy.url()).connect(timeout=5)
    run(body)
