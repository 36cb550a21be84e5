"""Launch details of a supervised target: the fork, its own session, an optional pty.

* ``setsid`` (``start_new_session``) puts the target and everything it forks
  in one session, which :mod:`harness.core.proctree` finds even after a helper is
  reparented.
* ``PR_SET_PDEATHSIG`` kills the child when the *thread* that forked it exits;
  the supervisor forks from a thread that lives exactly as long as the target.
* With a pty the target runs under a tiny session-leader shim
  (:data:`_PTY_LEADER`), which plays the person's shell; see the comment there.

Also the helpers around a launch: the guard process (:mod:`harness.process.guard`),
the readiness probes of a port or an HTTP URL, picking a free port, and
checking that one is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.core.timing import now_ns

__all__ = [
    "DEFAULT_SIGNALS",
    "Launched",
    "free_port",
    "port_free",
    "probe_http",
    "probe_port",
    "release_guard",
    "reset_dispositions",
    "spawn",
    "start_guard",
]

try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _LIBC = None
_PR_SET_PDEATHSIG = 1


#: Signals a user's shell leaves at their defaults for a program it starts. wschaos may
#: itself have inherited them ignored (a background job of a non-interactive shell
#: ignores SIGINT and SIGQUIT) or blocked; an ignored disposition survives exec, so
#: without this the verdict would depend on how wschaos was started.
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE)


def reset_dispositions() -> None:
    """In a child between fork and exec: the default signal dispositions and no blocked signal."""
    for sig in DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _child_setup(with_pty: bool, parent_pid: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec, after setsid
        reset_dispositions()
        if with_pty:
            # stdin is the pty slave: make it the controlling terminal of the
            # new session, so VINTR on the master signals the foreground group.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the harness died before prctl took effect
                os._exit(137)

    return setup


# With a pty the terminal needs a session leader that outlives the target: when
# a session leader with a controlling terminal exits, the kernel hangs the
# terminal up and SIGHUPs its foreground group, which would kill every helper
# the target leaked and hide it from the survivor check. A person's shell is
# that leader; this shim plays the shell: it forks the target into its own
# foreground process group, reports its pid and the instant it is reaped
# (CLOCK_MONOTONIC is system-wide), and stays until the harness lets it go.
_PTY_LEADER = r"""
import ctypes, os, signal, sys, time
status_fd, control_fd, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP):
    signal.signal(sig, signal.SIG_IGN)
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(go_w)
    os.read(go_r, 1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP,
                signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    os.close(status_fd); os.close(control_fd)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, f"wschaos: cannot start {argv[0]!r}: {exc}\n".encode())
        os._exit(127)
os.setpgid(pid, pid)
os.tcsetpgrp(0, pid)
# The target has the output pipes now; the leader lets go of its copies, so the
# harness sees EOF the moment the target's tree is gone, not when the leader goes.
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
os.dup2(_null, 2)
os.close(_null)
os.write(status_fd, f"pid {pid}\n".encode())
os.write(go_w, b"x")
_, status = os.waitpid(pid, 0)
os.write(status_fd, f"exit {status} {time.monotonic_ns()}\n".encode())
os.close(status_fd)
while os.read(control_fd, 64):
    pass
"""


@dataclass
class Launched:
    """A started target: its ``Popen`` (the leader shim's with a pty) and the fds the harness keeps."""

    popen: subprocess.Popen[bytes]
    #: The target itself: the leader's child with a pty (or the leader, had it died before forking).
    pid: int
    #: The pty's leader shim, when it reported a target pid.
    leader_pid: int | None
    #: The pty master (None without a pty).
    master: int | None
    #: Closing this write end lets the leader shim exit (None without a pty).
    control_w: int | None
    #: The leader's status pipe, read side: its "exit" line is still to come (None without a pty).
    status: IO[bytes] | None

    def wait_exit(self) -> tuple[int, int]:
        """Block until the target is reaped: its returncode and the monotonic ns of its exit."""
        popen, status = self.popen, self.status
        if status is None:
            rc = popen.wait()
            return rc, now_ns()
        with status:
            last = status.readline().split()
        if len(last) == 3 and last[0] == b"exit":
            return os.waitstatus_to_exitcode(int(last[1])), int(last[2])
        # the leader was killed first (SIGKILL): the target went with it
        popen.wait()
        return -signal.SIGKILL, now_ns()


def spawn(argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str], use_pty: bool) -> Launched:
    """Fork ``argv`` in a new session, stdout and stderr on pipes; with ``use_pty`` under the leader shim.

    Call it from the thread that will wait for the target (PR_SET_PDEATHSIG).
    Raises what ``Popen`` raises, with every fd opened for it closed again.
    """
    slave: int | None = None
    master: int | None = None
    control_w: int | None = None
    fds: list[int] = []
    try:
        full_argv: list[str] = list(argv)
        pass_fds: tuple[int, ...] = ()
        if use_pty:
            master, slave = os.openpty()
            status_r, status_w = os.pipe()
            control_r, control_w = os.pipe()
            fds = [status_r, status_w, control_r]
            pass_fds = (status_w, control_r)
            full_argv = [sys.executable, "-I", "-c", _PTY_LEADER, str(status_w), str(control_r), *argv]
        popen = subprocess.Popen(
            full_argv,
            stdin=slave if slave is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=_child_setup(use_pty, os.getpid()),
        )
    except BaseException:
        for fd in (slave, master, control_w, *fds):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        raise
    if not use_pty:
        return Launched(popen, popen.pid, None, None, None, None)
    os.close(slave)  # type: ignore[arg-type]  # only the child holds the slave now
    os.close(fds[1])
    os.close(fds[2])
    status = os.fdopen(fds[0], "rb")
    first = status.readline().split()
    if len(first) == 2 and first[0] == b"pid":
        return Launched(popen, int(first[1]), popen.pid, master, control_w, status)
    # the leader died before forking: report it as the target
    return Launched(popen, popen.pid, None, master, control_w, status)


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on the port: a bind with SO_REUSEADDR succeeds (TIME_WAIT is fine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


# -- the guard -------------------------------------------------------------------
def start_guard(log_path: Path, *, pid: int, sid: int, marker: str) -> tuple[subprocess.Popen[bytes] | None, int | None]:
    """Start the guard of a target's tree: its ``Popen`` and the write end of its pipe, or (None, None)."""
    r, w = os.pipe()  # non-inheritable: no other child keeps the harness end open
    guard_log = open(log_path, "ab")  # noqa: SIM115
    try:
        guard = subprocess.Popen(
            [
                sys.executable, "-I", str(Path(__file__).with_name("guard.py")),
                "--pid", str(pid), "--sid", str(sid), "--marker", marker,
            ],
            stdin=r,
            stdout=subprocess.DEVNULL,
            stderr=guard_log,
            start_new_session=True,
            close_fds=True,
        )
        return guard, w
    except OSError:
        os.close(w)  # pdeathsig and atexit still cover the common cases
        return None, None
    finally:
        os.close(r)
        guard_log.close()


def release_guard(guard: subprocess.Popen[bytes] | None, pipe: int | None, timeout: float) -> None:
    """Tell the guard the tree is stopped (DETACH), close its pipe, and reap it (bounded)."""
    from harness.process.guard import DETACH

    if pipe is not None:
        with contextlib.suppress(OSError):
            os.write(pipe, DETACH)
        with contextlib.suppress(OSError):
            os.close(pipe)
    if guard is not None:
        try:
            guard.wait(timeout)
        except subprocess.TimeoutExpired:
            guard.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                guard.wait(timeout)


# -- readiness probes ------------------------------------------------------------
async def probe_port(host: str, port: int, timeout: float) -> bool:
    """The port accepts a connection within ``timeout``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def probe_http(url: str, default_host: str, timeout: float) -> bool:
    """``GET url`` answers 2xx within ``timeout``; ``default_host`` where the URL names none."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or default_host, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def get() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
            await writer.drain()
            status = await reader.readline()
        finally:
            writer.close()
        fields = status.split()
        return len(fields) >= 2 and fields[1][:1] == b"2"

    try:
        return await asyncio.wait_for(get(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
