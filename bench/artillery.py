"""The peer figure 1 is compared with: Artillery's WebSocket engine doing the churn cycle.

Artillery is installed on first use into ``bench/node_modules`` (never into
the project or globally). Its ws engine opens a connection per virtual user
and closes it when the user's flow ends, so one virtual user is one cycle.
Its own ``wait``/``send: {match}`` steps consume exactly one message each,
which races with a reply of two frames arriving in one read; the flow
therefore waits for the final RESPONSE in a small processor function, which
listens before it sends, as a hand-written Artillery test of this protocol would.

Concurrency is pinned like the Python loops': a phase arriving far faster
than the cycles complete, capped by ``maxVusers``, so exactly ``concurrency``
users are in flight. The rate is Artillery's own count of completed users
over its own first-to-last metric span, so its start-up (several seconds of
module loading) is not charged to it.

Artillery runs under :class:`harness.process.supervisor.Supervisor` like any process
the harness starts, so its worker threads and children end with it.
Telemetry is switched off: traffic stays on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.core.timing import scaled
from harness.process.supervisor import OutputWaitError, Supervisor
from harness.target.spec import Limits, Readiness, Target

from .common import tree_cpu_s

__all__ = ["ArtilleryUnavailable", "ensure_artillery", "run_churn"]

BENCH = Path(__file__).resolve().parent
BIN = BENCH / "node_modules" / ".bin" / "artillery"
PACKAGE = "artillery@2"
INSTALL_TIMEOUT_S = 600.0

_PROCESSOR = r"""
// Sends one REQUEST on the virtual user's connection and finishes the step
// when that request's final RESPONSE arrives (listening before sending, so a
// reply that lands in the same read as the request's echo is not missed).
let next = 0;
module.exports = {
  requestAndWaitFinal(context, ee, done) {
    const ws = context.ws;
    const rid = 'a' + process.pid + '-' + (next++);
    const timer = setTimeout(() => {
      ws.removeListener('message', onMessage);
      done(new Error('no final RESPONSE within 10 s'));
    }, 10000);
    function onMessage(data) {
      let msg;
      try { msg = JSON.parse(data); } catch (err) { return; }
      if (msg.request_id === rid && msg.payload && msg.payload.final === true) {
        clearTimeout(timer);
        ws.removeListener('message', onMessage);
        done();
      }
    }
    ws.on('message', onMessage);
    ws.send(JSON.stringify({
      msg_type: 'REQUEST', request_id: rid,
      payload: {text: 'bench', options: {chunks: 1, chunk_delay_ms: 0}},
    }));
  },
};
"""

_SCENARIO = """\
config:
  target: "{url}"
  processor: "./churn.js"
  phases:
    # Arrivals every millisecond, at most {concurrency} users in flight: a
    # closed loop of {concurrency} concurrent cycles, like the Python drivers.
    - duration: {duration}
      arrivalRate: 1000
      maxVusers: {concurrency}
scenarios:
  - engine: ws
    flow:
      - function: requestAndWaitFinal
"""


class ArtilleryUnavailable(RuntimeError):
    """npm is missing, the install failed, or Artillery could not run; the message says why."""


def ensure_artillery(timeout: float = INSTALL_TIMEOUT_S) -> Path:
    """The artillery binary under bench/node_modules, installing it on first use."""
    if BIN.exists():
        return BIN
    npm = shutil.which("npm")
    if npm is None:
        raise ArtilleryUnavailable("npm not found on PATH")
    env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    try:
        proc = subprocess.run(
            [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(BENCH), PACKAGE],
            env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise ArtilleryUnavailable(f"npm install {PACKAGE} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0 or not BIN.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ArtilleryUnavailable(f"npm install {PACKAGE} failed ({proc.returncode}): {' | '.join(tail)}")
    return BIN


async def run_churn(url: str, *, duration_s: int, concurrency: int, timeout_s: float) -> dict[str, Any]:
    """Run the churn flow for ``duration_s``; completed cycles per second and the counters."""
    binary = await asyncio.get_running_loop().run_in_executor(None, ensure_artillery)
    with tempfile.TemporaryDirectory(prefix="wschaos-bench-artillery-") as tmp:
        work = Path(tmp)
        (work / "churn.js").write_text(_PROCESSOR)
        (work / "churn.yml").write_text(_SCENARIO.format(url=url, duration=duration_s, concurrency=concurrency))
        report = work / "report.json"
        target = Target(
            name="artillery",
            argv=(str(binary), "run", "--output", str(report), str(work / "churn.yml")),
            cwd=str(work),
            env={"ARTILLERY_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"},
            # Artillery is a client: it is "ready" once it names its test run.
            readiness=Readiness(kind="line", pattern=r"Test run id"),
            limits=Limits(ready_timeout_s=60.0),
            stats_path=None,
            health_path=None,
        )
        sup = Supervisor(target, work / "logs", name="artillery")
        cpu: float | None = None
        try:
            await sup.start()
            # Artillery's own CPU over its load phase (its start-up excluded): the
            # steadier comparison on a shared machine, as for the Python drivers.
            await sup.wait_for_output(r"Phase started", scaled(30), stream="stdout")
            cpu0 = tree_cpu_s(sup.pid)
            await sup.wait_for_output(r"Phase completed", duration_s + scaled(30), stream="stdout")
            cpu = tree_cpu_s(sup.pid) - cpu0
            exit_report = await sup.wait_exit(timeout_s)
        except OutputWaitError as exc:
            raise ArtilleryUnavailable(f"artillery did not run its phase: {exc}") from None
        finally:
            await sup.stop()
        if exit_report is None:
            raise ArtilleryUnavailable(f"artillery still running after {timeout_s:.0f} s; stopped")
        if exit_report.returncode != 0 or not report.exists():
            raise ArtilleryUnavailable(
                f"artillery exited {exit_report.returncode}: {exit_report.stderr_tail[-300:] or exit_report.stdout_tail[-300:]}"
            )
        agg = json.loads(report.read_text())["aggregate"]
    counters = agg.get("counters", {})
    completed = int(counters.get("vusers.completed", 0))
    span_s = (agg["lastCounterAt"] - agg["firstCounterAt"]) / 1000 if agg.get("lastCounterAt") else 0.0
    return {
        "cycles": completed,
        "failed": int(counters.get("vusers.failed", 0)),
        "skipped_arrivals": int(counters.get("vusers.skipped", 0)),
        "seconds": round(span_s, 3),
        "cycles_per_s": round(completed / span_s, 1) if span_s > 0 else None,
        "session_ms_p50": (agg.get("summaries", {}).get("vusers.session_length") or {}).get("median"),
        "client_cpu_us_per_cycle": round(cpu / completed * 1e6) if cpu is not None and completed else None,
    }
