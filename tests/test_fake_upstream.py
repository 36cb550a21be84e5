"""The fake OpenAI-compatible upstream: SSE format, records, prompt close detection."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import aiohttp
from _refproc import ROOT, run

from harness.upstream.fake import FakeUpstream


async def _post(session: aiohttp.ClientSession, up: FakeUpstream, **body: object) -> aiohttp.ClientResponse:
    return await session.post(up.base_url + "/chat/completions",
                              json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}], **body})


def test_streams_sse_chunks_then_done_and_records_completion():
    """Each token is a data: line with choices[0].delta.content, then data: [DONE]."""

    async def body():
        async with FakeUpstream(tokens=5, token_delay_ms=1) as up, aiohttp.ClientSession() as s:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", up.base_url)
            resp = await _post(s, up)
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            lines = [ln.decode().strip() async for ln in resp.content if ln.strip()]
            assert lines[-1] == "data: [DONE]"
            deltas = [json.loads(ln[6:])["choices"][0]["delta"]["content"] for ln in lines[:-1]]
            assert deltas == ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]
            rec = await up.wait_stream_closed(0, 5)
            assert rec is not None and rec.completed and not rec.closed_by_client
            assert rec.tokens_sent == 5 and rec.prompt == "hi" and rec.closed_ns >= rec.started_ns

    run(body())


def test_client_close_is_recorded_promptly():
    """Closing the response mid-stream is stamped within 200 ms, as closed_by_client."""

    async def body():
        async with FakeUpstream(tokens=1000, token_delay_ms=50) as up, aiohttp.ClientSession() as s:
            resp = await _post(s, up)
            await resp.content.readline()
            assert await up.wait_streams(1, 5)
            t0 = time.monotonic_ns()
            resp.close()
            rec = await up.wait_stream_closed(0, 2)
            assert rec is not None and rec.closed_by_client and not rec.completed
            assert (rec.closed_ns - t0) / 1e6 < 200
            assert rec.tokens_sent < 1000

    run(body())


def test_non_streaming_request_is_refused():
    """Only stream=true is served."""

    async def body():
        async with FakeUpstream() as up, aiohttp.ClientSession() as s:
            resp = await _post(s, up, stream=False)
            assert resp.status == 400
            assert up.streams == []

    run(body())


def test_thread_runner_and_cli():
    """start_in_thread()/stop() serves synchronous callers; the CLI prints LISTENING."""
    up = FakeUpstream(tokens=2, token_delay_ms=0).start_in_thread()
    try:
        async def body():
            async with aiohttp.ClientSession() as s:
                resp = await _post(s, up)
                await resp.read()
            rec = await up.wait_stream_closed(0, 5)
            assert rec is not None and rec.completed

        run(body())
    finally:
        up.stop()
    proc = subprocess.Popen([sys.executable, "-m", "harness.upstream.fake", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert re.fullmatch(r"LISTENING 127\.0\.0\.1:\d+\n", line)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_marker_in_the_prompt_shapes_the_stream():
    """The reply options a scenario asked for reach the fake inside the user's message and shape its stream."""
    from harness.protocol.shape import parse_shape, shape_marker

    marker = shape_marker({"chunks": 3, "chunk_delay_ms": 1, "block_ms": 50, "agent": "ignored"})
    assert marker == " [[wschaos chunks=3 chunk_delay_ms=1 block_ms=50]]"
    assert parse_shape([{"type": "text", "text": "hi" + marker}]) == {"chunks": 3, "chunk_delay_ms": 1, "block_ms": 50}
    assert parse_shape("no marker here") == {} and shape_marker({"agent": "async"}) == ""

    async def body():
        async with FakeUpstream(tokens=500, token_delay_ms=20) as up, aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            resp = await s.post(up.base_url + "/chat/completions", json={
                "model": "m", "stream": True, "messages": [{"role": "user", "content": "story" + marker}]})
            lines = [ln.decode().strip() async for ln in resp.content if ln.strip()]
            assert len(lines) == 4 and lines[-1] == "data: [DONE]"  # 3 tokens, not the default 500
            assert time.monotonic() - t0 >= 0.05  # the stall before the first token

    run(body())


def test_a_declared_upstream_is_started_for_the_case_and_named_by_the_targets_variable(tmp_path):
    """[target.upstream]: every case gets the fake under the target's own variable, replies shaped by the case."""
    from dataclasses import replace

    from harness.core.timing import scaled
    from harness.engine.scenario import Case, run_case_sync
    from harness.target.declared import Upstream
    from harness.target.spec import reference_target

    seen: dict[str, object] = {}

    async def case(ctx) -> None:  # type: ignore[no-untyped-def]
        sup = await ctx.start_target()
        c = await ctx.client(sup)
        reply = await c.reply(await c.request("hello", agent="upstream", chunks=4, chunk_delay_ms=1), scaled(5))
        seen["chunks"] = len(reply.seqs)
        seen["env"] = sup.env.get("MY_LLM_URL")
        seen["fake"] = ctx._upstreams[0].base_url
        ctx.check(__import__("harness.checkers", fromlist=["x"]).process_alive(sup.is_running()))

    # The reference server reads OPENAI_BASE_URL; the declared variables are set for it.
    target = replace(reference_target(), upstream=Upstream(env=("OPENAI_BASE_URL", "MY_LLM_URL")))
    out = run_case_sync(Case(scenario="upstream.test", name="x", fn=case), target, seed=1, run_dir=tmp_path)
    assert [v.status for v in out.verdicts] == ["pass"], out.verdicts
    assert seen["env"] == seen["fake"] and seen["chunks"] == 4
