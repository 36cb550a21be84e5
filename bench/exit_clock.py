"""Figure 4: how far the supervisor's exit timestamp is from the target's own clock.

The target (:mod:`bench.stamp_target`) writes ``time.monotonic_ns()`` just
before ``os._exit(0)``; the error is the supervisor's ``exited_ns`` minus that
stamp: the time the kernel, the reaping thread (or with a pty, the leader
shim that reports the reap) and the scheduler add to every exit time the
harness reports. Both ways the harness runs a target are measured: plain
(SIGINT with ``send_signal``) and on a pty (Ctrl+C).
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

from harness.core.timing import scaled
from harness.target.spec import Target

from .common import Figure, running, spread

__all__ = ["figure"]

STAMP_TARGET = Path(__file__).resolve().with_name("stamp_target.py")


async def _errors(runs: int, pty: bool) -> tuple[list[float], list[str]]:
    errors: list[float] = []
    odd: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wschaos-bench-clock-") as tmp:
        for i in range(runs):
            stamp = Path(tmp) / f"stamp-{i}"
            target = Target(name="stamp", argv=(sys.executable, str(STAMP_TARGET), str(stamp)),
                            stats_path=None, health_path=None)
            async with running(target, pty=pty, log_dir=Path(tmp) / f"logs-{i}") as sup:
                if pty:
                    sup.ctrl_c()
                else:
                    sup.send_signal(signal.SIGINT)
                report = await sup.wait_exit(scaled(5))
            if report is None or not stamp.exists():
                odd.append(f"run {i}: {'no exit' if report is None else 'no stamp'}")
                continue
            errors.append((report.exited_ns - int(stamp.read_text())) / 1e6)
    return errors, odd


async def figure(quick: bool) -> Figure:
    fig = Figure("exit_clock", "4. exit-time error: supervisor's exited_ns - the target's own last stamp")
    runs = 3 if quick else 20
    plain, odd1 = await _errors(runs, pty=False)
    pty, odd2 = await _errors(runs, pty=True)
    sp, st = spread(plain, 2), spread(pty, 2)
    fig.add("error, plain (SIGINT)", sp, "ms")
    fig.add("error, pty (Ctrl+C)", st, "ms")
    worst = max((x for x in (sp["p99"], st["p99"]) if x is not None), default=None)
    fig.goal("< 10 ms (p99, both ways)", None if worst is None else worst < 10 and not (odd1 or odd2),
             f"p99 {sp['p99']} / {st['p99']} ms")
    fig.notes += odd1 + odd2
    fig.details = {"plain_ms": [round(x, 3) for x in plain], "pty_ms": [round(x, 3) for x in pty]}
    return fig
