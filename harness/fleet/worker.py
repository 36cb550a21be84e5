"""One worker process of a local fleet: ``python -m harness.fleet.worker SOCKET INDEX``.

1. Connect to the parent's control socket, say hello, receive the job
   (the program, by reference, and the worker's share of the run).
2. Print ``wschaos-fleet worker <i> ready`` on stdout: the supervisor's readiness line.
3. Wait (bounded) for ``go``, run the program on this process's own event
   loop (bounded), and send back every record of its History with the
   program's value, or the error that ended it, and what it cost; exit once
   the parent acknowledges it (a large result's tail may still be buffered here).

If the parent's socket closes first, the parent has gone: the program is
cancelled and the worker exits (its supervisor's guard would end it anyway).
"""

from __future__ import annotations

import asyncio
import importlib
import pickle
import sys
import time
from collections.abc import Mapping
from typing import Any

from harness.client.wire import event_loop_from_env
from harness.core.history import History, collect_less_often
from harness.fleet.context import WorkerContext, local_host
from harness.fleet.execute import run_program
from harness.fleet.wire import read_message, write_message

__all__ = ["main"]
_CONNECT_S = 30.0


class _SocketChannel:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._signals: dict[str, Any] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()

    def deliver(self, name: str, payload: Any) -> None:
        self._signals[name] = payload
        self._events.setdefault(name, asyncio.Event()).set()

    async def report(self, worker: int, kind: str, data: Mapping[str, Any]) -> None:
        async with self._lock:
            await write_message(self._writer, "report", (kind, dict(data)))

    async def wait_signal(self, name: str, timeout: float) -> Any:
        event = self._events.setdefault(name, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        self._events.pop(name, None)
        return self._signals.pop(name, True)


def _import(ref: tuple[str, str]) -> Any:
    obj: Any = importlib.import_module(ref[0])
    for part in ref[1].split("."):
        obj = getattr(obj, part)
    return obj


async def _main(sock_path: str, index: int) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(sock_path), _CONNECT_S)
    await write_message(writer, "hello", index)
    msg = await asyncio.wait_for(read_message(reader), _CONNECT_S)
    if msg is None or msg[0] != "job":
        print(f"wschaos-fleet worker {index}: no job from the parent ({msg!r})", file=sys.stderr)
        return 2
    job = msg[1]
    for p in reversed(job["sys_path"]):
        if p not in sys.path:
            sys.path.insert(0, p)
    program = _import(job["program"])
    channel = _SocketChannel(writer)
    ctx = WorkerContext(
        url=job["url"], history=History(), worker=index, workers=job["workers"], seed=job["seed"],
        params=dict(job["params"]), sources=list(job["sources"]), host=local_host(),
        allow_remote=job["allow_remote"], channel=channel,
    )
    print(f"wschaos-fleet worker {index} ready", flush=True)
    go = await asyncio.wait_for(read_message(reader), job["go_timeout"])
    if go is None or go[0] != "go":
        print(f"wschaos-fleet worker {index}: the parent ended before go", file=sys.stderr)
        return 3
    task = asyncio.ensure_future(run_program(ctx, program, job["timeout"]))

    async def listen() -> None:
        while True:
            m = await read_message(reader)
            if m is None:
                return
            if m[0] == "signal":
                name, payload = m[1]
                channel.deliver(name, payload)

    listener = asyncio.ensure_future(listen())
    await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        # The parent has gone: nobody is left to send the result to.
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)
        print(f"wschaos-fleet worker {index}: the parent's channel closed; program cancelled", file=sys.stderr)
        return 4
    listener.cancel()
    result = task.result()
    try:
        await write_message(writer, "result", result)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        result["value"] = None
        result["error"] = (result["error"] or "") + f"the program's value cannot be sent back: {exc}"
        await write_message(writer, "result", result)
    # drain() returns once the transport's buffer is under its high-water mark, not empty: the
    # tail of a large result may still be in this process. Exit only once the parent has it.
    async def acknowledged() -> bool:
        while True:
            m = await read_message(reader)
            if m is None or m[0] == "ack":  # a signal sent meanwhile is of no use any more
                return m is not None

    try:
        ack = await asyncio.wait_for(acknowledged(), _CONNECT_S)
    except asyncio.TimeoutError:
        ack = False
    writer.close()
    if not ack:
        print(f"wschaos-fleet worker {index}: the parent did not acknowledge the result", file=sys.stderr)
        return 6
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m harness.fleet.worker SOCKET INDEX", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    collect_less_often()  # a worker records a long history (harness.core.history)
    try:
        event_loop_from_env()  # WSCHAOS_LOOP=uvloop, as the parent was told
    except ValueError as exc:
        print(f"wschaos-fleet worker {args[1]}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args[0], int(args[1])))
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"wschaos-fleet worker {args[1]}: {type(exc).__name__}: {exc} "
              f"after {time.monotonic() - t0:.1f} s", file=sys.stderr)
        return 5


if __name__ == "__main__":
    sys.exit(main())
