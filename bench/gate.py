"""Figure 6: wall time of the default gate, in total and per case.

Runs ``wschaos run --seed 1 --report-dir <tmp>`` as a user would (a
subprocess of the installed entry point) and reads the run's
``results.json``: ``duration_s`` of the run and of every case. The quick
bench runs only the ``interrupts.basic`` cases, as a smoke test of the path.

The gate's process tree is stopped leaves-first on the way out whatever
happened (:mod:`harness.core.proctree`, what the supervisor uses); the gate's own
targets are stopped by the gate, and by their guards if it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from harness.core import proctree
from harness.core.timing import scaled

from .common import ROOT, Figure

__all__ = ["figure"]

GOAL_S = 60.0


def _wschaos() -> list[str]:
    exe = Path(sys.executable).with_name("wschaos")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "harness.cli"]


async def _run_gate(report_dir: Path, cases: list[str], timeout: float) -> tuple[int | None, float, str]:
    argv = [*_wschaos(), "run", "--seed", "1", "--report-dir", str(report_dir)]
    for c in cases:
        argv += ["--case", c]
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, env={**os.environ, "NO_COLOR": "1"},
    )
    root = psutil.Process(proc.pid)
    try:
        assert proc.stderr is not None
        stderr = await asyncio.wait_for(proc.stderr.read(), timeout)
        rc: int | None = await asyncio.wait_for(proc.wait(), scaled(10))
    except asyncio.TimeoutError:
        stderr, rc = b"", None
    finally:
        procs = proctree.collect_tree(root, sid=proc.pid)
        if procs:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: proctree.stop_procs(procs, term_timeout=scaled(3), kill_timeout=scaled(3)))
        if proc.returncode is None:
            await asyncio.wait_for(proc.wait(), scaled(5))
    return rc, time.monotonic() - t0, stderr.decode(errors="replace")


def _read_results(report_dir: Path) -> dict[str, Any] | None:
    found = sorted(report_dir.glob("*/results.json"))
    return json.loads(found[-1].read_text()) if found else None


async def figure(quick: bool) -> Figure:
    cases = ["interrupts.basic*"] if quick else []
    fig = Figure("gate", "6. default gate wall time" + (" (quick: interrupts.basic only)" if quick else ""))
    with tempfile.TemporaryDirectory(prefix="wschaos-bench-gate-") as tmp:
        rc, wall, stderr = await _run_gate(Path(tmp), cases, scaled(90 if quick else 400))
        results = _read_results(Path(tmp))
    if results is None:
        fig.unavailable = f"no results.json (exit {rc}): {stderr.strip()[-300:]}"
        return fig
    per_case = sorted(((c["case_id"], c["duration_s"]) for c in results["cases"]), key=lambda x: -x[1])
    total = results["duration_s"]
    fig.add("gate total (results.json)", round(total, 1), "s")
    fig.add("process wall time", round(wall, 1), "s")
    fig.add("cases", len(per_case))
    fig.add("status", f"{results['status']} (exit {rc})")
    for case_id, seconds in per_case[: 5 if quick else 8]:
        fig.add(case_id, round(seconds, 2), "s")
    fig.add("sum of cases", round(sum(s for _, s in per_case), 1), "s")
    fig.goal(f"< {GOAL_S:g} s on 2 cores", wall < GOAL_S, f"{wall:.1f} s")
    if not quick and len(per_case) > 8:
        fig.notes.append(f"slowest 8 of {len(per_case)} cases shown; all in the JSON")
    fig.details = {"cases": dict(per_case), "exit_code": rc, "status": results["status"],
                   "cpus": os.cpu_count(), "loadavg_after": os.getloadavg()}
    return fig
