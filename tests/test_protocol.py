"""The sans-I/O protocol: every server frame classified, every client message encoded."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocol.frames import (
    KINDS,
    REPLY_KINDS,
    Frame,
    InterruptResult,
    classify,
    encode_heartbeat,
    encode_interrupt,
    encode_publish,
    encode_request,
    encode_subscribe,
    encode_unsubscribe,
    frame_record,
)

RECORD_KEYS = {"kind", "msg_type", "request_id", "session_id", "seq", "final", "interrupted", "reason",
               "status", "interrupted_ids", "code", "topic", "data"}


def server(msg_type: str, payload: dict | None = None, request_id: str | None = None) -> str:
    obj = {"msg_type": msg_type, "session_id": "s1", "payload": payload or {}, "timestamp": 1.0}
    if request_id is not None:
        obj["request_id"] = request_id
    return json.dumps(obj)


def test_session_ready_is_ready_with_the_session_id():
    """SESSION_READY is the ready frame and names the session."""
    f = classify(server("SESSION_READY", {"session_id": "s1", "heartbeat_interval_s": 10}), 7)
    assert (f.kind, f.session_id, f.t_ns) == ("ready", "s1", 7)


def test_ready_takes_the_session_id_from_the_payload_when_the_envelope_lacks_it():
    """The payload's session_id is enough for a ready frame."""
    f = classify(json.dumps({"msg_type": "SESSION_READY", "payload": {"session_id": "s9"}}))
    assert f.session_id == "s9"


def test_response_chunk_and_final():
    """RESPONSE is a chunk until payload.final, then the final frame with its outcome."""
    chunk = classify(server("RESPONSE", {"seq": 3, "delta": "ab", "final": False}, "r1"))
    final = classify(server("RESPONSE", {"seq": 4, "delta": "", "final": True, "interrupted": True,
                                         "reason": "user"}, "r1"))
    assert (chunk.kind, chunk.seq, chunk.delta, chunk.final, chunk.interrupted) == ("chunk", 3, "ab", False, None)
    assert (final.kind, final.final, final.interrupted, final.reason) == ("final", True, True, "user")
    assert final.request_id == "r1"


def test_interrupt_ack_names_the_interrupted_ids():
    """INTERRUPT_ACK carries the status and the ids it interrupted (not a bool)."""
    f = classify(server("INTERRUPT_ACK", {"status": "SUCCESS", "interrupted": ["r1", "r2"],
                                          "interrupted_count": 2}, "i1"))
    assert (f.kind, f.status, f.interrupted_ids, f.interrupted_count) == ("ack", "SUCCESS", ["r1", "r2"], 2)
    assert f.interrupted is None  # only a final frame is "interrupted"


def test_heartbeat_ack_event_error_unknown():
    """The remaining server types each get their kind; a new msg_type is unknown, not an error."""
    assert classify(server("HEARTBEAT_ACK", {"server_time": 1.5})).kind == "heartbeat_ack"
    ev = classify(server("EVENT", {"topic": "t", "data": {"x": 1}}))
    assert (ev.kind, ev.topic, ev.data) == ("event", "t", {"x": 1})
    err = classify(server("ERROR", {"code": "BAD_JSON", "message": "no"}, "r1"))
    assert (err.kind, err.code, err.message, err.request_id) == ("error", "BAD_JSON", "no", "r1")
    assert classify(server("SOMETHING_NEW")).kind == "unknown"


@pytest.mark.parametrize("raw, problem", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON list, not an object"),
    ('{"payload": {}}', "msg_type missing or not a string"),
    ('{"msg_type": "RESPONSE", "payload": 5}', "payload is not an object"),
    (b"\x00\x01", "binary frame"),
])
def test_malformed_frames_are_invalid_not_exceptions(raw, problem):
    """Garbage from the server is an observation (kind invalid), never a crash."""
    f = classify(raw, 1)
    assert (f.kind, f.problem) == ("invalid", problem)
    assert frame_record(f)["kind"] == "invalid"


def test_frame_record_has_exactly_the_conventions_keys():
    """The observation data is the ARCHITECTURE.md record, absent fields None."""
    for raw in (server("SESSION_READY"), server("RESPONSE", {"seq": 0, "final": False}, "r"), "nope"):
        rec = frame_record(classify(raw))
        assert set(rec) == RECORD_KEYS
        assert rec["kind"] in KINDS
    assert frame_record(classify(server("HEARTBEAT_ACK")))["seq"] is None


def test_adapter_fields_take_precedence_over_the_payload():
    """A declarative adapter's extracted fields win over reference payload names."""
    f = Frame("chunk", "TEXT", "r1", None, {"seq": 99}, "{}", 0, fields={"seq": 2})
    assert f.seq == 2


def test_encoders_follow_the_envelope():
    """Each client message has msg_type, its ids, a payload object and a timestamp."""
    req = json.loads(encode_request("r1", "hi", {"chunks": 2}))
    assert (req["msg_type"], req["request_id"], req["payload"]) == ("REQUEST", "r1", {"text": "hi", "options": {"chunks": 2}})
    assert isinstance(req["timestamp"], float)
    assert "options" not in json.loads(encode_request("r2", "hi"))["payload"]
    intr = json.loads(encode_interrupt("i1", None, "user"))
    assert (intr["msg_type"], intr["request_id"], intr["payload"]) == (
        "INTERRUPT", "i1", {"target_request_id": None, "reason": "user"})
    assert json.loads(encode_heartbeat())["payload"] == {}
    assert json.loads(encode_subscribe("t"))["payload"] == {"topic": "t"}
    assert json.loads(encode_unsubscribe("t"))["msg_type"] == "UNSUBSCRIBE"
    assert json.loads(encode_publish("t", [1]))["payload"] == {"topic": "t", "data": [1]}
    assert json.loads(encode_request("r1", "x", session_id="s1"))["session_id"] == "s1"


def test_reply_is_assembled_from_frames():
    """A reply's timings run from the send; an interrupted final marks it interrupted."""
    from harness.protocol.frames import Reply

    chunks = [classify(server("RESPONSE", {"seq": i, "delta": "a", "final": False}, "r1"), 2_000_000 + i)
              for i in range(2)]
    final = classify(server("RESPONSE", {"seq": 2, "final": True, "interrupted": True, "reason": "user"}, "r1"),
                     5_000_000)
    reply = Reply.assemble("r1", chunks, final, None, 1_000_000)
    assert (reply.complete, reply.interrupted, reply.reason, reply.seqs, reply.text) == (
        True, True, "user", [0, 1], "aa")
    assert (reply.first_chunk_ms, reply.total_ms) == (1.0, 4.0)
    assert not Reply.assemble("r1", [], None, None, 0).complete


def test_meta_frames_belong_to_a_reply_without_being_a_piece_of_it():
    """meta is a kind of its own: neither a chunk nor a final, part of the reply kinds."""
    assert "meta" in KINDS and set(REPLY_KINDS) == {"chunk", "final", "meta"}
    meta = Frame("meta", "start", "r1", None, {}, "{}", 1)
    assert (meta.final, meta.interrupted, meta.delta) == (None, None, None)


def test_a_final_whose_service_does_not_say_is_neither_interrupted_nor_not():
    """fields interrupted None means "not said": interrupted is None, not False; derived values are recorded."""
    unsaid = Frame("final", "done", "r1", None, {}, "{}", 1, {"interrupted": None})
    assert unsaid.interrupted is None and frame_record(unsaid)["interrupted"] is None
    assert "derived" not in frame_record(unsaid)
    said = replace(unsaid, fields={"interrupted": True}, derived=("interrupted",))
    assert said.interrupted is True and frame_record(said)["derived"] == ["interrupted"]
    assert Frame("final", "done", "r1", None, {}, "{}", 1).interrupted is False  # the reference default


def test_an_interrupt_result_says_what_answered_it():
    """answered_by and answer default to None, so results built the old way keep their meaning."""
    res = InterruptResult("i1", "r1", None, None, 0, None)
    assert (res.answered_by, res.answer, res.status, res.interrupted_ids) == (None, None, None, [])


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.text(max_size=3), st.floats(allow_nan=False),
                    st.lists(st.one_of(st.integers(0, 3), st.text(max_size=2)), max_size=2))


@settings(deadline=None)  # a first example may pay for imports: never a timing test
@given(kind=st.sampled_from(["ready", "chunk", "final", "ack", "heartbeat_ack", "event", "error", "unknown"]),
       payload=st.dictionaries(st.sampled_from(["seq", "interrupted", "code", "reason", "status", "topic", "data"]),
                               _VALUES))
def test_the_fast_frame_record_is_the_frame_read_through_its_properties(kind: str, payload: dict) -> None:
    """frame_record's fast path (values in the payload) gives what the Frame's properties say."""
    f = Frame(kind, "M", "r1", "s1", payload, "raw", 0)
    assert frame_record(f) == {
        "kind": f.kind, "msg_type": f.msg_type, "request_id": f.request_id, "session_id": f.session_id,
        "seq": f.seq, "final": f.final, "interrupted": f.interrupted, "reason": f.reason, "status": f.status,
        "interrupted_ids": f.interrupted_ids, "code": f.code, "topic": f.topic, "data": f.data}
