"""Figure 1: churn throughput, wschaos's client against the practical limit and against Artillery.

One cycle is: connect (to SESSION_READY), one REQUEST of one chunk with no
delay, its final RESPONSE, a clean close. Each driver runs ``CONCURRENCY``
loops for a fixed time against one reference server:

* ``wschaos``: :class:`harness.client.connection.Client`, as a scenario uses it (one
  shared History, frames kept), so the figure includes what the harness records;
* ``bare``: a ``websockets`` loop as tight as it can be written (no history,
  no JSON parse: a substring test finds the final frame), the practical limit
  of Python on this machine;
* ``artillery``: Artillery's WebSocket engine (:mod:`bench.artillery`);
* ``k6``: Grafana's k6 with ``k6/ws`` (:mod:`bench.k6`, ``bench/k6/churn.js``).

The Python drivers alternate over several rounds and the medians are compared,
so a machine whose load drifts does not favour one side. Besides cycles per
second, the driver's own CPU time per cycle is reported: on a shared 2-core
machine it moves far less with other load than throughput does. k6 runs once
per round, after the Python drivers, and its medians are taken the same way.

With ``--workers`` the figure also runs wschaos's churn through
:mod:`harness.fleet`: one worker (in-process) against N worker processes
(N = ``--workers``, or 2 when the default rule gives 1), each with the same
``CONCURRENCY`` loops, so N workers hold N times the connections at once.
Their cycles per second are over the workers' own span on the monotonic
clock (from the common start to the last end; spawning is not timed).

The ceiling is the server's: its own CPU per cycle (median over every run of
every driver) says how many cycles per second one core of it could serve at
most, ``1e6 / server us per cycle``; each driver's throughput is also given as
a fraction of that, which says how close the driver comes to saturating the
server rather than itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from harness.client.connection import Client, ClientError
from harness.client.wire import event_loop_from_env, wire_available
from harness.core.history import History, collect_less_often
from harness.core.timing import scaled
from harness.fleet import FleetError, programs
from harness.fleet import run as fleet_run

from . import k6
from .artillery import ArtilleryUnavailable, run_churn
from .common import ROOT, Figure, bounded, cpu_s, driver_main, ratio, resolve_workers, running

__all__ = ["CONCURRENCY", "figure", "main"]

CONCURRENCY = 10
#: Upper bound of cycles per loop and run, whatever the duration: loops stay bounded in count.
MAX_CYCLES_PER_LOOP = 20_000

_REQUEST = ('{"msg_type": "REQUEST", "request_id": "b1", '
            '"payload": {"text": "bench", "options": {"chunks": 1, "chunk_delay_ms": 0}}}')


#: wschaos's drivers: (wire, event loop). The uvloop ones run in a child process (one loop per process).
VARIANTS: dict[str, tuple[str, str]] = {
    "wschaos": ("websockets", "asyncio"),
    "wschaos picows": ("picows", "asyncio"),
    "wschaos picows uvloop": ("picows", "uvloop"),
}


def _variant_missing(kind: str) -> str | None:
    wire, loop = VARIANTS[kind]
    why = wire_available(wire)
    if why is None and loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        why = "uvloop is not installed: pip install 'wschaos[fast]'"
    return why


async def _wschaos_loop(url: str, history: History, i: int, stop_at: float,
                        wire: str = "websockets") -> tuple[int, int]:
    ok = failed = 0
    n = 0
    while time.monotonic() < stop_at and n < MAX_CYCLES_PER_LOOP:
        n += 1
        c = Client(url, history=history, name=f"w{i}-{n}", wire=wire)
        try:
            await c.connect(timeout=scaled(5))
            rid = await c.request("bench", chunks=1, chunk_delay_ms=0)
            reply = await c.reply(rid, timeout=scaled(5))
            await c.close()
        except ClientError:
            failed += 1
            continue
        if reply.complete and not reply.interrupted:
            ok += 1
        else:
            failed += 1
    return ok, failed


async def _bare_cycle(url: str) -> bool:
    async with connect(url, compression=None, ping_interval=None, proxy=None,
                       open_timeout=None, close_timeout=scaled(5)) as ws:
        await ws.recv()  # SESSION_READY
        await ws.send(_REQUEST)
        for _ in range(8):  # the chunk, the final; more would be a server bug
            msg = await ws.recv()
            if '"final": true' in msg or '"final":true' in msg:
                return True
    return False


async def _bare_loop(url: str, i: int, stop_at: float) -> tuple[int, int]:
    ok = failed = 0
    n = 0
    while time.monotonic() < stop_at and n < MAX_CYCLES_PER_LOOP:
        n += 1
        try:
            # One bound for the whole cycle, armed the cheapest way there is, so the
            # limit being measured is not slowed by its own safety net.
            done = await bounded(_bare_cycle(url), scaled(10))
        except (OSError, asyncio.TimeoutError, WebSocketException):
            done = False
        if done:
            ok += 1
        else:
            failed += 1
    return ok, failed


async def _drive(kind: str, url: str, seconds: float, server: psutil.Process) -> dict[str, Any]:
    if kind in VARIANTS and VARIANTS[kind][1] != "asyncio":
        return await _drive_in_child(kind, url, seconds, server)
    return await _measure(kind, url, seconds, server)


async def _measure(kind: str, url: str, seconds: float, server: psutil.Process) -> dict[str, Any]:
    """``kind``'s loops on this process's event loop, timed."""
    me = psutil.Process()
    history = History()
    stop_at = time.monotonic() + seconds
    c0, s0, t0 = cpu_s(me), cpu_s(server), time.perf_counter()
    if kind in VARIANTS:
        wire = VARIANTS[kind][0]
        results = await asyncio.gather(*(_wschaos_loop(url, history, i, stop_at, wire) for i in range(CONCURRENCY)))
    else:
        results = await asyncio.gather(*(_bare_loop(url, i, stop_at) for i in range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    client_cpu, server_cpu = cpu_s(me) - c0, cpu_s(server) - s0
    ok = sum(r[0] for r in results)
    return {
        "driver": kind,
        "cycles": ok,
        "failed": sum(r[1] for r in results),
        "seconds": round(elapsed, 3),
        "cycles_per_s": round(ok / elapsed, 1),
        "client_cpu_us_per_cycle": round(client_cpu / max(ok, 1) * 1e6),
        "server_cpu_us_per_cycle": round(server_cpu / max(ok, 1) * 1e6),
        "history_records": len(history),
    }


async def _drive_in_child(kind: str, url: str, seconds: float, server: psutil.Process) -> dict[str, Any]:
    """``kind`` on its own event loop in a child process; its figures as :func:`_drive` gives them."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.churn", "--child", kind, "--url", url, "--seconds", str(seconds),
        "--server-pid", str(server.pid), cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), scaled(seconds + 60))
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{kind}: the child did not finish") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{kind}: exit {proc.returncode}: {err.decode(errors='replace').strip()[-300:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _child(kind: str, url: str, seconds: float, server_pid: int) -> int:
    """``python -m bench.churn --child KIND ...``: one timed drive, its figures as one JSON line."""
    collect_less_often()  # as the parent's drivers and the fleet's workers do
    with _client_env(kind):
        event_loop_from_env()

    async def go() -> dict[str, Any]:
        server = psutil.Process(server_pid)
        await _measure(kind, url, 0.3, server)  # warm-up, as the parent's drivers had
        return await _measure(kind, url, seconds, server)

    print(json.dumps(asyncio.run(go())))
    return 0


@contextlib.contextmanager
def _client_env(kind: str) -> Iterator[None]:
    """The fleet's workers inherit the environment: their wire and event loop are ``kind``'s."""
    wire, loop = VARIANTS[kind]
    saved = {k: os.environ.get(k) for k in ("WSCHAOS_WIRE", "WSCHAOS_LOOP")}
    os.environ["WSCHAOS_WIRE"], os.environ["WSCHAOS_LOOP"] = wire, loop
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _fleet_drive(url: str, workers: int, seconds: float, server: psutil.Process,
                       kind: str = "wschaos") -> dict[str, Any]:
    """wschaos's churn on ``workers`` fleet workers, ``CONCURRENCY`` loops each, on ``kind``'s wire and loop."""
    s0 = cpu_s(server)
    with _client_env(kind):
        result = await fleet_run(programs.churn, url, workers=workers, timeout=scaled(seconds + 60),
                                 params={"seconds": seconds, "loops": CONCURRENCY, "max_cycles": MAX_CYCLES_PER_LOOP})
    server_cpu = cpu_s(server) - s0
    span = result.span_s()
    ok = sum(v["completed"] for v in result.values)
    client_cpu = sum(w.cpu_s for w in result.workers)
    return {
        "driver": kind,
        "workers": workers,
        "connections_at_once": workers * CONCURRENCY,
        "cycles": ok,
        "failed": sum(v["failed"] for v in result.values),
        "seconds": round(span, 3),
        "cycles_per_s": round(ok / span, 1) if span else None,
        "client_cpu_us_per_cycle": round(client_cpu / max(ok, 1) * 1e6),
        "client_cpu_pct": round(client_cpu / span * 100) if span else None,
        # Over the whole run, the workers' start included (the server idles meanwhile).
        "server_cpu_us_per_cycle": round(server_cpu / max(ok, 1) * 1e6),
        "history_records": len(result.history),
        "max_rss_mb": [round(w.max_rss_kb / 1024, 1) for w in result.workers],
    }


async def figure(quick: bool, workers: int | None = None) -> Figure:
    """Figure 1: churn throughput, and with the fleet 1 worker against N."""
    fig = Figure("churn", "1. churn: connect, 1-chunk request, close (10 concurrent loops)")
    collect_less_often()  # every Python driver here, as fleet workers do (harness.core.history)
    missing = {k: why for k in VARIANTS if (why := _variant_missing(k)) is not None}
    many = resolve_workers(workers)
    many = many if many > 1 else 2
    fleet_runs: list[dict[str, Any]] = []
    fleet_error: str | None = None
    seconds = 1.5 if quick else 4.0
    rounds = 1 if quick else 3
    art_seconds = 2 if quick else 8
    runs: list[dict[str, Any]] = []
    art: dict[str, Any] | None = None
    art_error: str | None = None
    k6_runs: list[dict[str, Any]] = []
    k6_error: str | None = None
    async with running() as sup:
        server = psutil.Process(sup.pid)
        await _drive("bare", sup.ws_url, 0.3, server)  # warm-up: first-use paths out of the timing
        kinds = ["bare", *(k for k in VARIANTS if k not in missing)]
        # The fleet with the default client and with the fastest one there is here.
        fleet_kinds = ["wschaos", *(["wschaos picows uvloop"] if "wschaos picows uvloop" not in missing else [])]
        for i in range(rounds):
            order = kinds if i % 2 == 0 else kinds[::-1]
            for kind in order:
                try:
                    runs.append(await _drive(kind, sup.ws_url, seconds, server))
                except RuntimeError as exc:
                    missing[kind] = str(exc)
                    kinds.remove(kind)
            if fleet_error is None:
                for kind in fleet_kinds:
                    for n in ((1, many) if i % 2 == 0 else (many, 1)):
                        try:
                            fleet_runs.append(await _fleet_drive(sup.ws_url, n, seconds, server, kind))
                        except (FleetError, OSError) as exc:
                            fleet_error = f"{type(exc).__name__}: {exc}"
                            break
            if k6_error is None:
                # k6 every round, for its own medians; its start-up is not timed, and its
                # CPU and the server's are taken over its load phase alone.
                try:
                    k6_runs.append(await k6.run_churn(sup.ws_url, duration_s=seconds, concurrency=CONCURRENCY,
                                                      timeout_s=scaled(seconds + 90), server=server))
                except (k6.K6Unavailable, OSError) as exc:
                    k6_error = f"{type(exc).__name__}: {exc}"
            if i == 0:
                # Artillery between the Python rounds, against the same server, so
                # all the drivers see the same machine (its start-up is not timed).
                s0 = cpu_s(server)
                try:
                    art = await run_churn(sup.ws_url, duration_s=art_seconds, concurrency=CONCURRENCY,
                                          timeout_s=scaled(art_seconds + 120))
                except (ArtilleryUnavailable, OSError, RuntimeError) as exc:
                    art_error = f"{type(exc).__name__}: {exc}"
                if art is not None and art["cycles"]:
                    # Over Artillery's whole run: its start-up included, when the server is idle.
                    art["server_cpu_us_per_cycle"] = round((cpu_s(server) - s0) / art["cycles"] * 1e6)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["driver"] == kind)

    def k6_med(key: str) -> float | None:
        values = [r[key] for r in k6_runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    w, b = med("wschaos", "cycles_per_s"), med("bare", "cycles_per_s")
    k = k6_med("cycles_per_s")
    fig.add("wschaos", w, "cycles/s")
    fig.add("bare websockets", b, "cycles/s")
    a = art["cycles_per_s"] if art else None
    fig.add("artillery", a if art else f"unavailable ({art_error})", "cycles/s" if art else "")
    fig.add("k6", k if k is not None else f"unavailable ({k6_error or 'no completed cycles'})",
            "cycles/s" if k is not None else "")
    fig.add("wschaos / artillery", ratio(w, a), "x")
    fig.add("wschaos / k6", ratio(w, k), "x")
    fig.add("wschaos / bare", ratio(w, b), "x")
    fig.add("client CPU wschaos", med("wschaos", "client_cpu_us_per_cycle"), "us/cycle")
    # The same Client (same history, same checks) on the faster wire and event loop.
    fast: dict[str, float] = {}
    for kind in VARIANTS:
        if kind == "wschaos":
            continue
        if kind in missing:
            fig.add(kind, f"unavailable ({missing[kind]})")
            continue
        fig.add(kind, med(kind, "cycles_per_s"), "cycles/s")
        fig.add(f"client CPU {kind}", med(kind, "client_cpu_us_per_cycle"), "us/cycle")
        fast[kind] = med(kind, "client_cpu_us_per_cycle")
    best = min(fast, key=fast.__getitem__, default="wschaos")
    best_cpu = fast.get(best, med("wschaos", "client_cpu_us_per_cycle"))
    fig.add("client CPU bare", med("bare", "client_cpu_us_per_cycle"), "us/cycle")
    fig.add("client CPU artillery", art.get("client_cpu_us_per_cycle") if art else None, "us/cycle")
    k6_cpu = k6_med("client_cpu_us_per_cycle")
    fig.add("client CPU k6", k6_cpu, "us/cycle")
    art_cpu = art.get("client_cpu_us_per_cycle") if art else None
    # CPU per cycle moves far less with the machine's other load than throughput does.
    fig.add("wschaos / artillery by client CPU", ratio(art_cpu, med("wschaos", "client_cpu_us_per_cycle")), "x")
    fig.add("wschaos / k6 by client CPU", ratio(k6_cpu, med("wschaos", "client_cpu_us_per_cycle")), "x")
    fig.add("wschaos / bare by CPU", ratio(
        med("bare", "client_cpu_us_per_cycle") + med("bare", "server_cpu_us_per_cycle"),
        med("wschaos", "client_cpu_us_per_cycle") + med("wschaos", "server_cpu_us_per_cycle")), "x")
    # The ceiling: the server's own CPU per cycle, over every run of every driver whose
    # window is its load alone (Artillery's includes its start-up, so it is shown, not pooled).
    by_driver: dict[str, float | None] = {kind: med(kind, "server_cpu_us_per_cycle")
                                          for kind in ("bare", *VARIANTS) if kind not in missing}
    by_driver["k6"] = k6_med("server_cpu_us_per_cycle")
    by_driver["artillery"] = art.get("server_cpu_us_per_cycle") if art else None
    pooled = [r["server_cpu_us_per_cycle"] for r in [*runs, *k6_runs]
              if r.get("server_cpu_us_per_cycle") and r.get("cycles")]
    server_us = statistics.median(pooled) if pooled else None
    ceiling = round(1e6 / server_us, 1) if server_us else None
    fig.add("server CPU", server_us, "us/cycle")
    fig.add("server CPU by driver", by_driver, "us/cycle")
    fig.add("ceiling (one server core)", ceiling, "cycles/s")
    fig.add("of ceiling", {"wschaos": ratio(w, ceiling), "bare": ratio(b, ceiling),
                           **{kind: ratio(med(kind, "cycles_per_s"), ceiling) for kind in fast},
                           "artillery": ratio(a, ceiling), "k6": ratio(k, ceiling)}, "")
    fig.goal("client CPU <= k6's (best wschaos wire)", None if k6_cpu is None else best_cpu <= k6_cpu,
             f"{best}: {best_cpu:.0f} vs {k6_cpu} us/cycle")
    bw = med(best, "cycles_per_s") if best in fast else w
    fig.goal("throughput >= k6's (best wschaos wire, one process)", None if k is None else bw >= k,
             f"{best}: {bw:.0f} vs {k} cycles/s")
    fig.goal(">= 2x Artillery", None if a is None else w >= 2 * a, f"{ratio(w, a)}x")
    fig.goal(">= 0.8x bare websockets", w >= 0.8 * b, f"{ratio(w, b)}x")
    def fleet_med(n: int, key: str, kind: str = "wschaos") -> float | None:
        values = [r[key] for r in fleet_runs if r["workers"] == n and r["driver"] == kind and r.get(key) is not None]
        return statistics.median(values) if values else None

    if fleet_runs:
        one, more = fleet_med(1, "cycles_per_s"), fleet_med(many, "cycles_per_s")
        fig.add("fleet: 1 worker", one, "cycles/s")
        fig.add(f"fleet: {many} workers", more, "cycles/s")
        fig.add(f"fleet: {many} workers / 1", ratio(more, one), "x")
        fig.add("fleet: connections at once", {"1 worker": CONCURRENCY, f"{many} workers": many * CONCURRENCY})
        fig.add("fleet: client CPU", {"1 worker": fleet_med(1, "client_cpu_us_per_cycle"),
                                      f"{many} workers": fleet_med(many, "client_cpu_us_per_cycle")}, "us/cycle")
        fig.add("fleet: client CPU use", {"1 worker": fleet_med(1, "client_cpu_pct"),
                                          f"{many} workers": fleet_med(many, "client_cpu_pct")}, "% of a core")
        if "wschaos picows uvloop" in fleet_kinds:
            f1 = fleet_med(1, "cycles_per_s", "wschaos picows uvloop")
            fn = fleet_med(many, "cycles_per_s", "wschaos picows uvloop")
            fig.add("fleet picows uvloop: 1 worker", f1, "cycles/s")
            fig.add(f"fleet picows uvloop: {many} workers", fn, "cycles/s")
            fig.add("fleet picows uvloop: client CPU", {
                "1 worker": fleet_med(1, "client_cpu_us_per_cycle", "wschaos picows uvloop"),
                f"{many} workers": fleet_med(many, "client_cpu_us_per_cycle", "wschaos picows uvloop")}, "us/cycle")
            fig.goal(f"throughput >= k6's with {many} workers (picows uvloop)",
                     None if k is None or fn is None else fn >= k, f"{fn} vs {k} cycles/s")
        fig.notes.append(f"fleet: {CONCURRENCY} loops per worker; cycles/s over the workers' own span"
                         f" (one monotonic clock), medians of {rounds} round(s) each")
    else:
        fig.add("fleet", f"unavailable ({fleet_error})")
    failed = sum(r["failed"] for r in runs)
    if failed:
        fig.notes.append(f"{failed} wschaos cycles ended without a complete reply")
    k6_failed = sum(r["failed"] for r in k6_runs)
    if k6_failed:
        reasons = sorted({x for r in k6_runs for x in r.get("failure_reasons", [])})
        fig.notes.append(f"{k6_failed} k6 cycles failed: {'; '.join(reasons[:3]) or 'no reason given'}")
    fig.notes.append(f"medians of {rounds} alternating round(s) of {seconds:g} s per Python driver"
                     f" and k6; Artillery {art_seconds} s once")
    fig.notes.append("ceiling = 1e6 / server CPU us per cycle (median over the wschaos, bare and k6 runs);"
                     " 'of ceiling' = throughput / ceiling")
    fig.details = {"runs": runs, "artillery": art, "artillery_error": art_error,
                   "k6": k6_runs, "k6_error": k6_error, "fleet": fleet_runs, "fleet_error": fleet_error}
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.churn [--quick] [--workers N]``: this figure alone."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        opts = dict(zip(args[2::2], args[3::2], strict=True))
        return _child(args[1], opts["--url"], float(opts["--seconds"]), int(opts["--server-pid"]))
    return driver_main("churn", figure, argv)


if __name__ == "__main__":
    sys.exit(main())
