"""Signals, the graceful drain, and the watchdog.

First SIGINT/SIGTERM: one line on stderr, a watchdog thread armed for the hard
limit, and the drain begins on the loop. Second signal during shutdown: exit
at once with 130 (SIGINT) or 143 (SIGTERM), flushing first. The handlers are
installed with ``signal.signal`` rather than ``loop.add_signal_handler`` so a
second Ctrl+C still works when the loop itself is stuck (for instance while
the interpreter joins a thread at exit).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
import time
from typing import Any

from .session import State

__all__ = ["ShutdownController", "drain"]

_FORCED_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


class ShutdownController:
    def __init__(self, hard_limit: float, grace: float, faults: Any) -> None:
        self.hard_limit = hard_limit
        self.grace = grace
        self.faults = faults
        self.started = False
        self.signal_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the running loop; a signal that came before is honoured now."""
        self._event = asyncio.Event()
        self._loop = loop
        if self.started:
            self._event.set()

    async def wait(self) -> None:
        assert self._event is not None
        await self._event.wait()

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.started:
            if self.faults.ignore_second_sigint and signum == signal.SIGINT:
                return
            _flush()
            os._exit(_FORCED_CODES.get(signum, 130))
        self.started = True
        self.signal_name = signal.Signals(signum).name
        sys.stderr.write(
            f"reference_server: {self.signal_name} received, shutting down "
            f"(grace {self.grace:g}s; signal again to force exit)\n"
        )
        _flush()
        if not self.faults.no_watchdog:
            threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    def _watchdog(self) -> None:
        time.sleep(self.hard_limit)
        # Still alive at the hard limit: show where every thread is, then end.
        _flush()
        os.write(2, f"reference_server: shutdown exceeded the hard limit of {self.hard_limit:g}s; "
                    "dumping all thread stacks and exiting\n".encode())
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        _flush()
        os._exit(1)


async def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def drain(st: State, grace: float, drain_delay_ms: int, stuck_drain: bool) -> None:
    """End every request and connection within the grace period."""
    faults = st.faults
    st.shutting_down = True
    for session in list(st.sessions.values()):
        if faults.shutdown_abrupt:
            session.abort()
            continue
        if not faults.shutdown_no_final:
            session.interrupt_all("shutdown")
        session.outbox.close(1001)
    # Half the grace for peers to answer the close; the rest is margin for
    # dropping the ones that did not and for the runner's own cleanup.
    if not await _until(lambda: not st.sessions and st.connections == 0, grace * 0.5):
        for session in list(st.sessions.values()):
            session.abort()
        await _until(lambda: not st.sessions and st.connections == 0, grace * 0.15)
    if drain_delay_ms:
        await asyncio.sleep(drain_delay_ms / 1000.0)
    if stuck_drain:
        # Test condition: a step that never completes; only the watchdog ends it.
        await asyncio.get_running_loop().create_future()
