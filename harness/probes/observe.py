"""Every question a scenario asks about a running target, answered by the probes.

:class:`Observer` is what scenarios and actions ask (``ctx.probes``): one
``/stats`` sample (or the injected Python probe's view when the target has no
``/stats``), the process seen from outside, and bounded waits until a
condition holds on either. Every wait is :func:`harness.probes.sampling.settle`,
the one polling primitive; nothing else in the harness polls a target by hand.

:class:`DrainWatch` samples ``/health`` and new connections from the moment a
shutdown signal is sent until the process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from harness.core.history import History
from harness.core.timing import now_ns, scaled
from harness.probes.sampling import (
    ProcessProbe,
    PythonProbe,
    Sample,
    StatsProbe,
    probe_address_from_env,
    settle,
)

__all__ = ["DrainWatch", "Observed", "Observer"]

#: How often a bounded wait samples again; each sample is itself a round trip.
INTERVAL_S = 0.05


class Observed(Protocol):
    """A running target as the probes see it (a supervisor)."""

    @property
    def pid(self) -> int: ...
    @property
    def http_base(self) -> str: ...
    @property
    def env(self) -> Mapping[str, str]: ...

    def is_running(self) -> bool: ...


def _as_sample(source: str, data: dict[str, Any] | None) -> Sample:
    return Sample(source, now_ns(), data is not None, dict(data or {}))


class Observer:
    """The probes of one case: each sample recorded in the history it was given."""

    def __init__(self, history: History | None, *, stats_path: str | None, python_probe: bool,
                 stats_keys: Mapping[str, str] | None = None) -> None:
        self.history = history
        self.stats_path = stats_path
        self.python_probe = python_probe
        #: PROTOCOL.md's counter -> the target's own name for it.
        self.stats_keys = dict(stats_keys or {})

    # -- one sample ------------------------------------------------------------
    async def stats(self, sup: Observed) -> dict[str, Any] | None:
        """One /stats sample, or the injected probe's view when the target has no /stats."""
        if self.stats_path:
            probe = StatsProbe(sup.http_base, self.stats_path, history=self.history)
            try:
                s = await probe.sample()
            finally:
                await probe.close()
            if s.ok:
                return self._protocol_names(s.data)
        return await self.python_view(sup)

    def _protocol_names(self, data: dict[str, Any]) -> dict[str, Any]:
        """The target's counters under PROTOCOL.md's names, as its ``stats_keys`` map them."""
        if not self.stats_keys:
            return data
        out = dict(data)
        for ours, theirs in self.stats_keys.items():
            if theirs in data:
                out[ours] = data[theirs]
        return out

    async def python_view(self, sup: Observed) -> dict[str, Any] | None:
        """Tasks and threads as the injected Python probe sees them, or None without the probe."""
        addr = probe_address_from_env(sup.env) if self.python_probe else None
        if not addr:
            return None
        s = await PythonProbe(addr, history=self.history).sample()
        if not s.ok:
            return None
        return {"tasks": s.data.get("tasks"), "threads": s.data.get("thread_count"),
                "executor_threads": len(s.data.get("executor_threads") or [])}

    def resources(self, sup: Observed) -> dict[str, Any] | None:
        """psutil view of the target: rss, fds, threads, sockets by state."""
        s = ProcessProbe(sup.pid).sample()
        return s.data if s.ok else None

    # -- bounded waits ---------------------------------------------------------
    async def wait_stats(
        self, sup: Observed, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any] | None:
        """Sample /stats until the predicate holds or the bound passes; the last sample either way."""

        async def sample() -> Sample:
            return _as_sample("stats", await self.stats(sup))

        last = await settle(sample, lambda s: s.ok and predicate(s.data), timeout, INTERVAL_S)
        return last.data if last.ok else None

    async def settle_stats(self, sup: Observed, keys: tuple[str, ...], timeout: float) -> dict[str, Any] | None:
        """Sample /stats until every key is 0 or the bound passes; the last sample either way."""
        return await self.wait_stats(sup, lambda s: all(s.get(k) == 0 for k in keys), timeout)

    async def settle_resources(
        self, sup: Observed, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any] | None:
        """Sample the process view until the predicate holds or the bound passes; None once it is gone."""

        def sample() -> Sample:
            return _as_sample("process", self.resources(sup))

        last = await settle(sample, lambda s: not s.ok or predicate(s.data), timeout, INTERVAL_S)
        return last.data if last.ok else None


@dataclass
class DrainWatch:
    """Watches /health and new connections from the moment a shutdown signal is sent.

    ``try_connect`` opens (and closes) one new session and says whether it
    could; the engine passes one bound to its own clients.
    """

    health: list[int | None] = field(default_factory=list)
    connect_refused: list[bool] = field(default_factory=list)
    _task: asyncio.Task[Sample] | None = None

    #: The longest a drain is watched: past any grace a target can declare.
    BOUND_S = 120.0

    def start(self, sup: Observed, health_path: str | None,
              try_connect: Callable[[], Awaitable[bool]] | None) -> None:
        self._task = asyncio.ensure_future(self._run(sup, health_path, try_connect))

    async def _run(self, sup: Observed, path: str | None,
                   try_connect: Callable[[], Awaitable[bool]] | None) -> Sample:
        timeout = aiohttp.ClientTimeout(total=scaled(0.5))
        # No pooled keep-alive connection: a server draining its connections would
        # wait for the watcher's, and the harness would slow the exit it measures.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

            async def one_round() -> Sample:
                if not sup.is_running():
                    return Sample("drain", now_ns(), True, {"running": False})
                if path:
                    try:
                        async with http.get(sup.http_base + path) as resp:
                            self.health.append(resp.status)
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        self.health.append(None)
                if try_connect is not None and sup.is_running() and len(self.connect_refused) < 3:
                    ok = await try_connect()
                    if sup.is_running():  # an attempt that raced the exit proves nothing
                        self.connect_refused.append(not ok)
                return Sample("drain", now_ns(), True, {"running": sup.is_running()})

            # Each round trip paces the next; the watch ends with the process.
            return await settle(one_round, lambda s: not s.data["running"], scaled(self.BOUND_S), 0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
