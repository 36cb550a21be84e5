"""Run a client program on every core: N worker processes, one merged History.

``workers=1`` runs the program in this process, on this event loop, as a
scenario or a bench driver always has (no subprocess). ``workers>1`` starts
N processes (``python -m harness.fleet.worker``), each under a
:class:`harness.process.supervisor.Supervisor`: its own session, a guard
that ends its tree if this process dies (even by SIGKILL), the registry's
atexit and SIGTERM handlers, and a leaves-first stop of its whole tree on
every exit path of :class:`LocalFleet`, the parent's interruption included.

The parent and its workers talk over a Unix socket in the run's directory
(:mod:`harness.fleet.wire`): the job goes out, every worker says ready,
``go`` starts them together, reports and signals let a program hold a step
until the parent has measured it, and each worker's records come back at its
end to be merged (:mod:`harness.fleet.merge`).

::

    result = await run(programs.churn, sup.ws_url, workers=2, seed=7, params={"cycles": 40})
    checkers.one_terminal_per_request(result.history)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.history import History
from harness.core.timing import Deadline, scaled
from harness.fleet.context import (
    FleetError,
    Program,
    WorkerContext,
    assign_sources,
    check_url,
    local_host,
    source_addresses,
    worker_prefix,
)
from harness.fleet.execute import READY_PATTERN, run_program
from harness.fleet.merge import Origin, merge
from harness.fleet.wire import read_message, write_message
from harness.process.supervisor import CleanupReport, Supervisor, TargetStartError
from harness.target.spec import Limits, Readiness, Target

__all__ = [
    "Fleet",
    "FleetResult",
    "FleetRunError",
    "InProcessFleet",
    "LocalFleet",
    "WorkerReport",
    "default_workers",
    "fleet",
    "run",
    "worker_report",
]

#: Where ``harness`` is imported from: put first on the workers' PYTHONPATH.
_ROOT = str(Path(__file__).resolve().parents[2])
#: Bounds before scaling: a worker's start (interpreter, imports, the job), and the run.
_READY_S = 30.0
_RUN_S = 600.0


def default_workers(*, local_target: bool, cores: int | None = None) -> int:
    """How many workers a bench driver uses when not told.

    The cores this process may run on (its CPU affinity); a target on this
    machine keeps half of them for itself (its own process or processes need
    CPU to answer the load), a remote one none. At least 1: on 2 cores with a
    local target that is 1, the in-process run.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
    return max(1, cores // 2 if local_target else cores)


@dataclass
class WorkerReport:
    """What one worker did and cost, and how its process ended."""

    worker: int
    host: str
    pid: int
    sources: list[str]
    started_ns: int
    ended_ns: int
    cpu_s: float
    max_rss_kb: int
    records: int
    error: str | None = None
    returncode: int | None = None
    #: Processes of the worker's tree that outlived it (a finding of the harness, not the target).
    survivors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FleetResult:
    """The merged History, each worker's program value (by worker index), and the reports."""

    history: History
    values: list[Any]
    workers: list[WorkerReport]
    engine: str = "local"

    @property
    def errors(self) -> list[str]:
        return [f"worker {w.worker}: {w.error}" for w in self.workers if w.error]

    def span_s(self) -> float:
        """From the first worker's start to the last one's end (one host: one clock)."""
        hosts = {w.host for w in self.workers}
        if len(hosts) > 1:
            raise FleetError(f"workers ran on {len(hosts)} hosts: their clocks do not compare")
        if not self.workers:
            return 0.0
        return (max(w.ended_ns for w in self.workers) - min(w.started_ns for w in self.workers)) / 1e9


def worker_report(worker: int, result: Mapping[str, Any]) -> WorkerReport:
    return WorkerReport(
        worker=worker, host=result["host"], pid=result["pid"], sources=list(result["sources"]),
        started_ns=result["started_ns"], ended_ns=result["ended_ns"], cpu_s=result["cpu_s"],
        max_rss_kb=result["max_rss_kb"], records=len(result["records"]), error=result["error"],
    )


def _check_program(program: Any) -> None:
    if not inspect.iscoroutinefunction(program):
        raise FleetError(f"the fleet's program must be an async function, not {program!r}")


def program_ref(program: Any) -> tuple[str, str]:
    """``(module, qualname)`` by which a worker process imports the program.

    A program defined in a module run with ``python -m pkg.mod`` lives in
    ``__main__`` here; the worker imports it as ``pkg.mod``.
    """
    module, qualname = getattr(program, "__module__", None), getattr(program, "__qualname__", "")
    why = None
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None and spec.name != "__main__" else None
        why = None if module else "it is defined in a script run by path: run it with python -m, or import it"
    elif module is None or "<locals>" in qualname or "<lambda>" in qualname:
        why = "it is not defined at a module's top level"
    else:
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            why = f"{module}.{qualname} cannot be imported: {exc}"
        else:
            if obj is not program:
                why = f"{module}.{qualname} names another object"
    if why or not module:
        raise FleetError(f"the fleet's program {program!r} must be a module-level async function that "
                         f"worker processes can import: {why}")
    return module, qualname


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FleetError(f"workers must be a whole number of at least 1, not {workers!r}")
    return workers


class Fleet:
    """The interface both fleets share; use as ``async with fleet(...) as f``."""

    workers: int

    async def start(self) -> None:
        raise NotImplementedError

    async def go(self) -> None:
        raise NotImplementedError

    async def reports(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        """One report of ``kind`` from every worker (by worker index), consumed; bounded."""
        raise NotImplementedError

    async def signal(self, name: str, payload: Any = True) -> None:
        """Send every worker the signal ``name`` (what :meth:`WorkerContext.wait_signal` waits for)."""
        raise NotImplementedError

    async def finish(self, timeout: float | None = None) -> FleetResult:
        """Wait (bounded) for every worker's end; the merged result. Raises FleetError if one failed."""
        raise NotImplementedError

    async def close(self) -> None:
        """End everything the fleet started (idempotent, bounded)."""
        raise NotImplementedError

    async def __aenter__(self) -> Fleet:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- one worker: in this process -------------------------------------------------------
class _InProcessChannel:
    def __init__(self, fleet: InProcessFleet) -> None:
        self._fleet = fleet
        self._signals: dict[str, Any] = {}
        self._events: dict[str, asyncio.Event] = {}

    def deliver(self, name: str, payload: Any) -> None:
        self._signals[name] = payload
        self._events.setdefault(name, asyncio.Event()).set()

    async def report(self, worker: int, kind: str, data: Mapping[str, Any]) -> None:
        self._fleet._inbox.append((kind, dict(data)))
        async with self._fleet._cond:
            self._fleet._cond.notify_all()

    async def wait_signal(self, name: str, timeout: float) -> Any:
        event = self._events.setdefault(name, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        self._events.pop(name, None)
        return self._signals.pop(name, True)


class InProcessFleet(Fleet):
    """``workers=1``: the program on this event loop, as a single-process run always was."""

    def __init__(self, program: Program, url: str, *, seed: int = 0, params: Mapping[str, Any] | None = None,
                 sources: int | Sequence[str] | None = None, timeout: float | None = None,
                 allow_remote: bool = False) -> None:
        _check_program(program)
        check_url(url, allow_remote)
        self.workers = 1
        self.program = program
        self.timeout = timeout if timeout is not None else scaled(_RUN_S)
        self._channel = _InProcessChannel(self)
        self.ctx = WorkerContext(url=url, history=History(), worker=0, workers=1, seed=seed,
                                 params=dict(params or {}), sources=source_addresses(sources),
                                 allow_remote=allow_remote, channel=self._channel)
        self._inbox: list[tuple[str, dict[str, Any]]] = []
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[dict[str, Any]] | None = None
        self._notifier: asyncio.Future[None] | None = None

    async def start(self) -> None:
        return None

    async def go(self) -> None:
        if self._task is not None:
            raise FleetError("go() called twice")
        self._task = asyncio.ensure_future(run_program(self.ctx, self.program, self.timeout))

        def wake(_: Any) -> None:
            async def notify() -> None:
                async with self._cond:
                    self._cond.notify_all()
            self._notifier = asyncio.ensure_future(notify())

        self._task.add_done_callback(wake)

    async def reports(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        def ready() -> bool:
            return any(k == kind for k, _ in self._inbox) or (self._task is not None and self._task.done())

        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
            except asyncio.TimeoutError:
                raise FleetError(f"no {kind!r} report from worker 0 within {timeout:g} s") from None
        for i, (k, data) in enumerate(self._inbox):
            if k == kind:
                del self._inbox[i]
                return [data]
        raise FleetError(f"worker 0 ended before its {kind!r} report: {self._error_text()}")

    def _error_text(self) -> str:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.result()["error"] or "no error"
        return "no result"

    async def signal(self, name: str, payload: Any = True) -> None:
        self._channel.deliver(name, payload)

    async def finish(self, timeout: float | None = None) -> FleetResult:
        if self._task is None:
            raise FleetError("finish() before go()")
        bound = timeout if timeout is not None else self.timeout + scaled(5)
        done, _ = await asyncio.wait({self._task}, timeout=bound)
        if not done:
            await self.close()
            raise FleetError(f"worker 0 did not finish within {bound:g} s")
        result = self._task.result()
        report = worker_report(0, result)
        fleet_result = FleetResult(merge([(Origin(result["host"], 0, ""), result["records"])]),
                                   [result["value"]], [report], engine="in-process")
        if report.error:
            raise FleetRunError(fleet_result)
        return fleet_result

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=scaled(5))


class FleetRunError(FleetError):
    """A worker's program failed or timed out; ``result`` holds what was merged anyway."""

    def __init__(self, result: FleetResult) -> None:
        super().__init__("; ".join(result.errors) or "a worker failed")
        self.result = result


# -- N workers: processes ----------------------------------------------------------------
@dataclass
class _Worker:
    index: int
    sup: Supervisor
    writer: asyncio.StreamWriter | None = None
    inbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    lost: bool = False
    exit_watch: asyncio.Task[Any] | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def gone(self) -> bool:
        # The channel's EOF comes after every byte the worker sent (its result included), so
        # a worker that connected is gone at EOF, not at its exit, which can come first.
        return self.lost or (self.writer is None and not self.sup.is_running())


class LocalFleet(Fleet):
    """``workers>1``: one supervised process per worker on this machine; see the module docstring."""

    def __init__(self, program: Program, url: str, *, workers: int, seed: int = 0,
                 params: Mapping[str, Any] | None = None, sources: int | Sequence[str] | None = None,
                 timeout: float | None = None, log_dir: Path | None = None, allow_remote: bool = False,
                 ready_timeout: float | None = None) -> None:
        _check_program(program)
        check_url(url, allow_remote)
        self.workers = _check_workers(workers)
        ref = program_ref(program)
        self.url = url
        self.timeout = timeout if timeout is not None else scaled(_RUN_S)
        self.ready_timeout = ready_timeout if ready_timeout is not None else scaled(_READY_S)
        self.sources = assign_sources(source_addresses(sources), self.workers)
        self._job_base = {
            "program": ref, "url": url, "workers": self.workers, "seed": seed, "params": dict(params or {}),
            "allow_remote": allow_remote, "timeout": self.timeout,
            "sys_path": [p if p else os.getcwd() for p in sys.path],
        }
        self._own_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir is not None else Path()
        # Made by start(): a short path, since a Unix socket's name is limited to about 100 bytes.
        self._sock_dir: Path | None = None
        self._sock = ""
        self._server: asyncio.AbstractServer | None = None
        self._cond = asyncio.Condition()
        self._workers: list[_Worker] = []
        self._started = self._closed = False
        self._cleanups: dict[int, CleanupReport] = {}
        self.host = local_host()

    def _target(self, i: int) -> Target:
        env = {"PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        return Target(
            name=f"fleet-w{i}",
            argv=(sys.executable, "-m", "harness.fleet.worker", self._sock, str(i)),
            env=env,
            readiness=Readiness(kind="line", pattern=READY_PATTERN),
            stats_path=None,
            health_path=None,
            limits=Limits(ready_timeout_s=self.ready_timeout),
        )

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await read_message(reader)
        if hello is None or hello[0] != "hello" or not isinstance(hello[1], int) \
                or not 0 <= hello[1] < len(self._workers) or self._workers[hello[1]].writer is not None:
            writer.close()
            return
        w = self._workers[hello[1]]
        w.writer = writer
        job = dict(self._job_base, sources=self.sources[w.index],
                   go_timeout=self.ready_timeout * 2 + scaled(10))
        await write_message(writer, "job", job)
        try:
            while True:
                msg = await read_message(reader)
                if msg is None:
                    break
                kind, payload = msg
                if kind == "report":
                    w.inbox.append((payload[0], payload[1]))
                elif kind == "result":
                    w.result = payload
                    with contextlib.suppress(ConnectionError):
                        await write_message(writer, "ack")
                await self._notify()
        finally:
            w.lost = True
            await self._notify()

    async def _watch_exit(self, w: _Worker) -> None:
        await w.sup.wait_exit(self.timeout + self.ready_timeout * 3)
        await self._notify()

    async def start(self) -> None:
        if self._started:
            raise FleetError("start() called twice")
        self._started = True
        if self._own_dir:
            self.log_dir = Path(tempfile.mkdtemp(prefix="wschaos-fleet-"))
        self._sock_dir = Path(tempfile.mkdtemp(prefix="wsf-"))
        self._sock = str(self._sock_dir / "ctl")
        self._server = await asyncio.start_unix_server(self._on_connect, path=self._sock)
        self._workers = [_Worker(i, Supervisor(self._target(i), self.log_dir, name=f"fleet-w{i}"))
                         for i in range(self.workers)]
        results = await asyncio.gather(*(w.sup.start() for w in self._workers), return_exceptions=True)
        for w in self._workers:
            w.exit_watch = asyncio.ensure_future(self._watch_exit(w))
        failed = [(w, r) for w, r in zip(self._workers, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            w, exc = failed[0]
            if isinstance(exc, TargetStartError):
                raise FleetError(f"fleet worker {w.index} did not start: {exc}") from exc
            raise exc

    async def go(self) -> None:
        for w in self._workers:
            if w.writer is None:
                raise FleetError(f"fleet worker {w.index} is not connected")
            await write_message(w.writer, "go")

    async def _wait(self, pred: Any, timeout: float, what: str) -> None:
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(pred), timeout)
            except asyncio.TimeoutError:
                raise FleetError(f"{what}: not within {timeout:g} s") from None

    async def reports(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        def has(w: _Worker) -> bool:
            return any(k == kind for k, _ in w.inbox)

        await self._wait(lambda: all(has(w) or w.result is not None or w.gone for w in self._workers),
                         timeout, f"{kind!r} reports from {self.workers} workers")
        missing = [w for w in self._workers if not has(w)]
        if missing:
            raise FleetError(f"fleet worker {missing[0].index} ended before its {kind!r} report: "
                             f"{self._why(missing[0])}")
        out = []
        for w in self._workers:
            i = next(n for n, (k, _) in enumerate(w.inbox) if k == kind)
            out.append(w.inbox.pop(i)[1])
        return out

    def _why(self, w: _Worker) -> str:
        if w.result is not None:
            return w.result["error"] or "it finished"
        rc = w.sup.returncode
        tail = w.sup.output("stderr").strip().splitlines()[-3:]
        return f"exit code {rc}" + (f"; stderr: {' | '.join(tail)}" if tail else "")

    async def signal(self, name: str, payload: Any = True) -> None:
        for w in self._workers:
            if w.writer is not None and not w.lost:
                with contextlib.suppress(ConnectionError):
                    await write_message(w.writer, "signal", (name, payload))

    async def finish(self, timeout: float | None = None) -> FleetResult:
        bound = timeout if timeout is not None else self.timeout + scaled(10)
        deadline = Deadline.after(bound)
        try:
            await self._wait(lambda: all(w.result is not None or w.gone for w in self._workers),
                             bound, f"the end of {self.workers} fleet workers")
        except FleetError:
            await self.close()
            raise
        # Every worker exits by itself once its result is sent; the wait is bounded, then stopped.
        await asyncio.gather(*(w.sup.wait_exit(min(deadline.remaining(), scaled(10)) or scaled(1))
                               for w in self._workers))
        await self.close()
        missing = [w for w in self._workers if w.result is None]
        if missing:
            raise FleetError("; ".join(f"fleet worker {w.index} (pid {w.sup.pid}) ended without a result: "
                                       f"{self._why(w)}" for w in missing))
        reports, parts, values = [], [], []
        for w in self._workers:
            assert w.result is not None
            rep = worker_report(w.index, w.result)
            rep.returncode = w.sup.returncode
            cleanup = self._cleanups.get(w.index)
            rep.survivors = list(cleanup.survivors) if cleanup is not None else []
            reports.append(rep)
            parts.append((Origin(w.result["host"], w.index, worker_prefix(w.index, self.workers)),
                          w.result["records"]))
            values.append(w.result["value"])
        result = FleetResult(merge(parts), values, reports, engine="local")
        if result.errors:
            raise FleetRunError(result)
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stops = [w.sup.stop() for w in self._workers]
        done: list[Any] = []
        try:
            done = await asyncio.shield(asyncio.gather(*stops, return_exceptions=True))
        except asyncio.CancelledError:
            # Interrupted again while stopping: finish the stops synchronously (each is bounded,
            # and idempotent: a stop already under way is waited for, not repeated).
            done = [w.sup.stop_sync() for w in self._workers]
            raise
        finally:
            self._cleanups = {w.index: r for w, r in zip(self._workers, done, strict=False) if isinstance(r, CleanupReport)}
            for w in self._workers:
                if w.exit_watch is not None:
                    w.exit_watch.cancel()
                if w.writer is not None:
                    w.writer.close()
            if self._server is not None:
                self._server.close()
            if self._sock_dir is not None:
                shutil.rmtree(self._sock_dir, ignore_errors=True)
            if self._own_dir and self._started:
                shutil.rmtree(self.log_dir, ignore_errors=True)


def fleet(program: Program, url: str, *, workers: int = 1, **kw: Any) -> Fleet:
    """An in-process fleet for one worker, a process fleet for more (not started yet)."""
    if _check_workers(workers) == 1:
        kw.pop("log_dir", None)
        kw.pop("ready_timeout", None)
        return InProcessFleet(program, url, **kw)
    return LocalFleet(program, url, workers=workers, **kw)


async def run(program: Program, url: str, *, workers: int = 1, seed: int = 0,
              params: Mapping[str, Any] | None = None, sources: int | Sequence[str] | None = None,
              timeout: float | None = None, **kw: Any) -> FleetResult:
    """Start the fleet, run the program on every worker at once, return the merged result."""
    async with fleet(program, url, workers=workers, seed=seed, params=params, sources=sources,
                     timeout=timeout, **kw) as f:
        await f.go()
        return await f.finish()
