"""The end of a program: answers held back, a last look at the books, every session closed, the settle.

Each step is bounded and waits on an event (an answer, a frame, a figure back
at its baseline), never on time alone, except the observation window after an
ACK (:func:`after_ack_window`), whose point is to keep listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from harness.client.connection import Client
from harness.core.timing import now_ns, scaled
from harness.explore.model import Model
from harness.explore.program import ExploreConfig
from harness.explore.record import ProgramRun, ProgramSession, RunEnv
from harness.nemesis.faults import TcpProxy
from harness.probes.observe import Observer
from harness.probes.sampling import Sample
from harness.probes.sampling import settle as sampling_settle

__all__ = ["Held", "close_all", "teardown"]


class Held(Protocol):
    """What a program's runner holds that its end needs."""

    env: RunEnv
    cfg: ExploreConfig
    run: ProgramRun
    model: Model
    probes: Observer
    sessions: dict[int, ProgramSession]
    #: Sessions the server was closing while they did not read (an oversize frame).
    retired: list[ProgramSession]
    clients: list[Client]
    proxy: TcpProxy | None
    lag: contextlib.ExitStack | None
    deferred: list[asyncio.Future[Any]]
    answer: float


async def teardown(r: Held) -> None:
    """Lift the faults, hear the answers held back, look at the books, close, and let them settle."""
    if r.lag is not None:
        r.lag.close()
        r.lag = None
    for s in [*r.sessions.values(), *r.retired]:
        s.resume()
    # Reading again, they take the close the server sent them (judged: 1009).
    await asyncio.gather(*(s.client.wait_closed(r.answer * 2) for s in r.retired))
    if r.deferred:
        # Answers held back while sessions were not reading: they can come now.
        await asyncio.wait(r.deferred, timeout=r.answer)
    await drain_short(r)
    await after_ack_window(r)
    open_now = [s for s in r.sessions.values() if not s.client.closed]
    # The books while the sessions are open: /stats must count at least what the model holds.
    r.model.refresh()
    if r.env.target.stats_path and open_now:
        r.run.during = await r.probes.stats(r.env.sup)
        r.run.open_at_sample = {
            "connections": len(open_now),
            "sessions": len(open_now),
            "active_requests": sum(1 for q in r.model.requests if q.state == "active"),
        }
    await await_events(r)
    # What the EVENTs had to be, fixed before the sessions close (a closing session
    # may lose events in flight, so afterwards only upper bounds would be left).
    r.run.expected_events = r.model.expected_events()
    await asyncio.gather(*(s.client.close(timeout=scaled(r.cfg.close_s)) for s in open_now),
                         return_exceptions=True)
    if r.deferred:
        # Closing ended every wait still open; collect them (and their errors).
        await asyncio.wait(r.deferred, timeout=scaled(2))
    for s in open_now:
        r.model.ended(s.client.name)
    if r.proxy is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(r.proxy.__aexit__(None, None, None), scaled(3))
        r.proxy = None
    await settle_books(r)
    await settle_sockets(r)
    if r.run.upstream_claims and r.env.upstream is not None:
        await upstream_closes(r)


async def drain_short(r: Held) -> None:
    """Let the short replies still running end (bounded) before the sessions close.

    Their final frames are what the reply checks judge, and a reply held back behind
    something else (a blocked agent thread) only shows when it is waited for. Long
    replies never end by themselves and are not waited for; nor is a session that
    already left an answer unanswered.
    """
    r.model.refresh()
    clients = {s.client.name: s for s in r.sessions.values() if not s.client.closed and not s.silent}
    waits = [clients[q.client].client.reply(q.request_id, timeout=scaled(r.cfg.reply_s))
             for q in r.model.requests
             if q.client in clients and not q.long and q.state == "maybe" and q.expect_error is None
             and q.op is not None and q.op.outcome == "pending"]
    if waits:
        await asyncio.gather(*waits, return_exceptions=True)


async def after_ack_window(r: Held) -> None:
    """Keep listening a little after the last ACK that claimed a streaming request.

    "Nothing after an ACK for its ids" can only fail while the connection is still
    read: a stream whose cancel is noticed late sends its next chunk one chunk delay
    after the ACK. The window is three of the claimed requests' chunk delays (at most
    150 ms), counted from that ACK; programs that claimed nothing pay nothing.
    """
    last_ns, delay_ms = 0, 0
    for rec in r.model.interrupts:
        res = rec.result
        if res is None or res.ack is None or not res.interrupted_ids:
            continue
        last_ns = max(last_ns, res.acked_ns or 0)
        for q in r.model.requests:
            if q.client == rec.client and q.request_id in res.interrupted_ids and q.op is not None:
                delay_ms = max(delay_ms, int((q.op.data.get("options") or {}).get("chunk_delay_ms") or 0))
    if not last_ns or not delay_ms:
        return
    window_ns = int(min(3 * delay_ms, 150) * 1e6 * scaled(1))
    left = (last_ns + window_ns - now_ns()) / 1e9
    if left > 0:
        await asyncio.sleep(left)  # an observation window: frames arrive (or not) meanwhile


async def await_events(r: Held) -> None:
    expected = r.model.expected_events()
    deadline = time.monotonic() + r.answer
    for (name, topic), (lo, _hi) in expected.items():
        if lo == 0:
            continue
        client = next((c for c in r.clients if c.name == name), None)
        if client is None or client.closed:
            continue

        def count(c: Client = client, t: str = topic) -> int:
            return sum(1 for f in c.frames if f.kind == "event" and f.topic == t)

        while count() < lo and time.monotonic() < deadline:
            got = await client.wait_frame(lambda f: f.kind == "event", deadline - time.monotonic(), since=None)
            if got is None:
                break


async def settle_books(r: Held) -> None:
    """Bounded: the connections (and agent threads) go, then the rest of the books follow."""
    base = r.run.baseline
    if base is None:
        r.run.after = await r.probes.stats(r.env.sup)
        return
    cfg = r.cfg
    allow = {"tasks": cfg.tasks_allowance, "threads": cfg.threads_allowance}

    def back(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
        def pred(s: dict[str, Any]) -> bool:
            for k in keys:
                now, was = s.get(k), base.get(k)
                if (isinstance(now, (int, float)) and isinstance(was, (int, float))
                        and now > was + allow.get(k, 0)):
                    return False
            return True
        return pred

    first = ("connections", "sessions", "threads", "agent_threads")
    rest = (*first, "active_requests", "subscriptions", "per_session_state", "tasks")
    await wait_stats(r, back(first), scaled(cfg.settle_s))
    r.run.after = await wait_stats(r, back(rest), scaled(cfg.release_grace_s))


async def wait_stats(r: Held, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
    """The shared bounded wait (``sampling.settle``), polled every 10 ms: a correct target
    releases in the same instant its connections go, and every program pays this wait."""
    sup = r.env.sup

    async def sample() -> Sample:
        data = await r.probes.stats(sup)
        return Sample("stats", now_ns(), data is not None, dict(data or {}))

    last = await sampling_settle(sample, lambda smp: smp.ok and predicate(smp.data), timeout, interval=0.01)
    return last.data if last.ok else None


async def settle_sockets(r: Held) -> None:
    """The process seen from outside: its fds and CLOSE_WAIT sockets back, bounded like the books."""
    base = r.run.resources_before
    if base is None:
        return
    allow = r.cfg.fds_allowance

    def back(s: Sample) -> bool:
        d = s.data
        return (d.get("num_fds", 0) <= base.get("num_fds", 0) + allow
                and d.get("tcp", {}).get("CLOSE_WAIT", 0) <= base.get("tcp", {}).get("CLOSE_WAIT", 0))

    def sample() -> Sample:
        data = r.probes.resources(r.env.sup)
        return Sample("process", now_ns(), data is not None, dict(data or {}))

    last = await sampling_settle(sample, lambda smp: smp.ok and back(smp), scaled(r.cfg.release_grace_s), 0.01)
    r.run.resources_after = last.data if last.ok else None


async def upstream_closes(r: Held) -> None:
    up = r.env.upstream
    assert up is not None
    done = []
    for prompt, sent_ns, _ in r.run.upstream_claims:
        index = next((i for i in range(len(up.streams) - 1, -1, -1) if up.streams[i].prompt == prompt), None)
        closed = None
        if index is not None:
            rec = await up.wait_stream_closed(index, r.answer)
            closed = rec.closed_ns if rec is not None else None
            done.append((prompt, sent_ns, closed))
    r.run.upstream_claims = done


async def close_all(r: Held) -> None:
    """Last resort on a harness error: drop every connection, stop the proxy."""
    for c in r.clients:
        if not c.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.abort(), scaled(2))
    if r.proxy is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(r.proxy.__aexit__(None, None, None), scaled(3))
        r.proxy = None
