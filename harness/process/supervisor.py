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
  character to the master (:mod:`harness.process.pty`), and the line
  discipline signals the whole foreground process group, as a person's Ctrl+C
  does. stdout and stderr stay separate pipes so they can be judged separately.
* **The harness may die.** Live supervisors are registered
  (:mod:`harness.process.registry`); ``atexit`` and a SIGTERM/SIGHUP handler
  stop them all; each target also gets a guard process
  (:mod:`harness.process.guard`) that kills its tree on EOF of a pipe from the
  harness, so even SIGKILL of the harness leaves nothing behind.
* **One owner of the environment.** The target's environment, the tree marker
  and the injected Python probe's variables are built here, in
  :meth:`Supervisor.start`, and nowhere else.

The fork, the pty's leader shim, the guard and the port probes are in
:mod:`harness.process.launch`; reading and matching the output is
:mod:`harness.process.capture`; waiting until ready is
:mod:`harness.process.readiness`; how an exit is classified is
:mod:`harness.process.exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
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
from harness.core.timing import now_ns, scaled
from harness.process import registry
from harness.process.capture import Flag, OutputCapture
from harness.process.exit import ExitReport, SentSignal, exit_report
from harness.process.launch import free_port, port_free, release_guard, spawn, start_guard
from harness.process.pty import send_intr
from harness.process.readiness import await_ready, has_port_placeholder, port_problem
from harness.process.registry import stop_all
from harness.target.spec import Target

if TYPE_CHECKING:  # forensics is imported only when a hang needs it
    from harness.probes.forensics import Forensics

__all__ = [
    "CleanupReport",
    "ExitReport",  # defined in harness.process.exit; importable from here too
    "OutputWaitError",
    "PortTakenError",
    "Supervisor",
    "SupervisorError",
    "TargetStartError",
    "stop_all",
]


class TargetStartError(RuntimeError):
    """The target died or never became ready; the message ends with its output tails."""


class PortTakenError(TargetStartError):
    """The free port wschaos picked for the target was taken before the target bound it: a race, not a bug of the target."""


#: What a target prints when its port is already bound.
_PORT_TAKEN = re.compile(r"address already in use|Errno 98|EADDRINUSE", re.IGNORECASE)


class SupervisorError(RuntimeError):
    """The supervisor was used out of order (signal before start, Ctrl+C without a pty...)."""


class OutputWaitError(TimeoutError):
    """An expected output line did not appear within the bound, or the stream ended first."""


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
        self._signals: list[SentSignal] = []
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
        picked = not self.port and has_port_placeholder(self.target.argv)
        if picked:
            self.port = free_port(self.host)
        problem = port_problem(self.target.readiness, self.port)
        if problem is not None:
            raise TargetStartError(f"{self.name}: {problem}")
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
        registry.install_handlers()
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
            tails = self._out.tails_text()
            if picked and _PORT_TAKEN.search(tails):
                raise PortTakenError(f"{self.name}: port {self.port}, picked free by wschaos, was taken before "
                                     f"the target bound it{tails}")
            raise TargetStartError(f"{self.name} (pid {self.pid}): {problem}{tails}")
        self.ready_ns = now_ns()
        if self.history is not None:
            self.history.observe(
                "supervisor", "ready", t_ns=self.ready_ns, pid=self.pid, port=self.port, host=self.host, name=self.name
            )

    def _build_env(self) -> dict[str, str]:
        """This process's environment, the target's, ``extra_env``; the probe's variables; the marker."""
        env = dict(os.environ)
        env.update(self.target.env)
        env.update(self.extra_env)
        if self.target.python_probe:
            try:
                from harness.probes.sampling import PROBE_ENV_VAR, python_probe_env
            except ImportError as exc:
                raise TargetStartError(f"{self.name}: python_probe requested but unavailable: {exc}") from exc
            if PROBE_ENV_VAR not in env:  # a caller that placed the probe's socket itself keeps it
                env.update(python_probe_env(self.log_dir, env))
        env["PYTHONUNBUFFERED"] = "1"
        env[proctree.MARKER_ENV] = self._token
        return env

    @property
    def probe_address(self) -> str | None:
        """Where the injected Python probe of this target listens; None without one."""
        from harness.probes.sampling import probe_address_from_env

        return probe_address_from_env(self.env)

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
        registry.register(self)
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

    # -- readiness (harness.process.readiness) -------------------------------------
    async def _await_ready(self, bound: float) -> str | None:
        """None when ready; otherwise what went wrong, for the error message."""
        ready = await await_ready(
            self.target.readiness,
            out=self._out,
            exited=self._exited,
            returncode=lambda: self.returncode,
            host=self.host,
            port=self.port,
            port_given=bool(self.target.port) or has_port_placeholder(self.target.argv),
            bound=bound,
            where=self.name,
            allow_remote=self.target.allow_remote,
        )
        self.host, self.port = ready.host, ready.port
        return ready.problem

    # -- signals ---------------------------------------------------------------
    def _record_signal(self, name: str, how: str, t_ns: int) -> None:
        self._signals.append(SentSignal(name, how, t_ns))
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
        t = send_intr(self._master)
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
        """The target has not exited: not reaped, and not a zombie waiting to be (its reaper,
        a thread here or the pty's leader shim, may run late on a loaded machine)."""
        if not self.pid or self._exited.is_set():
            return False
        proc = self._proc
        if proc is None:
            return True
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True

    # -- exit ------------------------------------------------------------------
    async def wait_exit(self, timeout: float) -> ExitReport | None:
        """The exit report, or None if the target still runs at the bound (it is not killed)."""
        if not await self._exited.wait(timeout):
            return None
        await self._out.flush(scaled(0.5))
        return self.exit_report

    @property
    def stopped_by_harness(self) -> bool:
        """True once :meth:`stop` ended a target that was still running: its exit is wschaos's doing."""
        return self._killed_by_harness

    @property
    def exit_report(self) -> ExitReport | None:
        """The report once the target has exited, else None (classified by harness.process.exit)."""
        if not self._exited.is_set() or self.returncode is None or self.exited_ns is None:
            return None
        return exit_report(
            pid=self.pid,
            returncode=self.returncode,
            exited_ns=self.exited_ns,
            signals=self._signals,
            killed_by_harness=self._killed_by_harness,
            limits=self.target.limits,
            noise=self.noise(),
            stdout_tail=self._out.tail("stdout"),
            stderr_tail=self._out.tail("stderr"),
        )

    # -- forensics -------------------------------------------------------------
    async def forensics(self, reason: str) -> Forensics:
        """Stacks, tree, sockets and asyncio tasks of the tree, saved to ``<name>.forensics.txt``."""
        from harness.probes.forensics import collect_forensics

        procs = proctree.collect_tree(self._root(), sid=self._sid or None, marker=self._token, exclude=self._own_pids())
        return await collect_forensics(
            procs,
            reason=reason,
            path=self.log_dir / f"{self.name}.forensics.txt",
            probe_address=self.probe_address,
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
        return await loop.run_in_executor(None, self.stop_sync, term_timeout)

    def stop_sync(self, term_timeout: float | None = None) -> CleanupReport:
        """:meth:`stop` for a caller without an event loop (the registry at exit)."""
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
            registry.unregister(self)
            self._stop_lock.release()
