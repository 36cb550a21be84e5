"""Figure 3: how long the reference server takes to exit on Ctrl+C with 100 open streams.

* First Ctrl+C: the server runs on a pty (``Supervisor(pty=True).ctrl_c()``,
  the terminal's interrupt character, as a person types it); 100 replies are
  streaming (20 sessions x 5, under the server's 8-per-session limit); the
  figure is the supervisor's ``exit_ms``, from the keystroke to the reaped
  exit, over several runs.
* Second Ctrl+C: the server is started with ``--drain-delay-ms 2000`` (a
  shutdown step to cut short); Ctrl+C, wait until every stream got its
  shutdown final (the drain has begun), Ctrl+C again; the figure runs from
  the second keystroke to the exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from harness.client.connection import Client
from harness.core.history import History
from harness.core.timing import scaled
from harness.process.supervisor import Supervisor
from harness.protocol.frames import Frame
from harness.target.spec import reference_target

from .common import Figure, running, spread

__all__ = ["figure"]

SESSIONS = 20
PER_SESSION = 5
STREAM: dict[str, Any] = {"chunks": 100_000, "chunk_delay_ms": 20}



def _chunk_of(request_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.request_id == request_id and f.kind == "chunk"


async def _open_streams(sup: Supervisor) -> list[tuple[Client, str]]:
    history = History()
    clients = [Client(sup.ws_url, history=history, name=f"x{i}") for i in range(SESSIONS)]
    await asyncio.gather(*(c.connect(timeout=scaled(10)) for c in clients))
    streams = [(c, await c.request("stream", **STREAM)) for c in clients for _ in range(PER_SESSION)]
    # Every stream has produced a chunk: the server holds 100 live replies.
    await asyncio.gather(*(c.wait_frame(_chunk_of(r), scaled(10))
                           for c, r in streams))
    return streams


async def _first(runs: int) -> tuple[list[float], list[str]]:
    times: list[float] = []
    odd: list[str] = []
    for _ in range(runs):
        async with running(pty=True) as sup:
            streams = await _open_streams(sup)
            sup.ctrl_c()
            report = await sup.wait_exit(scaled(10))
            if report is None or report.exit_ms is None:
                odd.append("no exit within 10 s")
                continue
            if report.classification != "clean":
                odd.append(f"{report.classification} (rc {report.returncode})")
            times.append(report.exit_ms)
            await asyncio.gather(*(c.wait_closed(scaled(1)) for c, _ in streams))
    return times, odd


async def _second(runs: int) -> tuple[list[float], list[str]]:
    times: list[float] = []
    odd: list[str] = []
    target = reference_target(extra_args=("--drain-delay-ms", "2000"))
    for _ in range(runs):
        async with running(target, pty=True) as sup:
            streams = await _open_streams(sup)
            sup.ctrl_c()
            await asyncio.gather(*(c.reply(r, scaled(3)) for c, r in streams))
            second_ns = sup.ctrl_c()
            report = await sup.wait_exit(scaled(10))
            if report is None:
                odd.append("no exit within 10 s of the second Ctrl+C")
                continue
            if report.classification != "forced":
                odd.append(f"{report.classification} (rc {report.returncode})")
            times.append((report.exited_ns - second_ns) / 1e6)
    return times, odd


async def figure(quick: bool) -> Figure:
    fig = Figure("shutdown", f"3. shutdown on Ctrl+C with {SESSIONS * PER_SESSION} open streams")
    first, odd1 = await _first(2 if quick else 10)
    second, odd2 = await _second(1 if quick else 5)
    s1, s2 = spread(first), spread(second)
    fig.add("exit after Ctrl+C", s1, "ms")
    fig.add("exit after 2nd Ctrl+C", s2, "ms")
    fig.goal("p99 < 1 s", None if s1["p99"] is None else s1["p99"] < 1000 and not odd1, f"p99 {s1['p99']} ms")
    fig.goal("2nd Ctrl+C < 300 ms", None if s2["max"] is None else s2["max"] < 300 and not odd2,
             f"max {s2['max']} ms")
    fig.notes += [f"first Ctrl+C: {o}" for o in odd1] + [f"second Ctrl+C: {o}" for o in odd2]
    fig.details = {"first_ms": [round(x, 1) for x in first], "second_ms": [round(x, 1) for x in second]}
    return fig
