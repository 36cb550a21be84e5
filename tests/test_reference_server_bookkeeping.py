"""Reference server: what /stats counts is taken off the books however a request ends."""

from __future__ import annotations

import pytest
from _refproc import WS, RefServer, get_json, run, wait_stats
from aiohttp import web

#: How many times the program runs: each run under the bug leaves one more request behind.
ROUNDS = 3


async def _interrupt_before_start(srv: RefServer, n: int) -> None:
    """A long REQUEST and an INTERRUPT of every request in one write; the ACK; the close."""
    ws = await WS.open(srv.ws_url)
    await ws.send_together(
        ("REQUEST", f"long{n}", {"text": "hello world", "options": {"chunks": 100_000, "chunk_delay_ms": 20}}),
        ("INTERRUPT", f"all{n}", {"target_request_id": None, "reason": "user"}),
    )
    ack = await ws.ack(f"all{n}")
    # The request was claimed before its task ever ran: interrupted, and nothing of it streamed.
    assert ack["payload"]["interrupted"] == [f"long{n}"], ack
    assert [f["payload"] for f in ws.of(f"long{n}")] == [
        {"seq": 0, "delta": "", "final": True, "interrupted": True, "reason": "user"}]
    await ws.close()


@pytest.mark.parametrize("faults", [(), ("cancel_before_start_leak",)], ids=["correct", "cancel_before_start_leak"])
def test_request_interrupted_before_its_task_ran_is_off_the_books(faults):
    """A request claimed before its task's first step leaves active_requests 0 once its session is gone."""
    with RefServer([a for f in faults for a in ("--fault", f)]) as srv:
        async def body():
            _, idle = await get_json(srv.http + "/stats")
            for n in range(ROUNDS):
                await _interrupt_before_start(srv, n)
            stats = await wait_stats(srv.http, lambda s: s["sessions"] == 0 and s["connections"] == 0)
            assert stats["tasks"] == idle["tasks"] and stats["per_session_state"] == 0, stats
            assert stats["subscriptions"] == 0 and stats["agent_threads"] == 0, stats
            if faults:
                assert stats["active_requests"] == ROUNDS, stats
            else:
                assert stats["active_requests"] == 0, stats

        run(body(), timeout=30)


async def _overlong_upstream() -> tuple[web.AppRunner, str]:
    """An OpenAI-style upstream whose first event is one line longer than any client reads.

    Reading it raises inside the request's task an error no agent expects: the
    way a bug of the server's own ends a task without its final frame.
    """

    async def completions(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + b"x" * (1 << 20) + b"\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("faults", [(), ("cancel_before_start_leak",)], ids=["correct", "cancel_before_start_leak"])
def test_request_whose_task_died_is_ended_and_off_the_books(faults):
    """A request task ended by an unexpected error answers ERROR INTERNAL and frees its id and slot."""

    async def body():
        runner, base_url = await _overlong_upstream()
        try:
            with RefServer([a for f in faults for a in ("--fault", f)],
                           env={"OPENAI_BASE_URL": base_url}) as srv:
                ws = await WS.open(srv.ws_url)
                await ws.request("u1", agent="upstream")
                await ws.send("HEARTBEAT", "h1")
                await ws.until(lambda f: f.get("request_id") == "h1")  # the REQUEST has been taken in
                await wait_stats(srv.http, lambda s: s["active_requests"] == 0)  # and its task has ended
                # The same id again: a fresh request, or refused as one still active.
                await ws.request("u1", chunks=2, chunk_delay_ms=0)
                first = await ws.until(lambda f: f.get("request_id") == "u1")
                if faults:
                    assert first["msg_type"] == "ERROR" and first["payload"]["code"] == "DUPLICATE_REQUEST", first
                else:
                    assert first["msg_type"] == "ERROR" and first["payload"]["code"] == "INTERNAL", first
                    assert "LineTooLong" in first["payload"]["message"], first
                    fin = await ws.final("u1")
                    assert fin["msg_type"] == "RESPONSE" and fin["payload"]["interrupted"] is False, fin
                await ws.close()
                await wait_stats(srv.http, lambda s: s["sessions"] == 0 and s["active_requests"] == 0)
        finally:
            await runner.cleanup()

    run(body(), timeout=30)
