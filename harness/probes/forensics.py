"""Hang forensics: what a stuck target was doing, captured before it is killed.

A hang is only explainable with the stacks in hand (pytest-timeout's
``dump_stacks`` habit). For every process of the target's tree this records

* every thread's Python stack, from ``py-spy dump`` (no cooperation needed
  from the target, so it works on a process stuck in C or holding the GIL),
* the process tree (pid, parent, status, threads, command line),
* its sockets with their TCP states,
* and, when the target runs the injected Python probe, every asyncio task's
  stack of every running loop.

Everything is written to one text file and returned as :class:`Forensics`,
whose :meth:`Forensics.key_lines` is short enough for a failure message.
Every step is bounded and a failing step is recorded, never raised: forensics
run on a target that is already misbehaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.core.history import History
from harness.core.timing import now_ns, scaled

__all__ = ["Forensics", "collect_forensics", "find_py_spy", "parse_py_spy"]

@dataclass
class ThreadStack:
    pid: int
    thread: str  # "Thread 123 (idle): \"MainThread\""
    idle: bool
    frames: list[str]  # innermost first, as py-spy prints them


@dataclass
class Forensics:
    reason: str
    t_ns: int
    name: str
    pids: list[int]
    #: pid -> raw py-spy output, or the error that prevented it.
    stacks: dict[int, str] = field(default_factory=dict)
    threads: list[ThreadStack] = field(default_factory=list)
    tree: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)
    #: The injected probe's answer (loops with their tasks), or None.
    tasks: dict[str, Any] | None = None
    stderr_tail: str = ""
    errors: list[str] = field(default_factory=list)
    path: Path | None = None

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
        if not self.threads and self.stacks:
            first = next(iter(self.stacks.items()))
            lines.append(f"pid {first[0]}: {first[1].strip().splitlines()[-1:] or ['(empty)']}")
        if self.errors and len(lines) < max_lines:
            lines.append("errors: " + "; ".join(self.errors)[:300])
        if self.path is not None:
            lines.append(f"full forensics: {self.path}")
        return lines[: max_lines + 1]

    def text(self) -> str:
        out = [f"# wschaos forensics of {self.name}", f"reason: {self.reason}", f"t_ns: {self.t_ns}", ""]
        out.append("## process tree")
        for p in self.tree:
            out.append(
                f"pid {p['pid']} ppid {p.get('ppid')} {p.get('status')} threads={p.get('threads')} "
                f"{p.get('name')}: {' '.join(p.get('cmdline') or [])}"
            )
        out += ["", "## thread stacks (py-spy dump)"]
        for pid, text in self.stacks.items():
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
        out += ["", "## stderr tail", self.stderr_tail or "(empty)", ""]
        if self.errors:
            out += ["## errors", *self.errors, ""]
        return "\n".join(out)


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
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


async def _py_spy(exe: str, pid: int, timeout: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        exe, "dump", "--pid", str(pid),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), scaled(2))
        raise
    if proc.returncode != 0:
        first = (err.decode(errors="replace").strip().splitlines() or ["no output"])[0]
        raise RuntimeError(f"py-spy exited {proc.returncode}: {first}")
    return out.decode(errors="replace")


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
    """Gather everything about ``procs`` (each step bounded) and save it to ``path``."""
    started = time.monotonic()
    per_call = scaled(10.0) if timeout is None else timeout
    f = Forensics(reason=reason, t_ns=now_ns(), name=name, pids=[p.pid for p in procs], stderr_tail=stderr_tail)
    f.tree = _tree(procs)
    f.sockets = _sockets(procs, f.errors)

    exe = find_py_spy()
    if exe is None:
        f.errors.append("py-spy not found next to the interpreter or on PATH: no thread stacks")
    else:
        # One at a time: py-spy pauses the process it reads, and the machine is small.
        for p in procs:
            try:
                f.stacks[p.pid] = await _py_spy(exe, p.pid, per_call)
                f.threads += parse_py_spy(p.pid, f.stacks[p.pid])
            except asyncio.TimeoutError:
                f.stacks[p.pid] = f"(py-spy gave no answer within {per_call:.1f}s)"
                f.errors.append(f"py-spy timed out on pid {p.pid}")
            except (OSError, RuntimeError) as exc:
                f.stacks[p.pid] = f"(no stack: {exc})"
                f.errors.append(f"pid {p.pid}: {exc}")

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
