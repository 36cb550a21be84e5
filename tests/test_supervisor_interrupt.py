"""When the harness itself is interrupted, nothing it started may survive.

1. A small harness script starts a target tree (parent, child, grandchild and a
   helper that left the session) through Supervisor and waits.
2. The test interrupts the harness: SIGINT (atexit and stop_all clean up),
   SIGTERM (the signal handler does), or SIGKILL (only the guard and
   PR_SET_PDEATHSIG remain).
3. Result: within a bound, no process of the target's session or carrying its
   marker is alive, and the guard has exited too.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness.core import proctree
from harness.core.timing import scaled

PROGRAMS = Path(__file__).parent / "fixtures" / "programs"


def _start_harness(tmp_path: Path, pty: bool) -> tuple[subprocess.Popen[str], dict[str, str], queue.Queue[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "harness_script.py"), str(tmp_path), str(PROGRAMS / "forker.py"),
         *(["pty"] if pty else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + scaled(30)
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if line.startswith("TARGET "):
            words = line.split()
            return proc, dict(zip(words[::2], words[1::2], strict=True)), lines
    proc.kill()
    proc.wait(scaled(5))
    pytest.fail(f"the harness script never reported its target: {''.join(seen)}")


def _wait_all_gone(info: dict[str, str], timeout: float) -> list[proctree.ProcInfo]:
    sid, marker, guard = int(info["SID"]), info["MARKER"], int(info["GUARD"])
    deadline = time.monotonic() + timeout
    left: list[proctree.ProcInfo] = []
    while time.monotonic() < deadline:
        procs = proctree.collect_tree(None, sid=sid, marker=marker)
        left = [proctree.describe(p) for p in procs]
        guard_alive = psutil.pid_exists(guard) and not proctree.is_gone(psutil.Process(guard))
        if not left and not guard_alive:
            return []
        if guard_alive and not left:
            left = [proctree.ProcInfo(guard, "guard", ())]
        time.sleep(0.05)  # polling a condition with a bound
    return left


@pytest.mark.parametrize(
    ("sig", "pty"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGKILL, True)],
    ids=["SIGINT", "SIGTERM", "SIGKILL", "SIGKILL-pty"],
)
def test_interrupted_harness_leaves_no_target_process(tmp_path, sig, pty):
    """Whatever ends the harness, the target's whole tree (and the guard) ends with it."""
    harness, info, _ = _start_harness(tmp_path, pty)
    sid, marker = int(info["SID"]), info["MARKER"]
    before = proctree.collect_tree(None, sid=sid, marker=marker)
    # parent, child, grandchild, escapee (and on a pty the leader shim)
    assert len(before) == (5 if pty else 4)
    os.kill(harness.pid, sig)
    try:
        harness.wait(scaled(20))
    except subprocess.TimeoutExpired:
        harness.kill()
        harness.wait(scaled(5))
        pytest.fail(f"the harness did not end on {sig.name}")
    left = _wait_all_gone(info, scaled(15))
    assert left == [], f"survived {sig.name} of the harness: {left}"
    if sig == signal.SIGKILL:
        log = (tmp_path / "guarded.guard.log").read_text()
        assert "harness gone; stopped" in log
