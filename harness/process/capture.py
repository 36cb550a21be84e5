"""Output capture for a supervised target: stdout, stderr and the pty, line by line.

Each stream is read by its own daemon thread straight from the file
descriptor, so a target that floods its output never waits on the event loop,
and every chunk lands in ``<name>.<stream>.log`` as it arrives. Lines are kept
in memory for :meth:`OutputCapture.wait_for_output`-style waits: a waiter is
woken from the reader thread the moment its line appears, or when every
stream it watches has reached EOF (so a wait on a dead target ends at once
instead of at its bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.core.timing import Deadline

__all__ = ["STREAMS", "TAIL_LINES", "Flag", "OutputCapture"]

TAIL_LINES = 40
#: Every stream captured; "tty" is the pty master and reaches EOF at once without a pty.
STREAMS = ("stdout", "stderr", "tty")


# -- cross-thread signalling ---------------------------------------------------
class Flag:
    """Set once from any thread; awaited from any event loop, or waited on synchronously."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._futs: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def set(self) -> None:
        with self._lock:
            self._event.set()
            futs, self._futs = self._futs, []
        for loop, fut in futs:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, fut, None)

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait_sync(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    async def wait(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._event.is_set():
                return True
            self._futs.append((loop, fut))
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return self._event.is_set()
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._futs.remove((loop, fut))


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


@dataclass
class _LineWaiter:
    regex: re.Pattern[str]
    streams: frozenset[str]
    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[re.Match[str] | None]


def _compile_noise(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error:  # a plain string that is not a valid regex: match it literally
            out.append(re.compile(re.escape(p)))
    return out


class OutputCapture:
    """The captured lines of one target's streams, their EOF flags and the waiters on them."""

    def __init__(self, name: str, noise_patterns: tuple[str, ...] = ()) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._lines: dict[str, list[str]] = {s: [] for s in STREAMS}
        self._waiters: list[_LineWaiter] = []
        #: One flag per stream, set when its reader has seen EOF (or there is no such stream).
        self.eof: dict[str, Flag] = {s: Flag() for s in STREAMS}
        self._noise = _compile_noise(noise_patterns)

    @property
    def lines(self) -> dict[str, list[str]]:
        """The line lists themselves (appended to by the readers under the capture's lock)."""
        return self._lines

    # -- readers -----------------------------------------------------------------
    def start_reader(self, stream: str, fd: int, path: Path) -> None:
        log = open(path, "wb")  # noqa: SIM115 - closed by the reader thread at EOF
        threading.Thread(
            target=self._pump, args=(stream, fd, log), name=f"wschaos-{stream}-{self.name}", daemon=True
        ).start()

    def _pump(self, stream: str, fd: int, log: IO[bytes]) -> None:
        buf = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO on a pty master once the slave side is gone
                    chunk = b""
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    self._on_line(stream, raw)
            if buf:
                self._on_line(stream, buf)
        finally:
            log.close()
            self.eof[stream].set()
            self._wake_waiters_at_eof()

    def _on_line(self, stream: str, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        with self._lock:
            self._lines[stream].append(line)
            hits = [(w, m) for w in self._waiters if stream in w.streams and (m := w.regex.search(line))]
            for w, _ in hits:
                self._waiters.remove(w)
        for w, m in hits:
            with contextlib.suppress(RuntimeError):
                w.loop.call_soon_threadsafe(_resolve, w.fut, m)

    def _wake_waiters_at_eof(self) -> None:
        with self._lock:
            done = [w for w in self._waiters if all(self.eof[s].is_set() for s in w.streams)]
            for w in done:
                self._waiters.remove(w)
        for w in done:
            with contextlib.suppress(RuntimeError):
                w.loop.call_soon_threadsafe(_resolve, w.fut, None)

    # -- waiting and reading -------------------------------------------------------
    def streams(self, stream: str) -> frozenset[str]:
        """The streams ``stream`` names: "any" is stdout and stderr."""
        if stream == "any":
            return frozenset({"stdout", "stderr"})
        if stream not in self._lines:
            raise ValueError(f"stream must be stdout, stderr, tty or any, not {stream!r}")
        return frozenset({stream})

    def ended(self, stream: str) -> bool:
        """Every stream ``stream`` names has reached EOF."""
        return all(self.eof[s].is_set() for s in self.streams(stream))

    async def wait_match(self, pattern: str, timeout: float, stream: str) -> re.Match[str] | None:
        """The first line (already seen or to come) matching; None at EOF or the bound."""
        regex = re.compile(pattern)
        streams = self.streams(stream)
        loop = asyncio.get_running_loop()
        with self._lock:
            for s in STREAMS:
                if s in streams:
                    for line in self._lines[s]:
                        m = regex.search(line)
                        if m:
                            return m
            if all(self.eof[s].is_set() for s in streams):
                return None
            waiter = _LineWaiter(regex, streams, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter.fut, max(0.0, timeout))
        except asyncio.TimeoutError:
            return None
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def output(self, stream: str = "stdout") -> str:
        """Everything captured so far on ``stream`` (stdout, stderr, tty or any)."""
        with self._lock:
            if stream == "any":
                return "\n".join(self._lines["stdout"] + self._lines["stderr"])
            return "\n".join(self._lines[self.streams(stream).__iter__().__next__()])

    def tail(self, stream: str, n: int = TAIL_LINES) -> str:
        with self._lock:
            return "\n".join(self._lines[stream][-n:])

    def tails_text(self) -> str:
        """The stdout and stderr tails, for the end of an error message."""
        return (
            f"\n--- {self.name} stdout tail ---\n{self.tail('stdout') or '(empty)'}"
            f"\n--- {self.name} stderr tail ---\n{self.tail('stderr') or '(empty)'}"
        )

    async def flush(self, timeout: float) -> None:
        """Let the readers reach EOF; bounded, since an orphan may hold the pipes open."""
        deadline = Deadline.after(timeout)
        for s in ("stdout", "stderr"):
            await self.eof[s].wait(deadline.remaining())

    def noise(self) -> list[str]:
        """Lines of stdout and stderr matching the target's noise patterns."""
        with self._lock:
            lines = self._lines["stdout"] + self._lines["stderr"]
        return [ln for ln in lines if any(rx.search(ln) for rx in self._noise)]
