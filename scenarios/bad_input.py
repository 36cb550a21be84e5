"""Bad input: every row of the protocol's table, then thousands of generated malformed frames."""

from __future__ import annotations

import json

from harness import checkers
from harness.core.timing import now_ns, scaled
from harness.engine.actions import count_errors, heartbeat_ok, send_expect_error
from harness.engine.scenario import Context, scenario
from harness.explore import strategies

#: (label, frame to send, expected ERROR code): the protocol's table, kept with the strategies.
TABLE = strategies.TABLE


def generated_frames(seed: int, n: int) -> list[str | bytes]:
    """``n`` malformed frames for ``seed``, each invalid by construction (see
    :func:`harness.explore.strategies.bad_frames`): broken JSON, JSON that is not an
    object, binary frames, and valid messages with exactly one rule broken."""
    return [f.raw for f in strategies.sample_bad_frames(seed, n)]


@scenario("bad_input.table", timeout_s=30)
async def table(ctx: Context) -> None:
    """1. Open a bystander session streaming a reply, and a session that misbehaves.
    2. Send every row of the protocol's bad-input table, a duplicate request id, more
    requests than allowed at once, each followed by a HEARTBEAT.
    3. Result: the right ERROR code each time, the connection still usable (HEARTBEAT_ACK),
    the bystander's reply complete and gap-free."""
    sup = await ctx.start_target()
    bad, bystander = await ctx.clients(sup, 2)
    stream = await bystander.request("bystander", chunks=100, chunk_delay_ms=10)
    for label, frame, code in TABLE:
        raw = frame if isinstance(frame, (str, bytes)) else json.dumps(frame)
        since = now_ns()
        answer = await send_expect_error(bad, raw, scaled(2))
        ctx.check(checkers.error_code(answer, code).labelled(label))
        await heartbeat_ok(bad, scaled(2))
        ctx.check(checkers.connection_usable(ctx.history, bad.name, since).labelled(label))
    # A duplicate of an active request id, then more than max_concurrent_requests at once.
    dup = await bad.request("long", request_id="dup-1", chunks=1000, chunk_delay_ms=10)
    answer = await send_expect_error(bad, json.dumps(
        {"msg_type": "REQUEST", "request_id": dup, "payload": {"text": "again"}}), scaled(2))
    ctx.check(checkers.error_code(answer, "DUPLICATE_REQUEST").labelled("duplicate active request id"))
    for _ in range(ctx.limits.max_concurrent_requests - 1):
        await bad.request("long", chunks=1000, chunk_delay_ms=10)
    answer = await send_expect_error(bad, json.dumps(
        {"msg_type": "REQUEST", "request_id": "one-too-many", "payload": {"text": "x"}}), scaled(2))
    ctx.check(checkers.error_code(answer, "BUSY").labelled(f"request {ctx.limits.max_concurrent_requests + 1} at once"))
    since = now_ns()
    await bad.interrupt(None, timeout=scaled(2))
    await heartbeat_ok(bad, scaled(2))
    ctx.check(checkers.connection_usable(ctx.history, bad.name, since).labelled("after BUSY"))
    await bystander.reply(stream, scaled(10))
    ctx.check(checkers.request_completes(ctx.history, stream, client=bystander.name))
    ctx.check(checkers.seq_gap_free(ctx.history))


@scenario("bad_input.generated", cases={"2000": {"frames": 2000}}, timeout_s=40)
async def generated(ctx: Context, frames: int) -> None:
    """1. Open a bystander session streaming a reply and note /stats.
    2. Send a few thousand seeded malformed frames on one session, then one frame over
    the size limit on another.
    3. Result: an ERROR for every malformed frame with the connection still usable, 1009
    only for the oversize sender, the bystander unaffected, the process alive and its
    stats as before."""
    sup = await ctx.start_target()
    fuzz, big, bystander = await ctx.clients(sup, 3)
    before = await ctx.probes.stats(sup)
    stream = await bystander.request("bystander", chunks=200, chunk_delay_ms=10)
    batch = generated_frames(ctx.rng.randrange(2**32), frames)
    started = now_ns()
    for f in batch:
        await fuzz.send_raw(f)
    # ERRORs need not come in order with other answers: wait for the count, bounded.
    errors = await count_errors(fuzz, len(batch), scaled(5))
    ctx.figure("malformed_frames", len(batch))
    ctx.figure("errors_received", errors)
    ctx.check(checkers.errors_for_all(errors, len(batch)))
    await heartbeat_ok(fuzz, scaled(2))
    ctx.check(checkers.connection_usable(ctx.history, fuzz.name, started).labelled("after the generated frames"))
    # One frame over the size limit: only that connection closes, with 1009.
    since = now_ns()
    await big.send_raw("x" * (ctx.limits.max_size + 1024))
    await big.wait_closed(scaled(3))
    ctx.check(checkers.closed_with(ctx.history, big.name, 1009).labelled("oversize frame sender"))
    await heartbeat_ok(fuzz, scaled(2))
    ctx.check(checkers.connection_usable(ctx.history, fuzz.name, since).labelled("another session after the oversize frame"))
    await bystander.reply(stream, scaled(10))
    ctx.check(checkers.request_completes(ctx.history, stream, client=bystander.name))
    ctx.check(checkers.process_alive(sup.is_running()))
    after = await ctx.probes.stats(sup)
    # The oversize sender's session is gone; nothing else may have changed.
    ctx.check(checkers.stats_unchanged(before, after, keys=("connections", "sessions", "active_requests", "subscriptions"),
                                       expected_delta={"connections": -1, "sessions": -1}))
