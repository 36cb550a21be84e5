"""Shutdown: Ctrl+C and SIGTERM under load, a second Ctrl+C, and the watchdog.

The story: a server hung on Ctrl+C because a blocking agent call ran in an
executor thread that interpreter exit joins forever. These cases hold a
target to the protocol's shutdown table, as far as the target declared it
(``conventions``: its close codes, whether active requests get a shutdown
final, a stderr line limit), and blame honestly: once wschaos had to end a
hung target, its exit code, output, survivors and port are wschaos's doing
and are not judged as the target's.

Signals go through the nemesis, so they are on the run's timeline.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness import checkers
from harness.core.timing import now_ns, scaled
from harness.engine.actions import LONG, ScenarioError, open_streams, start_stream, watch_drain
from harness.engine.scenario import Context, NotApplicable, scenario

if TYPE_CHECKING:
    from harness.client.connection import Client
    from harness.process.exit import ExitReport
    from harness.process.supervisor import Supervisor
    from harness.protocol.frames import Frame
from harness.process.supervisor import SupervisorError

LOADS = ("idle", "streams", "subscriptions", "blocking", "upstream")
CASES = {f"{how}-{load}": {"how": how, "load": load} for how in ("ctrl_c", "sigterm") for load in LOADS}
CASES["ctrl_c-drain"] = {"how": "ctrl_c", "load": "drain"}

#: What each load needs of the target (checked before the case starts).
NEEDS: dict[str, tuple[str, ...]] = {
    "idle": (),
    "streams": (),
    "subscriptions": ("message:subscribe",),
    "blocking": ("agent:blocking",),
    "upstream": ("agent:upstream",),
    "drain": ("hook:drain_delay",),
}
#: How long the blocking agent's thread blocks: far longer than any grace period.
BLOCK_MS = 60_000


def _with_hook(ctx: Context, hook: str, **values: Any) -> Any:
    """The target with the extra arguments its declared ``hook`` takes."""
    args = ctx.target.capabilities.hook_args(hook, **values)
    if args is None:  # the case's requirements keep this from happening; say so if it does
        raise NotApplicable(f"the target declares no capabilities.hooks.{hook}")
    return ctx.target.with_args(*args)


async def _blocking_in_flight(ctx: Context, sup: Supervisor, client: Client) -> tuple[str | None, str]:
    """Send a request to the blocking agent and wait until its thread is seen stuck.

    The evidence is a new thread: /stats ``agent_threads`` or ``threads`` (the
    injected probe's thread count too) rising; an agent run on an executor may not
    count as an agent thread, but it is a thread. Returns (request id, "") once
    seen, else (None, why not): the caller decides whether its case can do
    without. An ERROR answer is the target refusing the request (a ScenarioError).
    """
    before = await ctx.probes.stats(sup)
    keys = [k for k in ("agent_threads", "threads") if before and isinstance(before.get(k), int)]
    if before is None or not keys:
        return None, ("needs /stats (agent_threads or threads) or the injected Python probe to see the "
                      "blocking agent's thread stuck before the signal")
    base = {k: before[k] for k in keys}

    def more(s: dict[str, Any]) -> bool:
        return any(isinstance(s.get(k), int) and s[k] > base[k] for k in keys)

    rid = await client.request("block", agent="blocking", block_ms=BLOCK_MS)
    seen = await ctx.probes.wait_stats(sup, more, scaled(3))
    refused = next((f for f in client.frames if f.request_id == rid and f.kind == "error"), None)
    if refused is not None:
        raise ScenarioError(f"{client.name}: the blocking request {rid} was refused: {refused.code} {refused.message}")
    if seen is None or not more(seen):
        after = ", ".join(f"{k} {base[k]} -> {seen.get(k) if seen else '?'}" for k in keys)
        return None, (f"the blocking agent's thread never showed ({after} within 3 s of the request): "
                      f"its being stuck cannot be seen")
    return rid, ""


async def _load(ctx: Context, load: str) -> tuple[Supervisor, list[tuple[Client, str]], list[Client]]:
    """Start the target under the named load; returns (supervisor, streams, other clients)."""
    env: dict[str, str] = {}
    target = ctx.target
    if load == "upstream":
        up = await ctx.fake_upstream(tokens=100000, token_delay_ms=10)
        env["OPENAI_BASE_URL"] = up.base_url
    if load == "drain":
        # A cooperative shutdown step that takes a while, so the drain can be watched.
        target = _with_hook(ctx, "drain_delay", ms=int(ctx.limits.grace_s * 500))
    sup = await ctx.start_target(pty=True, env=env, target=target)
    streams: list[tuple[Client, str]] = []
    others: list[Client] = []
    if load in ("streams", "drain"):
        streams = await open_streams(ctx, sup, 20 if load == "streams" else 2)
    elif load == "subscriptions":
        others = await ctx.clients(sup, 10)
        await asyncio.gather(*(c.subscribe(f"topic-{i % 3}") for i, c in enumerate(others)))
    elif load == "blocking":
        c = await ctx.client(sup)
        rid, why = await _blocking_in_flight(ctx, sup, c)
        if rid is None:
            # Without seeing the thread stuck, a quick exit could mean the request never ran.
            raise NotApplicable(why)
        streams = [(c, rid)]
    elif load == "upstream":
        streams = await open_streams(ctx, sup, 1, options={"agent": "upstream"})
    return sup, streams, others


async def _stop(ctx: Context, sup: Any, report: Any, why: str) -> tuple[Any, Any, list[str], int | None]:
    """Stop the target; (report, cleanup, stacks, when wschaos ended it or None when it exited itself)."""
    stacks: list[str] = []
    killed_ns = None
    if report is None:
        stacks = await ctx.hang_forensics(why)
        killed_ns = now_ns()
    cleanup = await sup.stop()
    return report or sup.exit_report, cleanup, stacks, killed_ns


def _hung(report: ExitReport | None) -> bool:
    return report is None or report.hung


@scenario("shutdown.signal", cases=CASES, requires=lambda p: NEEDS[p["load"]], timeout_s=45)
async def signal_shutdown(ctx: Context, how: str, load: str) -> None:
    """1. Start the target on a pty under a load (idle, 20 streams, subscriptions, a stuck
    blocking agent, an open upstream stream, or a slow drain where the target declares one).
    2. Send Ctrl+C through the terminal, or SIGTERM to the pid.
    3. While it drains, poll /health and try new connections.
    4. Result: exit within grace + margin with an allowed code, a final interrupted frame
    with reason "shutdown" (where declared) and a declared close code (1001) for every
    client, quiet output, nothing left running, the port free. A target wschaos had to
    end is judged by its exit time (with stacks) alone."""
    sup, streams, others = await _load(ctx, load)
    conv = ctx.target.conventions
    if how == "ctrl_c":
        ctx.nemesis.ctrl_c(sup)
    else:
        ctx.nemesis.signal(sup, signal.SIGTERM)
    watch = watch_drain(ctx, sup, probe_connect=(load == "drain"))
    bound_s = ctx.limits.grace_s + ctx.limits.exit_margin_s
    report = await sup.wait_exit(scaled(bound_s))
    await watch.stop()
    report, cleanup, stacks, killed_ns = await _stop(ctx, sup, report, f"no exit {bound_s:.1f}s after {how}")
    hung = _hung(report)
    clients = [c.name for c, _ in streams] + [c.name for c in others]
    await asyncio.gather(*(c.wait_closed(scaled(1)) for c, _ in streams), *(c.wait_closed(scaled(1)) for c in others))

    ctx.figure("exit_ms", report.own_exit_ms if report else None)
    ctx.check(checkers.exit_time(
        report.own_exit_ms if report else None,
        scaled(bound_s) * 1000, what=f"exit after {how} ({load})", stacks=stacks,
    ))
    ctx.check(checkers.exit_code(report.own_returncode if report else None, ctx.limits.exit_codes,
                                 signal_killed=report.signal_killed if report else None, hung=hung))
    ctx.check(checkers.output_noise(sup.output("stdout"), sup.output("stderr"), ctx.target.noise_patterns,
                                    max_stderr_lines=conv.stderr_max_lines, hung=hung))
    ctx.check(checkers.no_survivors(cleanup.survivors, hung=hung))
    ctx.check(checkers.port_free(cleanup.port_free, port=sup.port, hung=hung))
    if streams and conv.shutdown_finals:
        ctx.check(checkers.shutdown_finals(ctx.history, clients=[c.name for c, _ in streams], reason="shutdown"))
    if clients:
        ctx.check(checkers.close_codes(ctx.history, expected=conv.close_codes, clients=clients,
                                       killed_ns=killed_ns))
    if load == "drain":
        if ctx.target.health_path and getattr(conv, "health_draining", True):
            ctx.check(checkers.health_during_drain(watch.health))
        ctx.check(checkers.connections_refused(watch.connect_refused))


def _end_of(rid: str) -> Callable[[Frame], bool]:
    return lambda f: f.request_id == rid and f.kind in ("final", "error")


async def _drain_seen(ctx: Context, sup: Supervisor, streams: list[tuple[Client, str]], timeout: float) -> str | None:
    """Wait (bounded) for the first sign the drain began: a stream's final frame, a close, or the exit."""
    waits: dict[asyncio.Future[Any], str] = {}
    for c, rid in streams:
        waits[asyncio.ensure_future(c.wait_frame(_end_of(rid), timeout))] = f"{c.name} final"
        waits[asyncio.ensure_future(c.wait_closed(timeout))] = f"{c.name} closed"
    waits[asyncio.ensure_future(sup.wait_exit(timeout))] = "exit"
    pending = set(waits)
    seen = None
    deadline = now_ns() + int(timeout * 1e9)
    try:
        while pending and seen is None and now_ns() < deadline:
            done, pending = await asyncio.wait(pending, timeout=(deadline - now_ns()) / 1e9,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            seen = next((waits[f] for f in done if not f.cancelled() and f.exception() is None
                         and f.result() is not None), None)
    finally:
        for f in pending:
            f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return seen


@scenario("shutdown.second_ctrl_c", timeout_s=30)
async def second_ctrl_c(ctx: Context) -> None:
    """1. Start the target on a pty with what makes a drain last: two streams, a client
    that stopped reading (its close cannot complete before the grace runs out), a stuck
    blocking agent where the target has one, and its declared drain delay if any.
    2. Ctrl+C; as soon as the drain shows (a stream's final frame or a close), Ctrl+C again.
    3. Result: the process exits within 500 ms of the second Ctrl+C with a forced-exit
    code. A drain that ended by itself before (or just as) the second Ctrl+C could cut it
    short says nothing either way, and is reported unknown with its length."""
    target = ctx.target
    if target.capabilities.hook_args("drain_delay") is not None:
        target = _with_hook(ctx, "drain_delay", ms=int(ctx.limits.grace_s * 800))
    sup = await ctx.start_target(pty=True, target=target)
    streams = await open_streams(ctx, sup, 2)
    slow = await ctx.client(sup, name=ctx.name("slow"))
    await start_stream(slow, scaled(5), "a reply nobody reads", **LONG)
    ctx.enter(ctx.nemesis.stop_reading(slow))
    blocking, why = None, "the target declares no blocking agent"
    if target.has_agent("blocking"):
        blocking, why = await _blocking_in_flight(ctx, sup, await ctx.client(sup))
    ctx.figure("blocking_in_flight", blocking is not None)
    if blocking is None:
        ctx.figure("blocking_left_out", why)

    first_ns = ctx.nemesis.ctrl_c(sup)
    ctx.figure("drain_seen_by", await _drain_seen(ctx, sup, streams, scaled(1)))
    second_ns: int | None = None
    if sup.is_running():
        try:
            second_ns = ctx.nemesis.ctrl_c(sup)
        except SupervisorError:
            second_ns = None  # it exited between the look and the keystroke
    bound_ms = scaled(ctx.limits.second_sigint_s) * 1000
    # Long enough to see an ignored second Ctrl+C outlive its bound: the rest of the grace.
    remaining_s = scaled(ctx.limits.grace_s + ctx.limits.exit_margin_s) - (now_ns() - first_ns) / 1e9
    report = await sup.wait_exit(max(remaining_s, scaled(ctx.limits.second_sigint_s)))
    report, cleanup, stacks, _killed = await _stop(ctx, sup, report, "no exit after a second Ctrl+C")
    hung = _hung(report)
    exited_ns = report.exited_ns if report is not None and not hung else None
    after_ms = (exited_ns - second_ns) / 1e6 if exited_ns is not None and second_ns is not None else None
    drain_ms = (exited_ns - first_ns) / 1e6 if exited_ns is not None else None
    ctx.figure("second_ctrl_c_ms", after_ms)
    ctx.figure("drain_ms", drain_ms)
    ctx.check(checkers.shutdown.forced_exit(
        after_ms, bound_ms, returncode=report.own_returncode if report else None,
        forced_codes=ctx.limits.forced_exit_codes, clean_codes=ctx.limits.exit_codes,
        drain_ms=drain_ms, second_sent=second_ns is not None, stacks=stacks))
    ctx.check(checkers.no_survivors(cleanup.survivors, hung=hung))


@scenario("shutdown.watchdog", requires={"hook:stuck_drain"}, timeout_s=40)
async def watchdog(ctx: Context) -> None:
    """1. Start the target with its declared way to make a shutdown step never complete,
    and a hard limit of 2 s where it can be told one.
    2. Ctrl+C.
    3. Result: the watchdog ends the process at the hard limit (plus a margin) with its
    code, and its dump of every thread's stack is kept with the run."""
    stuck = ctx.target.capabilities.hook_args("stuck_drain") or ()
    target = ctx.target.with_server_flags(grace_s=1, hard_limit_s=2).with_args(*stuck)
    sup = await ctx.start_target(pty=True, target=target)
    ctx.nemesis.ctrl_c(sup)
    bound_s = target.limits.hard_limit_s + ctx.limits.exit_margin_s
    report = await sup.wait_exit(scaled(bound_s))
    report, cleanup, stacks, _killed = await _stop(ctx, sup, report, "the watchdog did not end a stuck drain")
    hung = _hung(report)
    ctx.figure("watchdog_exit_ms", report.own_exit_ms if report else None)
    ctx.check(checkers.exit_time(report.own_exit_ms if report else None,
                                 scaled(bound_s) * 1000, what="watchdog exit", stacks=stacks))
    ctx.check(checkers.exit_code(report.own_returncode if report else None, target.limits.watchdog_exit_codes,
                                 signal_killed=report.signal_killed if report else None, hung=hung))
    ctx.check(checkers.watchdog_dump(sup.output("stderr")))
    ctx.check(checkers.no_survivors(cleanup.survivors, hung=hung))
