"""Reference server: each --fault switch, shown to produce its bug.

Quick direct demonstrations, not the full scenarios. Switches that do not
interfere share one server to keep the suite short.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import statistics
import time

import psutil
import pytest
from _refproc import WS, RefServer, get_json, masked_text_frame, raw_ws_socket, run, wait_stats

from harness.target.spec import DEFAULT_NOISE
from harness.upstream.fake import FakeUpstream


def test_leaks_dup_events_no_max_size_bad_json_no_keepalive():
    """leak_tasks/subscriptions/session_table/memory, dup_events, no_max_size, bad_json_closes, no_keepalive."""
    faults = ["leak_tasks", "leak_subscriptions", "leak_session_table", "leak_memory", "dup_events",
              "no_max_size", "bad_json_closes", "no_keepalive"]
    args = [a for f in faults for a in ("--fault", f)] + ["--max-size", "1000", "--heartbeat-interval", "0.3"]
    with RefServer(args) as srv:
        async def body():
            rss0 = psutil.Process(srv.pid).memory_info().rss
            # dup_events: a second SUBSCRIBE doubles delivery.
            ws = await WS.open(srv.ws_url)
            await ws.send("SUBSCRIBE", topic="t")
            await ws.send("SUBSCRIBE", topic="t")
            await ws.send("PUBLISH", topic="t", data=1)
            await ws.send("HEARTBEAT", "sync")
            await ws.until(lambda f: f["request_id"] == "sync")
            await ws.quiet(0.1)
            assert sum(1 for f in ws.frames if f["msg_type"] == "EVENT") == 2
            # no_max_size: an oversize frame is accepted.
            await ws.send("HEARTBEAT", "big", pad="x" * 5000)
            await ws.until(lambda f: f["request_id"] == "big")
            # leak_tasks / leak_subscriptions / leak_session_table: nothing released on disconnect.
            await ws.request("long", chunks=100000, chunk_delay_ms=20)
            await ws.close()
            stats = await wait_stats(srv.http, lambda s: s["sessions"] == 0)
            assert stats["active_requests"] == 1 and stats["subscriptions"] == 2 and stats["per_session_state"] >= 1
            # leak_memory: 256 KiB per connection stays.
            for _ in range(40):
                c = await WS.open(srv.ws_url)
                await c.close()
            assert psutil.Process(srv.pid).memory_info().rss - rss0 > 8e6
            # bad_json_closes: a non-JSON frame costs the connection.
            bad = await WS.open(srv.ws_url)
            await bad.conn.send("{oops")
            assert await bad.closed() == 1003
            # no_keepalive: a peer that never answers pings is never dropped.
            silent = raw_ws_socket(srv.host, srv.port)
            try:
                await wait_stats(srv.http, lambda s: s["connections"] == 1)
                await asyncio.sleep(1.2)  # four heartbeat intervals: the observation window itself
                _, stats = await get_json(srv.http + "/stats")
                assert stats["connections"] == 1
            finally:
                silent.close()

        run(body())


@pytest.mark.slow
def test_stats_lie_unbounded_buffer_type_error_closes():
    """stats_lie reports idle while busy; unbounded_buffer grows memory; type_error_closes -> 1011."""
    args = ["--fault", "stats_lie", "--fault", "unbounded_buffer", "--fault", "type_error_closes"]
    with RefServer(args) as srv:
        async def body():
            ws = await WS.open(srv.ws_url)
            await ws.request("r", chunks=1000, chunk_delay_ms=10)
            await ws.until(lambda f: f.get("request_id") == "r")
            _, stats = await get_json(srv.http + "/stats")
            assert stats["sessions"] == 0 and stats["active_requests"] == 0 and stats["connections"] == 0
            await ws.send("REQUEST", "t", text=42)
            assert await ws.closed() == 1011
            proc = psutil.Process(srv.pid)
            rss0 = proc.memory_info().rss
            sock = raw_ws_socket(srv.host, srv.port)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(masked_text_frame(json.dumps({
                    "msg_type": "REQUEST", "request_id": "flood",
                    "payload": {"text": "x" * 1000, "options": {"chunks": 100000, "chunk_delay_ms": 0}}})))
                deadline = time.monotonic() + 15
                while proc.memory_info().rss - rss0 < 40e6:
                    assert time.monotonic() < deadline, "memory did not grow under a slow consumer"
                    await asyncio.sleep(0.05)
            finally:
                sock.close()

        run(body())


def _shutdown_noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in DEFAULT_NOISE)]


def test_noisy_bad_exit_no_final_health_ok_accept_during_drain():
    """noisy_shutdown, bad_exit_code, shutdown_no_final, health_ok_during_drain, accept_during_drain."""
    args = ["--drain-delay-ms", "800"] + [a for f in ("noisy_shutdown", "bad_exit_code", "shutdown_no_final",
                                                      "health_ok_during_drain", "accept_during_drain")
                                          for a in ("--fault", f)]
    with RefServer(args) as srv:
        async def body():
            ws = await WS.open(srv.ws_url)
            await ws.request("r", chunks=100000, chunk_delay_ms=5)
            await ws.until(lambda f: f.get("request_id") == "r")
            srv.signal(signal.SIGINT)
            assert await ws.closed() == 1001
            assert not [f for f in ws.of("r") if f["payload"]["final"]]  # no final frame
            status, _ = await get_json(srv.http + "/health")
            assert status == 200
            late = await WS.open(srv.ws_url)  # accepted while draining
            await late.close()

        run(body())
        assert srv.wait_exit(5) == 1
        assert any("KeyboardInterrupt" in x for x in _shutdown_noise(srv.output()))
        assert "Task was destroyed but it is pending" in srv.output()


@pytest.mark.slow
def test_shutdown_abrupt_ignore_second_sigint_orphan_child():
    """shutdown_abrupt drops without a close frame; a second SIGINT is ignored; a child keeps the port."""
    args = ["--drain-delay-ms", "1000", "--fault", "shutdown_abrupt", "--fault", "ignore_second_sigint",
            "--fault", "orphan_child"]
    with RefServer(args) as srv:
        port = srv.port
        children = psutil.Process(srv.pid).children()
        assert children
        async def body():
            ws = await WS.open(srv.ws_url)
            srv.signal(signal.SIGINT)
            assert await ws.closed() is None  # 1006: no close frame

        run(body())
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(0.6) is None  # the second Ctrl+C did nothing
        assert srv.wait_exit(5) == 0
        assert all(c.is_running() for c in children)
        listeners = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                     and c.status == psutil.CONN_LISTEN]
        assert listeners, "the orphan should still hold the listening socket"


@pytest.mark.slow
def test_to_thread_blocking_holds_the_exit():
    """to_thread_blocking: a 2.5 s blocking agent in the default executor delays exit past it."""
    with RefServer(["--fault", "to_thread_blocking"]) as srv:
        async def body():
            ws = await WS.open(srv.ws_url)
            await ws.request("b", agent="blocking", block_ms=2500)
            await ws.send("HEARTBEAT", "sync")
            await ws.until(lambda f: f["request_id"] == "sync")
            return srv.signal(signal.SIGINT)

        t0 = run(body())
        assert srv.wait_exit(8) == 0
        assert (time.monotonic_ns() - t0) / 1e9 > 1.8


def test_nondaemon_thread_needs_the_watchdog():
    """nondaemon_thread: the exit hangs on a thread until the watchdog ends it with code 1."""
    with RefServer(["--fault", "nondaemon_thread", "--hard-limit", "1"]) as srv:
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(5) == 1
        assert "background-flusher" in srv.stderr.decode() or "Thread 0x" in srv.stderr.decode()


def test_no_watchdog_hangs_past_the_hard_limit():
    """no_watchdog with a stuck drain: still running well after the hard limit."""
    with RefServer(["--fault", "no_watchdog", "--stuck-drain", "--hard-limit", "0.5"]) as srv:
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(1.5) is None


async def _streaming(srv: RefServer, rid: str = "r", **opts: object) -> WS:
    ws = await WS.open(srv.ws_url)
    await ws.request(rid, chunks=opts.pop("chunks", 1000), chunk_delay_ms=opts.pop("chunk_delay_ms", 5), **opts)
    await ws.until(lambda f: f.get("request_id") == rid and f["payload"]["seq"] >= 2)
    return ws


def test_interrupt_inline():
    """interrupt_inline: the ACK waits for the whole stream and finds nothing to stop."""
    with RefServer(["--fault", "interrupt_inline"]) as srv:
        async def body():
            ws = await _streaming(srv, chunks=60, chunk_delay_ms=10)
            t0 = time.monotonic_ns()
            await ws.interrupt("i", "r")
            ack = await ws.ack("i")
            assert (ack["_t"] - t0) / 1e6 > 200 and ack["payload"]["status"] == "NOT_FOUND"

        run(body())


def test_ack_without_cancel():
    """ack_without_cancel: SUCCESS, yet the stream runs on after the ACK."""
    with RefServer(["--fault", "ack_without_cancel"]) as srv:
        async def body():
            ws = await _streaming(srv)
            await ws.interrupt("i", "r")
            ack = await ws.ack("i")
            assert ack["payload"]["interrupted"] == ["r"]
            await ws.until(lambda f: f.get("request_id") == "r" and f["_t"] > ack["_t"])

        run(body())


def test_late_chunks():
    """late_chunks: a few chunks of the interrupted request arrive after its ACK."""
    with RefServer(["--fault", "late_chunks"]) as srv:
        async def body():
            for _ in range(5):
                ws = await _streaming(srv, chunk_delay_ms=2)
                await ws.interrupt("i", "r")
                ack = await ws.ack("i")
                late = [f for f in await ws.quiet(0.15) if f.get("request_id") == "r"]
                if late:
                    assert ack["payload"]["interrupted"] == ["r"]
                    return
            raise AssertionError("no chunk after the ACK in 5 tries")

        run(body())


def test_ack_before_final():
    """ack_before_final: the ACK overtakes the interrupted final."""
    with RefServer(["--fault", "ack_before_final"]) as srv:
        async def body():
            ws = await _streaming(srv)
            await ws.interrupt("i", "r")
            await ws.ack("i")
            fin = await ws.final("r")
            assert fin["payload"]["interrupted"] is True

        run(body())


def test_double_claim():
    """double_claim: two INTERRUPTs in flight for one request both claim it."""
    with RefServer(["--fault", "double_claim"]) as srv:
        async def body():
            ws = await _streaming(srv)
            await ws.interrupt("i1", "r")
            await ws.interrupt("i2", "r")
            a1, a2 = await ws.ack("i1"), await ws.ack("i2")
            assert a1["payload"]["interrupted"] == a2["payload"]["interrupted"] == ["r"]

        run(body())


def test_global_request_ids_and_sticky_interrupt():
    """global_request_ids: a foreign id is cancelled; sticky_interrupt: the next request ends at once."""
    with RefServer(["--fault", "global_request_ids", "--fault", "sticky_interrupt"]) as srv:
        async def body():
            victim = await _streaming(srv, "shared")
            other = await WS.open(srv.ws_url)
            await other.interrupt("i", "shared")
            ack = await other.ack("i")
            assert ack["payload"]["status"] == "SUCCESS"
            fin = await victim.final("shared")
            assert fin["payload"]["interrupted"] is True
            await other.request("next", chunks=5, chunk_delay_ms=1)
            fin = await other.final("next")
            assert fin["payload"]["interrupted"] is True and fin["payload"]["seq"] == 0

        run(body())


@pytest.mark.slow
def test_upstream_left_open_blocking_output_leak_blocking_serializes():
    """upstream_left_open keeps reading after a cancel; late blocking output leaks; blocking calls queue."""

    async def body():
        async with FakeUpstream(tokens=40, token_delay_ms=10) as up:
            args = ["--fault", "upstream_left_open", "--fault", "blocking_output_leak", "--fault", "blocking_serializes"]
            with RefServer(args, env={"OPENAI_BASE_URL": up.base_url}) as srv:
                ws = await _streaming(srv, "u", agent="upstream")
                await ws.interrupt("i", "u")
                await ws.ack("i")
                assert await up.wait_stream_closed(0, 0.3) is None  # not closed within 300 ms
                rec = await up.wait_stream_closed(0, 5)
                assert rec is not None and rec.completed  # read to the very end
                await ws.request("b", chunks=1, agent="blocking", block_ms=300)
                await wait_stats(srv.http, lambda s: s["agent_threads"] == 1)
                await ws.interrupt("ib", "b")
                await ws.ack("ib")
                await ws.until(lambda f: f.get("request_id") == "b" and f["payload"].get("delta") == "late ")
                await ws.request("slow", chunks=1, agent="blocking", block_ms=1500)
                await ws.send("HEARTBEAT", "sync")
                await ws.until(lambda f: f["request_id"] == "sync")
                t0 = time.monotonic()
                await ws.request("quick", chunks=1, chunk_delay_ms=0, agent="blocking", block_ms=1)
                await ws.final("quick")
                assert time.monotonic() - t0 > 1.0  # waited behind the stuck one

    run(body())


@pytest.mark.slow
def test_handler_growth_slows_every_later_frame():
    """handler_growth: after many connections each frame costs measurably more."""
    with RefServer(["--fault", "handler_growth"]) as srv:
        async def rtt(ws: WS) -> float:
            samples = []
            for k in range(20):
                t0 = time.monotonic_ns()
                await ws.send("HEARTBEAT", f"h{k}")
                f = await ws.until(lambda f, k=k: f["request_id"] == f"h{k}")
                samples.append((f["_t"] - t0) / 1e6)
            return statistics.median(samples)

        async def body():
            ws = await WS.open(srv.ws_url)
            before = await rtt(ws)
            for _ in range(15):
                batch = await asyncio.gather(*(WS.open(srv.ws_url) for _ in range(20)))
                await asyncio.gather(*(c.close() for c in batch))
            after = await rtt(ws)
            assert after > 1.5 * before, (before, after)

        run(body())
