"""Shutdown: Ctrl+C and SIGTERM under load, a second Ctrl+C, and the watchdog.

The story: a server hung on Ctrl+C because a blocking agent call ran in an
executor thread that interpreter exit joins forever. These cases hold a
target to the protocol's shutdown table.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from harness import checkers
from harness.core.timing import scaled
from harness.engine.actions import DrainWatch, open_streams, wait_stats
from harness.engine.scenario import Context, scenario

LOADS = ("idle", "streams", "subscriptions", "blocking", "upstream")
CASES = {f"{how}-{load}": {"how": how, "load": load} for how in ("ctrl_c", "sigterm") for load in LOADS}
CASES["ctrl_c-drain"] = {"how": "ctrl_c", "load": "drain"}


async def _load(ctx: Context, load: str) -> tuple[Any, list[tuple[Any, str]], list[Any]]:
    """Start the target under the named load; returns (supervisor, streams, other clients)."""
    env: dict[str, str] = {}
    target = ctx.target
    if load == "upstream":
        up = await ctx.fake_upstream(tokens=100000, token_delay_ms=10)
        env["OPENAI_BASE_URL"] = up.base_url
    if load == "drain":
        # A cooperative shutdown step that takes a while, so the drain can be watched.
        ctx.require("reference")
        target = target.with_args("--drain-delay-ms", str(int(ctx.limits.grace_s * 500)))
    sup = await ctx.start_target(pty=True, env=env, target=target)
    streams: list[tuple[Any, str]] = []
    others: list[Any] = []
    if load in ("streams", "drain"):
        streams = await open_streams(ctx, sup, 20 if load == "streams" else 2)
    elif load == "subscriptions":
        others = await ctx.clients(sup, 10)
        await asyncio.gather(*(c.subscribe(f"topic-{i % 3}") for i, c in enumerate(others)))
    elif load == "blocking":
        # The thread blocks for a minute: far longer than any grace period.
        c = await ctx.client(sup)
        rid = await c.request("block", agent="blocking", block_ms=60000)
        streams = [(c, rid)]
        # No chunk comes before the block ends: wait until the server reports the thread.
        await wait_stats(ctx, sup, lambda s: s.get("agent_threads", 0) >= 1, scaled(3))
    elif load == "upstream":
        streams = await open_streams(ctx, sup, 1, options={"agent": "upstream"})
    return sup, streams, others


def _own_code(report: Any) -> int | None:
    """The target's own exit code; None when the harness had to kill it (that code is ours)."""
    if report is None or report.hung:
        return None
    return report.returncode


@scenario("shutdown.signal", cases=CASES, timeout_s=45)
async def signal_shutdown(ctx: Context, how: str, load: str) -> None:
    """1. Start the target on a pty under a load (idle, 20 streams, subscriptions, a stuck
    blocking agent, an open upstream stream, or a slow drain).
    2. Send Ctrl+C through the terminal, or SIGTERM to the pid.
    3. While it drains, poll /health and try new connections.
    4. Result: exit within grace + margin with an allowed code, a final interrupted frame
    with reason "shutdown" and a 1001 close for every client, quiet output, nothing left
    running, the port free."""
    sup, streams, others = await _load(ctx, load)
    watch = DrainWatch()
    if how == "ctrl_c":
        sup.ctrl_c()
    else:
        sup.send_signal(signal.SIGTERM)
    watch.start(ctx, sup, probe_connect=(load == "drain"))
    bound_s = ctx.limits.grace_s + ctx.limits.exit_margin_s
    report = await sup.wait_exit(scaled(bound_s))
    await watch.stop()
    stacks: list[str] = []
    if report is None:
        stacks = await ctx.hang_forensics(f"no exit {bound_s:.1f}s after {how}")
    cleanup = await sup.stop()
    report = report or sup.exit_report
    clients = [c.name for c, _ in streams] + [c.name for c in others]
    await asyncio.gather(*(c.wait_closed(scaled(1)) for c, _ in streams), *(c.wait_closed(scaled(1)) for c in others))

    ctx.figure("exit_ms", report.exit_ms if report else None)
    ctx.check(checkers.exit_time(
        report.exit_ms if report and not report.hung else None,
        scaled(bound_s) * 1000, what=f"exit after {how} ({load})", stacks=stacks,
    ))
    ctx.check(checkers.exit_code(_own_code(report), ctx.limits.exit_codes,
                                 signal_killed=report.signal_killed if report else None))
    ctx.check(checkers.output_noise(sup.output("stdout"), sup.output("stderr"), ctx.target.noise_patterns,
                                    max_stderr_lines=1))
    ctx.check(checkers.no_survivors(cleanup.survivors))
    ctx.check(checkers.port_free(cleanup.port_free, port=sup.port))
    if streams:
        ctx.check(checkers.shutdown_finals(ctx.history, clients=[c.name for c, _ in streams], reason="shutdown"))
    if clients:
        ctx.check(checkers.close_codes(ctx.history, expected=1001, clients=clients))
    if load == "drain":
        ctx.check(checkers.health_during_drain(watch.health))
        ctx.check(checkers.connections_refused(watch.connect_refused))


@scenario("shutdown.second_ctrl_c", requires={"reference"}, timeout_s=30)
async def second_ctrl_c(ctx: Context) -> None:
    """1. Start the target with a slow drain (a shutdown step of most of the grace period)
    and two streams.
    2. Ctrl+C, wait until the drain has begun (/health says 503 or the streams end), Ctrl+C again.
    3. Result: the process exits within 500 ms of the second Ctrl+C with a forced-exit code."""
    ctx.require("reference")
    target = ctx.target.with_args("--drain-delay-ms", str(int(ctx.limits.grace_s * 800)))
    sup = await ctx.start_target(pty=True, target=target)
    streams = await open_streams(ctx, sup, 2)
    sup.ctrl_c()
    # The drain has begun once the streams got their shutdown finals.
    await asyncio.gather(*(c.reply(r, scaled(2)) for c, r in streams), return_exceptions=True)
    second_ns = sup.ctrl_c()
    report = await sup.wait_exit(scaled(ctx.limits.grace_s + ctx.limits.exit_margin_s))
    stacks = [] if report else await ctx.hang_forensics("no exit after a second Ctrl+C")
    cleanup = await sup.stop()
    report = report or sup.exit_report
    after_ms = (report.exited_ns - second_ns) / 1e6 if report and not report.hung else None
    ctx.figure("second_ctrl_c_ms", after_ms)
    ctx.check(checkers.exit_time(after_ms, scaled(ctx.limits.second_sigint_s) * 1000,
                                 what="exit after the second Ctrl+C", stacks=stacks))
    ctx.check(checkers.exit_code(_own_code(report), ctx.limits.forced_exit_codes,
                                 signal_killed=report.signal_killed if report else None))
    ctx.check(checkers.no_survivors(cleanup.survivors))


@scenario("shutdown.watchdog", requires={"reference"}, timeout_s=40)
async def watchdog(ctx: Context) -> None:
    """1. Start the target with a shutdown step that never completes and a hard limit of 2 s.
    2. Ctrl+C.
    3. Result: the watchdog ends the process at the hard limit (plus a margin) with its
    code, and its dump of every thread's stack is kept with the run."""
    ctx.require("reference")
    target = ctx.target.with_server_flags(grace_s=1, hard_limit_s=2).with_args("--stuck-drain")
    sup = await ctx.start_target(pty=True, target=target)
    sup.ctrl_c()
    bound_s = target.limits.hard_limit_s + ctx.limits.exit_margin_s
    report = await sup.wait_exit(scaled(bound_s))
    stacks = [] if report else await ctx.hang_forensics("the watchdog did not end a stuck drain")
    cleanup = await sup.stop()
    report = report or sup.exit_report
    ctx.figure("watchdog_exit_ms", report.exit_ms if report else None)
    ctx.check(checkers.exit_time(report.exit_ms if report and not report.hung else None,
                                 scaled(bound_s) * 1000, what="watchdog exit", stacks=stacks))
    ctx.check(checkers.exit_code(_own_code(report), ctx.limits.watchdog_exit_codes,
                                 signal_killed=report.signal_killed if report else None))
    ctx.check(checkers.watchdog_dump(sup.output("stderr")))
    ctx.check(checkers.no_survivors(cleanup.survivors))
