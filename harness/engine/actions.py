"""Multi-step actions that scenarios share: open streams, watch a drain, sample resources.

These hold the socket and process work so that scenario modules read as steps
and assertions. Every wait is bounded and event-driven (a frame, a status, a
reaped pid), never a sleep used as synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from harness.core.timing import scaled

if TYPE_CHECKING:
    from harness.client.connection import Client
    from harness.engine.scenario import Context
    from harness.process.supervisor import Supervisor

__all__ = [
    "DrainWatch",
    "ScenarioError",
    "open_streams",
    "resource_snapshot",
    "settle_resources",
    "settle_stats",
    "start_stream",
    "stats_sample",
    "try_connect",
    "wait_first_chunk",
    "wait_stats",
]

LONG = {"chunks": 100000, "chunk_delay_ms": 10}


class ScenarioError(RuntimeError):
    """The target did not let a scenario set up its situation (the case reports unknown)."""


async def wait_first_chunk(client: Client, request_id: str, timeout: float) -> bool:
    """True once the request's first chunk (or its final frame) has arrived."""
    frame = await client.wait_frame(
        lambda f: f.request_id == request_id and f.kind in ("chunk", "final", "error"), timeout
    )
    return frame is not None


async def start_stream(client: Client, timeout: float, text: str = "stream", **options: Any) -> str:
    """Send a request and wait for its first chunk; an ERROR or silence is a ScenarioError."""
    rid = await client.request(text, **options)
    frame = await client.wait_frame(
        lambda f: f.request_id == rid and f.kind in ("chunk", "final", "error"), timeout
    )
    if frame is None:
        raise ScenarioError(f"{client.name}: no chunk of {rid} within {timeout:g} s")
    if frame.kind == "error":
        raise ScenarioError(f"{client.name}: {rid} refused: {frame.code} {frame.message}")
    return rid


async def open_streams(
    ctx: Context, sup: Supervisor, n: int, *, options: dict[str, Any] | None = None, prefix: str = "s"
) -> list[tuple[Client, str]]:
    """n clients, each with one long request streaming (first chunk seen)."""
    opts = dict(LONG if options is None else options)
    clients = await ctx.clients(sup, n, prefix=prefix)
    rids = await asyncio.gather(*(start_stream(c, scaled(5), "tell me a long story", **opts) for c in clients))
    return list(zip(clients, rids, strict=True))


async def try_connect(ctx: Context, url: str, timeout: float) -> bool:
    """True when a new WebSocket session could be opened (and closes it again)."""
    c = await ctx.client(url, connect=False, name=ctx.name("probe"))
    try:
        await asyncio.wait_for(c.connect(timeout=timeout), timeout + 0.5)
    except Exception:
        return False
    with contextlib.suppress(Exception):
        await c.close()
    return True


@dataclass
class DrainWatch:
    """Watches /health and new connections from the moment a shutdown signal is sent."""

    health: list[int | None] = field(default_factory=list)
    connect_refused: list[bool] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self, ctx: Context, sup: Supervisor, *, probe_connect: bool = True) -> None:
        self._task = asyncio.ensure_future(self._run(ctx, sup, probe_connect))

    async def _run(self, ctx: Context, sup: Supervisor, probe_connect: bool) -> None:
        path = ctx.target.health_path
        timeout = aiohttp.ClientTimeout(total=scaled(0.5))
        # No pooled keep-alive connection: a server draining its connections would
        # wait for the watcher's, and the harness would slow the exit it measures.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            while sup.is_running():
                if path:
                    try:
                        async with http.get(sup.http_base + path) as resp:
                            self.health.append(resp.status)
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        self.health.append(None)
                if probe_connect and sup.is_running() and len(self.connect_refused) < 3:
                    ok = await try_connect(ctx, sup.ws_url, scaled(0.5))
                    if sup.is_running():  # an attempt that raced the exit proves nothing
                        self.connect_refused.append(not ok)
                # A watcher that polls: each round trip paces the next; bounded by the process's life.
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def stats_sample(ctx: Context, sup: Supervisor) -> dict[str, Any] | None:
    """One /stats sample, or the injected probe's view when the target has no /stats."""
    from harness.probes.sampling import StatsProbe

    if ctx.target.stats_path:
        probe = StatsProbe(sup.http_base, ctx.target.stats_path, history=ctx.history)
        try:
            s = await probe.sample()
        finally:
            await probe.close()
        if s.ok:
            return s.data
    return await python_view(ctx, sup)


async def python_view(ctx: Context, sup: Supervisor) -> dict[str, Any] | None:
    """Tasks and threads as the injected Python probe sees them, or None without the probe."""
    from harness.probes.sampling import PythonProbe, probe_address_from_env

    addr = probe_address_from_env(sup.env) if ctx.target.python_probe else None
    if not addr:
        return None
    s = await PythonProbe(addr, history=ctx.history).sample()
    if not s.ok:
        return None
    return {"tasks": s.data.get("tasks"), "threads": s.data.get("thread_count"),
            "executor_threads": len(s.data.get("executor_threads") or [])}


async def wait_stats(
    ctx: Context, sup: Supervisor, predicate: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any] | None:
    """Poll /stats until the predicate holds or the bound passes; the last sample either way."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        last = await stats_sample(ctx, sup)
        if last is not None and predicate(last):
            return last
        if time.monotonic() >= deadline:
            return last
        await asyncio.sleep(0.05)  # polling interval of a bounded wait on a condition


async def settle_stats(
    ctx: Context, sup: Supervisor, keys: tuple[str, ...], timeout: float
) -> dict[str, Any] | None:
    """Poll /stats until every key is 0 or the bound passes; the last sample either way."""
    return await wait_stats(ctx, sup, lambda s: all(s.get(k) == 0 for k in keys), timeout)


async def settle_resources(
    sup: Supervisor, predicate: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any] | None:
    """Poll the process view until the predicate holds or the bound passes; the last view."""
    deadline = time.monotonic() + timeout
    while True:
        snap = resource_snapshot(sup)
        if snap is None or predicate(snap) or time.monotonic() >= deadline:
            return snap
        await asyncio.sleep(0.05)  # polling interval of a bounded wait on a condition


def resource_snapshot(sup: Supervisor) -> dict[str, Any] | None:
    """psutil view of the target: rss, fds, threads, sockets by state."""
    from harness.probes.sampling import ProcessProbe

    s = ProcessProbe(sup.pid).sample()
    return s.data if s.ok else None


async def send_expect_error(client: Client, raw: str | bytes, timeout: float) -> Any:
    """Send one raw frame; the ERROR frame that answers it, or None within the bound."""
    sent = time.monotonic_ns()
    await client.send_raw(raw)
    return await client.wait_frame(lambda f: f.kind == "error" and f.t_ns >= sent, timeout)


async def heartbeat_ok(client: Client, timeout: float) -> bool:
    """True when the session still answers a HEARTBEAT within the bound."""
    try:
        await asyncio.wait_for(client.heartbeat(timeout=timeout), timeout + 0.5)
    except Exception:
        return False
    return True


async def count_errors(client: Client, expected: int, timeout: float) -> int:
    """ERROR frames received so far, waiting (bounded) until ``expected`` have arrived."""
    deadline = time.monotonic() + timeout

    def count() -> int:
        return sum(1 for f in client.frames if f.kind == "error")

    while count() < expected and time.monotonic() < deadline:
        # Woken by the next frame of any kind; the deadline bounds the whole wait.
        if await client.wait_frame(lambda f: True, deadline - time.monotonic(), since=None) is None:
            break
    return count()
