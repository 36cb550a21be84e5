"""Process-tree helpers: find everything a target started, stop it leaves-first.

A target's tree is more than ``children(recursive=True)``: a helper that
double-forks is reparented to init (or a subreaper) and drops out of that
list, yet it still holds the listening socket or the log pipes. So a tree is
the union of

* the descendants of the root pid (while the root lives),
* every process whose session id is the target's session (the supervisor
  starts each target with ``setsid``, so the session is the target's own),
* every process whose environment carries the supervisor's marker variable
  (inherited across ``fork``/``exec`` even by helpers that ``setsid`` again).

Stopping follows pytest-xprocess: SIGTERM leaves-first, ``psutil.wait_procs``
with a bound, SIGKILL the survivors, and ignore zombies (they are already
dead; only their parent can reap them).

This module imports nothing from the rest of the harness so that the guard
process (``_guard.py``) can use it with a bare interpreter.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

__all__ = [
    "MARKER_ENV",
    "ProcInfo",
    "collect_tree",
    "describe",
    "is_gone",
    "stop_procs",
]

#: Environment variable the supervisor sets in every target; its value is a
#: per-target token, so reparented helpers can still be found.
MARKER_ENV = "WSCHAOS_TREE"


@dataclass(frozen=True)
class ProcInfo:
    """What a report needs about one process, captured while it still existed."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    ppid: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "name": self.name, "cmdline": list(self.cmdline), "ppid": self.ppid}


def describe(proc: psutil.Process) -> ProcInfo:
    """A :class:`ProcInfo` for ``proc``, tolerating processes that vanish meanwhile."""
    name, cmdline, ppid = "?", (), None
    with contextlib.suppress(psutil.Error):
        name = proc.name()
    with contextlib.suppress(psutil.Error):
        cmdline = tuple(proc.cmdline())
    with contextlib.suppress(psutil.Error):
        ppid = proc.ppid()
    return ProcInfo(pid=proc.pid, name=name, cmdline=cmdline, ppid=ppid)


def is_gone(proc: psutil.Process) -> bool:
    """True once the process no longer runs; a zombie counts as gone."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def collect_tree(
    root_pid: int | psutil.Process | None,
    *,
    sid: int | None = None,
    marker: str | None = None,
    exclude: Iterable[int] = (),
) -> list[psutil.Process]:
    """Every live, non-zombie process of the tree, deepest first.

    ``root_pid`` may be a ``psutil.Process`` captured earlier: its creation
    time then protects against a recycled pid. ``exclude`` names pids never to
    return (the harness itself, the guard).
    """
    skip = {os.getpid(), *exclude}
    found: dict[int, psutil.Process] = {}

    if root_pid is not None:
        try:
            root = root_pid if isinstance(root_pid, psutil.Process) else psutil.Process(root_pid)
            if not root.is_running():
                raise psutil.NoSuchProcess(root.pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass

    if sid is not None or marker is not None:
        # One pass over the process table: a reparented helper has no link to
        # the root any more, only its session id or its inherited environment.
        for proc in psutil.process_iter():
            if proc.pid in found or proc.pid in skip:
                continue
            if sid is not None and _sid(proc.pid) == sid:
                found[proc.pid] = proc
                continue
            if marker is not None:
                try:
                    if proc.environ().get(MARKER_ENV) == marker:
                        found[proc.pid] = proc
                except psutil.Error:
                    pass

    live = [p for pid, p in found.items() if pid not in skip and not is_gone(p)]
    return sorted(live, key=lambda p: _depth(p, found), reverse=True)


def _depth(proc: psutil.Process, within: dict[int, psutil.Process]) -> int:
    """How many ancestors of ``proc`` are in the tree: leaves have the largest depth."""
    depth, seen = 0, {proc.pid}
    try:
        ppid = proc.ppid()
    except psutil.Error:
        return 0
    while ppid in within and ppid not in seen:
        depth += 1
        seen.add(ppid)
        try:
            ppid = within[ppid].ppid()
        except psutil.Error:
            break
    return depth


def stop_procs(
    procs: list[psutil.Process],
    *,
    term_timeout: float,
    kill_timeout: float,
    own_pid: int | None = None,
    wait_own: Callable[[float], bool] | None = None,
) -> tuple[list[ProcInfo], list[ProcInfo]]:
    """SIGTERM leaves-first, wait, SIGKILL survivors, wait again.

    ``own_pid`` is a child of this process whose exit status another thread
    collects (``wait_own(timeout) -> exited``): ``psutil.wait_procs`` would
    ``waitpid`` it and steal that status, so it is awaited through
    ``wait_own`` instead.

    Returns ``(stopped, unkillable)``: the processes that were signalled and are
    gone, and those still running after SIGKILL (only possible for processes
    in uninterruptible sleep or owned by another user). Never blocks longer
    than about ``2 * (term_timeout + kill_timeout)``.
    """
    infos = {p.pid: describe(p) for p in procs}
    signalled: list[psutil.Process] = []
    for proc in procs:  # already deepest first
        try:
            proc.send_signal(signal.SIGTERM)
            signalled.append(proc)
        except psutil.NoSuchProcess:
            signalled.append(proc)
        except psutil.Error:
            pass
    own = [p for p in signalled if p.pid == own_pid]
    others = [p for p in signalled if p.pid != own_pid]

    def settle(group: list[psutil.Process], timeout: float) -> list[psutil.Process]:
        alive: list[psutil.Process] = []
        if group:
            _, alive = psutil.wait_procs(group, timeout=timeout)
        return [p for p in alive if not is_gone(p)]

    def settle_own(timeout: float) -> list[psutil.Process]:
        if not own:
            return []
        if wait_own is not None and wait_own(timeout):
            return []
        return [p for p in own if not is_gone(p)]

    alive = settle(others, term_timeout) + settle_own(term_timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if alive:
        alive = settle([p for p in alive if p.pid != own_pid], kill_timeout) + (
            settle_own(kill_timeout) if any(p.pid == own_pid for p in alive) else []
        )
    left = {p.pid for p in alive}
    stopped = [infos[p.pid] for p in signalled if p.pid not in left]
    return stopped, [infos[p.pid] for p in alive]
