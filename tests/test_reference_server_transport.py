"""Reference server: transport, /health, /stats, session lifecycle, flags."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from _refproc import ROOT, WS, RefServer, get_json, run, wait_stats

IDLE = {"connections": 0, "sessions": 0, "active_requests": 0, "subscriptions": 0,
        "agent_threads": 0, "per_session_state": 0}


def _idle(stats: dict) -> bool:
    return all(stats[k] == v for k, v in IDLE.items())


@pytest.fixture(scope="module")
def srv():
    with RefServer() as s:
        yield s


def test_listening_line_health_and_stats_fields(srv):
    """It prints LISTENING host:port, answers /health 200 and /stats with every field."""
    assert srv.host == "127.0.0.1" and srv.port > 0

    async def body():
        status, health = await get_json(srv.http + "/health")
        assert (status, health) == (200, {"status": "ok"})
        status, stats = await get_json(srv.http + "/stats")
        assert status == 200
        assert set(stats) == {"pid", "uptime_s", "shutting_down", "connections", "sessions",
                              "active_requests", "subscriptions", "tasks", "threads",
                              "agent_threads", "per_session_state"}
        assert stats["pid"] == srv.pid and stats["shutting_down"] is False
        assert _idle(stats) and stats["threads"] >= 1 and stats["tasks"] >= 1

    run(body())


def test_session_ready_first_and_stats_follow_sessions(srv):
    """SESSION_READY comes first; /stats counts the session and returns to idle after close."""

    async def body():
        _, base = await get_json(srv.http + "/stats")
        ws = await WS.open(srv.ws_url)
        ready = ws.frames[0]
        assert ready["session_id"] == ready["payload"]["session_id"]
        assert ready["payload"]["max_concurrent_requests"] == 8
        assert ready["payload"]["heartbeat_interval_s"] == 10
        assert set(ready["payload"]["server"]) >= {"name", "version"}
        await ws.request("r1", chunks=500, chunk_delay_ms=10)
        await ws.send("SUBSCRIBE", topic="t")
        stats = await wait_stats(srv.http, lambda s: s["active_requests"] == 1 and s["subscriptions"] == 1)
        assert stats["connections"] == 1 and stats["sessions"] == 1 and stats["per_session_state"] >= 1
        await ws.close()
        idle = await wait_stats(srv.http, _idle)
        await wait_stats(srv.http, lambda s: s["tasks"] == base["tasks"] and s["threads"] == base["threads"])
        assert idle["shutting_down"] is False

    run(body())


def test_tcp_reset_releases_everything(srv):
    """A client that vanishes with a TCP reset mid-stream leaves nothing behind."""

    async def body():
        _, base = await get_json(srv.http + "/stats")
        clients = [await WS.open(srv.ws_url) for _ in range(5)]
        for i, ws in enumerate(clients):
            await ws.request(f"r{i}", chunks=1000, chunk_delay_ms=5)
            await ws.request(f"s{i}", chunks=1000, chunk_delay_ms=5)
            await ws.send("SUBSCRIBE", topic=f"topic{i % 2}")
        await wait_stats(srv.http, lambda s: s["active_requests"] == 10 and s["subscriptions"] == 5)
        for ws in clients:
            ws.abort()
        await wait_stats(srv.http, lambda s: _idle(s) and s["tasks"] == base["tasks"])

    run(body())


def test_oversize_frame_closes_only_that_connection_with_1009():
    """A frame over --max-size closes its own connection with 1009; others keep working."""
    with RefServer(["--max-size", "1000"]) as srv:
        async def body():
            big, other = await WS.open(srv.ws_url), await WS.open(srv.ws_url)
            await big.send("HEARTBEAT", "h", pad="x" * 2000)
            assert await big.closed() == 1009
            await other.send("HEARTBEAT", "h2")
            ack = await other.until(lambda f: f["msg_type"] == "HEARTBEAT_ACK")
            assert ack["request_id"] == "h2"
            await other.close()
            await wait_stats(srv.http, _idle)

        run(body())


def test_bad_flags_are_refused_without_traceback():
    """Unknown faults, remote hosts and bad numbers exit 2 with one clear message."""
    cases = [
        (["--fault", "no_such_fault"], "unknown fault 'no_such_fault'"),
        (["--host", "10.1.2.3"], "not a loopback address"),
        (["--grace", "-1"], "--grace"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "reference_server", "--port", "0", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for args, _ in cases]
    try:
        for p, (_, needle) in zip(procs, cases, strict=True):
            out, err = p.communicate(timeout=30)
            assert p.returncode == 2
            assert needle in err and "Traceback" not in err
            assert "LISTENING" not in out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_port_in_use_is_a_clear_error(srv):
    """Binding a port that is taken fails with a message, exit 2, no traceback."""
    p = subprocess.run([sys.executable, "-m", "reference_server", "--port", str(srv.port)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30, start_new_session=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode == 2, p.stderr
    assert "cannot listen" in p.stderr and "Traceback" not in p.stderr


def test_many_sessions_are_independent(srv):
    """Twenty sessions streaming at once each get their own complete reply."""

    async def body():
        clients = await asyncio.gather(*(WS.open(srv.ws_url) for _ in range(20)))
        for i, ws in enumerate(clients):
            await ws.request("same-id", f"client {i}", chunks=10, chunk_delay_ms=5)
        finals = await asyncio.gather(*(ws.final("same-id") for ws in clients))
        for ws, fin in zip(clients, finals, strict=True):
            assert fin["payload"]["interrupted"] is False and fin["payload"]["seq"] == 10
            assert all(f["session_id"] == ws.session_id for f in ws.frames)
        await asyncio.gather(*(ws.close() for ws in clients))
        await wait_stats(srv.http, _idle)

    run(body())
