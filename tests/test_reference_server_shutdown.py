"""Reference server: every row of the shutdown table, with real signals."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time

import pexpect
import pytest
from _refproc import ROOT, WS, RefServer, get_json, run
from websockets.exceptions import InvalidHandshake

from harness.core.timing import scaled
from harness.target.spec import DEFAULT_NOISE


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in DEFAULT_NOISE)]


async def _streams(srv: RefServer, sessions: int, per: int, **opts: object) -> list[WS]:
    clients = await asyncio.gather(*(WS.open(srv.ws_url) for _ in range(sessions)))
    for ws in clients:
        for j in range(per):
            await ws.request(f"r{j}", chunks=100000, chunk_delay_ms=5, **opts)
        await ws.until(lambda f: f.get("request_id") == f"r{per - 1}")
    return clients


def test_sigint_finals_1001_exit_0_one_line():
    """First SIGINT: finals with reason "shutdown", close 1001, exit 0 within grace, one stderr line."""
    with RefServer() as srv:
        async def body():
            clients = await _streams(srv, 3, 3)
            t0 = srv.signal(signal.SIGINT)
            codes = await asyncio.gather(*(ws.closed() for ws in clients))
            assert codes == [1001, 1001, 1001]
            for ws in clients:
                for j in range(3):
                    fin = [f for f in ws.of(f"r{j}") if f["payload"]["final"]]
                    assert len(fin) == 1 and fin[0]["payload"]["interrupted"] is True
                    assert fin[0]["payload"]["reason"] == "shutdown"
            return t0

        t0 = run(body())
        rc = srv.wait_exit(3 + 1)
        exit_ms = (time.monotonic_ns() - t0) / 1e6
        assert rc == 0, srv.output()
        assert exit_ms < scaled(3000)
        err = srv.stderr.decode()
        assert len(err.splitlines()) == 1 and "shutting down" in err
        assert not _noise(srv.output())


def test_sigterm_during_drain_health_503_and_new_connections_refused():
    """SIGTERM: /health turns 503 and new WebSocket connections are refused while draining."""
    with RefServer(["--drain-delay-ms", "800"]) as srv:
        async def body():
            ws = await WS.open(srv.ws_url)
            srv.signal(signal.SIGTERM)
            assert await ws.closed() == 1001
            status, health = await get_json(srv.http + "/health")
            assert (status, health) == (503, {"status": "shutting_down"})
            # Refused during the drain: an HTTP 503 to the upgrade, or the socket closed.
            with pytest.raises((InvalidHandshake, OSError)):
                await WS.open(srv.ws_url)
            _, stats = await get_json(srv.http + "/stats")
            assert stats["shutting_down"] is True and stats["sessions"] == 0

        run(body())
        assert srv.wait_exit(5) == 0
        assert not _noise(srv.output())


def test_exit_within_grace_with_a_stuck_blocking_thread():
    """A blocking agent stuck for 60 s does not hold the exit: exit 0 within grace."""
    with RefServer() as srv:
        async def body():
            ws = await WS.open(srv.ws_url)
            await ws.request("b", agent="blocking", block_ms=60000)
            await asyncio.sleep(0)  # let the REQUEST go out before the signal
            await ws.send("HEARTBEAT", "sync")
            await ws.until(lambda f: f["request_id"] == "sync")
            t0 = srv.signal(signal.SIGINT)
            assert await ws.closed() == 1001
            fin = [f for f in ws.of("b") if f["payload"].get("final")]
            assert fin and fin[0]["payload"]["reason"] == "shutdown"
            return t0

        t0 = run(body())
        assert srv.wait_exit(4) == 0
        assert (time.monotonic_ns() - t0) / 1e6 < scaled(3000)
        assert not _noise(srv.output())


def test_second_sigint_exits_at_once_with_130():
    """A second SIGINT during a long drain exits within 500 ms with code 130."""
    with RefServer(["--drain-delay-ms", "20000"]) as srv:
        srv.signal(signal.SIGINT)
        srv.wait_for(re.compile(rb"shutting down"), 5, stream="stderr")
        assert srv.wait_exit(0.3) is None  # still draining
        t0 = srv.signal(signal.SIGINT)
        rc = srv.wait_exit(2)
        assert rc == 130
        assert (time.monotonic_ns() - t0) / 1e6 < scaled(500)


@pytest.mark.slow
def test_watchdog_dumps_stacks_and_exits_1_at_the_hard_limit():
    """--stuck-drain: the watchdog ends the process at the hard limit, code 1, every thread's stack."""
    with RefServer(["--stuck-drain", "--hard-limit", "1.5"]) as srv:
        t0 = srv.signal(signal.SIGINT)
        rc = srv.wait_exit(6)
        took = (time.monotonic_ns() - t0) / 1e9
        assert rc == 1
        assert 1.4 < took < scaled(4)
        err = srv.stderr.decode()
        assert "hard limit" in err and "Thread 0x" in err and "most recent call first" in err


@pytest.mark.slow
def test_real_ctrl_c_on_a_pty_with_20_open_streams():
    """Ctrl+C through a terminal with 20 open streams: clean exit 0, nothing noisy, fast."""
    child = pexpect.spawn(sys.executable, ["-m", "reference_server", "--port", "0"], cwd=str(ROOT),
                          env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, timeout=scaled(15))
    try:
        child.expect(rb"LISTENING (\S+):(\d+)")
        host, port = child.match.group(1).decode(), int(child.match.group(2))

        async def body():
            class S:  # the minimal surface _streams needs
                ws_url = f"ws://{host}:{port}/ws"
            clients = await _streams(S, 5, 4)  # type: ignore[arg-type]
            t0 = time.monotonic_ns()
            child.sendintr()
            codes = await asyncio.gather(*(ws.closed() for ws in clients))
            assert codes == [1001] * 5
            return t0

        t0 = run(body())
        child.expect(pexpect.EOF, timeout=scaled(5))
        child.close()
        exit_ms = (time.monotonic_ns() - t0) / 1e6
        print(f"Ctrl+C with 20 open streams: exit after {exit_ms:.0f} ms")
        out = child.before.decode(errors="replace")
        assert child.exitstatus == 0, out
        assert exit_ms < scaled(3000)
        assert not _noise(out) and "shutting down" in out
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
            child.close(force=True)
