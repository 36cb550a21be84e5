"""Past one machine: a client program spread over the workers of a Dask distributed cluster.

Each fleet worker is one Dask task, pinned to one Dask worker. The task is
a plain function that runs the program under ``asyncio.run`` in the Dask
worker's task thread: a fresh event loop of its own, never the worker's
internal loop (which carries the worker's own communication). The task
returns every record of its History with the program's value; Dask ships
it back (pickled) to the client, and the records merge exactly as a local
fleet's do (:mod:`harness.fleet.merge`), each tagged with the host it ran on.
The clock rule follows: times compare only between records of one host.

What Dask does not give a program here: the parent channel
(:meth:`WorkerContext.report` / :meth:`WorkerContext.wait_signal`), and a
common start: tasks start when the scheduler places them, a few
milliseconds apart.

Bounds: each task ends its program at ``timeout`` by itself (a Dask task
cannot be killed from the client once running); the client's wait is
bounded beyond that, and on any exit path the run's futures are released.
:func:`local_cluster` starts a scheduler and N single-threaded workers as
separate local processes under the harness's Supervisor, stopped with their
whole trees; on other machines one runs ``dask scheduler`` and
``dask worker tcp://SCHEDULER:8786 --nthreads 1`` instead.

Needs ``distributed`` (the ``fleet`` extra); imported only when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.core.history import History
from harness.core.timing import scaled
from harness.fleet.context import (
    FleetError,
    Program,
    WorkerContext,
    assign_sources,
    check_url,
    local_host,
    worker_prefix,
)
from harness.fleet.context import source_addresses as _source_addresses
from harness.fleet.execute import run_program
from harness.fleet.local import FleetResult, FleetRunError, worker_report
from harness.fleet.merge import Origin, merge
from harness.process.supervisor import Supervisor
from harness.target.spec import Limits, Readiness, Target

__all__ = ["DaskUnavailable", "available", "local_cluster", "run_on_dask"]

_RUN_S = 600.0
_ROOT = str(Path(__file__).resolve().parents[2])


class DaskUnavailable(FleetError):
    """``distributed`` is not installed (``pip install 'wschaos[fleet]'``)."""


def available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise DaskUnavailable(f"the distributed engine needs Dask distributed: pip install 'wschaos[fleet]' ({exc})") from None
    return distributed


def _task(program: Program, job: Mapping[str, Any]) -> dict[str, Any]:
    """One fleet worker, run inside a Dask task: a new event loop in this thread."""
    ctx = WorkerContext(
        url=job["url"], history=History(), worker=job["worker"], workers=job["workers"], seed=job["seed"],
        params=dict(job["params"]), sources=list(job["sources"]), host=local_host(),
        allow_remote=job["allow_remote"],
    )
    return asyncio.run(run_program(ctx, program, job["timeout"]))


async def run_on_dask(program: Program, url: str, *, scheduler: str | Any, workers: int | None = None,
                      seed: int = 0, params: Mapping[str, Any] | None = None,
                      sources: int | Sequence[str] | None = None, timeout: float | None = None,
                      allow_remote: bool = False) -> FleetResult:
    """Run ``program`` as ``workers`` Dask tasks (default: one per Dask worker thread), merged.

    ``scheduler`` is the scheduler's address (``tcp://host:port``) or an
    asynchronous ``distributed.Client``.
    """
    distributed = _distributed()
    if not inspect.iscoroutinefunction(program):
        raise FleetError(f"the fleet's program must be an async function, not {program!r}")
    check_url(url, allow_remote)
    bound = timeout if timeout is not None else scaled(_RUN_S)
    own = isinstance(scheduler, str)
    client: Any = (await distributed.Client(scheduler, asynchronous=True, timeout=f"{scaled(30):.0f}s")
              if own else scheduler)
    futures: list[Any] = []
    try:
        # Asked of the scheduler now: the client's own copy is refreshed only now and then.
        try:
            info = await client.scheduler.identity(n_workers=-1)
        except TypeError:  # releases before the n_workers argument list every worker anyway
            info = await client.scheduler.identity()
        slots = sorted((addr, w.get("nthreads", 1)) for addr, w in info["workers"].items())
        threads = [addr for addr, n in slots for _ in range(max(1, n))]
        n = len(threads) if workers is None else workers
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise FleetError(f"workers must be a whole number of at least 1, not {workers!r}")
        if n > len(threads):
            raise FleetError(f"{n} fleet workers asked for, the Dask cluster has {len(threads)} worker "
                             f"thread(s): each fleet worker needs a thread of its own")
        per_worker = assign_sources(_source_addresses(sources), n)
        token = uuid.uuid4().hex[:8]
        for i in range(n):
            job = {"url": url, "worker": i, "workers": n, "seed": seed, "params": dict(params or {}),
                   "sources": per_worker[i], "allow_remote": allow_remote, "timeout": bound}
            # Round-robin over the worker processes, so two tasks share a process only when
            # there are more tasks than processes.
            addr = slots[i % len(slots)][0]
            futures.append(client.submit(_task, program, job, key=f"wschaos-fleet-{token}-{i}",
                                         workers=[addr], allow_other_workers=False, pure=False))
        try:
            results = await asyncio.wait_for(client.gather(futures), bound + scaled(30))
        except asyncio.TimeoutError:
            raise FleetError(f"the Dask tasks did not finish within {bound + scaled(30):g} s") from None
    finally:
        if futures:
            with contextlib.suppress(Exception):
                await client.cancel(futures)
        if own:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), scaled(10))
    reports, parts, values = [], [], []
    for i, r in enumerate(results):
        reports.append(worker_report(i, r))
        parts.append((Origin(r["host"], i, worker_prefix(i, n)), r["records"]))
        values.append(r["value"])
    result = FleetResult(merge(parts), values, reports, engine="dask")
    if result.errors:
        raise FleetRunError(result)
    return result


# -- a local cluster of separate processes ------------------------------------------------
@contextlib.asynccontextmanager
async def local_cluster(workers: int, log_dir: Path, *, nthreads: int = 1) -> AsyncIterator[str]:
    """A Dask scheduler and ``workers`` worker processes on loopback; yields the scheduler's
    address once every worker has registered. Every process is stopped with its tree on exit."""
    distributed = _distributed()
    log_dir = Path(log_dir)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p),
           # No config files of the user's: the cluster is the harness's own.
           "DASK_CONFIG": str(log_dir / "dask-config")}
    limits = Limits(ready_timeout_s=60)
    scheduler_t = Target(
        name="dask-scheduler",
        argv=(sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
              "--port", "{port}", "--no-dashboard", "--no-show"),
        env=env, readiness=Readiness(kind="port"), stats_path=None, health_path=None, limits=limits,
    )
    sups: list[Supervisor] = [Supervisor(scheduler_t, log_dir, name="dask-scheduler")]
    try:
        await sups[0].start()
        address = f"tcp://127.0.0.1:{sups[0].port}"
        for i in range(workers):
            t = Target(
                name=f"dask-worker-{i}",
                argv=(sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                      "--worker-port", "{port}", "--nthreads", str(nthreads), "--no-nanny", "--no-dashboard",
                      "--local-directory", str(log_dir / f"dask-worker-{i}"), "--name", f"wschaos-{i}"),
                env=env, readiness=Readiness(kind="port"), stats_path=None, health_path=None, limits=limits,
            )
            sups.append(Supervisor(t, log_dir, name=f"dask-worker-{i}"))
        await asyncio.gather(*(s.start() for s in sups[1:]))
        async with distributed.Client(address, asynchronous=True, timeout=f"{scaled(30):.0f}s") as client:
            await client.wait_for_workers(workers, timeout=scaled(60))
        yield address
    finally:
        await asyncio.shield(asyncio.gather(*(s.stop() for s in reversed(sups)), return_exceptions=True))
