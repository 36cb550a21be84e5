"""Churn: open and close sessions hundreds of times, every way a connection ends.

The story: replies slowed down after a page was opened and closed many times,
because subscriptions and connections piled up, disconnect handling did not
await cancelled tasks, and per-client tables were never emptied.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import TYPE_CHECKING

from harness import checkers
from harness.core.timing import scaled
from harness.engine.actions import start_stream
from harness.engine.scenario import Context, scenario

if TYPE_CHECKING:
    from harness.process.supervisor import Supervisor

MODES = ("clean", "mid_stream", "reset", "vanish", "reconnect")
#: A closing handshake's bound per cycle: a server that never closes its side of the
#: TCP connection would otherwise cost each cycle the client's full close timeout.
CLOSE_S = scaled(0.25)
COUNTERS = ("connections", "sessions", "active_requests", "subscriptions", "per_session_state")


async def _cycle(ctx: Context, sup: Supervisor, i: int, mode: str) -> None:
    """One session's life, ended the way ``mode`` says."""
    c = await ctx.client(sup, name=f"k{i}")
    if "subscribe" in ctx.messages:
        await c.subscribe(f"churn-{i % 7}")
    if mode == "clean":
        rid = await c.request("short", chunks=3, chunk_delay_ms=1)
        await c.reply(rid, scaled(5))
        await c.close(timeout=CLOSE_S)
        return
    # Long enough never to end by itself during the run: a leaked task must stay visible.
    await start_stream(c, scaled(5), "long", chunks=100_000, chunk_delay_ms=10)
    if mode == "mid_stream":
        await c.close(timeout=CLOSE_S)
    elif mode == "reset":
        await ctx.nemesis.rst(c)
    elif mode == "vanish":
        await ctx.nemesis.fin(c)
    elif mode == "reconnect":
        # The same user opens a new page while the old connection is still up.
        again = await ctx.client(sup, name=f"k{i}r")
        if "subscribe" in ctx.messages:
            await again.subscribe(f"churn-{i % 7}")
        await c.close(timeout=CLOSE_S)
        await again.close(timeout=CLOSE_S)


@scenario(
    "churn.cycles",
    cases={"mixed": {"cycles": 300, "parallel": 10}},
    profiles={"release": {"cycles": 3000, "parallel": 20}},
    requires={"stats"},
    timeout_s=90,
)
async def cycles(ctx: Context, cycles: int, parallel: int) -> None:
    """1. Sample the idle target: /stats (or the injected probe), fds, sockets, RSS.
    2. Run N cycles of connect, subscribe, request, then leave: clean close, close
    mid-stream, TCP reset mid-stream, vanish without a close frame, or reconnect while
    the old connection is open (seeded mix), a few at a time.
    3. Let it settle; sample again; publish once to live subscribers.
    4. Result: counters back to 0, tasks and threads back to their baseline, fds and
    CLOSE_WAIT back, RSS growth per 1000 cycles bounded, exactly-once delivery, and
    no latency drift between the first and last tenth of cycles."""
    sup = await ctx.start_target()
    await ctx.require_stats(sup)
    # Warm the server up (imports, caches) before the baseline is taken.
    warm = await ctx.client(sup, name="warm")
    await warm.reply(await warm.request("warm", chunks=2, chunk_delay_ms=1), scaled(5))
    await warm.close()
    base = await ctx.probes.stats(sup)
    # The session counters to settle on and judge: those /stats has (a target's own /stats
    # may report a few of them; the injected probe reports none).
    counted = tuple(k for k in COUNTERS if base is not None and k in base)
    if counted:
        base = await ctx.probes.settle_stats(sup, counted, scaled(3))
    base_res = ctx.probes.resources(sup)
    base_py = await ctx.probes.python_view(sup)

    modes = [ctx.rng.choice(MODES) for _ in range(cycles)]
    latencies: list[tuple[int, float]] = []
    rss: list[tuple[int, float]] = []
    sem = asyncio.Semaphore(parallel)
    # Reply latency is measured between batches, on a quiet server, by one long-lived
    # session: churn traffic in flight would drown the drift in noise.
    meter = await ctx.client(sup, name="meter")

    async def one(i: int) -> None:
        async with sem:
            await _cycle(ctx, sup, i, modes[i])

    step = max(1, cycles // 30)  # 30 batches: a meter point (and an RSS sample) after each
    for start in range(0, cycles, step):
        await asyncio.gather(*(one(i) for i in range(start, min(cycles, start + step))))
        done = min(cycles, start + step)
        ctx.progress(done, cycles)
        # The fastest of five: scheduling noise on a busy machine only ever adds
        # latency, while a server that really slows down raises the floor itself.
        samples = []
        for _ in range(5):
            reply = await meter.reply(await meter.request("meter", chunks=20, chunk_delay_ms=0), scaled(5))
            if reply.total_ms is not None:
                samples.append(reply.total_ms)
        if samples:
            latencies.append((done, min(samples)))
        snap = ctx.probes.resources(sup)
        if snap is not None:
            rss.append((done, snap["rss"]))
    await meter.close()
    # Every way of leaving here ends the TCP connection, so the server sees it at once;
    # silent peers that never do are the keepalive scenario's business.
    after = await (ctx.probes.settle_stats(sup, counted, scaled(3)) if counted else ctx.probes.stats(sup))
    # Sockets close a moment after the counters drop: wait (bounded) for the process
    # view to settle too, so only a lasting CLOSE_WAIT or fd leak is judged.
    after_res = await ctx.probes.settle_resources(
        sup, lambda r: r["tcp"].get("CLOSE_WAIT", 0) == 0 and r["num_fds"] <= (base_res or r)["num_fds"] + 4,
        scaled(3))
    after_py = await ctx.probes.python_view(sup)

    # Without /stats (the injected probe alone) there are no session counters to read;
    # tasks and threads below still hold the target to its baseline. A counter the baseline
    # had and the last sample lacks is judged (missing), one it never reported is not.
    keys = counted or tuple(k for k in COUNTERS if after is not None and k in after)
    if keys or after is None:
        ctx.check(checkers.counters_zero(after, keys=keys or COUNTERS))
    for key, allowed in (("tasks", 2), ("threads", 1)):
        if base is not None and key not in base:
            continue  # this /stats does not count them (the injected probe, if any, is judged below)
        ctx.check(checkers.back_to_baseline(
            after.get(key) if after else None, base.get(key) if base else None, allowed, what=key, cycles=cycles))
    ctx.check(checkers.back_to_baseline(
        after_res.get("num_fds") if after_res else None, base_res.get("num_fds") if base_res else None,
        4, what="fds", cycles=cycles))
    ctx.check(checkers.back_to_baseline(
        after_res["tcp"].get("CLOSE_WAIT", 0) if after_res else None, 0,
        0, what="CLOSE_WAIT sockets", cycles=cycles))
    if ctx.target.python_probe:
        # The target's own /stats may be wrong; the injected probe counts from inside.
        for key, allowed in (("tasks", 2), ("threads", 1)):
            ctx.check(checkers.back_to_baseline(
                after_py.get(key) if after_py else None, base_py.get(key) if base_py else None,
                allowed, what=f"{key} (injected probe)", cycles=cycles))
        if ctx.target.stats_path:  # with no /stats, "stats" above is the probe itself
            ctx.check(checkers.probe_agrees(after.get("tasks") if after else None,
                                            after_py.get("tasks") if after_py else None, what="tasks", tolerance=2))
    ctx.add_series("rss_bytes", rss)
    ctx.check(checkers.growth_per_1000(rss, bound_per_1000=48 * 2**20, what="rss"))

    ordered = [ms for _, ms in latencies]
    ctx.add_series("reply_ms", latencies)
    if len(ordered) >= 20:
        tenth = max(1, len(ordered) // 10)
        ctx.figure("latency_first_tenth_ms", statistics.median(ordered[:tenth]))
        ctx.figure("latency_last_tenth_ms", statistics.median(ordered[-tenth:]))
    ctx.check(checkers.latency_drift(ordered, ratio=1.5))

    ctx.figure("cycles", cycles)
    if base and after:
        ctx.figure("tasks_delta", (after.get("tasks") or 0) - (base.get("tasks") or 0))
    if not {"subscribe", "publish", "heartbeat"} <= ctx.messages:
        return  # no pub/sub in the target's protocol: delivery has nothing to be judged on
    # Exactly-once delivery to the live subscribers, and to no one else.
    subs = await ctx.clients(sup, 3, prefix="sub")
    others = await ctx.clients(sup, 2, prefix="other")
    await asyncio.gather(*(s.subscribe("after-churn") for s in subs))
    await subs[0].subscribe("after-churn")  # idempotent: a second SUBSCRIBE must not double delivery
    await others[0].publish("after-churn", {"n": 1})
    # The publisher's own heartbeat ACK comes after the server has fanned the event out.
    await others[0].heartbeat()
    await asyncio.gather(*(s.wait_frame(lambda f: f.kind == "event", scaled(2)) for s in subs))
    await asyncio.gather(*(c.heartbeat() for c in subs + others))
    ctx.check(checkers.exactly_once(ctx.history, "after-churn", [s.name for s in subs], [o.name for o in others]))
