"""What :mod:`harness.process.terminal` reports about a hung interactive client, and how it is gathered.

Kept apart from the pty driving: :class:`Forensics` (py-spy thread stacks and
the process tree, taken before the client is killed), :class:`Cleanup` (what
closing the session had to stop), and the helpers that collect them.
:mod:`harness.process.terminal` re-exports the public names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.core.proctree import ProcInfo, collect_tree, describe
from harness.core.timing import scaled

__all__ = ["Cleanup", "Forensics", "process_tree", "py_spy_dump", "py_spy_path"]


@dataclass(frozen=True)
class Forensics:
    """What a hung client was doing, captured before it is killed."""

    pid: int
    reason: str
    stacks: str
    stacks_error: str | None
    tree: list[dict[str, Any]]
    transcript_tail: str

    def render(self) -> str:
        lines = [f"== hung client pid {self.pid}: {self.reason}", "-- thread stacks (py-spy dump)"]
        lines.append(self.stacks.rstrip() if self.stacks else f"(unavailable: {self.stacks_error})")
        lines.append("-- process tree")
        for p in self.tree:
            lines.append(
                f"pid {p['pid']} ppid {p.get('ppid')} {p.get('status')} threads={p.get('num_threads')} "
                f"{' '.join(p.get('cmdline') or []) or p.get('name')}"
            )
        lines += ["-- transcript tail", self.transcript_tail]
        return "\n".join(lines)


@dataclass(frozen=True)
class Cleanup:
    """What :meth:`harness.process.terminal.InteractiveSession.close` had to stop, and what would not die."""

    stopped: list[ProcInfo] = field(default_factory=list)
    survivors: list[ProcInfo] = field(default_factory=list)


def py_spy_path() -> str | None:
    """py-spy next to the running interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def py_spy_dump(pid: int, timeout: float | None = None) -> tuple[str, str | None]:
    """``py-spy dump`` of ``pid``: its output, and why it failed or is incomplete (else None)."""
    stacks, error = "", None
    spy = py_spy_path()
    if spy is None:
        error = "py-spy not found beside the interpreter or on PATH"
    else:
        try:
            done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                                  timeout=scaled(15) if timeout is None else timeout, check=False)
            stacks = done.stdout
            if done.returncode != 0:
                error = f"py-spy exit {done.returncode}: {done.stderr.strip()[-500:]}"
        except subprocess.TimeoutExpired:
            error = "py-spy dump timed out"
        except OSError as exc:
            error = f"py-spy: {exc}"
    return stacks, error


def process_tree(pid: int) -> list[dict[str, Any]]:
    """The client's session (it leads its own): each process with its status and threads."""
    tree = []
    for proc in collect_tree(pid, sid=pid):
        info: dict[str, Any] = describe(proc).as_dict()
        with contextlib.suppress(psutil.Error):
            info["status"] = proc.status()
            info["num_threads"] = proc.num_threads()
            info["threads"] = [t.id for t in proc.threads()]
        tree.append(info)
    return tree
