"""The nemesis: every fault it applies is an operation in the history, from begin to end."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.client.connection import Client
from harness.core.history import History, Operation
from harness.core.timing import now_ns
from harness.nemesis.faults import FaultNestingError
from harness.nemesis.nemesis import NEMESIS, Nemesis

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "servers"))
from mini_ws import MiniServer


def run(test: Callable[[], Awaitable[Any]], bound: float = 25.0) -> Any:
    """Run one async test body under a hard bound."""
    return asyncio.run(asyncio.wait_for(test(), bound))


def faults(history: History) -> list[Operation]:
    return history.operations(client=NEMESIS)


def test_stop_reading_is_a_span_from_pause_to_resume():
    """The span begins when reading stops and ends when it resumes; frames held inside arrive after."""
    async def body():
        h = History()
        nem = Nemesis(h)
        async with MiniServer() as srv, Client(srv.url, history=h, name="c1") as c:
            with nem.stop_reading(c):
                rid = await c.request("held", chunks=3)
                assert await c.wait_frame(lambda f: f.request_id == rid, 0.3) is None
                (op,) = faults(h)
                assert (op.kind, op.outcome, op.data["target"]) == ("stop_reading", "pending", "c1")
                with pytest.raises(FaultNestingError), nem.stop_reading(c):
                    pass
            resumed = now_ns()
            reply = await c.reply(rid, 5)
        span = [op for op in faults(h) if op.outcome == "ok"]
        assert [op.kind for op in span] == ["stop_reading"]
        assert span[0].ended_ns is not None and span[0].ended_ns <= resumed
        assert reply.complete and all(f.t_ns >= span[0].ended_ns for f in c.frames if f.request_id == rid)
        # The refused nested attempt is recorded as a fault that failed, not as one applied.
        assert [op.outcome for op in faults(h)] == ["ok", "fail"]
    run(body)


@pytest.mark.parametrize("how", ["rst", "fin"])
def test_rst_and_fin_are_instant_faults_the_server_sees(how):
    """An RST or a bare FIN ends the connection without a close frame; the fault records the close code."""
    async def body():
        h = History()
        async with MiniServer() as srv:
            c = Client(srv.url, history=h, name="c1")
            await c.connect()
            await getattr(Nemesis(h), how)(c)
            rec = await srv.wait_ended()
        (op,) = faults(h)
        assert (op.kind, op.outcome, op.data["target"], op.data["close_code"]) == (how, "ok", "c1", None)
        assert rec.how == how
    run(body)


def test_freeze_spans_sigstop_to_sigcont():
    """The process is stopped for exactly the span; the span records which process."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        h = History()
        with Nemesis(h).freeze(proc.pid, what="sleeper"):
            assert psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
            assert faults(h)[0].outcome == "pending"
        assert psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED
        (op,) = faults(h)
        assert (op.kind, op.outcome, op.data["pid"], op.data["target"]) == ("freeze", "ok", proc.pid, "sleeper")
    finally:
        proc.kill()
        proc.wait(5)


def test_freeze_of_a_missing_process_is_a_failed_fault():
    """A fault that could not be applied is recorded as failed with the error, and raised."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(5)
    h = History()
    with pytest.raises(ProcessLookupError), Nemesis(h).freeze(proc.pid, what="gone"):
        pass
    (op,) = faults(h)
    assert op.outcome == "fail" and "ProcessLookupError" in op.data["error"]


def test_signal_records_what_was_sent_to_whom():
    """A signal is an instant fault with the signal's name, the pid and when it was sent."""
    class Proc:
        name = "target1"

        def __init__(self, p: subprocess.Popen[bytes]) -> None:
            self.p, self.pid = p, p.pid

        def send_signal(self, sig: int) -> int:
            t = now_ns()
            self.p.send_signal(sig)
            return t

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        h = History()
        sent = Nemesis(h).signal(Proc(p), signal.SIGTERM)
        assert p.wait(5) == -signal.SIGTERM
        (op,) = faults(h)
        assert (op.kind, op.data["signal"], op.data["pid"], op.data["sent_ns"]) == ("signal", "SIGTERM", p.pid, sent)
        assert op.started_ns <= sent <= op.ended_ns
    finally:
        p.kill()
        p.wait(5)


def test_proxy_delay_and_reset_are_recorded():
    """Delaying through the proxy is a span with its ms; resetting it counts the connections it cut."""
    async def body():
        h = History()
        nem = Nemesis(h)
        async with MiniServer() as srv, nem.proxy("127.0.0.1", srv.port, name="edge") as proxy:
            c = Client(proxy.url(), history=h, name="c1")
            await c.connect()
            with nem.delay(proxy, 50):
                rid = await c.request("slow", chunks=1)
                reply = await c.reply(rid, 5)
            assert nem.reset(proxy) == 1
            assert await c.wait_closed(5) is not None
        kinds = [(op.kind, op.data["target"], op.outcome) for op in faults(h)]
        assert kinds == [("delay", "edge", "ok"), ("reset", "edge", "ok")]
        assert faults(h)[0].data["ms"] == 50 and faults(h)[1].data["count"] == 1
        assert reply.complete and reply.total_ms is not None and reply.total_ms >= 50
    run(body)
