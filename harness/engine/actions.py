"""Multi-step actions that scenarios share: open streams, probe a connect, expect errors.

These hold the client work so that scenario modules read as steps and
assertions. Every wait is bounded and event-driven (a frame, a status), never
a sleep used as synchronisation. Questions about the target's state go to the
probes (``ctx.probes``, :class:`harness.probes.observe.Observer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from harness.core.timing import scaled
from harness.engine.scenario import ScenarioError
from harness.probes.observe import DrainWatch

if TYPE_CHECKING:
    from harness.client.connection import Client
    from harness.engine.scenario import Context
    from harness.process.supervisor import Supervisor

__all__ = [
    "DrainWatch",
    "ScenarioError",
    "open_streams",
    "start_stream",
    "try_connect",
    "wait_first_chunk",
    "watch_drain",
]

LONG = {"chunks": 100000, "chunk_delay_ms": 10}


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


def watch_drain(ctx: Context, sup: Supervisor, *, probe_connect: bool = True) -> DrainWatch:
    """Start watching /health (and, with ``probe_connect``, new connections) as the target drains."""

    async def connect() -> bool:
        return await try_connect(ctx, sup.ws_url, scaled(0.5))

    watch = DrainWatch()
    watch.start(sup, ctx.target.health_path, connect if probe_connect else None)
    return watch


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
