"""Bad input: every row of the protocol's table, then thousands of generated malformed frames."""

from __future__ import annotations

import json
import random
from typing import Any

from harness import checkers
from harness.core.timing import now_ns, scaled
from harness.engine.actions import count_errors, heartbeat_ok, send_expect_error, stats_sample
from harness.engine.scenario import Context, scenario

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


#: Values that are never a valid string field (and never a valid object payload).
NOT_STRING: list[Any] = [None, True, 1.5, -1, [], {}, ["x"], {"a": [1, {"b": None}]}]
#: Valid text that must still be handled: NUL, astral, right-to-left, long. (A lone
#: surrogate is left out: it cannot even be encoded into a text frame.)
ODD_TEXT = ["", "\u0000", "\U0001f600", "\u202e", "x" * 300]


def _valid(rng: random.Random, i: int) -> dict[str, Any]:
    kind = rng.choice(["REQUEST", "INTERRUPT", "SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH", "HEARTBEAT"])
    payload: dict[str, Any] = {
        "REQUEST": {"text": rng.choice(ODD_TEXT)},
        "INTERRUPT": {"target_request_id": f"g{i}", "reason": "fuzz"},
        "SUBSCRIBE": {"topic": rng.choice(ODD_TEXT)},
        "UNSUBSCRIBE": {"topic": rng.choice(ODD_TEXT)},
        "PUBLISH": {"topic": rng.choice(ODD_TEXT), "data": {"n": i}},
        "HEARTBEAT": {},
    }[kind]
    return {"msg_type": kind, "request_id": f"g{i}", "payload": payload}


def _break(rng: random.Random, msg: dict[str, Any]) -> dict[str, Any]:
    """Break exactly one rule of a valid message, so the server must answer ERROR."""
    kind = msg["msg_type"]
    required = {"REQUEST": ["text"], "INTERRUPT": [], "SUBSCRIBE": ["topic"], "UNSUBSCRIBE": ["topic"],
                "PUBLISH": ["topic", "data"], "HEARTBEAT": []}[kind]
    choices = ["type", "payload"] + (["request_id"] if kind in ("REQUEST", "INTERRUPT") else [])
    choices += [f"drop:{k}" for k in required] + [f"retype:{k}" for k in required if k != "data"]
    if kind == "INTERRUPT":
        choices.append("retype:target_request_id")
    how = rng.choice(choices)
    if how == "type":
        msg["msg_type"] = rng.choice(["NOPE", "", "request", 3, None, ["REQUEST"]])
    elif how == "payload":
        # Not null: a server may fairly read a null payload as the empty one.
        msg["payload"] = rng.choice([3, "text", ["x"], True])
    elif how == "request_id":
        if rng.random() < 0.3:
            del msg["request_id"]
        else:
            msg["request_id"] = rng.choice(NOT_STRING)
    elif how.startswith("drop:"):
        del msg["payload"][how[5:]]
    else:
        field_name = how[7:]
        bad = [v for v in NOT_STRING if v is not None] if field_name == "target_request_id" else NOT_STRING
        msg["payload"][field_name] = rng.choice(bad)
    return msg


def generated_frames(rng: random.Random, n: int) -> list[str | bytes]:
    """Seeded malformed frames, each invalid by construction: broken JSON, JSON that is not
    an object, binary frames, and valid messages with exactly one rule broken."""
    out: list[str | bytes] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.15:
            good = json.dumps(_valid(rng, i))
            out.append(good[: rng.randrange(1, len(good))])  # a cut before the closing brace
        elif roll < 0.25:
            out.append(json.dumps(rng.choice([*NOT_STRING[:4], *ODD_TEXT, [1, 2]])))
        elif roll < 0.3:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
        else:
            out.append(json.dumps(_break(rng, _valid(rng, i)), ensure_ascii=rng.random() < 0.5))
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
    before = await stats_sample(ctx, sup)
    stream = await bystander.request("bystander", chunks=200, chunk_delay_ms=10)
    batch = generated_frames(ctx.rng, frames)
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
    after = await stats_sample(ctx, sup)
    # The oversize sender's session is gone; nothing else may have changed.
    ctx.check(checkers.stats_unchanged(before, after, keys=("connections", "sessions", "active_requests", "subscriptions"),
                                       expected_delta={"connections": -1, "sessions": -1}))
