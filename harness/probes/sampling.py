"""Observations of a running target: ``/stats``, the process, and inside Python.

Three probes, each returning a :class:`Sample` and recording it in the
history (``source`` ``probe:stats`` / ``probe:process`` / ``probe:python``,
``kind`` ``sample``) when given one:

* :class:`StatsProbe` asks the target's own ``GET /stats``: cheap, but only as
  honest as the target;
* :class:`ProcessProbe` reads the process tree from outside with psutil:
  memory, fds, threads, children, TCP sockets by state;
* :class:`PythonProbe` talks to the probe injected by ``harness/probes/pyprobe``
  (see :func:`python_probe_env`): asyncio tasks, threads, executor threads,
  event-loop lag, gc counts; it works whether or not ``/stats`` exists or lies.

A probe that cannot answer returns ``ok=False`` with an ``error`` and never
raises for an unreachable or dead target, so a checker can say *unknown*
instead of guessing. :func:`settle` polls a probe until a condition holds or a
bound passes: the bounded wait every "back to baseline" check needs.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from harness.core.history import History, Observation
from harness.core.timing import Deadline, now_ns, scaled

__all__ = [
    "PROBE_ENV_VAR",
    "PYPROBE_DIR",
    "ProcessProbe",
    "PythonProbe",
    "Sample",
    "StatsProbe",
    "probe_address_from_env",
    "python_probe_env",
    "settle",
]

PROBE_ENV_VAR = "WSCHAOS_PROBE_SOCKET"
#: The directory holding the injected ``sitecustomize``.
PYPROBE_DIR = Path(__file__).resolve().parent / "pyprobe"
# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS), counting the NUL.
_MAX_SOCKET_PATH = 100


@dataclass
class Sample:
    """One observation of the target; ``ok=False`` means "could not tell"."""

    source: str
    t_ns: int
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_observation(cls, obs: Observation) -> Sample:
        """Rebuild a sample from its history record (what checkers read)."""
        return cls(
            source=obs.source, t_ns=obs.t_ns, ok=bool(obs.data.get("ok")),
            data=dict(obs.data.get("data") or {}), error=obs.data.get("error"),
        )


def _record(history: History | None, sample: Sample) -> Sample:
    if history is not None:
        history.observe(sample.source, "sample", t_ns=sample.t_ns,
                        ok=sample.ok, data=sample.data, error=sample.error)
    return sample


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- /stats --------------------------------------------------------------------
class StatsProbe:
    """``GET {http_base}{stats_path}``, parsed as a JSON object."""

    source = "probe:stats"

    def __init__(self, http_base: str, stats_path: str = "/stats", history: History | None = None,
                 *, timeout: float | None = None) -> None:
        self.url = http_base.rstrip("/") + stats_path
        self.history = history
        self.timeout = scaled(2.0) if timeout is None else timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # force_close: a kept-alive probe connection would show up in the
            # target's own connection counts and could hold up its shutdown.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def sample(self) -> Sample:
        try:
            async with self._client().get(self.url, allow_redirects=False) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return self._fail(f"HTTP {resp.status} from {self.url}", status=resp.status)
                try:
                    data = json.loads(body)
                except ValueError:
                    return self._fail(f"{self.url} did not answer JSON", status=resp.status)
                if not isinstance(data, dict):
                    return self._fail(f"{self.url} answered JSON that is not an object")
                return _record(self.history, Sample(self.source, now_ns(), True, data))
        except asyncio.TimeoutError:
            return self._fail(f"no answer from {self.url} within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return self._fail(_describe(exc))

    def _fail(self, error: str, **data: Any) -> Sample:
        return _record(self.history, Sample(self.source, now_ns(), False, dict(data), error))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- the process tree ------------------------------------------------------------
class ProcessProbe:
    """The target's process tree, from outside, with psutil (synchronous, a few ms)."""

    source = "probe:process"

    def __init__(self, pid: int, history: History | None = None) -> None:
        self.pid = pid
        self.history = history
        self._proc: psutil.Process | None = None
        self._children: dict[int, psutil.Process] = {}

    def _process(self) -> psutil.Process:
        # One Process object across samples: cpu_percent measures since the last call.
        if self._proc is None:
            self._proc = psutil.Process(self.pid)
        return self._proc

    def sample(self) -> Sample:
        try:
            data = self._collect()
        except psutil.NoSuchProcess:
            return self._fail(f"process {self.pid} does not exist (exited)")
        except psutil.ZombieProcess:
            return self._fail(f"process {self.pid} is a zombie (exited, not yet reaped)")
        except psutil.AccessDenied as exc:
            return self._fail(f"access denied reading process {self.pid}: {exc}")
        except (psutil.Error, OSError) as exc:
            return self._fail(_describe(exc))
        return _record(self.history, Sample(self.source, now_ns(), True, data))

    def _fail(self, error: str) -> Sample:
        return _record(self.history, Sample(self.source, now_ns(), False, {"pid": self.pid}, error))

    def _collect(self) -> dict[str, Any]:
        p = self._process()
        if p.status() == psutil.STATUS_ZOMBIE:
            raise psutil.ZombieProcess(self.pid)
        with p.oneshot():
            mem = p.memory_info()
            data: dict[str, Any] = {
                "pid": self.pid,
                "status": p.status(),
                "rss": mem.rss,
                "vms": mem.vms,
                "num_fds": p.num_fds(),
                "num_threads": p.num_threads(),
                "cpu_percent": p.cpu_percent(interval=None),
            }
        children = p.children(recursive=True)
        data["children"] = len(children)
        data["child_pids"] = sorted(c.pid for c in children)
        data["tcp"], data["tcp_listen"] = self._tcp([p, *children])
        return data

    def _tcp(self, procs: Iterable[psutil.Process]) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """TCP sockets of the tree by state; a socket shared by a parent and its
        child (an inherited listener) counts once."""
        seen: set[tuple[Any, ...]] = set()
        states: dict[str, int] = {}
        listen: list[dict[str, Any]] = []
        for proc in procs:
            try:
                conns = (proc.net_connections(kind="tcp") if hasattr(proc, "net_connections")
                         else proc.connections(kind="tcp"))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # a child that ended between listing and reading
            for c in conns:
                laddr = tuple(c.laddr) if c.laddr else ()
                raddr = tuple(c.raddr) if c.raddr else ()
                key = (c.family, laddr, raddr, c.status)
                if key in seen:
                    if c.status == psutil.CONN_LISTEN:
                        for entry in listen:
                            if entry["laddr"] == list(laddr) and proc.pid not in entry["pids"]:
                                entry["pids"].append(proc.pid)
                    continue
                seen.add(key)
                states[c.status] = states.get(c.status, 0) + 1
                if c.status == psutil.CONN_LISTEN:
                    listen.append({"laddr": list(laddr), "pids": [proc.pid]})
        return states, listen


# -- inside a Python target -----------------------------------------------------
class PythonProbe:
    """Client of the probe injected by :func:`python_probe_env` (a Unix socket)."""

    source = "probe:python"

    def __init__(self, address: str | os.PathLike[str], history: History | None = None, *,
                 lag_timeout: float | None = None, stack_limit: int = 5, max_tasks: int = 200,
                 timeout: float | None = None) -> None:
        self.address = os.fspath(address)
        self.history = history
        #: How long a loop may take to run our callback before it is called blocked.
        self.lag_timeout = scaled(0.5) if lag_timeout is None else lag_timeout
        self.stack_limit = stack_limit
        self.max_tasks = max_tasks
        # Each running loop may use its whole lag bound; gc scans take time too.
        self.timeout = scaled(5.0) + self.lag_timeout * 4 if timeout is None else timeout

    async def sample(self, gc_types: Iterable[str] = ()) -> Sample:
        request = {
            "gc_types": list(gc_types),
            "stack_limit": self.stack_limit,
            "max_tasks": self.max_tasks,
            "lag_timeout_ms": self.lag_timeout * 1000,
        }
        try:
            data = await asyncio.wait_for(self._ask(request), self.timeout)
        except asyncio.TimeoutError:
            return self._fail(f"the Python probe at {self.address} did not answer within {self.timeout:g} s")
        except FileNotFoundError:
            return self._fail(f"no Python probe socket at {self.address} (not a Python target "
                              "started with python_probe_env, or it has exited)")
        except ConnectionRefusedError:
            return self._fail(f"the Python probe at {self.address} refused the connection (target exited?)")
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return self._fail(_describe(exc))
        if not isinstance(data, dict) or not data.get("ok"):
            err = data.get("error") if isinstance(data, dict) else None
            return self._fail(f"the Python probe failed: {err or data!r}")
        return _record(self.history, Sample(self.source, now_ns(), True, data))

    async def _ask(self, request: dict[str, Any]) -> Any:
        reader, writer = await asyncio.open_unix_connection(self.address, limit=64 * 1024 * 1024)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise ConnectionResetError("the Python probe closed without answering")
            return json.loads(line)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def _fail(self, error: str) -> Sample:
        return _record(self.history, Sample(self.source, now_ns(), False, {}, error))


def python_probe_env(run_dir: str | os.PathLike[str],
                     base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that inject the probe into a Python target started with them.

    ``PYTHONPATH`` gets ``harness/probes/pyprobe`` in front of the one in ``base_env``
    (default: this process's environment), so the target's own entries still
    follow; the socket goes in ``run_dir`` unless that path would be too long
    for a Unix socket, in which case it goes in the temporary directory.
    """
    env = os.environ if base_env is None else base_env
    existing = env.get("PYTHONPATH", "")
    pythonpath = os.pathsep.join([str(PYPROBE_DIR), *([existing] if existing else [])])
    name = f"probe-{uuid.uuid4().hex[:12]}.sock"
    path = os.path.join(os.path.abspath(os.fspath(run_dir)), name)
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        path = os.path.join(tempfile.gettempdir(), f"wschaos-{name}")
    return {"PYTHONPATH": pythonpath, PROBE_ENV_VAR: path}


def probe_address_from_env(env: Mapping[str, str]) -> str | None:
    """Where the injected probe of a target started with ``env`` listens, if anywhere."""
    return env.get(PROBE_ENV_VAR) or None


# -- bounded waits on a condition -----------------------------------------------
SampleFn = Callable[[], "Sample | Awaitable[Sample]"]


async def settle(probe_sample_fn: SampleFn | Any, predicate: Callable[[Sample], bool],
                 timeout: float, interval: float = 0.05) -> Sample:
    """Sample until ``predicate(sample)`` holds or ``timeout`` seconds pass.

    ``probe_sample_fn`` is a probe (its ``sample`` is used) or a callable
    returning a :class:`Sample` or an awaitable of one. A predicate that raises
    (a key missing from a failed sample) counts as not holding. Returns the last
    sample either way; the caller decides what a sample that never settled
    means. ``timeout`` is taken as given: scale it with ``timing.scaled``.
    """
    fn = getattr(probe_sample_fn, "sample", probe_sample_fn)
    deadline = Deadline.after(timeout)
    while True:
        result = fn()
        sample: Sample = await result if inspect.isawaitable(result) else result
        try:
            if predicate(sample):
                return sample
        except Exception:
            pass
        if deadline.expired():
            return sample
        await asyncio.sleep(min(interval, deadline.remaining()))
