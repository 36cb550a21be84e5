r"""Per-connection outbound buffer: one writer task, bounded, ordered.

Every frame a session sends goes through its :class:`Outbox` and its single
writer task, so frames never interleave. There are two queues: *data*
(reply chunks, normal finals, events: strictly in order) and *control*
(ACKs, interrupted finals, errors, heartbeat answers), which the writer sends
first, so an ACK never waits behind a backlog of chunks. An interrupt first
:meth:`purge`\ s the claimed request's unsent chunks from the data queue, so its
final (and then the ACK) cannot overtake any chunk of it that is still to go.
Queuing is synchronous: the interrupt path marks a request dead, purges,
queues its final and the ACK without an await in between, which is what
makes "no frame after the ACK" airtight.

The bound: request streams wait in :meth:`wait_space` while more than
``soft_limit`` bytes are queued (back-pressure reaches the agent); control
frames and events are queued at once, but a peer that lets more than
``hard_limit`` bytes pile up is a slow consumer and is dropped, so a client
that never reads cannot grow the server's memory or stall a publisher.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from aiohttp import web

__all__ = ["Outbox"]


class _Close:
    def __init__(self, code: int) -> None:
        self.code = code


class Outbox:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        soft_limit: int,
        hard_limit: int | None,
        on_overflow: Callable[[], None],
        on_frame_sent: Callable[[str], None] | None = None,
        send_lock: asyncio.Lock | None = None,
    ) -> None:
        self._ws = ws
        # The global_send_lock fault: one lock shared by every connection's writer.
        self._send_lock = send_lock
        self._queue: collections.deque[tuple[str | _Close, object]] = collections.deque()
        self._control: collections.deque[str] = collections.deque()
        self._bytes = 0
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit  # None: no bound (the unbounded_buffer fault)
        self._on_overflow = on_overflow
        self._on_frame_sent = on_frame_sent
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.closed = False  # no more frames will be written
        self._closing = False  # a close frame is queued
        self.sending_close = False  # the writer is in the close handshake

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def has_space(self) -> bool:
        return self.hard_limit is None or self._bytes < self.soft_limit

    async def wait_space(self) -> None:
        while not self.closed and not self.has_space():
            self._space.clear()
            await self._space.wait()

    def put(self, text: str, tag: object = None) -> bool:
        """Queue one data frame (``tag``: the request it belongs to); False when closed."""
        if self.closed or self._closing:
            return False
        self._queue.append((text, tag))
        return self._grew(len(text))

    def put_control(self, text: str) -> bool:
        """Queue a frame ahead of all data frames (after earlier control frames)."""
        if self.closed or self._closing:
            return False
        self._control.append(text)
        return self._grew(len(text))

    def _grew(self, n: int) -> bool:
        self._bytes += n
        self._wakeup.set()
        if self.hard_limit is not None and self._bytes > self.hard_limit:
            self._on_overflow()
            return False
        return True

    def purge(self, tag: object) -> int:
        """Drop the unsent data frames tagged ``tag``; how many were dropped."""
        kept = [(item, t) for item, t in self._queue if t is not tag or tag is None]
        dropped = len(self._queue) - len(kept)
        if dropped:
            self._bytes -= sum(len(i) for i, t in self._queue if t is tag and isinstance(i, str))
            self._queue = collections.deque(kept)
            if self.has_space():
                self._space.set()
        return dropped

    def close(self, code: int) -> None:
        """Queue a close frame after everything already queued."""
        if self.closed or self._closing:
            return
        self._closing = True
        self._queue.append((_Close(code), None))
        self._wakeup.set()

    def _mark_closed(self) -> None:
        self.closed = True
        self._queue.clear()
        self._control.clear()
        self._bytes = 0
        self._space.set()

    async def run(self) -> None:
        """The writer task: send queued frames in order until closed."""
        ws = self._ws
        try:
            while True:
                while not self._queue and not self._control:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                item = self._control.popleft() if self._control else self._queue.popleft()[0]
                if isinstance(item, _Close):
                    self.sending_close = True
                    self._mark_closed()
                    await ws.close(code=item.code)
                    return
                self._bytes -= len(item)
                if self.has_space():
                    self._space.set()
                if self._on_frame_sent is not None:
                    self._on_frame_sent(item)
                if self._send_lock is not None:
                    # The bug: a write that waits for a peer which stopped reading holds
                    # the lock, and every other connection's writer queues behind it.
                    async with self._send_lock:
                        await ws.send_str(item)
                else:
                    await ws.send_str(item)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            # The peer is gone (reset, closed under us): nothing more can be
            # written; the reader side sees the end and releases the session.
            pass
        finally:
            self._mark_closed()
