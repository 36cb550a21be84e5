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

Past one process (``--workers N`` with N > 1, or ``--sources N``): the
connections are dealt to the :mod:`harness.fleet` workers, each taking its
share of every step and holding it until the parent has measured the step
(the server's RSS and fds while every worker holds its share). ``--sources
N`` has the clients leave from 127.0.0.1 .. 127.0.0.N: one source address
reaches the server's one address and port from at most the ephemeral port
range (about 28,000 ports), so more connections need more addresses. The fd
limit is raised past the hard limit where that is allowed (root), up to
``fs.nr_open``. The figure names the next ceiling: the fd limit of the one
server process, the ports of the source addresses, or memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from harness.client.connection import Client, ClientError
from harness.core.history import History
from harness.core.timing import scaled
from harness.fleet import WorkerContext, source_addresses
from harness.fleet import fleet as start_fleet

from .common import Figure, cpu_s, driver_main, raise_fd_limit, resolve_workers, running, spread

__all__ = ["figure", "hold_program", "main"]

CONNECT_PARALLEL = 50
#: Neither side may pass this RSS, nor may the machine's available memory fall under the floor.
RSS_CAP = 2 * 2**30
AVAILABLE_FLOOR = 512 * 2**20


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def _port_range() -> int:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 28232
    return hi - lo + 1


async def hold_program(ctx: WorkerContext) -> dict[str, Any]:
    """A worker's share of every step (cumulative totals in ``params["steps"]``), held until
    the parent signals ``next``; everything reset (RST) at the end."""
    p = ctx.params
    me = psutil.Process()
    clients: list[Client] = []
    sem = asyncio.Semaphore(int(p["parallel"]))
    rng = random.Random(ctx.seed * 1000 + ctx.worker)
    rss_base = me.memory_info().rss

    urls = list(p.get("urls") or [ctx.url])

    async def one(k: int) -> Client:
        async with sem:
            # This worker's k-th client is global index worker + k * workers: dealt over the servers.
            c = ctx.client(f"i{k}", url=urls[(ctx.worker + k * ctx.workers) % len(urls)], keep_frames=False)
            await c.connect(timeout=scaled(10))  # a failed or cancelled connect closes itself
            return c

    try:
        for total in p["steps"]:
            add = len(ctx.share(total)) - len(clients)
            t0, c0 = time.monotonic(), time.process_time()
            tasks = [asyncio.ensure_future(one(len(clients) + k)) for k in range(max(add, 0))]
            done, pending = (await asyncio.wait(tasks, timeout=float(p["step_cap_s"]))) if tasks else (set(), set())
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=scaled(5))
            took = time.monotonic() - t0
            errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            clients += [t.result() for t in done if not t.cancelled() and t.exception() is None]
            beats: list[float] = []
            sample = rng.sample(clients, min(5, len(clients)))
            for c in sample:
                h0 = time.monotonic()
                try:
                    await c.heartbeat(timeout=scaled(5))
                    beats.append((time.monotonic() - h0) * 1000)
                except ClientError:
                    pass
            await ctx.report("step", held=len(clients), errors=len(errors),
                             first_error=repr(errors[0]) if errors else None, unfinished=len(pending),
                             took=took, cpu_s=time.process_time() - c0, rss=me.memory_info().rss,
                             rss_base=rss_base, fds=me.num_fds(), heartbeat_ms=beats, sampled=len(sample))
            if not await ctx.wait_signal("next", scaled(180)):
                break
    finally:
        # RST is the fast way out for thousands of sessions; the server then stops idle.
        await asyncio.gather(*(c.abort() for c in clients if c.session_id and not c.closed),
                             return_exceptions=True)
    return {"held": len(clients)}


async def _fleet_figure(fig: Figure, quick: bool, workers: int, sources: int | None, servers: int) -> Figure:
    addresses = source_addresses(sources)
    steps = [500, 1000] if quick else [5000, 10000, 20000, 30000, 40000, 50000, 60000]
    limits = raise_fd_limit(want=max(steps) + 4096)
    soft = int(limits["soft"])
    ports = _port_range() * max(1, len(addresses))
    # Each server process holds its share of every connection, each worker its own share;
    # one source address has the ephemeral ports once (a bound socket's port is its own).
    ceiling = min((soft - 256) * servers, (soft - 256) * workers, ports - 64)
    steps = sorted({min(n, ceiling) for n in steps})
    budget_s = 10.0 if quick else 150.0
    step_cap_s = 15.0 if quick else 60.0
    deadline = time.monotonic() + budget_s
    rows: list[dict[str, Any]] = []
    stop_reason = "every step held"
    async with contextlib.AsyncExitStack() as stack:
        sups = [await stack.enter_async_context(running(name=f"bench-{i}")) for i in range(servers)]
        procs = [psutil.Process(s.pid) for s in sups]
        params = {"steps": steps, "parallel": CONNECT_PARALLEL, "step_cap_s": step_cap_s,
                  "urls": [s.ws_url for s in sups]}
        server_base = sum(p.memory_info().rss for p in procs)
        f = await stack.enter_async_context(start_fleet(
            hold_program, sups[0].ws_url, workers=workers, seed=7, params=params,
            sources=addresses or None, timeout=scaled(budget_s + 300)))
        await f.go()
        rate = None
        for k, n in enumerate(steps):
            if k:
                remaining = deadline - time.monotonic()
                add = n - rows[-1]["connections"]
                if rate and add / rate > remaining:
                    stop_reason = f"time budget: {n} would take ~{add / rate:.0f} s, {remaining:.0f} s left"
                    break
                await f.signal("next", True)
            s0, t0 = sum(cpu_s(p) for p in procs), time.monotonic()
            reps = await f.reports("step", step_cap_s + scaled(60))
            took = max(r["took"] for r in reps)
            held = sum(r["held"] for r in reps)
            prev = rows[-1]["connections"] if rows else 0
            rate = max(held - prev, 1) / max(took, 1e-3)
            beats = [b for r in reps for b in r["heartbeat_ms"]]
            errors = sum(r["errors"] for r in reps)
            alive = len(beats) == sum(r["sampled"] for r in reps)
            row = {
                "connections": held,
                "per_worker": [r["held"] for r in reps],
                "step_s": round(took, 2),
                "connects_per_s": round(rate),
                "client_cpu_pct": round(sum(r["cpu_s"] for r in reps) / max(took, 1e-3) * 100),
                "server_cpu_pct": round((sum(cpu_s(p) for p in procs) - s0)
                                        / max(time.monotonic() - t0, 1e-3) * 100),
                "client_rss_mb": _mb(sum(r["rss"] for r in reps)),
                "client_rss_base_mb": _mb(sum(r["rss_base"] for r in reps)),
                "server_rss_mb": _mb(sum(p.memory_info().rss for p in procs)),
                "server_fds": [p.num_fds() for p in procs],
                "worker_fds": [r["fds"] for r in reps],
                "heartbeat_ms": spread(beats),
                "errors": errors,
                "first_error": next((r["first_error"] for r in reps if r["first_error"]), None),
                "unfinished": sum(r["unfinished"] for r in reps),
                "alive": alive,
            }
            rows.append(row)
            if errors or not alive:
                stop_reason = f"step {n} failed: {row['first_error'] or 'heartbeats unanswered'}"
                break
            if row["unfinished"]:
                stop_reason = f"step time cap: {held} of {n} connected in {took:.0f} s"
                break
            if n >= ceiling:
                stop_reason = (f"ceiling {ceiling}: fd soft limit {soft} a process ({servers} server(s),"
                               f" {workers} worker(s)), {ports} ports")
                break
            if (max(p.memory_info().rss for p in procs) > RSS_CAP
                    or psutil.virtual_memory().available < AVAILABLE_FLOOR):
                stop_reason = f"memory cap after {n}"
                break
        await f.signal("next", False)
        await f.finish(scaled(120))
    held = max((r["connections"] for r in rows if not r["errors"] and r["alive"]), default=0)
    fig.add("held", held, "connections")
    fig.add("client workers", workers)
    fig.add("source addresses", len(addresses) or "kernel's choice (127.0.0.1)")
    fig.add("server processes", servers)
    fig.add("stopped by", stop_reason)
    if rows:
        last = [r for r in rows if r["connections"] == held][-1] if held else rows[-1]
        fig.add("client RSS (all workers)", last["client_rss_mb"], "MB")
        fig.add("server RSS (all servers)", last["server_rss_mb"], "MB")
        per_c = (last["client_rss_mb"] - last["client_rss_base_mb"]) * 1024 / max(held, 1)
        per_s = (last["server_rss_mb"] - _mb(server_base)) * 1024 / max(held, 1)
        fig.add("memory per connection", f"client {per_c:.0f} KB, server {per_s:.0f} KB")
        fig.add("connect rate (last step)", last["connects_per_s"], "/s")
        fig.add("CPU while connecting", f"clients {last['client_cpu_pct']} %, server {last['server_cpu_pct']} %")
        fig.add("heartbeat RTT at max", last["heartbeat_ms"], "ms")
        avail = psutil.virtual_memory().available
        per_both = max(per_c + per_s, 1) * 1024
        ceilings = {
            f"fd soft limit {soft} x {min(servers, workers)} process(es)": (soft - 256) * min(servers, workers),
            f"ephemeral ports x {max(1, len(addresses))} source address(es)": ports,
            "memory available / per connection": int(avail / per_both) + held,
        }
        fig.add("ceilings", ceilings, "connections")
        beyond = {k: v for k, v in ceilings.items() if v > held}
        if beyond:
            name = min(beyond, key=lambda k: beyond[k])
            fig.add("next ceiling", f"{name}: {beyond[name]:,}")
    fig.notes.append(f"fd limits: {limits['how']} (soft {limits['soft_before']} -> {limits['soft']}, "
                     f"hard {limits['hard_before']} -> {limits['hard']}, fs.nr_open {limits['nr_open']})")
    fig.details = {"steps": rows, "fd_limit": limits, "workers": workers, "sources": addresses,
                   "baseline_server_rss_mb": _mb(server_base), "loadavg": os.getloadavg()}
    return fig


async def figure(quick: bool, workers: int | None = None, sources: int | None = None,
                 servers: int | None = None) -> Figure:
    """Figure 7: concurrent idle connections held (past one process with --workers/--sources)."""
    n_workers = resolve_workers(workers)
    if n_workers > 1 or sources or (servers or 1) > 1:
        fig = Figure("scale", f"7. concurrent idle connections held by {n_workers} wschaos worker(s)")
        return await _fleet_figure(fig, quick, n_workers, sources, max(1, servers or 1))
    fig = Figure("scale", "7. concurrent idle connections held by one wschaos process")
    steps = [100, 250] if quick else [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000]
    limits = raise_fd_limit(want=None if quick else max(steps) + 4096)
    soft, hard = int(limits["soft"]), int(limits["hard"])
    # Doubling up to the fd ceiling (each side needs one fd per connection, plus a few), and
    # the ports of one source address to the server's one address and port.
    ceiling = min(soft - 64, _port_range() - 64)
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
                    stop_reason = (f"ceiling: {len(clients)} held; the soft fd limit is {soft} a process,"
                                   f" one source address has {_port_range()} ports")
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
    fig.notes.append(f"fd limits: {limits['how']}")
    fig.details = {"steps": rows, "fd_limit": [soft, hard], "baseline_rss_mb": {k: _mb(v) for k, v in base.items()}}
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale [--quick] [--workers N] [--sources N]``: this figure alone."""
    return driver_main("scale", figure, argv, sources=True)


if __name__ == "__main__":
    sys.exit(main())
