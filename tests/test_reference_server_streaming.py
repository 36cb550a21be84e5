"""Reference server: REQUEST streaming, the three agents, concurrency limits."""

from __future__ import annotations

import time

import pytest
from _refproc import WS, RefServer, run, wait_stats

from harness.upstream.fake import FakeUpstream, running_in_thread


@pytest.fixture(scope="module")
def srv():
    with RefServer() as s:
        yield s


def _check_stream(frames: list[dict], rid: str, chunks: int) -> None:
    mine = [f for f in frames if f.get("request_id") == rid and f["msg_type"] == "RESPONSE"]
    assert [f["payload"]["seq"] for f in mine] == list(range(chunks + 1))
    assert [f["payload"]["final"] for f in mine] == [False] * chunks + [True]
    last = mine[-1]["payload"]
    assert last["delta"] == "" and last["interrupted"] is False and last["reason"] is None


def test_reply_streams_seq_from_zero_with_one_final(srv):
    """Chunks carry the request_id, seq 0..n-1 without gaps, then exactly one final."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.request("r1", "alpha beta", chunks=7, chunk_delay_ms=1)
        await ws.final("r1")
        _check_stream(ws.frames, "r1", 7)
        assert "".join(f["payload"]["delta"] for f in ws.of("r1")).split() == ["alpha", "beta"] * 3 + ["alpha"]
        assert not await ws.quiet(0.1)  # nothing more for a finished request
        await ws.close()

    run(body())


def test_concurrent_requests_interleave_but_each_is_complete(srv):
    """Eight requests at once in one session each stream completely, in order."""

    async def body():
        ws = await WS.open(srv.ws_url)
        for i in range(8):
            await ws.request(f"r{i}", chunks=15, chunk_delay_ms=1)
        for i in range(8):
            await ws.final(f"r{i}")
        for i in range(8):
            _check_stream(ws.frames, f"r{i}", 15)
        await ws.close()

    run(body())


def test_duplicate_and_busy_are_refused_and_the_stream_goes_on(srv):
    """An active request_id again is DUPLICATE_REQUEST; a ninth is BUSY; streams are unharmed."""

    async def body():
        ws = await WS.open(srv.ws_url)
        for i in range(8):
            await ws.request(f"r{i}", chunks=30, chunk_delay_ms=10)
        await ws.request("r0", chunks=1)
        dup = await ws.until(lambda f: f["msg_type"] == "ERROR")
        assert dup["payload"]["code"] == "DUPLICATE_REQUEST" and dup["request_id"] == "r0"
        await ws.request("r8", chunks=1)
        busy = await ws.until(lambda f: f["msg_type"] == "ERROR")
        assert busy["payload"]["code"] == "BUSY" and busy["request_id"] == "r8"
        for i in range(8):
            await ws.final(f"r{i}")
            _check_stream(ws.frames, f"r{i}", 30)
        # Once finished, the id may be used again.
        await ws.request("r0", chunks=2, chunk_delay_ms=1)
        fin = await ws.final("r0")
        assert fin["payload"]["seq"] == 2
        await ws.close()

    run(body())


def test_upstream_agent_without_base_url_is_no_upstream(srv):
    """An "upstream" request on a server without OPENAI_BASE_URL gets ERROR NO_UPSTREAM."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.request("u1", agent="upstream")
        err = await ws.final("u1")
        assert err["msg_type"] == "ERROR" and err["payload"]["code"] == "NO_UPSTREAM"
        await ws.close()

    run(body())


def test_upstream_agent_streams_the_sse_tokens():
    """The upstream agent relays every SSE delta as a chunk and ends when [DONE] comes."""

    async def body():
        async with FakeUpstream(tokens=12, token_delay_ms=1) as up:
            with RefServer(["--agent", "upstream"], env={"OPENAI_BASE_URL": up.base_url}) as srv:
                ws = await WS.open(srv.ws_url)
                await ws.request("u1", "tell me")
                await ws.final("u1")
                _check_stream(ws.frames, "u1", 12)
                assert ws.of("u1")[3]["payload"]["delta"] == "t3 "
                rec = await up.wait_stream_closed(0, 5)
                assert rec is not None and rec.completed and rec.prompt == "tell me"
                await ws.close()
                await wait_stats(srv.http, lambda s: s["active_requests"] == 0 and s["sessions"] == 0)

    run(body())


def test_stuck_blocking_agent_never_delays_the_next_request(srv):
    """A blocking call stuck for 30 s runs in a daemon thread; the next request completes at once."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.request("b1", chunks=1, agent="blocking", block_ms=30000)
        await wait_stats(srv.http, lambda s: s["agent_threads"] >= 1)
        t0 = time.monotonic()
        await ws.request("b2", chunks=3, chunk_delay_ms=1, agent="blocking", block_ms=10)
        await ws.final("b2")
        assert time.monotonic() - t0 < 2.0
        _check_stream(ws.frames, "b2", 3)
        await ws.close()
        await wait_stats(srv.http, lambda s: s["active_requests"] == 0 and s["sessions"] == 0)

    run(body())


def test_bad_options_are_bad_message(srv):
    """Options of the wrong type or an unknown agent are BAD_MESSAGE, echoing the request_id."""

    async def body():
        ws = await WS.open(srv.ws_url)
        for i, opts in enumerate([{"chunks": "many"}, {"agent": "telepathy"}, {"chunk_delay_ms": -1},
                                  {"chunks": True}]):
            await ws.request(f"x{i}", **opts)
            err = await ws.final(f"x{i}")
            assert err["msg_type"] == "ERROR" and err["payload"]["code"] == "BAD_MESSAGE", err
        await ws.close()

    run(body())


def test_thread_runner_of_fake_upstream_serves_the_server():
    """The fake upstream also runs in a thread of its own for synchronous callers."""
    with running_in_thread(tokens=3, token_delay_ms=1) as up, \
            RefServer(env={"OPENAI_BASE_URL": up.base_url}) as srv:
        async def body():
            ws = await WS.open(srv.ws_url)
            await ws.request("u", agent="upstream")
            fin = await ws.final("u")
            assert fin["payload"]["seq"] == 3
            await ws.close()

        run(body())
        assert up.wait_stream_closed_sync(0, 5).completed
