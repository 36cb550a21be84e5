"""Keepalive: peers that stop answering pings are dropped and their sessions released.

The case asks for a 1 s heartbeat interval where the target can be told one
(a ``{heartbeat_interval}`` placeholder in its command, or ``protocol_flags``);
a target that cannot keeps its declared interval (PROTOCOL.md's default 10 s),
and the case works from that, as long as the drop bound (two intervals plus a
margin) fits the profile's time budget for the case.
"""

from __future__ import annotations

from harness import checkers
from harness.checkers.keepalive import dropped_within
from harness.core.timing import now_ns, scaled
from harness.engine.scenario import Context, NotApplicable, scenario

#: What the case asks the target for; the bound scales with the interval it has.
INTERVAL_S = 1.0
RELEASED = ("connections", "sessions", "active_requests", "per_session_state")
#: Seconds the drop bound may take per profile: the gate stays fast, a release run waits longer.
BUDGET_S = {"gate": 8.0, "release": 30.0}


@scenario("keepalive.silent_peer",
          cases={"stopped_reader": {"how": "stop_reading"}, "frozen_process": {"how": "sigstop"}},
          requires={"stats"}, timeout_s=45)
async def silent_peer(ctx: Context, how: str) -> None:
    """1. Start the target with a 1 s heartbeat interval where it can be told one (else its
    declared interval, when two of them fit the profile's budget).
    2. Open a session that then goes silent: a client that stops reading (so never
    answers pings), or a separate peer process, speaking the target's protocol, frozen
    with SIGSTOP.
    3. Result: the server drops it within two heartbeat intervals plus a margin, and its
    session is released (connections and sessions back to 0)."""
    target = ctx.target.with_server_flags(heartbeat_interval_s=INTERVAL_S)
    interval = target.limits.heartbeat_interval_s
    bound_s = 2 * interval + ctx.limits.exit_margin_s
    budget_s = BUDGET_S.get(ctx.profile, BUDGET_S["gate"])
    if bound_s > budget_s:
        raise NotApplicable(
            f"the target's heartbeat interval is {interval:g} s and it cannot be told another, so dropping a "
            f"silent peer may take {bound_s:g} s, more than the {budget_s:g} s this case has in the "
            f"{ctx.profile} profile; make the interval configurable (a {{heartbeat_interval}} placeholder in "
            f"the target's command, or protocol_flags = true), declare limits.heartbeat_interval_s if it "
            f"already pings more often, or run the release profile")
    ctx.figure("heartbeat_interval_s", interval)
    sup = await ctx.start_target(target=target)
    await ctx.require_stats(sup)
    bound_ms = scaled(bound_s) * 1000
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
    ctx.check(dropped_within(dropped_ms, bound_ms, what=f"drop of a silent peer ({how})"))
    after = await ctx.probes.settle_stats(sup, RELEASED, scaled(2))
    ctx.check(checkers.counters_zero(after, keys=RELEASED))
