"""Client programs a fleet runs: module-level, so worker processes import them by name.

:func:`churn` is the harness's churn cycle (connect, a request, its final,
a clean close) in two modes:

* ``cycles=N``: exactly N cycles in all, split across the workers by global
  index (:meth:`WorkerContext.share`), each cycle's shape drawn from its own
  seeded generator: the same cycles, names aside, on 1 worker or on many.
  Every ``interrupt_every``-th cycle streams and is interrupted after its
  first chunk, so the interrupt checkers have ACKs to judge.
* ``seconds=S``: each of ``loops`` concurrent loops cycles until S seconds
  have passed (at most ``max_cycles`` each): for throughput.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness.client.connection import ClientError
from harness.core.timing import scaled
from harness.fleet.context import WorkerContext

__all__ = ["churn"]

#: An interrupted cycle's stream: far longer than the interrupt takes to land.
_STREAM_CHUNKS, _STREAM_DELAY_MS = 200, 5


async def _cycle(ctx: WorkerContext, name: str, *, chunks: int, interrupt: bool,
                 sockname: list[Any] | None) -> tuple[bool, str | None]:
    """One connect-request-close cycle; (completed as intended, request id)."""
    c = ctx.client(name)
    rid: str | None = None
    try:
        await c.connect(timeout=scaled(5))
        if sockname is not None and len(sockname) < 4:
            sockname.append(c.connection.transport.get_extra_info("sockname")[0])
        if interrupt:
            rid = await c.request("fleet", chunks=_STREAM_CHUNKS, chunk_delay_ms=_STREAM_DELAY_MS)
            await c.wait_frame(lambda f: f.request_id == rid and f.kind == "chunk", scaled(5))
            result = await c.interrupt(rid, timeout=scaled(5))
            reply = await c.reply(rid, timeout=scaled(5))
            ok = result.latency_ms is not None and reply.interrupted
        else:
            rid = await c.request("fleet", chunks=chunks, chunk_delay_ms=0)
            reply = await c.reply(rid, timeout=scaled(5))
            ok = reply.complete and not reply.interrupted
        await c.close(timeout=scaled(5))
    except ClientError:
        if c.session_id and not c.closed:
            await c.abort()
        return False, rid
    return ok, rid


async def churn(ctx: WorkerContext) -> dict[str, Any]:
    """See the module docstring; returns counts, this worker's request ids and source addresses seen."""
    p = ctx.params
    loops = int(p.get("loops", 4))
    socknames: list[Any] = []
    completed: list[str] = []
    interrupted: list[str] = []
    failed = 0

    if "cycles" in p:
        every = int(p.get("interrupt_every", 0))
        mine = list(ctx.share(int(p["cycles"])))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in mine:
            queue.put_nowait(i)

        async def fixed() -> None:
            nonlocal failed
            while not queue.empty():
                i = queue.get_nowait()
                chunks = ctx.rng(i).randint(1, int(p.get("max_chunks", 3)))
                stream = bool(every) and i % every == every - 1
                ok, rid = await _cycle(ctx, f"c{i}", chunks=chunks, interrupt=stream, sockname=socknames)
                if not ok or rid is None:
                    failed += 1
                else:
                    (interrupted if stream else completed).append(rid)

        await asyncio.gather(*(fixed() for _ in range(loops)))
    else:
        stop_at = time.monotonic() + float(p["seconds"])
        cap = int(p.get("max_cycles", 20_000))

        done = 0

        async def timed(loop: int) -> None:
            nonlocal failed, done
            n = 0
            while time.monotonic() < stop_at and n < cap:
                n += 1
                ok, _ = await _cycle(ctx, f"l{loop}-{n}", chunks=1, interrupt=False, sockname=socknames)
                if ok:
                    done += 1
                else:
                    failed += 1

        await asyncio.gather(*(timed(i) for i in range(loops)))
        return {"completed": done, "interrupted": 0, "failed": failed,
                "request_ids": [], "interrupted_ids": [], "source_addresses": sorted(set(socknames))}
    return {"completed": len(completed), "interrupted": len(interrupted), "failed": failed,
            "request_ids": completed, "interrupted_ids": interrupted,
            "source_addresses": sorted(set(socknames))}
