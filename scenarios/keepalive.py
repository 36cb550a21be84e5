"""Keepalive: peers that stop answering pings are dropped and their sessions released."""

from __future__ import annotations

from harness import checkers
from harness.core.timing import now_ns, scaled
from harness.engine.scenario import Context, scenario

#: Short enough for the gate; the bound below scales with it.
INTERVAL_S = 1.0
RELEASED = ("connections", "sessions", "active_requests", "per_session_state")


@scenario("keepalive.silent_peer",
          cases={"stopped_reader": {"how": "stop_reading"}, "frozen_process": {"how": "sigstop"}},
          requires={"stats"}, timeout_s=30)
async def silent_peer(ctx: Context, how: str) -> None:
    """1. Start the target with a 1 s heartbeat interval (for the reference server).
    2. Open a session that then goes silent: a client that stops reading (so never
    answers pings), or a separate peer process frozen with SIGSTOP.
    3. Result: the server drops it within two heartbeat intervals plus a margin, and its
    session is released (connections and sessions back to 0)."""
    target = ctx.target.with_server_flags(heartbeat_interval_s=INTERVAL_S)
    sup = await ctx.start_target(target=target)
    await ctx.require_stats(sup)
    interval = target.limits.heartbeat_interval_s
    bound_ms = scaled(2 * interval + ctx.limits.exit_margin_s) * 1000
    if how == "stop_reading":
        c = await ctx.client(sup)
        ctx.enter(ctx.nemesis.stop_reading(c))
    else:
        peer = await ctx.start_peer(sup)
        ctx.enter(ctx.nemesis.freeze(peer.pid, what=peer.name))
    since = now_ns()
    dropped = await ctx.probes.wait_stats(sup, lambda s: s.get("connections") == 0, scaled(bound_ms / 1000 + 2))
    dropped_ms = (now_ns() - since) / 1e6 if dropped is not None and dropped.get("connections") == 0 else None
    ctx.figure("dropped_after_ms", dropped_ms)
    ctx.check(checkers.keepalive.dropped_within(dropped_ms, bound_ms, what=f"drop of a silent peer ({how})"))
    after = await ctx.probes.settle_stats(sup, RELEASED, scaled(2))
    ctx.check(checkers.counters_zero(after, keys=RELEASED))
