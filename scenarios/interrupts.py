"""Interrupts: prompt ACKs, nothing after the ACK, and cancellation that reaches the agent.

The stories: interrupts timed out because the server handled INTERRUPT inline
behind the stream it was meant to stop; and interrupts "succeeded" while
chunks kept flowing because the agent loop checked its cancel flag too rarely
and never closed the upstream HTTP stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness import checkers
from harness.client.connection import ClientError
from harness.core.timing import scaled
from harness.engine.actions import open_streams
from harness.engine.scenario import Context, NotApplicable, scenario

if TYPE_CHECKING:
    from harness.client.connection import Client
    from harness.process.supervisor import Supervisor
    from harness.protocol.frames import Frame

#: Streams that run long enough to be interrupted, fast enough to be "full speed".
FAST: dict[str, Any] = {"chunks": 100000, "chunk_delay_ms": 5}
#: The storm's 30 streams: continuous, but at a rate one Python client reads without
#: a backlog (3000 frames/s); a backlog would stamp ACKs late and time the harness.
STORM: dict[str, Any] = {"chunks": 100000, "chunk_delay_ms": 10}
#: Short replies that end by themselves, used as the observation window after an ACK.
SHORT: dict[str, Any] = {"chunks": 40, "chunk_delay_ms": 10}


def _first_chunk_of(rid: str) -> Callable[[Frame], bool]:
    return lambda f: f.request_id == rid and f.kind == "chunk"


def _streams_per_session(ctx: Context) -> int:
    """Three concurrent replies per session where the target runs them side by side.

    One, where a new request replaces the active one (declared), the target runs
    one at a time, or its interrupt names no request (it would stop them all,
    where a case means one); always one slot left for the observation window's reply.
    """
    if ctx.target.conventions.replaces_active or "interrupt_target" not in ctx.messages:
        return 1
    return max(1, min(3, ctx.limits.max_concurrent_requests - 1))


def _flag_said(ctx: Context) -> bool:
    """False where the target's final frames do not say they were interrupted (``fields.interrupted = false``)."""
    from harness.protocol.adapters import load_adapter

    return bool(getattr(load_adapter(ctx.target), "interrupted_said", True))


def _ack_checks(ctx: Context) -> None:
    """The checks every interrupt case makes on its history, in the order the target declared."""
    bound_ms = scaled(ctx.limits.ack_bound_s) * 1000
    conv = ctx.target.conventions
    ctx.check(checkers.ack_latency(ctx.history, bound_ms=bound_ms))
    # The order of finals and ACKs, and who claimed what, are the service's only where its
    # ACKs name the requests they stopped: ids the client worked out hold by construction.
    # (With no ACK at all the checks are made, and say they could not judge.)
    answered = any((o.data or {}).get("kind") == "ack" for o in ctx.history.observations("frame"))
    if checkers.interrupts.acks_name_requests(ctx.history) or not answered:
        ctx.check(checkers.final_before_ack(ctx.history, order=conv.interrupt_order,
                                           grace_ms=conv.after_ack_grace_ms, require_flag=_flag_said(ctx)))
        ctx.check(checkers.no_double_claim(ctx.history))
    else:
        ctx.figure("claims_judged", "none: the target's answers name no requests (the client worked them out)")
    ctx.check(checkers.no_frames_after_ack(ctx.history, grace_ms=conv.after_ack_grace_ms,
                                           order=conv.interrupt_order))
    ctx.check(checkers.one_terminal_per_request(ctx.history))
    # Chunks sooner than the ACK bound may have been on their way before the target read the INTERRUPT.
    ctx.check(checkers.interrupts.chunks_after_interrupt(ctx.history, ctx.limits.chunks_after_interrupt,
                                                         in_flight_ms=bound_ms))
    lat = sorted(float(op.data["latency_ms"]) for op in ctx.history.operations("interrupt")
                 if op.data.get("latency_ms") is not None)
    if lat:
        ctx.figure("ack_p99_ms", checkers.percentile(lat, 99))
        ctx.figure("ack_p50_ms", checkers.percentile(lat, 50))
        ctx.figure("ack_latencies_ms", [round(x, 3) for x in lat])


async def _quiesced(ctx: Context, sup: Supervisor) -> None:
    """active_requests back to 0 once everything is interrupted or done.

    Only where the target reports active_requests (its /stats): without it there is
    nothing to wait for and nothing to judge, so no time is spent and no check made.
    """
    first = await ctx.probes.stats(sup)
    if first is None or "active_requests" not in first:
        ctx.figure("active_requests_after", "not reported by the target")
        return
    sample = first if first.get("active_requests") == 0 else \
        await ctx.probes.settle_stats(sup, ("active_requests",), scaled(3))
    ctx.check(checkers.counters_zero(sample, keys=("active_requests",)))


async def _observe_window(client: Client, ms: int = 400) -> None:
    """An observation window after an ACK, bounded by a short reply on the same session.

    Waiting for this reply's final frame is the event; its length sets how long
    stray frames of the interrupted request would have had to show up. A server
    too broken to answer ends the window at the bound; the checks then judge
    what the history holds.
    """
    try:
        rid = await client.request("window", chunks=max(1, ms // 10), chunk_delay_ms=10)
        await client.reply(rid, scaled(5))
    except (ClientError, asyncio.TimeoutError):
        pass


#: not_found aims interrupts at given ids, and judges the service's answer to each: a service
#: without ACKs says nothing to an id it does not run (the client's NOT_FOUND is its own).
_NOT_FOUND_NEEDS = frozenset({"message:interrupt_target", "message:ack"})


@scenario("interrupts.basic", cases={
    "one": {"mode": "one"},
    "all": {"mode": "all"},
    "not_found": {"mode": "not_found"},
    "then_request": {"mode": "then_request"},
}, requires=lambda p: _NOT_FOUND_NEEDS if p["mode"] == "not_found" else (), timeout_s=30)
async def basic(ctx: Context, mode: str) -> None:
    """1. Open a session streaming three long replies at full speed (plus a second session).
    2. one: interrupt one request; all: interrupt with target null; not_found: interrupt an
    unknown id, a finished id and the other session's id; then_request: interrupt, then at
    once send a new request.
    3. Result: one prompt ACK per INTERRUPT with the right status and ids, the interrupted
    final frame before it, no frame after it, untouched requests untouched."""
    sup = await ctx.start_target()
    a, b = await ctx.clients(sup, 2)
    rids = [await a.request("stream", **FAST) for _ in range(_streams_per_session(ctx))]
    foreign = await b.request("foreign", **SHORT)
    for r in rids:
        await a.wait_frame(_first_chunk_of(r), scaled(5))
    if mode == "one":
        res = await a.interrupt(rids[0], timeout=scaled(2))
        ctx.check(checkers.ack_status(res.ack if res.ack is not None else res.error, "SUCCESS", [rids[0]]))
        await _observe_window(a)
        await a.interrupt(None, timeout=scaled(2))
    elif mode == "all":
        res = await a.interrupt(None, timeout=scaled(2))
        ctx.check(checkers.ack_status(res.ack if res.ack is not None else res.error, "SUCCESS", rids))
        await _observe_window(a)
    elif mode == "not_found":
        done = await a.request("short", chunks=2, chunk_delay_ms=1)
        await a.reply(done, scaled(5))
        ids = []
        for target in ("no-such-request", done, foreign):
            res = await a.interrupt(target, timeout=scaled(2))
            ids.append(res.interrupt_id)
        ctx.check(checkers.not_found(ctx.history, ids))
        await b.reply(foreign, scaled(5))
        ctx.check(checkers.untouched(ctx.history, [foreign]))
        await a.interrupt(None, timeout=scaled(2))
    elif mode == "then_request":
        await a.interrupt(rids[0], timeout=scaled(2))
        nxt = await a.request("next", **SHORT)
        reply = await a.reply(nxt, scaled(5))
        ctx.figure("next_first_chunk_ms", reply.first_chunk_ms)
        ctx.check(checkers.request_completes(ctx.history, nxt, client=a.name))
        ctx.check(checkers.not_delayed(reply.first_chunk_ms, scaled(ctx.limits.ack_bound_s) * 1000 * 2,
                                       what="first chunk of the request sent after an INTERRUPT"))
        await a.interrupt(None, timeout=scaled(2))
    await b.reply(foreign, scaled(5))
    _ack_checks(ctx)
    if "seq" in ctx.messages:  # a service whose chunks carry no number has no sequence to keep
        ctx.check(checkers.seq_gap_free(ctx.history))
    await _quiesced(ctx, sup)


@scenario("interrupts.storm", cases={"10x10": {"sessions": 10, "per_session": 10}}, timeout_s=40)
async def storm(ctx: Context, sessions: int, per_session: int) -> None:
    """1. Open 10 sessions, each streaming three replies at full speed.
    2. Fire 100 INTERRUPTs at once: per session, several at the same request, some at
    null, some at unknown ids (seeded choice).
    3. Result: exactly one ACK each, p99 latency within the bound, no request claimed by
    two ACKs, finals before ACKs, nothing after them, active_requests back to 0."""
    sup = await ctx.start_target()
    clients = await ctx.clients(sup, sessions)
    streams: dict[str, list[str]] = {}
    for c in clients:
        streams[c.name] = [await c.request("stream", **STORM) for _ in range(_streams_per_session(ctx))]
    # Every session streams before the storm; a server that cannot run several
    # requests at once shows it in the ACKs below, not by stalling the setup.
    await asyncio.gather(*(
        c.wait_frame(_first_chunk_of(streams[c.name][0]), scaled(5))
        for c in clients
    ))

    async def fire(c: Client) -> None:
        targets: list[str | None] = []
        for _ in range(per_session):
            roll = ctx.rng.random()
            targets.append(None if roll < 0.1 else f"unknown-{ctx.rng.randrange(1000)}" if roll < 0.2
                           else ctx.rng.choice(streams[c.name]))
        await asyncio.gather(*(c.interrupt(t, timeout=scaled(3)) for t in targets), return_exceptions=True)

    await asyncio.gather(*(fire(c) for c in clients))
    ctx.figure("interrupts", len(ctx.history.operations("interrupt")))
    ctx.check(checkers.one_ack_each(ctx.history))
    await asyncio.gather(*(_observe_window(c, 200) for c in clients))
    # Leave nothing streaming behind, whatever the server did.
    await asyncio.gather(*(c.interrupt(None, timeout=scaled(1)) for c in clients), return_exceptions=True)
    _ack_checks(ctx)
    await _quiesced(ctx, sup)


@scenario("interrupts.upstream", requires={"agent:upstream"}, timeout_s=30)
async def upstream(ctx: Context) -> None:
    """1. Start a fake OpenAI-compatible upstream and the target pointed at it.
    2. Stream a reply through the "upstream" agent; interrupt it after the first chunk.
    3. Result: the ACK is prompt, and the upstream saw its HTTP stream closed within
    200 ms of the INTERRUPT (the fake upstream's record is the evidence)."""
    up = await ctx.fake_upstream(tokens=100000, token_delay_ms=5)
    sup = await ctx.start_target(env={"OPENAI_BASE_URL": up.base_url})
    ((c, rid),) = await open_streams(ctx, sup, 1, options={"agent": "upstream"})
    if not up.streams:
        # Streaming without calling the upstream: nothing here could have failed.
        raise NotApplicable("the target streamed an upstream reply without calling the upstream "
                            "(it has no upstream agent, or reads another variable than OPENAI_BASE_URL)")
    res = await c.interrupt(rid, timeout=scaled(2))
    record = await up.wait_stream_closed(0, scaled(2))
    closed_ns = record.closed_ns if record is not None else None
    ctx.check(checkers.upstream_closed_within(res.sent_ns, closed_ns, scaled(ctx.limits.upstream_close_s) * 1000))
    if closed_ns is not None:
        ctx.figure("upstream_close_ms", (closed_ns - res.sent_ns) / 1e6)
    await _observe_window(c)
    _ack_checks(ctx)
    await _quiesced(ctx, sup)


@scenario("interrupts.blocking", requires={"agent:blocking"}, timeout_s=30)
async def blocking(ctx: Context) -> None:
    """1. Send a request to the "blocking" agent, which blocks its thread for 1.5 s
    uninterruptibly, then interrupt it.
    2. Send a normal request at once; wait until the blocked thread has finished.
    3. Result: the ACK is prompt, the next request is not delayed by the stuck thread, and
    the thread's late output never reaches the client."""
    block_ms = 1500
    sup = await ctx.start_target()
    first = await ctx.probes.stats(sup)
    if first is None or not isinstance(first.get("agent_threads"), int):
        # Without agent_threads nothing shows the thread stuck, or when it has finished:
        # the interrupt could land before the block began and the checks below pass for nothing.
        raise NotApplicable("needs /stats agent_threads to see the blocking agent's thread stuck and finished")
    c = await ctx.client(sup)
    rid = await c.request("block", agent="blocking", block_ms=block_ms)
    await ctx.probes.wait_stats(sup, lambda s: s.get("agent_threads", 0) >= 1, scaled(2))
    res = await c.interrupt(rid, timeout=scaled(2))
    if any(f.request_id == rid and f.kind == "chunk" and f.t_ns < res.sent_ns for f in c.frames):
        # A chunk before the block could have ended: the agent did not block, so the
        # checks below would pass whatever the target does with a stuck thread.
        raise NotApplicable(f"the blocking agent did not block: a chunk of {rid} arrived within {block_ms} ms")
    # The next blocking request needs a worker of its own at once: a pool that the stuck
    # thread still occupies would make it wait out the block.
    nxt = await c.request("next", agent="blocking", block_ms=0, **SHORT)
    reply = await c.reply(nxt, scaled(5))
    ctx.figure("next_first_chunk_ms", reply.first_chunk_ms)
    ctx.check(checkers.not_delayed(reply.first_chunk_ms, scaled(ctx.limits.ack_bound_s) * 1000 * 2,
                                   what="first chunk of a request sent while a blocking agent is stuck"))
    # The late output would come once the thread unblocks: wait for that event, then a window.
    await ctx.probes.wait_stats(sup, lambda s: s.get("agent_threads", 1) == 0, scaled(block_ms / 1000 + 3))
    await _observe_window(c)
    _ack_checks(ctx)
    await _quiesced(ctx, sup)
