"""The simulated agents behind a REQUEST.

An agent is ``async def agent(emit)``: it produces deltas and hands each to
``emit``, which returns False once the request is over (interrupted, or the
connection gone) so the agent stops. Cancellation of the request task reaches
the agent at its current await; each agent releases what it holds right there
(the upstream agent closes its HTTP response in ``finally``).

The blocking agent runs its blocking call in a *daemon* ``threading.Thread``
of its own: nothing can interrupt it, so nothing may wait for it either. Not
the default executor, whose threads the interpreter joins at exit.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable

import aiohttp

from .faults import Faults

__all__ = [
    "Emit",
    "UpstreamError",
    "agent_thread_count",
    "async_agent",
    "blocking_agent",
    "upstream_agent",
]

Emit = Callable[[str], Awaitable[bool]]


class UpstreamError(Exception):
    """The upstream answered badly or went away mid-stream."""


def _words(text: str) -> list[str]:
    return text.split() or ["..."]


async def async_agent(text: str, chunks: int, delay_s: float, emit: Emit) -> None:
    words = _words(text)
    for i in range(chunks):
        await asyncio.sleep(delay_s)
        if not await emit(f"{words[i % len(words)]} "):
            return


# --- upstream ---------------------------------------------------------------

#: Upstream stream tasks left reading after a cancel (upstream_left_open only);
#: held so they are not garbage-collected mid-flight.
_LEFT_OPEN: set[asyncio.Task[None]] = set()


async def _read_to_end(resp: aiohttp.ClientResponse) -> None:
    try:
        async for _ in resp.content:
            pass
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        resp.release()


async def upstream_agent(
    http: aiohttp.ClientSession, base_url: str, text: str, emit: Emit, faults: Faults
) -> None:
    url = base_url.rstrip("/") + "/chat/completions"
    body = {
        "model": "wschaos-reference",
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }
    try:
        resp = await http.post(url, json=body)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise UpstreamError(f"cannot reach upstream {url}: {exc}") from None
    leave_open = False
    try:
        if resp.status != 200:
            raise UpstreamError(f"upstream answered HTTP {resp.status}")
        async for raw in resp.content:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise UpstreamError(f"upstream sent a malformed event: {data[:80]!r}") from None
            if delta and not await emit(delta):
                return
        raise UpstreamError("upstream ended the stream without [DONE]")
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
        raise UpstreamError(f"upstream stream failed: {exc}") from None
    except asyncio.CancelledError:
        if faults.upstream_left_open:
            leave_open = True
        raise
    finally:
        if leave_open:
            task = asyncio.ensure_future(_read_to_end(resp))
            _LEFT_OPEN.add(task)
            task.add_done_callback(_LEFT_OPEN.discard)
        else:
            # Closing (not releasing) drops the connection at once, which is
            # what tells the upstream to stop generating.
            resp.close()


# --- blocking ---------------------------------------------------------------

_THREADS_LOCK = threading.Lock()
_THREADS: set[threading.Thread] = set()
#: blocking_serializes: every blocking call queues behind this one lock.
_SERIAL = threading.Lock()


def agent_thread_count() -> int:
    with _THREADS_LOCK:
        return sum(1 for t in _THREADS if t.is_alive())


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def start_blocking_call(
    loop: asyncio.AbstractEventLoop,
    block_s: float,
    name: str,
    faults: Faults,
    late_output: Callable[[], None] | None = None,
) -> asyncio.Future[None]:
    """Run a blocking call of ``block_s`` in a daemon thread; the future resolves after it."""
    fut: asyncio.Future[None] = loop.create_future()

    def target() -> None:
        try:
            if faults.blocking_serializes:
                with _SERIAL:
                    time.sleep(block_s)
            else:
                time.sleep(block_s)
            try:
                loop.call_soon_threadsafe(_resolve, fut)
                if late_output is not None:
                    loop.call_soon_threadsafe(late_output)
            except RuntimeError:
                pass  # the loop is closed: the late result has nowhere to go
        finally:
            with _THREADS_LOCK:
                _THREADS.discard(threading.current_thread())

    thread = threading.Thread(target=target, name=name, daemon=True)
    with _THREADS_LOCK:
        _THREADS.add(thread)
    thread.start()
    return fut


async def blocking_agent(
    text: str,
    chunks: int,
    delay_s: float,
    block_s: float,
    emit: Emit,
    faults: Faults,
    name: str,
    late_output: Callable[[], None] | None = None,
) -> None:
    if faults.to_thread_blocking:
        await asyncio.to_thread(time.sleep, block_s)
    else:
        fut = start_blocking_call(asyncio.get_running_loop(), block_s, name, faults, late_output)
        # If the request is cancelled here the thread runs on, unobserved: its
        # result lands on a cancelled future and is dropped.
        await fut
    await async_agent(text, chunks, delay_s, emit)
