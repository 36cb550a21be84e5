"""Interactive clients: quitting and Ctrl+C end the program at once, close its connection and leave the terminal usable.

The story: a CLI client hung on "quit", and Ctrl+C printed KeyboardInterrupt
and froze the terminal, because its event-loop thread and its read/write tasks
were never closed.

wschaos drives a client it has never seen from its contract in the target
file (``[target.interactive]``, or ``interactive_client`` for the reference
client's dialogue): the command and its environment with ``{url}`` and
``{http_url}``, the line that says it is connected, the setup dialogue, its
prompt, its quit keys, how to start a streamed reply. The client talks to the
target through wschaos's TCP proxy, which reads what it sends: whether each
WebSocket ends with the client's close frame is seen on the wire.

One case per quit key of the reference dialogue (``quit-0``, ``quit-q``); a
target whose client lacks the key has the case skipped, saying which keys it has.
"""

from __future__ import annotations

from harness import checkers
from harness.core.timing import now_ns, scaled
from harness.core.verdict import unknown
from harness.engine.scenario import Context, NotApplicable, scenario
from harness.process.aterminal import AsyncTerminal
from harness.process.terminal import TerminalError
from harness.process.wire import ClientWire, WireConnection, tap_proxy
from harness.target.interactive import REFERENCE_DIALOGUE, InteractiveSpec

CASES: dict[str, dict[str, object]] = {
    **{f"quit-{key}": {"how": "quit", "key": key, "streaming": False} for key in REFERENCE_DIALOGUE.quit_keys},
    "ctrl_c-idle": {"how": "ctrl_c", "key": "", "streaming": False},
    "ctrl_c-streaming": {"how": "ctrl_c", "key": "", "streaming": True},
}

#: Exit codes a person accepts: quit is a success; Ctrl+C may say it was interrupted.
QUIT_CODES: tuple[int, ...] = (0,)
CTRL_C_CODES: tuple[int, ...] = (0, 130)


@scenario("interactive.exit", cases=CASES, requires={"pty", "interactive"}, timeout_s=30)
async def exit_(ctx: Context, how: str, key: str, streaming: bool) -> None:
    """1. Start the target, wschaos's TCP proxy in front of it, and the client on a real pty,
    pointed at the proxy; wait for its connected line, run its setup dialogue, wait for its prompt.
    2. Streaming: type the lines that start a reply (one per prompt) and wait for its first output.
    3. Type the quit key, or press Ctrl+C (through the nemesis: it is on the timeline).
    4. Result: the client exits within 1 s with an allowed code, prints no traceback, ends each
    WebSocket with its close frame before the socket closes, and leaves the terminal with echo
    and line editing on. A client that hangs is reported with its thread stacks, saved to
    client.forensics.txt in the case directory."""
    spec = _contract(ctx, how, key, streaming)
    sup = await ctx.start_target()

    # The client reaches the target through the proxy, which reads what it sends.
    proxy = ctx.nemesis.proxy(sup.host, sup.port, name="client-wire", allow_remote=ctx.target.allow_remote)
    term = AsyncTerminal(name="client", log_path=ctx.run_dir / "client.tty.log", encoding=spec.encoding)
    wire = tap_proxy(proxy, ClientWire(term.name))
    wire.on_event(lambda event, conn: _on_wire(ctx, term.name, event, conn))
    await proxy.__aenter__()
    ctx.on_cleanup(lambda: proxy.__aexit__(None, None, None))
    ctx.on_cleanup(term.close)
    ctx.artifacts["client.tty"] = str(ctx.run_dir / "client.tty.log")
    argv, env = spec.render(proxy.url(ctx.target.ws_path), f"http://{proxy.listen_host}:{proxy.listen_port}")

    try:
        await term.start(argv, env=env, cwd=spec.cwd, timeout=scaled(10))
        await term.expect(spec.connected, scaled(10))
        for step in spec.setup:
            await term.expect(step.expect, scaled(5))
            if step.send is not None:
                await term.sendline(step.send)
        await term.expect(spec.prompt, scaled(5))
        if streaming:
            assert spec.stream_send is not None and spec.stream_expect is not None
            for i, line in enumerate(spec.stream_send):
                if i:
                    await term.expect(spec.prompt, scaled(5))
                await term.sendline(line)
            # The reply has started: the keystroke below lands mid-stream.
            await term.expect(spec.stream_expect, scaled(5))
    except TerminalError as exc:
        # Nothing to judge yet: the client never reached the point its contract describes.
        ctx.check(unknown("interactive.exit.completed", f"the client did not follow its declared dialogue: {exc}"))
        return

    if how == "quit":
        await term.sendline(key)
        allowed, what = QUIT_CODES, f"client exit after quit {key!r}"
    else:
        ctx.nemesis.ctrl_c(term)
        allowed, what = CTRL_C_CODES, "client exit after Ctrl+C" + (" while streaming" if streaming else "")

    bound_s = scaled(ctx.limits.client_exit_s)
    result = await term.wait_exit(bound_s)
    stacks: object = []
    if result.hung:
        found = await term.forensics(f"still running {bound_s:.1f} s after the keystroke",
                                     path=ctx.run_dir / f"{term.name}.forensics.txt")
        if found.path is not None:
            ctx.artifacts[f"{term.name}.forensics"] = str(found.path)
        stacks = found
    else:
        # Its sockets closed with it; the proxy sees their ends a moment later.
        await wire.wait_ended(scaled(2))
    ctx.figure("client_exit_ms", result.exit_ms)
    ctx.check(checkers.client.exit_time(None if result.hung else result.exit_ms, bound_s * 1000,
                                        what=what, stacks=stacks))
    ctx.check(checkers.exit_code(result.exitstatus, allowed, signal_killed=result.signalstatus, hung=result.hung,
                                 what="the client"))
    ctx.check(checkers.output_noise(result.output, "", ctx.target.noise_patterns))
    ctx.check(checkers.client.closed_cleanly(wire.summaries(keystroke_ns=result.sent_ns), what=term.name))
    ctx.check(checkers.terminal_usable(term.terminal_state()))


def _contract(ctx: Context, how: str, key: str, streaming: bool) -> InteractiveSpec:
    """The client's contract, or the reason this case cannot be run on it."""
    spec = ctx.target.interactive_spec()
    if spec is None:
        raise NotApplicable("the target names no interactive client ([target.interactive] or interactive_client)")
    if how == "quit" and key not in spec.quit_keys:
        keys = ", ".join(repr(k) for k in spec.quit_keys)
        raise NotApplicable(f"the client's quit keys are {keys}; it has no {key!r} (quit_keys)")
    if streaming and not spec.can_stream:
        raise NotApplicable("the client's contract has no stream (stream = { send = [...], expect = '...' }): "
                            "no reply for Ctrl+C to land in")
    return spec


def _on_wire(ctx: Context, name: str, event: str, conn: WireConnection) -> None:
    """The end of each of the client's WebSockets on the timeline, with the code of its close frame."""
    if event != "ended" or not conn.websocket:
        return
    close = conn.client.close
    ctx.history.observe(name, "closed", t_ns=conn.client_ended_ns or now_ns(), via="wire", conn=conn.n,
                        code=None if close is None else close.close_code, close_frame=close is not None,
                        ended=conn.client_ended)
