"""Figure 7: how many concurrent idle connections one wschaos process holds, and at what memory.

Against one reference server, the bench process opens sessions in cumulative
steps (250, 500, 1000, ... connections held at once), each a full
:class:`harness.client.connection.Client` with its reader task, recording into one
History as a scenario would. After each step it checks that the sessions are
alive (HEARTBEAT round trips on a sample) and records the RSS of the bench
process and of the server, their fds, and the CPU each used while the step
connected, which says where the bottleneck is: a side near 100 % of a core
is what limits the connect rate; a failing step names its error.

The soft fd limit is raised to the hard limit first (the server inherits it).
Stepping stops at the first failing step, at a memory cap, or when the next
step would not fit the figure's time budget; every step is time-limited.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from typing import Any

import psutil

from harness.client.connection import Client, ClientError
from harness.core.history import History
from harness.core.timing import scaled

from .common import Figure, cpu_s, running, spread

__all__ = ["figure"]

CONNECT_PARALLEL = 50
#: Neither side may pass this RSS, nor may the machine's available memory fall under the floor.
RSS_CAP = 2 * 2**30
AVAILABLE_FLOOR = 512 * 2**20


def _raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


async def figure(quick: bool) -> Figure:
    fig = Figure("scale", "7. concurrent idle connections held by one wschaos process")
    soft, hard = _raise_fd_limit()
    # Doubling up to the fd ceiling (each side needs one fd per connection, plus a few).
    ceiling = soft - 64
    steps = [100, 250] if quick else [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000]
    steps = sorted({min(n, ceiling) for n in steps})
    budget_s = 8.0 if quick else 50.0
    step_cap_s = 20.0
    deadline = time.monotonic() + budget_s
    me = psutil.Process()
    history = History()
    clients: list[Client] = []
    rows: list[dict[str, Any]] = []
    stop_reason = "every step held"
    rng = random.Random(7)
    async with running() as sup:
        server = psutil.Process(sup.pid)
        base = {"client_rss": me.memory_info().rss, "server_rss": server.memory_info().rss}
        sem = asyncio.Semaphore(CONNECT_PARALLEL)

        async def one(i: int) -> Client:
            async with sem:
                c = Client(sup.ws_url, history=history, name=f"i{i}")
                await c.connect(timeout=scaled(10))
                return c

        rate = None
        try:
            for n in steps:
                add = n - len(clients)
                remaining = deadline - time.monotonic()
                if rate and add / rate > remaining:
                    stop_reason = f"time budget: {n} would take ~{add / rate:.0f} s, {remaining:.0f} s left"
                    break
                if n <= len(clients):
                    stop_reason = f"fd limit: {len(clients)} held, the soft limit is {soft} fds a process"
                    break
                t0 = time.monotonic()
                c0, s0 = cpu_s(me), cpu_s(server)
                tasks = [asyncio.ensure_future(one(len(clients) + k)) for k in range(add)]
                done, pending = await asyncio.wait(tasks, timeout=min(step_cap_s, max(1.0, remaining)))
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=scaled(5))
                took = time.monotonic() - t0
                cpu_c, cpu_s_ = (cpu_s(me) - c0) / took * 100, (cpu_s(server) - s0) / took * 100
                errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
                held_before = len(clients)
                clients += [t.result() for t in done if not t.cancelled() and t.exception() is None]
                rate = max(len(clients) - held_before, 1) / took
                sample = rng.sample(clients, min(20, len(clients)))
                beats: list[float] = []
                for c in sample:
                    h0 = time.monotonic()
                    try:
                        await c.heartbeat(timeout=scaled(5))
                        beats.append((time.monotonic() - h0) * 1000)
                    except ClientError:
                        pass
                row = {
                    "connections": len(clients),
                    "step_s": round(took, 2),
                    "connects_per_s": round(rate),
                    "client_cpu_pct": round(cpu_c),
                    "server_cpu_pct": round(cpu_s_),
                    "client_rss_mb": _mb(me.memory_info().rss),
                    "server_rss_mb": _mb(server.memory_info().rss),
                    "server_fds": server.num_fds(),
                    "heartbeat_ms": spread(beats),
                    "errors": len(errors),
                    "first_error": repr(errors[0]) if errors else None,
                    # Connects still under way at the step's time cap: slow, not failed.
                    "unfinished": len(pending),
                    "alive": len(beats) == len(sample),
                }
                rows.append(row)
                if errors or len(beats) < len(sample):
                    stop_reason = f"step {n} failed: {row['first_error'] or 'heartbeats unanswered'}"
                    break
                if pending:
                    stop_reason = f"step time cap: {len(clients)} of {n} connected in {took:.0f} s"
                    break
                if n >= ceiling and not quick:
                    stop_reason = f"fd limit: {len(clients)} held, the soft limit is {soft} fds a process"
                    break
                if (me.memory_info().rss > RSS_CAP or server.memory_info().rss > RSS_CAP
                        or psutil.virtual_memory().available < AVAILABLE_FLOOR):
                    stop_reason = f"memory cap after {n}"
                    break
        finally:
            # RST is the fast way out for thousands of sessions; the server then stops idle.
            await asyncio.gather(*(c.abort() for c in clients if c.session_id and not c.closed),
                                 return_exceptions=True)
    held = max((r["connections"] for r in rows if not r["errors"] and r["alive"]), default=0)
    fig.add("held", held, "connections")
    fig.add("stopped by", stop_reason)
    if rows:
        top = [r for r in rows if r["connections"] == held] or rows[-1:]
        last = top[-1]
        fig.add("client RSS", last["client_rss_mb"], "MB")
        fig.add("server RSS", last["server_rss_mb"], "MB")
        per_c = (last["client_rss_mb"] - _mb(base["client_rss"])) * 1024 / max(held, 1)
        per_s = (last["server_rss_mb"] - _mb(base["server_rss"])) * 1024 / max(held, 1)
        fig.add("memory per connection", f"client {per_c:.0f} KB, server {per_s:.0f} KB")
        fig.add("connect rate (last step)", last["connects_per_s"], "/s")
        fig.add("CPU while connecting", f"client {last['client_cpu_pct']} %, server {last['server_cpu_pct']} %")
        fig.add("heartbeat RTT at max", last["heartbeat_ms"], "ms")
        busiest = "client" if last["client_cpu_pct"] >= last["server_cpu_pct"] else "server"
        fig.notes.append(f"connect rate bound by {busiest} CPU (one core each at most);"
                         f" fd limit {soft} (hard {hard}) caps each side near {soft - 64} connections")
    fig.details = {"steps": rows, "fd_limit": [soft, hard], "baseline_rss_mb": {k: _mb(v) for k, v in base.items()}}
    return fig
