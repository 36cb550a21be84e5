"""Slow consumer: one client that never reads must not cost the server memory or the others time."""

from __future__ import annotations

import asyncio

from harness import checkers
from harness.client.connection import Client, ClientError
from harness.core.timing import scaled
from harness.engine.actions import start_stream
from harness.engine.scenario import Context, scenario

EVENT_BYTES = 256 * 1024


@scenario("slow_consumer.never_reads", cases={"20_streams": {"others": 20, "events": 400}},
          requires={"message:subscribe", "message:publish", "message:heartbeat"}, timeout_s=40)
async def never_reads(ctx: Context, others: int, events: int) -> None:
    """1. Open a session subscribed to a topic, start long replies on it, then stop reading.
    2. Publish large events (256 KiB each) to that topic while 20 other sessions stream
    replies and measure their latency.
    3. Result: the server's memory grows by a bounded amount, the others' reply latency
    stays within its bound, and the slow session is dropped or throttled rather than
    buffered without limit."""
    sup = await ctx.start_target()
    slow = await ctx.client(sup, name="slow")
    await slow.subscribe("firehose")
    for _ in range(4):
        await start_stream(slow, scaled(5), "flood", chunks=100_000, chunk_delay_ms=0)
    ctx.enter(ctx.nemesis.stop_reading(slow))
    publisher = await ctx.client(sup, name="publisher")
    streamers = await ctx.clients(sup, others, prefix="o")
    before = ctx.probes.resources(sup)
    blob = "x" * EVENT_BYTES
    latencies: list[float | None] = []
    peak = before["rss"] if before else None

    async def stream(c: Client) -> None:
        for _ in range(3):
            try:
                rid = await c.request("normal", chunks=20, chunk_delay_ms=10)
                reply = await c.reply(rid, scaled(5))
            except (ClientError, asyncio.TimeoutError):
                latencies.append(None)  # counted as a timeout by the latency check
                return
            latencies.append(reply.total_ms if reply.complete else None)

    async def publish() -> None:
        nonlocal peak
        for i in range(events):
            try:
                await publisher.publish("firehose", {"i": i, "blob": blob})
                if i % 10 == 9:
                    await publisher.heartbeat(timeout=scaled(5))  # paced on the server's answers
            except (ClientError, asyncio.TimeoutError):
                return  # a server this stuck is judged by the others' latency below
            if i % 10 == 9:
                snap = ctx.probes.resources(sup)
                if snap is not None and peak is not None:
                    peak = max(peak, snap["rss"])

    await asyncio.gather(publish(), *(stream(c) for c in streamers))
    growth = (peak - before["rss"]) if before and peak is not None else None
    ctx.figure("rss_growth_bytes", growth)
    ctx.figure("published_bytes", events * EVENT_BYTES)
    # 400 events of 256 KiB is 100 MiB for the slow session; a bounded server holds a few.
    ctx.check(checkers.memory_bounded([before["rss"], peak] if before and peak else [], 32 * 2**20))
    ctx.check(checkers.latency_within(latencies, scaled(1.5) * 1000, percentile=99))
    lat = sorted(x for x in latencies if x is not None)
    if lat:
        ctx.figure("others_p99_ms", checkers.percentile(lat, 99))
    ctx.add_series("others_reply_ms", [(i, x) for i, x in enumerate(latencies) if x is not None])
