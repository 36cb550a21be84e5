"""Figure 2: interrupt storm, ACK latency with 100 INTERRUPTs in flight across 10 streaming sessions.

Each session streams three replies at full speed (5 ms chunks, far more
chunks than the storm lasts); then every session fires its ten INTERRUPTs at
once, at a seeded mix of its own streams, ``null`` (everything) and unknown
ids, as the ``interrupts.storm`` scenario does. The latency is the client's
own ``InterruptResult.latency_ms``: INTERRUPT sent to ACK taken off the socket.
Several rounds, each against a fresh server, pool their latencies.

k6 runs the same storm (``bench/k6/storm.js`` through :mod:`bench.k6`) in
every round, against a fresh server of its own, right after wschaos's; its
latency is k6's own, from just before the send to the ACK's message callback,
pooled the same way.

With ``--workers N`` (N > 1) wschaos's side runs on :mod:`harness.fleet`:
the sessions are dealt to N worker processes; each worker streams, says so,
and every worker fires its share of the storm when the parent signals that
all sessions are streaming. The latencies are pooled as before.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
from typing import Any

from harness.client.connection import Client
from harness.core.history import History
from harness.core.timing import scaled
from harness.fleet import WorkerContext
from harness.fleet import fleet as start_fleet
from harness.protocol.frames import Frame

from . import k6
from .common import Figure, driver_main, resolve_workers, running, spread

__all__ = ["figure", "main", "storm_program"]

SESSIONS = 10
PER_SESSION = 10
STREAM: dict[str, Any] = {"chunks": 100_000, "chunk_delay_ms": 5}



def _chunk_of(request_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.request_id == request_id and f.kind == "chunk"


async def _round(rng: random.Random) -> tuple[list[float], int]:
    """One storm against a fresh server: (latencies in ms, INTERRUPTs without an ACK)."""
    history = History()
    async with running() as sup:
        clients = [Client(sup.ws_url, history=history, name=f"s{i}") for i in range(SESSIONS)]
        try:
            await asyncio.gather(*(c.connect(timeout=scaled(10)) for c in clients))
            streams = {c.name: [await c.request("stream", **STREAM) for _ in range(3)] for c in clients}
            # Every session is streaming before the storm starts.
            await asyncio.gather(*(
                c.wait_frame(_chunk_of(streams[c.name][0]), scaled(5))
                for c in clients))

            def targets(c: Client) -> list[str | None]:
                out: list[str | None] = []
                for _ in range(PER_SESSION):
                    roll = rng.random()
                    out.append(None if roll < 0.1 else f"unknown-{rng.randrange(1000)}" if roll < 0.2
                               else rng.choice(streams[c.name]))
                return out

            plan = [(c, t) for c in clients for t in targets(c)]
            results = await asyncio.gather(*(c.interrupt(t, timeout=scaled(5)) for c, t in plan))
            # Leave nothing streaming: the server stops faster and the next round starts clean.
            await asyncio.gather(*(c.interrupt(None, timeout=scaled(2)) for c in clients), return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close(timeout=scaled(2)) for c in clients if c.session_id),
                                 return_exceptions=True)
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    return latencies, sum(1 for r in results if r.latency_ms is None)


def _targets(rng: random.Random, streams: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(PER_SESSION):
        roll = rng.random()
        out.append(None if roll < 0.1 else f"unknown-{rng.randrange(1000)}" if roll < 0.2 else rng.choice(streams))
    return out


async def storm_program(ctx: WorkerContext) -> dict[str, Any]:
    """One worker's sessions of the storm (global session indices of :meth:`WorkerContext.share`)."""
    mine = list(ctx.share(SESSIONS))
    clients = [ctx.client(f"s{i}") for i in mine]
    results: list[Any] = []
    try:
        await asyncio.gather(*(c.connect(timeout=scaled(10)) for c in clients))
        streams = {c.name: [await c.request("stream", **STREAM) for _ in range(3)] for c in clients}
        await asyncio.gather(*(c.wait_frame(_chunk_of(streams[c.name][0]), scaled(5)) for c in clients))
        await ctx.report("streaming", sessions=len(clients))
        if not await ctx.wait_signal("storm", scaled(30)):
            raise RuntimeError("no storm signal from the parent")
        plan = [(c, t) for c, i in zip(clients, mine, strict=True)
                for t in _targets(ctx.rng(i), streams[c.name])]
        results = await asyncio.gather(*(c.interrupt(t, timeout=scaled(5)) for c, t in plan))
        await asyncio.gather(*(c.interrupt(None, timeout=scaled(2)) for c in clients), return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close(timeout=scaled(2)) for c in clients if c.session_id),
                             return_exceptions=True)
    return {"latencies": [r.latency_ms for r in results if r.latency_ms is not None],
            "missing": sum(1 for r in results if r.latency_ms is None)}


async def _fleet_round(seed: int, workers: int) -> tuple[list[float], int]:
    """The storm from ``workers`` processes at once, against a fresh server."""
    async with running() as sup, start_fleet(storm_program, sup.ws_url, workers=workers, seed=seed,
                                             timeout=scaled(90)) as f:
        await f.go()
        await f.reports("streaming", scaled(30))
        await f.signal("storm")
        result = await f.finish(scaled(90))
    return ([x for v in result.values for x in v["latencies"]], sum(v["missing"] for v in result.values))


async def _k6_round(seed: int) -> dict[str, Any]:
    """The same storm from k6, against a fresh server."""
    async with running() as sup:
        return await k6.run_storm(sup.ws_url, sessions=SESSIONS, per_session=PER_SESSION, seed=seed,
                                  timeout_s=scaled(90))


async def figure(quick: bool, workers: int | None = None) -> Figure:
    """Figure 2: ACK latency under an interrupt storm (sessions dealt to --workers processes)."""
    fig = Figure("storm", f"2. interrupt storm: {SESSIONS * PER_SESSION} INTERRUPTs across {SESSIONS} streaming sessions")
    n_workers = resolve_workers(workers)
    rounds = 1 if quick else 5
    rng = random.Random(1)
    latencies: list[float] = []
    missing = 0
    k6_latencies: list[float] = []
    k6_missing = 0
    k6_runs: list[dict[str, Any]] = []
    k6_error: str | None = None
    for i in range(rounds):
        lat, miss = await (_round(rng) if n_workers == 1 else _fleet_round(i + 1, n_workers))
        latencies += lat
        missing += miss
        if k6_error is None:
            try:
                k6_runs.append(await _k6_round(seed=i + 1))
            except (k6.K6Unavailable, OSError) as exc:
                k6_error = f"{type(exc).__name__}: {exc}"
            else:
                k6_latencies += k6_runs[-1]["latencies_ms"]
                k6_missing += k6_runs[-1]["unanswered"]
    s = spread(latencies)
    fig.add("ACK latency", s, "ms")
    fig.add("INTERRUPTs without ACK", missing)
    if k6_runs:
        fig.add("k6 ACK latency", spread(k6_latencies), "ms")
        fig.add("k6 INTERRUPTs without ACK", k6_missing)
    else:
        fig.add("k6 ACK latency", f"unavailable ({k6_error})")
    p99 = s["p99"]
    fig.goal("p99 < 100 ms", None if p99 is None else p99 < 100 and missing == 0, f"p99 {p99} ms")
    fig.add("client workers", n_workers)
    fig.notes.append(f"{rounds} round(s) of {SESSIONS * PER_SESSION}, each against a fresh server;"
                     f" k6 {len(k6_runs)} round(s) the same")
    late = sum(r["late_sessions"] for r in k6_runs)
    if late:
        fig.notes.append(f"k6: {late} session(s) were not yet streaming at the shared storm instant")
    problems = sorted({p for r in k6_runs for p in r["problems"]})
    if problems:
        fig.notes.append(f"k6: {'; '.join(problems[:3])}")
    fig.details = {"latencies_ms": [round(x, 2) for x in latencies],
                   "k6_latencies_ms": [round(x, 2) for x in k6_latencies],
                   "k6": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in k6_runs],
                   "k6_error": k6_error}
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.storm [--quick] [--workers N]``: this figure alone."""
    return driver_main("storm", figure, argv)


if __name__ == "__main__":
    sys.exit(main())
