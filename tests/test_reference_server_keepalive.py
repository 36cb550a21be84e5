"""Reference server: keepalive pings, silent peers dropped, slow consumers bounded."""

from __future__ import annotations

import json
import time

import psutil
import pytest
from _refproc import WS, RefServer, masked_text_frame, raw_ws_socket, run, wait_stats


def test_live_client_kept_and_silent_peer_dropped_and_released():
    """With a 0.5 s interval a pong-answering client stays; a silent one is dropped within two intervals."""
    with RefServer(["--heartbeat-interval", "0.5"]) as srv:
        async def body():
            live = await WS.open(srv.ws_url)
            silent = raw_ws_socket(srv.host, srv.port)  # never reads, never answers a ping
            try:
                silent.sendall(masked_text_frame(json.dumps(
                    {"msg_type": "SUBSCRIBE", "payload": {"topic": "t"}})))
                await wait_stats(srv.http, lambda s: s["sessions"] == 2 and s["subscriptions"] == 1)
                t0 = time.monotonic()
                await wait_stats(srv.http, lambda s: s["sessions"] == 1, timeout=3)
                dropped_after = time.monotonic() - t0
                assert dropped_after < 1.0 + 0.5  # two intervals, plus polling slack
                stats = await wait_stats(srv.http, lambda s: s["subscriptions"] == 0 and s["per_session_state"] == 2)
                assert stats["connections"] == 1
                # The live client answered every ping and is still served.
                await live.send("HEARTBEAT", "still-here")
                await live.until(lambda f: f["request_id"] == "still-here")
                await live.close()
            finally:
                silent.close()

        run(body())


@pytest.mark.slow
def test_slow_consumer_is_bounded_and_does_not_slow_others():
    """A client that never reads a 100 MB reply costs the server little memory; others stream on."""
    with RefServer() as srv:
        async def body():
            proc = psutil.Process(srv.pid)
            rss0 = proc.memory_info().rss
            sock = raw_ws_socket(srv.host, srv.port)
            try:
                sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
                sock.sendall(masked_text_frame(json.dumps({
                    "msg_type": "REQUEST", "request_id": "flood",
                    "payload": {"text": "x" * 1000, "options": {"chunks": 100000, "chunk_delay_ms": 0}}})))
                await wait_stats(srv.http, lambda s: s["active_requests"] == 1)
                other = await WS.open(srv.ws_url)
                t0 = time.monotonic()
                await other.request("r", chunks=50, chunk_delay_ms=10)
                await other.final("r", timeout=10)
                took = time.monotonic() - t0
                assert took < 2.5, took  # 50 x 10 ms, not stalled behind the flood
                growth = (proc.memory_info().rss - rss0) / 1e6
                assert growth < 40, f"RSS grew {growth:.0f} MB under a slow consumer"
                await other.close()
            finally:
                sock.close()
            await wait_stats(srv.http, lambda s: s["sessions"] == 0 and s["active_requests"] == 0)

        run(body())
