"""The control channel between a local fleet's parent and its workers: pickled
messages, each behind an 8-byte length, on a Unix socket in the run's directory.

Parent to worker: ``("job", dict)``, ``("go", None)``, ``("signal", (name, payload))``,
``("ack", None)`` once the result is in (the worker exits only then).
Worker to parent: ``("hello", index)``, ``("report", (kind, data))``, ``("result", dict)``.

Both ends are this checkout's own code on one machine, so pickle is the
format: records go across as the dataclasses they are.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

__all__ = ["MAX_MESSAGE", "read_message", "write_message"]

_HEAD = struct.Struct("!Q")
#: A message larger than this is refused as corrupt (a history of millions of records is smaller).
MAX_MESSAGE = 8 * 2**30


async def read_message(reader: asyncio.StreamReader) -> tuple[str, Any] | None:
    """The next message, or None at EOF (the other end has gone)."""
    try:
        head = await reader.readexactly(_HEAD.size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    (size,) = _HEAD.unpack(head)
    if size > MAX_MESSAGE:
        raise ValueError(f"fleet message of {size} bytes: the channel is corrupt")
    try:
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    kind, payload = pickle.loads(body)
    return str(kind), payload


async def write_message(writer: asyncio.StreamWriter, kind: str, payload: Any = None) -> None:
    body = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_HEAD.pack(len(body)) + body)
    await writer.drain()
