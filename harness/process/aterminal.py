"""The pty terminal for asyncio code: a scenario drives an interactive client as a list of steps.

:class:`AsyncTerminal` wraps one :class:`~harness.process.terminal.InteractiveSession`.
Each step that waits (starting the client, waiting for a line, waiting for it
to exit, taking its forensics, stopping its tree) runs in a worker thread, so
the event loop, and the service and proxy it runs, go on meanwhile::

    term = AsyncTerminal(name="client", log_path=run_dir / "client.tty.log")
    ctx.on_cleanup(term.close)
    await term.start(argv, env=env, cwd=cwd)
    await term.expect(r"connected")
    await term.sendline("q")
    result = await term.wait_exit(1.0)

Two steps are instant and stay plain calls: :meth:`AsyncTerminal.ctrl_c`
(one byte written to the pty) and :meth:`AsyncTerminal.terminal_state` (one
``tcgetattr``), so the nemesis can press Ctrl+C and stamp the moment itself.
Steps are meant to run one after the other, as a person types; only
:meth:`AsyncTerminal.close` may run while another step is still waiting (a case
cut short at its bound), and it still stops the whole tree.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.process.terminal import Cleanup, ClientExit, InteractiveSession, TerminalState

if TYPE_CHECKING:
    from harness.probes.forensics import Forensics

__all__ = ["AsyncTerminal"]


class AsyncTerminal:
    """One interactive client on its own pty, driven with ``await``; ``async with`` or :meth:`close`."""

    def __init__(self, *, name: str = "client", log_path: Path | None = None,
                 dimensions: tuple[int, int] = (24, 120), encoding: str = "utf-8") -> None:
        self.session = InteractiveSession(name=name, log_path=log_path, dimensions=dimensions, encoding=encoding)

    # -- what the nemesis and the report read ----------------------------------------
    @property
    def name(self) -> str:
        return self.session.name

    @property
    def pid(self) -> int:
        return self.session.pid

    @property
    def encoding(self) -> str:
        return self.session.encoding

    @property
    def transcript(self) -> str:
        """Everything the client printed so far."""
        return self.session.transcript

    def tail(self, n: int = 2000) -> str:
        return self.session.tail(n)

    @property
    def last_index(self) -> int:
        """Which pattern of a list the last :meth:`expect` matched."""
        return self.session.last_index

    # -- steps ---------------------------------------------------------------------------
    async def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                    timeout: float | None = None, *, cwd: str | None = None,
                    ready: str | None = None) -> str | None:
        """Spawn ``argv`` on a new pty (see :meth:`InteractiveSession.start`)."""
        return await asyncio.to_thread(self.session.start, argv, env, timeout, cwd=cwd, ready=ready)

    async def expect(self, pattern: str | Sequence[str], timeout: float | None = None) -> re.Match[str]:
        """Wait for a regex (or the first of several) in the output; ExpectTimeout / ClientGone otherwise."""
        return await asyncio.to_thread(self.session.expect, pattern, timeout)

    async def send(self, text: str) -> None:
        await asyncio.to_thread(self.session.send, text)

    async def sendline(self, text: str = "") -> None:
        """Type a line and Enter; exit times count from this keystroke."""
        await asyncio.to_thread(self.session.sendline, text)

    def ctrl_c(self) -> int:
        """Type the pty's interrupt character now (instant); the monotonic ns it was typed at."""
        return self.session.ctrl_c()

    def send_signal(self, sig: int) -> int:
        """Signal the client process alone (instant); the monotonic ns it was sent at."""
        return self.session.send_signal(sig)

    async def double_ctrl_c(self, delay: float = 0.2) -> int:
        """Two Ctrl+C ``delay`` s apart; the ns of the first, which exit times count from."""
        return await asyncio.to_thread(self.session.double_ctrl_c, delay)

    async def wait_exit(self, timeout: float) -> ClientExit:
        """Read output until the client exits or ``timeout`` s pass; a client still running is ``hung``."""
        return await asyncio.to_thread(self.session.wait_exit, timeout)

    def terminal_state(self) -> TerminalState:
        """The pty's echo / canonical / signal modes as the client left them (instant)."""
        return self.session.terminal_state()

    async def forensics(self, reason: str = "did not exit", *, path: Path | None = None,
                        timeout: float | None = None) -> Forensics:
        """Stacks, process tree and sockets of a hung client, before :meth:`close`; saved to ``path``.

        The file is what a report links to; a write that fails is noted in the
        forensics' errors, never raised.
        """
        found = await asyncio.to_thread(self.session.forensics, reason, timeout)
        if path is not None:
            try:
                await asyncio.to_thread(_write, path, found.text())
                found.path = path
            except OSError as exc:
                found.errors.append(f"cannot write {path}: {exc}")
        return found

    async def close(self, term_timeout: float | None = None, kill_timeout: float | None = None) -> Cleanup:
        """Stop the client's whole tree (SIGTERM leaves-first, then SIGKILL); idempotent.

        In a thread of its own: a cancelled caller does not stop the kill half-way.
        """
        return await asyncio.to_thread(self.session.close, term_timeout, kill_timeout)

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
