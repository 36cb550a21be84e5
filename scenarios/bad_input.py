"""Bad input: every row of the protocol's table, then thousands of generated malformed frames."""

from __future__ import annotations

import json
import random
from typing import Any

from harness import checkers
from harness.actions import count_errors_after_heartbeat, heartbeat_ok, send_expect_error, stats_sample
from harness.scenario import Context, scenario
from harness.timing import scaled

#: (label, frame to send, expected ERROR code). Built fresh per run: request ids must be unique.
TABLE: list[tuple[str, Any, str]] = [
    ("not json", "{this is not json", "BAD_JSON"),
    ("json array", "[1, 2, 3]", "BAD_JSON"),
    ("json string", '"hello"', "BAD_JSON"),
    ("unknown type", {"msg_type": "DANCE", "payload": {}}, "UNKNOWN_TYPE"),
    ("missing msg_type", {"payload": {}}, "BAD_MESSAGE"),
    ("request without id", {"msg_type": "REQUEST", "payload": {"text": "x"}}, "BAD_MESSAGE"),
    ("request text wrong type", {"msg_type": "REQUEST", "request_id": "bad-1", "payload": {"text": 5}}, "BAD_MESSAGE"),
    ("payload not an object", {"msg_type": "REQUEST", "request_id": "bad-2", "payload": "text"}, "BAD_MESSAGE"),
    ("subscribe without topic", {"msg_type": "SUBSCRIBE", "payload": {}}, "BAD_MESSAGE"),
    ("publish without data", {"msg_type": "PUBLISH", "payload": {"topic": "t"}}, "BAD_MESSAGE"),
    ("interrupt target wrong type", {"msg_type": "INTERRUPT", "request_id": "i-1", "payload": {"target_request_id": 7}}, "BAD_MESSAGE"),
    ("binary frame", b"\x00\x01binary", "BAD_MESSAGE"),
]


def generated_frames(rng: random.Random, n: int) -> list[str | bytes]:
    """Seeded malformed frames: broken JSON, wrong shapes, wrong types, odd unicode, binary."""
    types = ["REQUEST", "INTERRUPT", "HEARTBEAT", "SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH", "NOPE", "", None, 3]
    junk: list[Any] = [None, True, 1.5, -1, "", "\u0000", "\udcff", [], {}, "x" * 300, {"a": [1, {"b": None}]}]
    out: list[str | bytes] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.15:
            good = json.dumps({"msg_type": "REQUEST", "request_id": f"g{i}", "payload": {"text": "x"}})
            cut = rng.randrange(1, len(good))
            out.append(good[:cut])  # truncated JSON
        elif roll < 0.25:
            out.append(json.dumps(rng.choice(junk)))  # JSON, not an object
        elif roll < 0.3:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
        else:
            msg: dict[str, Any] = {"msg_type": rng.choice(types)}
            if rng.random() < 0.7:
                msg["payload"] = rng.choice([*junk, {"text": rng.choice(junk)}, {"topic": rng.choice(junk)},
                                             {"target_request_id": rng.choice(junk)}])
            if rng.random() < 0.5:
                msg["request_id"] = rng.choice(junk)
            if msg["msg_type"] in ("HEARTBEAT",) and isinstance(msg.get("payload"), dict):
                msg["payload"] = "not-an-object"  # keep every generated frame invalid
            out.append(json.dumps(msg, ensure_ascii=rng.random() < 0.5))
    return out


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
        answer = await send_expect_error(bad, raw, scaled(2))
        ctx.check(checkers.error_code(answer, code, what=label))
        ctx.check(checkers.connection_usable(await heartbeat_ok(bad, scaled(2)), what=f"after {label}"))
    # A duplicate of an active request id, then more than max_concurrent_requests at once.
    dup = await bad.request("long", request_id="dup-1", chunks=1000, chunk_delay_ms=10)
    answer = await send_expect_error(bad, json.dumps(
        {"msg_type": "REQUEST", "request_id": dup, "payload": {"text": "again"}}), scaled(2))
    ctx.check(checkers.error_code(answer, "DUPLICATE_REQUEST", what="duplicate active request id"))
    for _ in range(ctx.limits.max_concurrent_requests - 1):
        await bad.request("long", chunks=1000, chunk_delay_ms=10)
    answer = await send_expect_error(bad, json.dumps(
        {"msg_type": "REQUEST", "request_id": "one-too-many", "payload": {"text": "x"}}), scaled(2))
    ctx.check(checkers.error_code(answer, "BUSY", what=f"request {ctx.limits.max_concurrent_requests + 1}"))
    await bad.interrupt(None, timeout=scaled(2))
    ctx.check(checkers.connection_usable(await heartbeat_ok(bad, scaled(2)), what="after BUSY"))
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
    before = await stats_sample(ctx, sup)
    stream = await bystander.request("bystander", chunks=200, chunk_delay_ms=10)
    batch = generated_frames(ctx.rng, frames)
    errors = 0
    for i in range(0, len(batch), 100):
        for f in batch[i:i + 100]:
            await fuzz.send_raw(f)
        # The server answers in order: once the HEARTBEAT_ACK is in, every ERROR before it is too.
        errors = await count_errors_after_heartbeat(fuzz, scaled(5))
    ctx.figure("malformed_frames", len(batch))
    ctx.figure("errors_received", errors)
    ctx.check(checkers.errors_for_all(errors, len(batch)))
    ctx.check(checkers.connection_usable(await heartbeat_ok(fuzz, scaled(2)), what="after the generated frames"))
    # One frame over the size limit: only that connection closes, with 1009.
    await big.send_raw("x" * (ctx.limits.max_size + 1024))
    closed = await big.wait_closed(scaled(3))
    ctx.check(checkers.closed_code(closed, 1009, what="oversize frame sender"))
    ctx.check(checkers.connection_usable(await heartbeat_ok(fuzz, scaled(2)), what="other session after the oversize frame"))
    await bystander.reply(stream, scaled(10))
    ctx.check(checkers.request_completes(ctx.history, stream, client=bystander.name))
    ctx.check(checkers.process_alive(sup.is_running()))
    after = await stats_sample(ctx, sup)
    # The oversize sender's session is gone; nothing else may have changed.
    ctx.check(checkers.stats_unchanged(before, after, keys=("connections", "sessions", "active_requests", "subscriptions"),
                                       expected_delta={"connections": -1, "sessions": -1}))
