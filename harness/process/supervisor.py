"""Run the target: start it in its own session, wait until ready, signal it,
time its exit, stop its whole tree, and report.

Design notes (why it is built this way):

* **Exit timing.** A dedicated daemon thread forks the target and then blocks
  in ``Popen.wait``; it stamps ``exited_ns`` the instant the kernel hands back
  the status, so ``exit_ms`` does not depend on the event loop's latency. The
  same thread forking the target matters for ``PR_SET_PDEATHSIG``: the kernel
  fires it when the *thread* that forked exits, and this thread lives exactly
  as long as the target.
* **Own session.** ``setsid`` puts the target and everything it forks in one
  session, which the tree helpers (:mod:`harness.core.proctree`) find even after a
  helper is reparented; a marker variable in the environment finds helpers
  that start a session of their own.
* **A real Ctrl+C.** With ``pty=True`` the target's stdin and controlling
  terminal is a pty; :meth:`Supervisor.ctrl_c` writes the terminal's VINTR
  character to the master, and the line discipline signals the whole
  foreground process group, as a person's Ctrl+C does. stdout and stderr stay
  separate pipes so they can be judged separately.
* **The harness may die.** Live supervisors are registered; ``atexit`` and a
  SIGTERM/SIGHUP handler stop them all; each target also gets a guard process
  (:mod:`harness.process.guard`) that kills its tree on EOF of a pipe from the
  harness, so even SIGKILL of the harness leaves nothing behind.

The fork, the pty's leader shim, the guard and the readiness probes are in
:mod:`harness.process.launch`; reading and matching the output is :mod:`harness.process.capture`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import termios
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from harness.core import proctree
from harness.core.history import History
from harness.core.timing import Deadline, now_ns, scaled
from harness.process.capture import Flag, OutputCapture
from harness.process.launch import (
    free_port,
    port_free,
    probe_http,
    probe_port,
    release_guard,
    spawn,
    start_guard,
)
from harness.target.spec import Target, check_loopback

if TYPE_CHECKING:  # forensics is imported only when a hang needs it
    from harness.probes.forensics import Forensics

__all__ = [
    "CleanupReport",
    "ExitReport",
    "OutputWaitError",
    "Supervisor",
    "SupervisorError",
    "TargetStartError",
    "stop_all",
]

class TargetStartError(RuntimeError):
    """The target died or never became ready; the message ends with its output tails."""


class SupervisorError(RuntimeError):
    """The supervisor was used out of order (signal before start, Ctrl+C without a pty...)."""


class OutputWaitError(TimeoutError):
    """An expected output line did not appear within the bound, or the stream ended first."""


@dataclass
class ExitReport:
    """How the target ended. ``returncode`` follows subprocess: negative for a signal."""

    signal: str | None  # the first signal sent ("SIGINT" for a Ctrl+C), None if none was sent
    sent_ns: int | None
    exited_ns: int
    exit_ms: float | None  # exited_ns - sent_ns
    returncode: int
    signal_killed: int | None
    classification: str  # clean, forced, watchdog, hung, crashed
    noise: list[str]
    stdout_tail: str
    stderr_tail: str
    pid: int = 0
    #: Every signal sent, in order: (name, how: "pty" or "kill", monotonic ns).
    signals: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class CleanupReport:
    #: Processes of the tree still alive after the target itself exited (a finding).
    survivors: list[dict[str, Any]]
    #: Every process stop() signalled and saw go.
    killed: list[dict[str, Any]]
    #: Whether the port can be bound again; None when there was no port.
    port_free: bool | None
    #: The target itself was still running when stop() began (it is then "hung").
    target_was_running: bool = False
    #: Processes that even SIGKILL did not end.
    unkillable: list[dict[str, Any]] = field(default_factory=list)


# -- the registry of live targets ----------------------------------------------
_LIVE: dict[int, Supervisor] = {}
_LIVE_LOCK = threading.RLock()
_PREV_HANDLERS: dict[int, Any] = {}


def stop_all(term_timeout: float | None = None) -> list[CleanupReport]:
    """Stop every target this process started and has not stopped; synchronous, bounded."""
    with _LIVE_LOCK:
        sups = list(_LIVE.values())
    reports = []
    for sup in sups:
        with contextlib.suppress(Exception):  # one failure must not spare the others
            reports.append(sup._stop_sync(term_timeout))
    return reports


def _on_fatal_signal(signum: int, frame: Any) -> None:
    # SIGTERM/SIGHUP would end the harness without atexit: stop the targets
    # first, then let the previous disposition act.
    stop_all(term_timeout=scaled(0.5))
    prev = _PREV_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(prev):
        prev(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    """Once, from the main thread, only where nobody installed a handler already."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if sig in _PREV_HANDLERS:
            continue
        current = signal.getsignal(sig)
        if current in (signal.SIG_DFL, None):
            _PREV_HANDLERS[sig] = current
            signal.signal(sig, _on_fatal_signal)


atexit.register(stop_all)

# -- the supervisor ------------------------------------------------------------
class Supervisor:
    """One target process and its tree. See the module docstring for the design."""

    def __init__(
        self,
        target: Target,
        log_dir: Path,
        *,
        pty: bool = False,
        history: History | None = None,
        name: str = "target",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.target = target
        self.log_dir = Path(log_dir)
        self.use_pty = pty
        self.history = history
        self.name = name
        self.extra_env = dict(extra_env or {})
        self.pid = 0
        self.host = target.host
        self.port = target.port
        self.env: dict[str, str] = {}
        self.argv: list[str] = []
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self.tty_path = self.log_dir / f"{name}.tty.log"
        self.ready_ns: int | None = None
        self.exited_ns: int | None = None
        self.returncode: int | None = None
        self._token = uuid.uuid4().hex
        self._stop_lock = threading.Lock()
        #: stdout, stderr and the pty: lines, EOF flags, waiters, log files (harness.process.capture).
        self._out = OutputCapture(name, target.noise_patterns)
        self._exited = Flag()
        self._signals: list[tuple[str, str, int]] = []
        self._killed_by_harness = False
        self._popen: subprocess.Popen[bytes] | None = None
        self._proc: psutil.Process | None = None
        self._master: int | None = None
        #: The session: the target's pid, or with a pty the leader shim's.
        self._sid = 0
        self._leader_pid: int | None = None
        self._control_w: int | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._guard_pipe: int | None = None
        self._cleanup: CleanupReport | None = None
        self._started = False

    @property
    def _lines(self) -> dict[str, list[str]]:
        return self._out.lines

    @property
    def _eof(self) -> dict[str, Flag]:
        return self._out.eof

    # -- addresses -------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return self.target.ws_url(self.port, self.host)

    @property
    def http_base(self) -> str:
        return self.target.http_url(self.port, "", self.host)

    # -- start -----------------------------------------------------------------
    async def start(self) -> None:
        """Launch the target and wait until it is ready; on failure stop its tree and raise."""
        if self._started:
            raise SupervisorError(f"{self.name}: start() called twice")
        self._started = True
        self.log_dir.mkdir(parents=True, exist_ok=True)
        readiness = self.target.readiness
        needs_port_arg = any("{port}" in a for a in self.target.argv)
        if not self.port and needs_port_arg:
            self.port = free_port(self.host)
        if not self.port and readiness.kind == "port":
            raise TargetStartError(
                f"{self.name}: readiness 'port' needs a port: give target.port or a {{port}} in argv"
            )
        self.argv = self.target.render_argv(self.port)
        self.env = self._build_env()

        loop = asyncio.get_running_loop()
        spawned: Future[None] = Future()
        threading.Thread(
            target=self._run_child, args=(spawned,), name=f"wschaos-wait-{self.name}", daemon=True
        ).start()
        try:
            await asyncio.wrap_future(spawned, loop=loop)
        except OSError as exc:
            raise TargetStartError(f"{self.name}: cannot start {self.argv!r}: {exc}") from exc
        _install_handlers()
        # A watcher that kills the tree if this process dies without stopping it.
        self._guard, self._guard_pipe = start_guard(
            self.log_dir / f"{self.name}.guard.log", pid=self.pid, sid=self._sid, marker=self._token
        )
        if self.history is not None:
            self.history.observe("supervisor", "start", pid=self.pid, argv=self.argv, name=self.name)

        bound = scaled(self.target.limits.ready_timeout_s)
        try:
            problem = await self._await_ready(bound)
        except BaseException:
            await self.stop()
            raise
        if problem is not None:
            await self._out.flush(scaled(1.0))
            await self.stop()
            raise TargetStartError(f"{self.name} (pid {self.pid}): {problem}{self._out.tails_text()}")
        self.ready_ns = now_ns()
        if self.history is not None:
            self.history.observe(
                "supervisor", "ready", t_ns=self.ready_ns, pid=self.pid, port=self.port, host=self.host, name=self.name
            )

    def _build_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.target.env)
        env.update(self.extra_env)
        if self.target.python_probe and "WSCHAOS_PROBE_SOCKET" not in env:
            try:
                from harness.probes.sampling import python_probe_env
            except ImportError as exc:
                raise TargetStartError(f"{self.name}: python_probe requested but unavailable: {exc}") from exc
            env.update(python_probe_env(self.log_dir, env))
        env["PYTHONUNBUFFERED"] = "1"
        env[proctree.MARKER_ENV] = self._token
        return env

    def _run_child(self, spawned: Future[None]) -> None:
        """The dedicated thread: fork the target, wait for it, stamp its exit."""
        try:
            child = spawn(self.argv, cwd=self.target.cwd, env=self.env, use_pty=self.use_pty)
        except BaseException as exc:
            spawned.set_exception(exc)
            return
        popen = self._popen = child.popen
        self._sid = popen.pid
        self._master, self._control_w = child.master, child.control_w
        self._leader_pid = child.leader_pid
        self.pid = child.pid
        with contextlib.suppress(psutil.Error):
            self._proc = psutil.Process(self.pid)
        assert popen.stdout is not None and popen.stderr is not None
        self._out.start_reader("stdout", popen.stdout.fileno(), self.stdout_path)
        self._out.start_reader("stderr", popen.stderr.fileno(), self.stderr_path)
        if self._master is not None:
            self._out.start_reader("tty", self._master, self.tty_path)
        else:
            self._eof["tty"].set()
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        spawned.set_result(None)
        rc, exited_ns = child.wait_exit()
        self.exited_ns = exited_ns
        self.returncode = rc
        self._exited.set()
        if self.history is not None:
            self.history.observe(
                "supervisor", "exit", t_ns=self.exited_ns, pid=self.pid, returncode=rc, name=self.name
            )
        if child.status is not None:
            # Stay until the leader exits: its PR_SET_PDEATHSIG fires when this
            # thread ends, and it must outlive the target (see launch._PTY_LEADER).
            popen.wait()

    # -- output (kept by harness.process.capture) --------------------------------------
    async def wait_for_output(self, pattern: str, timeout: float, stream: str = "any") -> str:
        """The first line matching ``pattern`` (a regex), seen already or within ``timeout``."""
        m = await self._out.wait_match(pattern, timeout, stream)
        if m is None:
            why = "the stream ended" if self._out.ended(stream) else f"{timeout:.1f}s passed"
            raise OutputWaitError(
                f"{self.name}: no {stream} line matched /{pattern}/ ({why}){self._out.tails_text()}"
            )
        return m.string

    def output(self, stream: str = "stdout") -> str:
        """Everything captured so far on ``stream`` (stdout, stderr, tty or any)."""
        return self._out.output(stream)

    def noise(self) -> list[str]:
        """Lines of stdout and stderr matching the target's noise patterns."""
        return self._out.noise()

    # -- readiness -------------------------------------------------------------
    async def _await_ready(self, bound: float) -> str | None:
        """None when ready; otherwise what went wrong, for the error message."""
        deadline = Deadline.after(bound)
        r = self.target.readiness
        if r.kind == "line":
            what = f"a stdout line matching /{r.pattern}/"
            match_task = asyncio.ensure_future(self._out.wait_match(r.pattern, bound, "stdout"))
            exit_task = asyncio.ensure_future(self._exited.wait(bound))
            try:
                await asyncio.wait({match_task, exit_task}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (match_task, exit_task):
                    t.cancel()
            m = match_task.result() if match_task.done() and not match_task.cancelled() else None
            stdout_closed = self._eof["stdout"].is_set()
            if m is None and stdout_closed and not self._exited.is_set():
                # stdout ended without the line: the process is most likely on its
                # way out, and its exit code is the better explanation.
                await self._exited.wait(deadline.remaining())
            if self._exited.is_set():
                return f"exited with code {self.returncode} before it was ready (waiting for {what})"
            if m is None:
                if stdout_closed:
                    return f"closed its stdout without {what}"
                return f"not ready within {bound:.1f}s: no {what}"
            groups = m.groupdict()
            if groups.get("port") and not self.target.port and not any("{port}" in a for a in self.target.argv):
                self.port = int(groups["port"])
            host = (groups.get("host") or "").strip("[]")
            if host:
                with contextlib.suppress(Exception):
                    check_loopback(host)
                    self.host = host
            if not self.port and "(?P<port>" in self.target.readiness.pattern:
                # A pattern that promises a port must deliver one; a peer process or a
                # client (no port group, no {port}) is ready without listening anywhere.
                return f"ready line {m.string!r} named no port and the target has none"
            return None
        url = (r.url or "").replace("{port}", str(self.port)).replace("{host}", self.host)
        what = f"port {self.host}:{self.port} to accept" if r.kind == "port" else f"GET {url} to answer 2xx"
        if r.kind == "http":
            check_loopback(url, where=f"{self.name} readiness url", allow_remote=self.target.allow_remote)
        while not deadline.expired():
            if self._exited.is_set():
                return f"exited with code {self.returncode} before it was ready (waiting for {what})"
            attempt = min(scaled(1.0), deadline.remaining())
            ok = await (probe_port(self.host, self.port, attempt) if r.kind == "port" else probe_http(url, self.host, attempt))
            if ok:
                return None
            # A bounded poll of the condition; ends early if the process exits.
            await self._exited.wait(min(0.05, deadline.remaining()))
        return f"not ready within {bound:.1f}s: waited for {what}"

    # -- signals ---------------------------------------------------------------
    def _record_signal(self, name: str, how: str, t_ns: int) -> None:
        self._signals.append((name, how, t_ns))
        if self.history is not None:
            self.history.observe("supervisor", "signal", t_ns=t_ns, signal=name, via=how, pid=self.pid, name=self.name)

    def _check_signalable(self) -> None:
        if not self.pid:
            raise SupervisorError(f"{self.name}: not started")
        if self._exited.is_set():
            # Reaped already: the pid may belong to another process by now.
            raise SupervisorError(f"{self.name}: pid {self.pid} already exited ({self.returncode})")

    def ctrl_c(self) -> int:
        """Type the terminal's interrupt character; the kernel signals the foreground group."""
        self._check_signalable()
        if self._master is None:
            raise SupervisorError(f"{self.name}: ctrl_c() needs Supervisor(..., pty=True)")
        vintr = termios.tcgetattr(self._master)[6][termios.VINTR]
        char = vintr if isinstance(vintr, bytes) else bytes([vintr])
        t = now_ns()
        os.write(self._master, char)
        self._record_signal("SIGINT", "pty", t)
        return t

    def send_signal(self, sig: int) -> int:
        """``kill(pid, sig)``: the target process only, not its group."""
        self._check_signalable()
        t = now_ns()
        os.kill(self.pid, sig)
        self._record_signal(signal.Signals(sig).name, "kill", t)
        return t

    def is_running(self) -> bool:
        return bool(self.pid) and not self._exited.is_set()

    # -- exit ------------------------------------------------------------------
    async def wait_exit(self, timeout: float) -> ExitReport | None:
        """The exit report, or None if the target still runs at the bound (it is not killed)."""
        if not await self._exited.wait(timeout):
            return None
        await self._out.flush(scaled(0.5))
        return self.exit_report

    @property
    def exit_report(self) -> ExitReport | None:
        """The report once the target has exited, else None."""
        if not self._exited.is_set() or self.returncode is None or self.exited_ns is None:
            return None
        rc = self.returncode
        first = self._signals[0] if self._signals else None
        return ExitReport(
            signal=first[0] if first else None,
            sent_ns=first[2] if first else None,
            exited_ns=self.exited_ns,
            exit_ms=(self.exited_ns - first[2]) / 1e6 if first else None,
            returncode=rc,
            signal_killed=-rc if rc < 0 else None,
            classification=self._classify(rc),
            noise=self.noise(),
            stdout_tail=self._out.tail("stdout"),
            stderr_tail=self._out.tail("stderr"),
            pid=self.pid,
            signals=list(self._signals),
        )

    def _classify(self, rc: int) -> str:
        lim = self.target.limits
        if self._killed_by_harness:
            return "hung"
        if rc < 0:
            return "crashed"
        if rc in lim.exit_codes:
            return "clean"
        if rc in lim.forced_exit_codes and len(self._signals) >= 2:
            return "forced"
        if rc in lim.watchdog_exit_codes and self._signals and self.exited_ns is not None:
            # A watchdog fires at the hard limit; the same code any earlier is a plain failure.
            after_s = (self.exited_ns - self._signals[0][2]) / 1e9
            if after_s >= lim.hard_limit_s * 0.9:
                return "watchdog"
        return "crashed"

    # -- forensics -------------------------------------------------------------
    async def forensics(self, reason: str) -> Forensics:
        """Stacks, tree, sockets and asyncio tasks of the tree, saved to ``<name>.forensics.txt``."""
        from harness.probes.forensics import collect_forensics

        procs = proctree.collect_tree(self._root(), sid=self._sid or None, marker=self._token, exclude=self._own_pids())
        return await collect_forensics(
            procs,
            reason=reason,
            path=self.log_dir / f"{self.name}.forensics.txt",
            probe_address=self.env.get("WSCHAOS_PROBE_SOCKET"),
            stderr_tail=self._out.tail("stderr", 20),
            history=self.history,
            name=self.name,
        )

    def _root(self) -> psutil.Process | int | None:
        if not self.pid or self._exited.is_set():
            return None
        return self._proc or self.pid

    def _own_pids(self) -> set[int]:
        """The guard and the pty's leader shim: the harness's helpers, not the target's tree."""
        pids = {self._guard.pid} if self._guard is not None else set()
        if self._leader_pid is not None:
            pids.add(self._leader_pid)
        return pids

    # -- the guard and the leader ----------------------------------------------
    def _release_leader(self, timeout: float) -> None:
        """Let the pty's leader shim exit now that the tree is stopped, and reap it."""
        if self._control_w is not None:
            with contextlib.suppress(OSError):
                os.close(self._control_w)
            self._control_w = None
        if self._leader_pid is not None and self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout)

    # -- stop ------------------------------------------------------------------
    async def stop(self, term_timeout: float | None = None) -> CleanupReport:
        """Stop the whole tree leaves-first (idempotent, bounded) and report what was left."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._stop_sync, term_timeout)

    def _stop_sync(self, term_timeout: float | None = None) -> CleanupReport:
        term = scaled(1.0) if term_timeout is None else term_timeout
        kill = scaled(2.0)
        if not self._stop_lock.acquire(timeout=2 * (term + kill) + scaled(5)):
            # Another stop is stuck beyond every bound: do not wait on it forever.
            return CleanupReport(survivors=[], killed=[], port_free=None, unkillable=[])
        try:
            if self._cleanup is not None:
                return self._cleanup
            if not self.pid:
                self._cleanup = CleanupReport(survivors=[], killed=[], port_free=None)
                return self._cleanup
            was_running = not self._exited.is_set()
            if was_running:
                self._killed_by_harness = True
            procs = proctree.collect_tree(
                self._root(), sid=self._sid, marker=self._token, exclude=self._own_pids()
            )
            # Whatever of the tree is alive once the target has exited by itself outlived it;
            # and whether one of them still holds the port is judged before they are killed.
            survivors = [] if was_running else [proctree.describe(p) for p in procs]
            port_free_at_exit = port_free(self.host, self.port) if self.port and not was_running else None
            stopped, unkillable = proctree.stop_procs(
                procs, term_timeout=term, kill_timeout=kill, own_pid=None if self._leader_pid else self.pid,
                wait_own=self._exited.wait_sync,
            )
            # A second sweep for anything forked while the first was being stopped.
            late = proctree.collect_tree(None, sid=self._sid, marker=self._token, exclude=self._own_pids())
            if late:
                s2, unkillable = proctree.stop_procs(late, term_timeout=scaled(0.2), kill_timeout=kill)
                stopped += s2
                if not was_running:
                    survivors += [proctree.describe(p) for p in late]
            self._exited.wait_sync(kill)
            # The leader holds the pty open: release it first, then the tty reaches EOF at once.
            self._release_leader(kill)
            for s in ("stdout", "stderr", "tty"):
                self._eof[s].wait_sync(scaled(0.5))
            if self._master is not None:
                with contextlib.suppress(OSError):
                    os.close(self._master)
            if self._popen is not None:
                for f in (self._popen.stdout, self._popen.stderr):
                    if f is not None and self._eof["stdout"].is_set() and self._eof["stderr"].is_set():
                        with contextlib.suppress(OSError):
                            f.close()
            release_guard(self._guard, self._guard_pipe, scaled(2.0))
            self._guard_pipe = None
            port_is_free = port_free_at_exit
            if port_is_free is None and self.port:
                port_is_free = port_free(self.host, self.port)
            self._cleanup = CleanupReport(
                survivors=[i.as_dict() for i in survivors],
                killed=[i.as_dict() for i in stopped],
                port_free=port_is_free,
                target_was_running=was_running,
                unkillable=[i.as_dict() for i in unkillable],
            )
            if self.history is not None:
                self.history.observe(
                    "supervisor", "stopped", name=self.name, pid=self.pid, hung=was_running,
                    survivors=self._cleanup.survivors, port_free=port_is_free,
                )
            return self._cleanup
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(id(self), None)
            self._stop_lock.release()
