"""Reference server: interrupt semantics 1-6 of the protocol."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from _refproc import WS, RefServer, run, wait_stats

from harness.upstream.fake import FakeUpstream


@pytest.fixture(scope="module")
def srv():
    with RefServer() as s:
        yield s


def _assert_final_then_ack_then_silence(ws: WS, rid: str, iid: str, reason: str = "user") -> None:
    mine = ws.of(rid)
    ack_at = next(i for i, f in enumerate(ws.frames) if f["msg_type"] == "INTERRUPT_ACK" and f["request_id"] == iid)
    final_at = next(i for i, f in enumerate(ws.frames) if f.get("request_id") == rid and f["payload"].get("final"))
    assert final_at < ack_at, "the interrupted final must precede the ACK"
    fin = ws.frames[final_at]["payload"]
    assert fin["interrupted"] is True and fin["reason"] == reason
    assert [f["payload"]["seq"] for f in mine] == list(range(len(mine)))
    assert sum(1 for f in mine if f["payload"]["final"]) == 1
    assert all(ws.frames.index(f) < ack_at for f in mine), "a frame of the request after its ACK"


def test_interrupt_final_before_ack_and_nothing_after(srv):
    """(2) The final interrupted RESPONSE comes before the ACK; nothing for the id after it."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.request("r1", chunks=1000, chunk_delay_ms=0)
        await ws.until(lambda f: f.get("request_id") == "r1" and f["payload"]["seq"] >= 20)
        await ws.interrupt("i1", "r1", reason="changed my mind")
        ack = await ws.ack("i1")
        assert ack["payload"] == {"status": "SUCCESS", "interrupted": ["r1"], "interrupted_count": 1}
        await ws.quiet(0.3)
        _assert_final_then_ack_then_silence(ws, "r1", "i1", "changed my mind")
        await wait_stats(srv.http, lambda s: s["active_requests"] == 0)
        await ws.close()

    run(body())


@pytest.mark.slow
@pytest.mark.solo  # a 200 ms p99 on this machine's time: another worker's load stalls it past that
def test_ack_latency_under_streaming_load(srv):
    """(1) ACK within 200 ms at p99 while 2 sessions each stream 4 replies at full speed."""

    async def body():
        clients = await asyncio.gather(*(WS.open(srv.ws_url) for _ in range(2)))
        latencies: list[float] = []
        server_side: list[float] = []

        async def drive(ws: WS, n: int) -> None:
            for k in range(n):
                ids = [f"c{k}-{j}" for j in range(4)]
                for rid in ids:
                    await ws.request(rid, chunks=5000, chunk_delay_ms=0)
                await ws.until(lambda f, last=ids[-1]: f.get("request_id") == last)
                t0, wall = time.monotonic_ns(), time.time()
                await ws.interrupt(f"i{k}", ids[k % 4])
                ack = await ws.ack(f"i{k}")
                latencies.append((ack["_t"] - t0) / 1e6)
                server_side.append((ack["timestamp"] - wall) * 1e3)
                assert ack["payload"]["interrupted"] == [ids[k % 4]]
                await ws.interrupt(f"all{k}", None)
                rest = await ws.ack(f"all{k}")
                # The other three, unless one already ended on its own (5,000 chunks at full speed
                # can, on a loaded machine): never the one interrupted before, never another id.
                assert set(rest["payload"]["interrupted"]) <= set(ids) - {ids[k % 4]}

        await asyncio.gather(*(drive(ws, 20) for ws in clients))
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"ACK latency under load: n={len(latencies)} p50={p50:.1f}ms p99={p99:.1f}ms max={latencies[-1]:.1f}ms "
              f"(ACK queued after {statistics.median(server_side):.1f}ms p50, {max(server_side):.1f}ms max)")
        assert p99 < 200, latencies[-5:]
        for ws in clients:
            await ws.close()
        await wait_stats(srv.http, lambda s: s["active_requests"] == 0 and s["sessions"] == 0)

    run(body())


def test_not_found_for_unknown_finished_and_foreign_ids(srv):
    """(4) Unknown, finished and other sessions' ids answer NOT_FOUND and change nothing."""

    async def body():
        a, b = await WS.open(srv.ws_url), await WS.open(srv.ws_url)
        await a.request("done", chunks=1, chunk_delay_ms=0)
        await a.final("done")
        await b.request("theirs", chunks=300, chunk_delay_ms=10)
        await b.until(lambda f: f.get("request_id") == "theirs")
        for iid, target in (("i1", "nope"), ("i2", "done"), ("i3", "theirs"), ("i4", None)):
            await a.interrupt(iid, target)
            ack = await a.ack(iid)
            assert ack["payload"] == {"status": "NOT_FOUND", "interrupted": [], "interrupted_count": 0}
        await b.until(lambda f: f.get("request_id") == "theirs" and f["payload"]["seq"] >= 3)
        assert not any(f["payload"].get("interrupted") for f in b.of("theirs"))
        await b.interrupt("ib", "theirs")
        assert (await b.ack("ib"))["payload"]["interrupted"] == ["theirs"]
        await a.close()
        await b.close()

    run(body())


def test_request_right_after_interrupt_completes(srv):
    """(5) A REQUEST sent right behind an INTERRUPT starts at once and completes normally."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.request("r1", chunks=1000, chunk_delay_ms=1)
        await ws.until(lambda f: f.get("request_id") == "r1")
        await ws.interrupt("i1", "r1")
        await ws.request("r2", chunks=5, chunk_delay_ms=1)
        fin = await ws.final("r2")
        assert fin["payload"]["interrupted"] is False and fin["payload"]["seq"] == 5
        await ws.close()

    run(body())


def test_concurrent_interrupts_each_one_ack_each_request_claimed_once(srv):
    """(6) Many INTERRUPTs in flight, same and different ids, from several sessions."""

    async def body():
        clients = await asyncio.gather(*(WS.open(srv.ws_url) for _ in range(3)))
        for ws in clients:
            for j in range(6):
                await ws.request(f"r{j}", chunks=2000, chunk_delay_ms=2)
            await ws.until(lambda f: f.get("request_id") == "r5")
        for ws in clients:
            # Fire them all without waiting: each id targeted three times, plus two "all".
            for k in range(20):
                target = None if k in (7, 13) else f"r{k % 6}"
                await ws.interrupt(f"i{k}", target)
        for ws in clients:
            acks = [await ws.ack(f"i{k}") for k in range(20)]
            await ws.quiet(0.2)
            assert sum(1 for f in ws.frames if f["msg_type"] == "INTERRUPT_ACK") == 20
            claimed = [rid for a in acks for rid in a["payload"]["interrupted"]]
            assert sorted(claimed) == [f"r{j}" for j in range(6)], claimed
            for a in acks:
                assert a["payload"]["interrupted_count"] == len(a["payload"]["interrupted"])
                assert a["payload"]["status"] == ("SUCCESS" if a["payload"]["interrupted"] else "NOT_FOUND")
            for j in range(6):
                assert sum(1 for f in ws.of(f"r{j}") if f["payload"]["final"]) == 1
            await ws.close()

    run(body())


def test_upstream_response_closed_within_200ms_of_interrupt():
    """(3) Interrupting an "upstream" reply closes its HTTP response to the upstream promptly."""

    async def body():
        async with FakeUpstream(tokens=500, token_delay_ms=10) as up:
            with RefServer(env={"OPENAI_BASE_URL": up.base_url}) as srv:
                ws = await WS.open(srv.ws_url)
                for n in range(3):
                    await ws.request(f"u{n}", agent="upstream")
                    await ws.until(lambda f, n=n: f.get("request_id") == f"u{n}" and f["payload"]["seq"] >= 3)
                    t0 = time.monotonic_ns()
                    await ws.interrupt(f"i{n}", f"u{n}")
                    await ws.ack(f"i{n}")
                    rec = await up.wait_stream_closed(n, 2)
                    assert rec is not None and rec.closed_by_client and not rec.completed
                    assert (rec.closed_ns - t0) / 1e6 < 200
                await ws.close()

    run(body())


def test_blocking_reply_interrupted_its_late_output_is_dropped(srv):
    """(3) A stuck blocking call cannot be stopped, but nothing of it reaches the client."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.request("b1", chunks=3, chunk_delay_ms=1, agent="blocking", block_ms=400)
        await wait_stats(srv.http, lambda s: s["agent_threads"] >= 1)
        await ws.interrupt("i1", "b1")
        ack = await ws.ack("i1")
        assert ack["payload"]["interrupted"] == ["b1"]
        await wait_stats(srv.http, lambda s: s["agent_threads"] == 0)  # the thread has finished
        assert not [f for f in await ws.quiet(0.2) if f.get("request_id") == "b1"]
        _assert_final_then_ack_then_silence(ws, "b1", "i1")
        await ws.close()

    run(body())


def test_slow_ack_fault_delays_every_ack_and_nothing_else():
    """--fault slow_ack: the ACK leaves at least 50 ms after the INTERRUPT; the final still precedes it."""

    async def body(url: str) -> float:
        ws = await WS.open(url)
        await ws.request("r1", chunks=1000, chunk_delay_ms=1)
        await ws.until(lambda f: f.get("request_id") == "r1" and f["payload"]["seq"] >= 2)
        sent = time.monotonic()
        await ws.interrupt("i1", "r1")
        ack = await ws.ack("i1")
        waited = time.monotonic() - sent
        assert ack["payload"]["status"] == "SUCCESS"
        _assert_final_then_ack_then_silence(ws, "r1", "i1")
        await ws.close()
        return waited

    with RefServer(["--fault", "slow_ack"]) as slow:
        assert run(body(slow.ws_url)) >= 0.045
