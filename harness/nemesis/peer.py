"""A client in its own process: ``python -m harness.nemesis.peer --url URL --mode idle|stream``.

It connects, prints ``CONNECTED <session_id>`` and holds the connection, so a
scenario can SIGSTOP it and give the server a *frozen peer*: a socket that is
open, answers nothing (no pongs) and, in ``stream`` mode, has a reply flowing
into a receive buffer nobody drains. It exits when its connection ends, on
SIGTERM, or after ``--max-seconds``.

It speaks the target's protocol: ``--adapter JSON`` carries the target's
adapter (``{"adapter": "declarative", "config": {...}}``, or a
``"package.module:Class"`` spec), and the peer builds its client with
:func:`~harness.protocol.adapters.load_adapter`, as the harness's own clients are
built. Without it, the reference protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Mapping
from typing import Any

from harness.client.connection import Client, ClientError
from harness.core.timing import scaled
from harness.protocol.adapters import Adapter, AdapterError, load_adapter
from harness.target.spec import Readiness, Target

__all__ = ["adapter_from_json", "adapter_json", "main", "peer_target", "run"]


def adapter_json(adapter: str = "reference", config: Mapping[str, Any] | None = None) -> str:
    """The target's adapter as the peer's ``--adapter`` argument."""
    return json.dumps({"adapter": adapter or "reference", "config": dict(config or {})}, sort_keys=True)


def adapter_from_json(text: str) -> Adapter:
    """The adapter an ``--adapter`` argument names; :class:`AdapterError` for anything else."""
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise AdapterError(f"--adapter is not JSON: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("adapter", "reference"), str) \
            or not isinstance(spec.get("config", {}), dict):
        raise AdapterError('--adapter must be {"adapter": NAME, "config": {...}}')
    return load_adapter(spec.get("adapter") or "reference", config=spec.get("config") or {}, source="peer --adapter")


def peer_target(url: str, mode: str = "idle", *, allow_remote: bool = False, adapter: str = "reference",
                adapter_config: Mapping[str, Any] | None = None) -> Target:
    """The peer as a target the supervisor runs (its own session, its tree stopped, ready on CONNECTED).

    ``adapter`` and ``adapter_config`` are the target's, so the peer speaks its protocol.
    """
    argv = [sys.executable, "-m", "harness.nemesis.peer", "--url", url, "--mode", mode]
    if (adapter or "reference") != "reference":
        argv += ["--adapter", adapter_json(adapter, adapter_config)]
    if allow_remote:
        argv.append("--allow-remote")
    return Target(name="peer", argv=tuple(argv), readiness=Readiness(kind="line", pattern=r"CONNECTED"),
                  stats_path=None, health_path=None, allow_remote=allow_remote)


async def run(url: str, mode: str, *, allow_remote: bool = False, max_seconds: float = 600.0,
              adapter: Adapter | None = None) -> int:
    client = Client(url, adapter=adapter, name="peer", allow_remote=allow_remote, keep_frames=False)
    try:
        await client.connect()
    except ClientError as exc:
        print(f"FAILED {exc}", flush=True)
        return 1
    print(f"CONNECTED {client.session_id}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def stream() -> None:
        # Long, steady replies back to back: there is always data in flight.
        while not client.closed:
            try:
                rid = await client.request("peer", chunks=100_000, chunk_delay_ms=5)
            except ClientError:
                return
            await client.reply(rid, max_seconds)

    tasks = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(client.wait_closed(max_seconds))]
    if mode == "stream":
        tasks.append(asyncio.ensure_future(stream()))
    await asyncio.wait(tasks, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()
    if not client.closed:
        await client.close(timeout=scaled(2))
    closed = await client.wait_closed(scaled(1))
    print(f"CLOSED {closed[0] if closed else None}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.nemesis.peer", description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", choices=("idle", "stream"), default="idle")
    ap.add_argument("--allow-remote", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--adapter", default=None, metavar="JSON",
                    help='the target\'s adapter: {"adapter": "declarative", "config": {...}} (default: reference)')
    args = ap.parse_args(argv)
    try:
        adapter = adapter_from_json(args.adapter) if args.adapter else None
    except AdapterError as exc:
        print(f"FAILED {exc}", flush=True)
        return 2
    try:
        return asyncio.run(run(args.url, args.mode, allow_remote=args.allow_remote, max_seconds=args.max_seconds,
                               adapter=adapter))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
