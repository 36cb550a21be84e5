"""The pty side: drive an interactive client the way a person at a terminal does.

An :class:`InteractiveSession` starts the client on a real pseudo-terminal
(``pexpect.spawn``: the child gets its own session with the pty as its
controlling terminal), so that

* a Ctrl+C is the terminal's interrupt character typed into the pty, which the
  line discipline turns into SIGINT for the whole foreground process group,
  exactly as for a person (``os.kill(pid, SIGINT)`` would reach one process);
* the terminal modes the client leaves behind (echo, canonical input) can be
  read from the pty after it exits, which is how a client that freezes or
  blinds the user's terminal is caught.

Every byte the client prints lands in :attr:`InteractiveSession.transcript`,
decoded in the client's encoding (the contract's ``encoding``; UTF-8 by
default), which is also how what is typed, and the command line, are encoded.
Exit times run from the quit or Ctrl+C keystroke to the moment the process is
seen gone; a client still running at the bound is *hung*, and
:meth:`InteractiveSession.forensics` then takes its thread stacks (py-spy) and
process tree before :meth:`InteractiveSession.close` kills the whole tree.

The calls here block; asyncio code (scenarios) drives the same session through
:class:`harness.process.aterminal.AsyncTerminal`, one awaited step at a time.

A known pexpect limit: after pexpect itself reads EOF from the pty it reaps
with a blocking ``waitpid``, so a client that closes its terminal but keeps
running could stall :meth:`expect`; :meth:`wait_exit` reads the pty itself
and never relies on that path.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import select
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pexpect
import psutil

from harness.core.proctree import ProcInfo, collect_tree, stop_procs
from harness.core.timing import Deadline, now_ns, scaled
from harness.process.launch import reset_dispositions
from harness.process.pty import send_intr
from harness.target.spec import DEFAULT_NOISE

if TYPE_CHECKING:  # forensics is imported only when a hang needs it
    from harness.probes.forensics import Forensics

__all__ = [
    "Cleanup",
    "ClientExit",
    "ClientGone",
    "ExpectTimeout",
    "InteractiveSession",
    "TerminalError",
    "TerminalState",
    "drive_menu",
]

_TAIL = 2000


class TerminalError(RuntimeError):
    """Driving the client failed; the message ends with the transcript tail."""


class ExpectTimeout(TerminalError):
    """The client did not print what was expected within the bound."""


class ClientGone(TerminalError):
    """The client's terminal closed (it exited) while something was expected."""


@dataclass(frozen=True)
class ClientExit:
    """How the client ended after a quit or Ctrl+C keystroke."""

    #: Keystroke to the process seen gone; None when it was still running at the bound.
    exit_ms: float | None
    exitstatus: int | None
    signalstatus: int | None
    #: Everything the client printed from the keystroke on.
    output: str
    hung: bool
    sent_ns: int | None = None
    exited_ns: int | None = None

    @property
    def returncode(self) -> int | None:
        """subprocess style: the exit code, or minus the signal that ended it."""
        if self.exitstatus is not None:
            return self.exitstatus
        return -self.signalstatus if self.signalstatus is not None else None

    def noise(self, patterns: Sequence[str] = DEFAULT_NOISE) -> list[str]:
        """Output lines that a clean exit never prints (tracebacks, KeyboardInterrupt...)."""
        return [ln for ln in self.output.splitlines() if any(p in ln for p in patterns)]

    def describe(self) -> str:
        if self.hung:
            return "hung: still running at the bound"
        how = f"exit {self.exitstatus}" if self.exitstatus is not None else f"signal {self.signalstatus}"
        return f"{how} after {self.exit_ms:.0f} ms"


@dataclass(frozen=True)
class TerminalState:
    """The pty's local modes as the client left them; None where they could not be read."""

    echo: bool | None
    icanon: bool | None
    isig: bool | None
    error: str | None = None

    @property
    def usable(self) -> bool:
        """A person can type at it again: echo and line editing are on."""
        return bool(self.echo and self.icanon)


@dataclass(frozen=True)
class Cleanup:
    """What :meth:`InteractiveSession.close` had to stop, and what would not die."""

    stopped: list[ProcInfo] = field(default_factory=list)
    survivors: list[ProcInfo] = field(default_factory=list)


class InteractiveSession:
    """One interactive client on its own pty. Use as a context manager, or call :meth:`close`."""

    def __init__(self, *, name: str = "client", log_path: Path | None = None,
                 dimensions: tuple[int, int] = (24, 120), encoding: str = "utf-8") -> None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise TerminalError(f"{name}: unknown encoding {encoding!r}") from None
        self.name = name
        self.log_path = log_path
        self.dimensions = dimensions
        #: How the client's output is decoded and what is typed is encoded (undecodable bytes: U+FFFD).
        self.encoding = encoding
        self._child: pexpect.spawn | None = None
        self._chunks: list[str] = []
        self._log_file: Any = None
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._pidfd: int | None = None
        self._pty_eof = False
        self._mark_ns: int | None = None
        self._mark_offset = 0
        self._final_state: TerminalState | None = None
        self._cleanup: Cleanup | None = None
        #: Which pattern of a list the last :meth:`expect` matched.
        self.last_index = 0

    # -- start and talk --------------------------------------------------------

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              timeout: float | None = None, *, cwd: str | None = None,
              ready: str | None = None) -> str | None:
        """Spawn ``argv`` on a new pty; with ``ready``, wait for that regex and return the match.

        ``env`` is added to this process's environment. ``timeout`` (default
        ``scaled(10)``) bounds the wait for ``ready`` and is the default bound
        of :meth:`expect`.
        """
        if self._child is not None:
            raise TerminalError(f"{self.name}: already started")
        timeout = scaled(10) if timeout is None else timeout
        full_env = {**os.environ, **(env or {})}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("w", encoding="utf-8")
        try:
            self._child = pexpect.spawn(
                argv[0], list(argv[1:]), env=full_env, cwd=cwd, timeout=timeout,
                encoding=self.encoding, codec_errors="replace", dimensions=self.dimensions,
                # Signals as a user's shell gives them, whatever wschaos inherited.
                preexec_fn=reset_dispositions,
                # pexpect sleeps 50 ms before each send by default (for password
                # prompts); that would skew every keystroke-to-exit time.
                # ptyprocess also sleeps after close; the harness reaps itself.
            )
        except (pexpect.ExceptionPexpect, OSError) as exc:
            raise TerminalError(f"{self.name}: cannot start {argv[0]!r}: {exc}") from None
        self._child.delaybeforesend = None
        self._child.delayafterclose = 0
        self._child.ptyproc.delayafterclose = 0
        self._child.logfile_read = _Tee(self._record)
        try:
            self._pidfd = os.pidfd_open(self._child.pid)
        except (AttributeError, OSError):
            self._pidfd = None  # not Linux >= 5.3: wait_exit polls instead
        return self.expect(ready, timeout).group(0) if ready is not None else None

    @property
    def pid(self) -> int:
        return self._spawned().pid

    @property
    def transcript(self) -> str:
        """Everything the client printed so far (with the pty's echo of what was typed)."""
        return "".join(self._chunks)

    def tail(self, n: int = _TAIL) -> str:
        return self.transcript[-n:]

    def expect(self, pattern: str | Sequence[str], timeout: float | None = None) -> re.Match[str]:
        """Wait for a regex (or the first of several: see :attr:`last_index`) in the output."""
        child = self._spawned()
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        bound = child.timeout if timeout is None else timeout
        try:
            self.last_index = child.expect(patterns, timeout=bound)
        except pexpect.TIMEOUT:
            raise ExpectTimeout(
                f"{self.name}: no {patterns!r} within {bound:.1f} s; output tail:\n{self.tail()}"
            ) from None
        except pexpect.EOF:
            raise ClientGone(
                f"{self.name}: the client ended while waiting for {patterns!r}; output tail:\n{self.tail()}"
            ) from None
        match = child.match
        assert isinstance(match, re.Match)
        return match

    def send(self, text: str) -> None:
        self._mark()
        self._spawned().send(text)

    def sendline(self, text: str = "") -> None:
        """Type a line; the keystroke time is what :meth:`wait_exit` measures from."""
        self._mark()
        self._spawned().sendline(text)

    def ctrl_c(self) -> int:
        """Type the pty's interrupt character (SIGINT to its foreground group); monotonic ns."""
        # Not pexpect's sendintr: it takes the character from the harness's own
        # terminal; the client's pty may differ, and the client's is the one that counts.
        return send_intr(self._spawned().child_fd, stamp=self._mark)

    def send_signal(self, sig: int) -> int:
        """Send ``sig`` to the client process alone (not its group); monotonic ns, timed like a keystroke."""
        pid = self.pid
        stamp = self._mark()
        os.kill(pid, sig)
        return stamp

    def double_ctrl_c(self, delay: float = 0.2) -> int:
        """Two Ctrl+C ``delay`` s apart (output still read between); ns of the first."""
        first = self.ctrl_c()
        offset = self._mark_offset
        gap = Deadline.after(delay)
        while not gap.expired():  # the spacing is the point: a person's two presses
            self._pump(gap.remaining())
        self.ctrl_c()
        self._mark_ns, self._mark_offset = first, offset  # exit time counts from the first press
        return first

    def _mark(self) -> int:
        self._mark_ns = now_ns()
        self._mark_offset = len(self.transcript)
        return self._mark_ns

    # -- exit --------------------------------------------------------------------

    def wait_exit(self, timeout: float) -> ClientExit:
        """Read output until the client exits or ``timeout`` s pass; never kills it.

        Exit time runs from the last keystroke (``sendline``, ``ctrl_c``; the
        first of a ``double_ctrl_c``) to the moment the process is seen gone.
        """
        child = self._spawned()
        deadline = Deadline.after(timeout)
        exited_ns = None
        while True:
            if self._exited():
                exited_ns = now_ns()
                break
            if deadline.expired():
                break
            self._pump(min(deadline.remaining(), 0.25), watch_exit=True)
        if exited_ns is None:
            return ClientExit(exit_ms=None, exitstatus=None, signalstatus=None,
                              output=self.transcript[self._mark_offset:], hung=True, sent_ns=self._mark_ns)
        # What it printed on the way out may still sit in the pty: read it.
        drain = Deadline.after(scaled(0.5))
        while not self._pty_eof and not drain.expired() and self._pump(0.05):
            pass
        with contextlib.suppress(pexpect.ExceptionPexpect):
            child.wait()  # reaps the zombie: non-blocking now
        sent = self._mark_ns if self._mark_ns is not None else exited_ns
        return ClientExit(
            exit_ms=(exited_ns - sent) / 1e6, exitstatus=child.exitstatus, signalstatus=child.signalstatus,
            output=self.transcript[self._mark_offset:], hung=False, sent_ns=self._mark_ns, exited_ns=exited_ns,
        )

    def is_alive(self) -> bool:
        return self._child is not None and not self._exited()

    def terminal_state(self) -> TerminalState:
        """Echo / canonical / signal modes of the pty, read through the master side.

        Read while the pty is open (also after the client exited: the modes
        stay as it left them); after :meth:`close`, the modes captured then.
        """
        if self._final_state is not None:
            return self._final_state
        try:
            lflag = termios.tcgetattr(self._spawned().child_fd)[3]
        except (termios.error, OSError, ValueError) as exc:
            return TerminalState(None, None, None, error=f"cannot read the pty modes: {exc}")
        return TerminalState(echo=bool(lflag & termios.ECHO), icanon=bool(lflag & termios.ICANON),
                             isig=bool(lflag & termios.ISIG))

    def forensics(self, reason: str = "did not exit", timeout: float | None = None) -> Forensics:
        """Thread stacks (py-spy), process tree and sockets of a hung client; call before :meth:`close`.

        ``timeout`` bounds each ``py-spy dump`` (default ``scaled(15)``).
        """
        from harness.probes.forensics import gather

        pid = self.pid
        procs = collect_tree(pid, sid=pid)  # the client leads its own session
        found = gather(procs, reason=reason, name=self.name, timeout=scaled(15) if timeout is None else timeout)
        self._pump(0)  # whatever it printed while we looked
        found.output_tail, found.output_label = self.tail(), "transcript"
        return found

    def close(self, term_timeout: float | None = None, kill_timeout: float | None = None) -> Cleanup:
        """Stop the client's whole tree (SIGTERM leaves-first, wait, SIGKILL); idempotent.

        Each wait defaults to ``scaled(2)``. The pty's final modes are captured
        first, for :meth:`terminal_state`.
        """
        if self._cleanup is not None:
            return self._cleanup
        child = self._child
        if child is None:
            self._cleanup = Cleanup()
            return self._cleanup
        self._final_state = self.terminal_state()
        self._pump(0)
        root: psutil.Process | None = None
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(child.pid)
        procs = collect_tree(root if root is not None and not self._exited() else None, sid=child.pid)
        stopped, survivors = stop_procs(procs, term_timeout=scaled(2) if term_timeout is None else term_timeout,
                                        kill_timeout=scaled(2) if kill_timeout is None else kill_timeout,
                                        own_pid=child.pid, wait_own=self._wait_own)
        if self._exited():
            with contextlib.suppress(pexpect.ExceptionPexpect):
                child.wait()
        with contextlib.suppress(pexpect.ExceptionPexpect, OSError):
            child.close(force=True)
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
        if self._log_file is not None:
            self._log_file.close()
        self._cleanup = Cleanup(stopped=stopped, survivors=survivors)
        return self._cleanup

    def __enter__(self) -> InteractiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------

    def _spawned(self) -> pexpect.spawn:
        if self._child is None:
            raise TerminalError(f"{self.name}: not started")
        return self._child

    def _record(self, text: str) -> None:
        self._chunks.append(text)
        if self._log_file is not None:
            self._log_file.write(text)
            self._log_file.flush()

    def _exited(self) -> bool:
        """The process has ended (reaped or a zombie), without reaping it."""
        child = self._spawned()
        if child.terminated:
            return True
        try:
            return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True  # already reaped
        except AttributeError:  # no waitid: fall back to psutil's view
            try:
                return psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

    def _wait_own(self, timeout: float) -> bool:
        deadline = Deadline.after(timeout)
        while not self._exited():
            if deadline.expired():
                return False
            self._pump(min(deadline.remaining(), 0.05), watch_exit=True)
        return True

    def _pump(self, timeout: float, *, watch_exit: bool = False) -> bool:
        """Read what the pty has within ``timeout`` s into the transcript and pexpect's buffer.

        With ``watch_exit`` the wait also ends when the process exits (pidfd).
        True when something was read.
        """
        child = self._spawned()
        fds = [] if self._pty_eof or child.closed else [child.child_fd]
        if watch_exit and self._pidfd is not None:
            fds.append(self._pidfd)
        if not fds:
            # Nothing to select on: pty at EOF and no pidfd. A short, bounded poll.
            time.sleep(min(timeout, 0.01))
            return False
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            return False
        if child.closed or self._pty_eof or child.child_fd not in ready:
            return False
        try:
            data = os.read(child.child_fd, 65536)
        except OSError:
            data = b""  # EIO: every slave side is closed
        if not data:
            self._pty_eof = True
            return False
        text = self._decoder.decode(data)
        self._record(text)
        # Keep pexpect's view complete, so a later expect() still sees it.
        child.buffer = child.buffer + text
        return True


class _Tee:
    """The file-like pexpect logs every read into; forwards to the transcript."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def write(self, text: str) -> None:
        self._sink(text)

    def flush(self) -> None:
        pass


def drive_menu(session: InteractiveSession, *choices: str, prompt: str = "> ",
               timeout: float | None = None) -> None:
    """For each choice: wait for the menu prompt, then type the choice and Enter."""
    bound = scaled(10) if timeout is None else timeout
    for choice in choices:
        session.expect(re.escape(prompt), bound)
        session.sendline(choice)
