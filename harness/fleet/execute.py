"""Run one worker's program, bounded, and gather what it sends back (any engine).

Shared by the worker process (:mod:`harness.fleet.worker`), the in-process
fleet and the Dask task; the worker module itself is kept out of the
package's imports, so ``python -m harness.fleet.worker`` runs it fresh.
"""

from __future__ import annotations

import asyncio
import os
import resource
import traceback
from typing import Any

from harness.core.timing import now_ns
from harness.fleet.context import WorkerContext

__all__ = ["READY_PATTERN", "run_program"]

#: The line the supervisor waits for (no port: a worker listens nowhere).
READY_PATTERN = r"^wschaos-fleet worker \d+ ready$"


def _usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


async def run_program(ctx: WorkerContext, program: Any, timeout: float) -> dict[str, Any]:
    """Run ``program(ctx)`` within ``timeout``; the result a worker sends back (also used in-process)."""
    cpu0, _ = _usage()
    started = now_ns()
    value: Any = None
    error: str | None = None
    try:
        value = await asyncio.wait_for(program(ctx), timeout)
    except asyncio.TimeoutError:
        error = f"the program did not finish within {timeout:g} s"
    except Exception:
        error = traceback.format_exc(limit=8)
    ended = now_ns()
    cpu1, maxrss = _usage()
    return {
        "records": list(ctx.history),
        "value": value,
        "error": error,
        "host": ctx.host,
        "pid": os.getpid(),
        "sources": list(ctx.sources),
        "started_ns": started,
        "ended_ns": ended,
        "cpu_s": cpu1 - cpu0,
        "max_rss_kb": maxrss,
    }
