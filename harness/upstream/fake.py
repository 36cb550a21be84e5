"""An OpenAI-compatible streaming endpoint on loopback that records every stream.

``POST /v1/chat/completions`` with ``"stream": true`` answers server-sent
events, one ``data: {chunk}`` per token (``choices[0].delta.content``) and
then ``data: [DONE]``, the way OpenAI-compatible servers stream. Each stream
is recorded (:class:`StreamRecord`) with monotonic timestamps, so a scenario
can tell when the server under test closed its upstream response.

Detecting the client's close promptly is the point: every token is written
and drained on its own, the handler runs with aiohttp's handler cancellation
on (the handler task is cancelled the moment the connection is lost), and the
first of "a write failed" or "the handler was cancelled" stamps ``closed_ns``.

Use it as an async context manager (``async with FakeUpstream(...) as up``),
from synchronous code in a thread (``up = FakeUpstream(...).start_in_thread()``
... ``up.stop()``, or ``with running_in_thread(...) as up``), or as a process:
``python -m harness.upstream.fake --port 0`` prints ``LISTENING 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from harness.protocol.shape import parse_shape, shape_marker
from harness.target.spec import check_loopback

__all__ = [
    "FakeUpstream",
    "StreamRecord",
    "main",
    "parse_shape",
    "running_in_thread",
    "shape_marker",
]


@dataclass
class StreamRecord:
    id: int
    started_ns: int
    tokens_planned: int
    tokens_sent: int = 0
    closed_ns: int | None = None
    #: the client went away before the last event was written
    closed_by_client: bool = False
    completed: bool = False
    prompt: str | None = None

    @property
    def closed(self) -> bool:
        return self.closed_ns is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FakeUpstream:
    def __init__(self, tokens: int = 200, token_delay_ms: float = 20.0, *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        check_loopback(host, where="fake upstream host")
        self.tokens = tokens
        self.token_delay_ms = token_delay_ms
        self.host = host
        self.port = port
        self.streams: list[StreamRecord] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- the endpoint ----------------------------------------------------------

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _close(self, rec: StreamRecord, *, by_client: bool) -> None:
        if rec.closed_ns is None:
            rec.closed_ns = time.monotonic_ns()
            rec.closed_by_client = by_client
            rec.completed = not by_client

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        if not isinstance(body, dict) or body.get("stream") is not True:
            return web.json_response({"error": {"message": "only stream=true is served"}}, status=400)
        messages = body.get("messages") or [{}]
        prompt = messages[-1].get("content") if isinstance(messages[-1], dict) else None
        # A scenario's reply shape, carried in its request's text, wins over the defaults.
        shape = parse_shape(prompt)
        tokens = int(shape.get("chunks", request.query.get("tokens", self.tokens)))
        delay_s = float(shape.get("chunk_delay_ms", request.query.get("token_delay_ms", self.token_delay_ms))) / 1000.0
        stall_s = shape.get("block_ms", 0.0) / 1000.0
        rec = StreamRecord(id=len(self.streams), started_ns=time.monotonic_ns(),
                           tokens_planned=tokens, prompt=prompt)
        self.streams.append(rec)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            await self._notify()
            if stall_s:
                await asyncio.sleep(stall_s)  # stands in for a blocked call: the stream's own pace
            for i in range(tokens):
                if delay_s:
                    await asyncio.sleep(delay_s)
                chunk = {
                    "id": f"chatcmpl-fake-{rec.id}",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
                }
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                rec.tokens_sent += 1
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            self._close(rec, by_client=False)
        except (ConnectionError, asyncio.CancelledError):
            # The client closed its end: a failed write, or aiohttp cancelling
            # this handler when the connection was lost.
            self._close(rec, by_client=True)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._notify())
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> FakeUpstream:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)  # an asyncio.Server; typed as AbstractServer
        assert sockets
        self.port = sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- waiting (on the upstream's own loop) -----------------------------------

    async def _wait(self, predicate: Any, timeout: float) -> bool:
        assert self._changed is not None
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            return True
        except asyncio.TimeoutError:
            return bool(predicate())

    async def wait_streams(self, n: int, timeout: float) -> bool:
        """True once ``n`` streams have started."""
        return await self._on_own_loop(self._wait(lambda: len(self.streams) >= n, timeout))

    async def wait_stream_closed(self, index: int, timeout: float) -> StreamRecord | None:
        """The record once stream ``index`` has ended (either way); None on timeout."""
        ok = await self._on_own_loop(self._wait(
            lambda: len(self.streams) > index and self.streams[index].closed, timeout))
        return self.streams[index] if ok else None

    async def _on_own_loop(self, coro: Any) -> Any:
        if self._loop is None or self._loop is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    # --- a thread of its own, for synchronous callers ---------------------------

    def start_in_thread(self, timeout: float = 10.0) -> FakeUpstream:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def run() -> None:
            try:
                await self.start()
                self._thread_stop = asyncio.Event()
            except BaseException as exc:  # reported to the caller below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.close()

        self._thread = threading.Thread(target=asyncio.run, args=(run(),), name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("fake upstream did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._thread_stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._thread_stop.set)
        self._thread.join(timeout)
        self._thread = None

    def wait_stream_closed_sync(self, index: int, timeout: float) -> StreamRecord | None:
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self._wait(
            lambda: len(self.streams) > index and self.streams[index].closed, timeout), self._loop)
        return self.streams[index] if fut.result(timeout + 5) else None


@contextlib.contextmanager
def running_in_thread(tokens: int = 200, token_delay_ms: float = 20.0) -> Iterator[FakeUpstream]:
    up = FakeUpstream(tokens=tokens, token_delay_ms=token_delay_ms).start_in_thread()
    try:
        yield up
    finally:
        up.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.upstream.fake",
                                description="An OpenAI-compatible SSE endpoint on loopback.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--token-delay-ms", type=float, default=20.0)
    ns = p.parse_args(argv)

    async def run() -> None:
        async with FakeUpstream(ns.tokens, ns.token_delay_ms, host=ns.host, port=ns.port) as up:
            print(f"LISTENING {up.host}:{up.port}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
