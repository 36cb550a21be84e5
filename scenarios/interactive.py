"""Interactive clients: quitting and Ctrl+C end the program at once and leave the terminal usable.

The story: a CLI client hung on "quit", and Ctrl+C printed KeyboardInterrupt
and froze the terminal, because its event-loop thread and its read/write tasks
were never closed.
"""

from __future__ import annotations

import asyncio

from harness import checkers
from harness.core.timing import scaled
from harness.engine.scenario import Context, NotApplicable, scenario

CASES = {
    "quit-0": {"how": "quit", "choice": "0", "streaming": False},
    "quit-q": {"how": "quit", "choice": "q", "streaming": False},
    "ctrl_c-idle": {"how": "ctrl_c", "choice": "", "streaming": False},
    "ctrl_c-streaming": {"how": "ctrl_c", "choice": "", "streaming": True},
}


@scenario("interactive.exit", cases=CASES, requires={"pty", "interactive"}, timeout_s=30)
async def exit_(ctx: Context, how: str, choice: str, streaming: bool) -> None:
    """1. Start the target and the interactive client on a real pty; wait until it is connected.
    2. Optionally start a streamed reply (menu 1) and wait for its first output.
    3. Quit through the menu (0 or q), or press Ctrl+C.
    4. Result: the client exits within 1 s with an allowed code, prints no traceback, and
    leaves the terminal with echo and line editing on. A client that hangs is reported
    with its thread stacks."""
    from harness.process.terminal import InteractiveSession

    if not ctx.target.interactive_client:
        raise NotApplicable("the target names no interactive_client command")
    sup = await ctx.start_target()
    argv = [a.replace("{url}", sup.ws_url) for a in ctx.target.interactive_client]
    session = InteractiveSession(name="client", log_path=ctx.run_dir / "client.tty.log")
    ctx.on_cleanup(_closer(session))
    ctx.artifacts["client.tty"] = str(ctx.run_dir / "client.tty.log")
    await asyncio.to_thread(session.start, argv, timeout=scaled(10))
    await asyncio.to_thread(session.expect, r"CONNECTED", scaled(10))
    await asyncio.to_thread(session.expect, r"> ", scaled(5))
    if streaming:
        await asyncio.to_thread(session.sendline, "1")
        # "<< " starts a streamed reply: the Ctrl+C below lands mid-stream.
        await asyncio.to_thread(session.expect, r"<< ", scaled(5))
    if how == "quit":
        await asyncio.to_thread(session.sendline, choice)
        allowed: tuple[int, ...] = (0,)
    else:
        await asyncio.to_thread(session.ctrl_c)
        allowed = (0, 130)
    bound_s = scaled(ctx.limits.client_exit_s)
    result = await asyncio.to_thread(session.wait_exit, bound_s)
    stacks: list[str] = []
    if result.hung:
        stacks = await asyncio.to_thread(session.forensics)
    ctx.figure("client_exit_ms", result.exit_ms)
    ctx.check(checkers.client.exit_time(None if result.hung else result.exit_ms, bound_s * 1000,
                                        what=f"client exit after {how} {choice}".strip(), stacks=stacks))
    ctx.check(checkers.exit_code(result.exitstatus, allowed, signal_killed=result.signalstatus))
    ctx.check(checkers.output_noise(result.output, "", ctx.target.noise_patterns))
    ctx.check(checkers.terminal_usable(session.terminal_state()))


def _closer(session):  # type: ignore[no-untyped-def]
    async def close() -> None:
        await asyncio.to_thread(session.close)

    return close
