"""Hang forensics: what a stuck process tree was doing, captured before it is killed.

A hang is only explainable with the stacks in hand (pytest-timeout's
``dump_stacks`` habit). One :class:`Forensics` describes a hung target
(:meth:`harness.process.supervisor.Supervisor.forensics`) as well as a hung
interactive client (:meth:`harness.process.terminal.InteractiveSession.forensics`).
For every process of the tree it records

* every thread's Python stack, from ``py-spy dump`` (no cooperation needed
  from the process, so it works on one stuck in C or holding the GIL),
* the process tree (pid, parent, status, threads, command line),
* its sockets with their TCP states,
* the last output before the hang (a target's stderr, a client's transcript),
* and, when a target runs the injected Python probe, every asyncio task's
  stack of every running loop.

:meth:`Forensics.key_lines` is short enough for a failure message;
:meth:`Forensics.text` is the full record, saved to a file for targets.
Every step is bounded and a failing step is recorded, never raised: forensics
run on a process that is already misbehaving.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.core.history import History
from harness.core.timing import now_ns, scaled

__all__ = ["Forensics", "ThreadStack", "collect_forensics", "find_py_spy", "gather", "parse_py_spy", "py_spy_dump"]

#: The default bound of one ``py-spy dump``, in seconds (scaled).
PY_SPY_TIMEOUT_S = 10.0


@dataclass
class ThreadStack:
    pid: int
    thread: str  # "Thread 123 (idle): \"MainThread\""
    idle: bool
    frames: list[str]  # innermost first, as py-spy prints them


@dataclass
class Forensics:
    """What a hung process tree was doing; built by :func:`gather` / :func:`collect_forensics`."""

    reason: str
    t_ns: int
    name: str
    pids: list[int]
    #: pid -> raw py-spy output, or why there is none.
    dumps: dict[int, str] = field(default_factory=dict)
    threads: list[ThreadStack] = field(default_factory=list)
    tree: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)
    #: The injected probe's answer (loops with their tasks), or None.
    tasks: dict[str, Any] | None = None
    #: The last output before the hang, and what it is ("stderr", "transcript").
    output_tail: str = ""
    output_label: str = "stderr"
    #: Why some thread stacks are missing (py-spy absent, failed or timed out); None when all were taken.
    stacks_error: str | None = None
    errors: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def stacks(self) -> str:
        """Every process's py-spy dump (or why it is missing), one after the other."""
        return "\n".join(self.dumps.values())

    def key_lines(self, max_lines: int = 12, frames_per_thread: int = 3) -> list[str]:
        """A short summary: the top frames of each thread, busy threads first, then tasks."""
        lines = [f"forensics of {self.name} ({self.reason}): {len(self.pids)} process(es)"]
        # The injected probe's own thread is ours, not the target's: leave it out.
        ordered = sorted((t for t in self.threads if "wschaos-probe" not in t.thread), key=lambda t: (t.idle, t.pid))
        for t in ordered:
            if len(lines) >= max_lines:
                break
            top = " < ".join(t.frames[:frames_per_thread]) or "(no Python frames)"
            lines.append(f"pid {t.pid} {t.thread}: {top}")
        for loop in (self.tasks or {}).get("loops", []) or []:
            for task in loop.get("tasks", []) or []:
                if len(lines) >= max_lines:
                    break
                stack = task.get("stack") or []
                lines.append(f"task {task.get('name')} {task.get('coro')}: {' > '.join(stack[-2:])}")
        if not self.threads and self.dumps:
            first = next(iter(self.dumps.items()))
            lines.append(f"pid {first[0]}: {first[1].strip().splitlines()[-1:] or ['(empty)']}")
        if self.errors and len(lines) < max_lines:
            lines.append("errors: " + "; ".join(self.errors)[:300])
        if self.path is not None:
            lines.append(f"full forensics: {self.path}")
        return lines[: max_lines + 1]

    def text(self) -> str:
        """The full record: tree, every thread stack, sockets, asyncio tasks, the output tail, errors."""
        out = [f"# wschaos forensics of {self.name}", f"reason: {self.reason}", f"t_ns: {self.t_ns}", ""]
        out.append("## process tree")
        for p in self.tree:
            out.append(
                f"pid {p['pid']} ppid {p.get('ppid')} {p.get('status')} threads={p.get('threads')} "
                f"{p.get('name')}: {' '.join(p.get('cmdline') or [])}"
            )
        out += ["", "## thread stacks (py-spy dump)"]
        for pid, text in self.dumps.items():
            out += [f"### pid {pid}", text.rstrip(), ""]
        out.append("## sockets")
        for s in self.sockets:
            out.append(f"pid {s['pid']} fd {s['fd']} {s['type']} {s['laddr']} -> {s['raddr']} {s['status']}")
        out += ["", "## asyncio tasks (injected probe)"]
        if self.tasks is None:
            out.append("(no probe)")
        else:
            for loop in self.tasks.get("loops", []) or []:
                out.append(
                    f"loop on thread {loop.get('thread_name')!r}: blocked={loop.get('blocked')} "
                    f"lag_ms={loop.get('lag_ms')} tasks={loop.get('tasks_count')}"
                )
                for task in loop.get("tasks", []) or []:
                    out.append(f"  task {task.get('name')} {task.get('coro')}")
                    out += [f"    {fr}" for fr in task.get("stack") or []]
        out += ["", f"## {self.output_label} tail", self.output_tail or "(empty)", ""]
        if self.errors:
            out += ["## errors", *self.errors, ""]
        return "\n".join(out)

    def render(self) -> str:
        """The full record (:meth:`text`)."""
        return self.text()


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


_THREAD_RE = re.compile(r"^Thread (?P<tid>\S+) \((?P<state>[^)]*)\)(?P<rest>.*)$")


def parse_py_spy(pid: int, text: str) -> list[ThreadStack]:
    """Threads and their frames from ``py-spy dump`` output."""
    threads: list[ThreadStack] = []
    current: ThreadStack | None = None
    for raw in text.splitlines():
        m = _THREAD_RE.match(raw.strip())
        if m:
            current = ThreadStack(pid, raw.strip(), "idle" in m.group("state"), [])
            threads.append(current)
        elif current is not None and raw.startswith("    ") and raw.strip():
            current.frames.append(raw.strip())
    return threads


def py_spy_dump(exe: str, pid: int, timeout: float) -> str:
    """``py-spy dump --pid``: its output. Raises TimeoutError at the bound (py-spy killed), RuntimeError or OSError."""
    try:
        done = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"py-spy gave no answer within {timeout:.1f}s") from None
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[0]
        raise RuntimeError(f"py-spy exited {done.returncode}: {first}")
    return done.stdout.decode(errors="replace")


def _tree(procs: Sequence[psutil.Process]) -> list[dict[str, Any]]:
    rows = []
    for p in procs:
        row: dict[str, Any] = {"pid": p.pid}
        for key, fn in (("ppid", p.ppid), ("name", p.name), ("status", p.status),
                        ("threads", p.num_threads), ("cmdline", p.cmdline)):
            try:
                row[key] = fn()
            except psutil.Error as exc:
                row[key] = f"<{type(exc).__name__}>"
        rows.append(row)
    return sorted(rows, key=lambda r: r["pid"])


def _sockets(procs: Sequence[psutil.Process], errors: list[str]) -> list[dict[str, Any]]:
    rows = []
    for p in procs:
        try:
            conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") else p.connections(kind="inet")
        except psutil.Error as exc:
            errors.append(f"sockets of pid {p.pid}: {type(exc).__name__}")
            continue
        for c in conns:
            rows.append({
                "pid": p.pid, "fd": c.fd,
                "type": "tcp" if c.type == 1 else "udp",
                "laddr": f"{c.laddr.ip}:{c.laddr.port}" if c.laddr else "",
                "raddr": f"{c.raddr.ip}:{c.raddr.port}" if c.raddr else "",
                "status": c.status,
            })
    return rows


def gather(
    procs: Sequence[psutil.Process],
    *,
    reason: str,
    name: str,
    timeout: float | None = None,
    output_tail: str = "",
    output_label: str = "stderr",
) -> Forensics:
    """Tree, sockets and every thread stack of ``procs``; synchronous, each py-spy call bounded by ``timeout``."""
    per_call = scaled(PY_SPY_TIMEOUT_S) if timeout is None else timeout
    f = Forensics(reason=reason, t_ns=now_ns(), name=name, pids=[p.pid for p in procs],
                  output_tail=output_tail, output_label=output_label)
    f.tree = _tree(procs)
    f.sockets = _sockets(procs, f.errors)
    exe = find_py_spy()
    if exe is None:
        f.stacks_error = "py-spy not found next to the interpreter or on PATH: no thread stacks"
        f.errors.append(f.stacks_error)
        return f
    missing: list[str] = []
    # One at a time: py-spy pauses the process it reads, and the machine is small.
    for p in procs:
        try:
            f.dumps[p.pid] = py_spy_dump(exe, p.pid, per_call)
            f.threads += parse_py_spy(p.pid, f.dumps[p.pid])
        except TimeoutError as exc:
            f.dumps[p.pid] = f"({exc})"
            missing.append(f"py-spy timed out on pid {p.pid}")
        except (OSError, RuntimeError) as exc:
            f.dumps[p.pid] = f"(no stack: {exc})"
            missing.append(f"pid {p.pid}: {exc}")
    f.errors += missing
    f.stacks_error = "; ".join(missing) or None
    return f


async def _probe_tasks(address: str, errors: list[str]) -> dict[str, Any] | None:
    try:
        from harness.probes.sampling import PythonProbe
    except ImportError as exc:
        errors.append(f"python probe unavailable: {exc}")
        return None
    try:
        sample = await asyncio.wait_for(PythonProbe(address, stack_limit=12).sample(), scaled(15))
    except Exception as exc:  # forensics must not fail because the probe did
        errors.append(f"python probe: {exc!r}")
        return None
    if not sample.ok:
        errors.append(f"python probe: {sample.error}")
        return None
    return dict(sample.data)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def collect_forensics(
    procs: Sequence[psutil.Process],
    *,
    reason: str,
    path: Path | None = None,
    probe_address: str | None = None,
    stderr_tail: str = "",
    history: History | None = None,
    name: str = "target",
    timeout: float | None = None,
) -> Forensics:
    """:func:`gather` off the event loop, plus the probe's asyncio tasks; saved to ``path``, noted in ``history``."""
    started = time.monotonic()
    f = await asyncio.to_thread(gather, procs, reason=reason, name=name, timeout=timeout, output_tail=stderr_tail)
    if probe_address:
        f.tasks = await _probe_tasks(probe_address, f.errors)
    if path is not None:
        try:
            await asyncio.to_thread(_write, path, f.text())
            f.path = path
        except OSError as exc:
            f.errors.append(f"cannot write {path}: {exc}")
    if history is not None:
        history.observe(
            "supervisor", "forensics", name=name, reason=reason, pids=f.pids,
            path=str(f.path) if f.path else None, took_s=round(time.monotonic() - started, 3),
        )
    return f
