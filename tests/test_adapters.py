"""Adapters without sockets: loading, declarative parsing and its errors, classification."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.protocol.adapters import (
    AdapterError,
    DeclarativeAdapter,
    HandshakeError,
    ReferenceAdapter,
    Unsupported,
    load_adapter,
)
from harness.protocol.frames import Frame
from harness.target.spec import load_target

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "declarative_target.toml"


@pytest.fixture(scope="module")
def example_config() -> dict[str, Any]:
    return dict(load_target(EXAMPLE).adapter_config)


@pytest.fixture(scope="module")
def talk(example_config) -> DeclarativeAdapter:
    return DeclarativeAdapter(example_config, source="example")


def test_reference_is_the_default():
    """No adapter named, "reference", or a target without one: the reference adapter."""
    assert isinstance(load_adapter(), ReferenceAdapter)
    assert isinstance(load_adapter("reference"), ReferenceAdapter)


def test_the_example_target_file_loads_a_declarative_adapter():
    """examples/declarative_target.toml is valid as documented."""
    adapter = load_adapter(load_target(EXAMPLE))
    assert isinstance(adapter, DeclarativeAdapter)


def test_declarative_classifies_the_talk_protocol(talk):
    """Chunks, the -1 final, the ACK, the error and the ready frame are recognised by the example's rules."""
    def frame(obj: dict) -> Frame:
        return talk.classify(json.dumps(obj), 5)

    chunk = frame({"type": "TEXT_STREAM", "id": "r1", "payload": {"text_stream_seq": 0, "text": "a"}})
    assert (chunk.kind, chunk.request_id, chunk.seq, chunk.delta, chunk.t_ns) == ("chunk", "r1", 0, "a", 5)
    final = frame({"type": "TEXT_STREAM", "id": "r1", "payload": {"text_stream_seq": -1, "cancelled": True,
                                                                 "why": "user"}})
    assert (final.kind, final.final, final.interrupted, final.reason) == ("final", True, True, "user")
    ack = frame({"type": "CANCEL_ACK", "id": "i1", "payload": {"result": "ok", "cancelled_ids": ["r1"]}})
    assert (ack.kind, ack.status, ack.interrupted_ids, ack.interrupted_count) == ("ack", "SUCCESS", ["r1"], 1)
    missing = frame({"type": "CANCEL_ACK", "id": "i2", "payload": {"result": "missing", "cancelled_ids": []}})
    assert missing.status == "NOT_FOUND"
    err = frame({"type": "FAULT", "id": "r9", "payload": {"error_code": "AUTH", "error": "no"}})
    assert (err.kind, err.code, err.message) == ("error", "AUTH", "no")
    ready = frame({"type": "REGISTER_ACK", "id": "hs-1", "payload": {"session": {"id": "t7"}}})
    assert (ready.kind, ready.session_id) == ("ready", "t7")
    assert frame({"type": "PONG", "id": "h1"}).kind == "heartbeat_ack"
    assert frame({"type": "NEWS"}).kind == "unknown"
    assert talk.classify("nope").kind == "invalid"
    assert talk.classify("[]").kind == "invalid"


def test_declarative_encodes_from_templates(talk):
    """Placeholders are filled; an exact placeholder keeps its type; options go to options_path."""
    req = json.loads(talk.encode_request("r1", "hi", {"chunks": 2}, "t1"))
    assert req == {"type": "TEXT_REQUEST", "id": "r1", "session": "t1",
                   "payload": {"text": "hi", "options": {"chunks": 2}}}
    intr = json.loads(talk.encode_interrupt("i1", None, "user"))
    assert intr["payload"] == {"target": None, "why": "user"}
    assert json.loads(talk.encode_heartbeat("h1")) == {"type": "PING", "id": "h1"}
    with pytest.raises(Unsupported, match="subscribe"):
        talk.encode_subscribe("t", "s1")


def test_declarative_handshake_waits_for_the_ack_echoing_its_id(talk):
    """REGISTER is sent; an ACK for another id is skipped; the matching one opens the session."""
    sent: list[dict] = []

    async def scenario() -> Frame:
        queue: asyncio.Queue[Frame] = asyncio.Queue()

        async def send(data):
            # The server answers: first someone else's ACK, then ours.
            sent.append(json.loads(data))
            for obj in ({"type": "REGISTER_ACK", "id": "someone-else", "payload": {"session": {"id": "x"}}},
                        {"type": "REGISTER_ACK", "id": sent[0]["id"], "payload": {"session": {"id": "t1"}}}):
                queue.put_nowait(talk.classify(json.dumps(obj)))

        return await asyncio.wait_for(talk.handshake(send, queue.get), 5)

    ready = asyncio.run(scenario())
    assert sent[0]["type"] == "REGISTER" and sent[0]["payload"]["token"] == "letmein"
    assert ready.session_id == "t1"


def test_declarative_handshake_fails_on_an_error_frame(talk):
    """A FAULT before the ACK is a HandshakeError carrying the frame."""
    async def send(data):
        pass

    async def recv() -> Frame:
        return talk.classify(json.dumps({"type": "FAULT", "payload": {"error_code": "AUTH"}}))

    with pytest.raises(HandshakeError, match="AUTH") as info:
        asyncio.run(asyncio.wait_for(talk.handshake(send, recv), 5))
    assert info.value.frame is not None


def test_unquoted_dotted_keys_read_as_paths(example_config):
    """`payload.text_stream_seq = -1` (a nested table in TOML) means the same path."""
    cfg = copy.deepcopy(example_config)
    cfg["match"] = [{"kind": "final", "when": {"type": "TEXT_STREAM", "payload": {"text_stream_seq": -1}}},
                    {"kind": "chunk", "when": {"type": "TEXT_STREAM"}}]
    a = DeclarativeAdapter(cfg)
    assert a.classify(json.dumps({"type": "TEXT_STREAM", "payload": {"text_stream_seq": -1}})).kind == "final"


def test_conditions_lists_and_exists(example_config):
    """A list condition is one-of; {exists} tests presence; true never equals 1."""
    cfg = copy.deepcopy(example_config)
    cfg["match"] = [{"kind": "error", "when": {"type": ["FAULT", "OOPS"]}},
                    {"kind": "event", "when": {"topic": {"exists": True}}},
                    {"kind": "final", "when": {"done": True}}]
    a = DeclarativeAdapter(cfg)
    assert a.classify('{"type": "OOPS"}').kind == "error"
    assert a.classify('{"topic": null}').kind == "event"
    assert a.classify('{"done": 1}').kind == "unknown"
    assert a.classify('{"done": true}').kind == "final"


def _bad(example_config, change) -> str:
    cfg = copy.deepcopy(example_config)
    change(cfg)
    with pytest.raises(AdapterError) as info:
        DeclarativeAdapter(cfg, source="t.toml")
    msg = str(info.value)
    assert msg.startswith("t.toml: ") and "\n" not in msg
    return msg


def test_config_errors_name_the_bad_key(example_config):
    """Every bad declarative config is one line naming the key."""
    assert "adapter_config.reqest" in _bad(example_config, lambda c: c.update(reqest={}))
    assert "adapter_config.request.template" in _bad(example_config, lambda c: c.pop("request"))
    assert "adapter_config.interrupt.template" in _bad(example_config, lambda c: c["interrupt"].pop("template"))
    assert "{txt}" in _bad(example_config, lambda c: c["request"]["template"].update(text="{txt}"))
    assert "match[1].kind" in _bad(example_config, lambda c: c["match"][1].update(kind="chunky"))
    assert "match[0].when" in _bad(example_config, lambda c: c["match"][0].pop("when"))
    assert "adapter_config.match" in _bad(example_config, lambda c: c.update(match=[]))
    assert "adapter_config.fields.sequence" in _bad(example_config, lambda c: c["fields"].update(sequence="x"))
    assert "adapter_config.fields.seq" in _bad(example_config, lambda c: c["fields"].update(seq=3))
    assert "handshake.ready" in _bad(example_config, lambda c: c["handshake"].pop("ready"))
    assert "handshake.wiat" in _bad(example_config, lambda c: c["handshake"].update(wiat=False))
    assert "exists" in _bad(example_config, lambda c: c["match"][0]["when"].update(x={"exists": "yes"}))


def test_declarative_without_config_is_an_error():
    """adapter = "declarative" with no table says so."""
    with pytest.raises(AdapterError, match="needs an \\[adapter_config\\]"):
        load_adapter("declarative")


def test_import_path_adapter(tmp_path, monkeypatch):
    """"module:Class" imports a class, built with adapter_config when one is given."""
    (tmp_path / "my_adapter.py").write_text(textwrap.dedent("""
        from harness.protocol.adapters import ReferenceAdapter

        class Mine(ReferenceAdapter):
            name = "mine"
            def __init__(self, config=None):
                self.config = config

        class NotOne:
            pass

        class Broken(ReferenceAdapter):
            def __init__(self, config=None):
                raise KeyError("token")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_adapter", raising=False)
    a = load_adapter("my_adapter:Mine", config={"k": 1})
    assert a.name == "mine" and a.config == {"k": 1}
    with pytest.raises(AdapterError, match="cannot import 'no_such_mod'"):
        load_adapter("no_such_mod:X")
    with pytest.raises(AdapterError, match="has no 'Missing'"):
        load_adapter("my_adapter:Missing")
    with pytest.raises(AdapterError, match="is not an adapter: it lacks classify"):
        load_adapter("my_adapter:NotOne")
    with pytest.raises(AdapterError, match="could not be built: KeyError"):
        load_adapter("my_adapter:Broken")
    with pytest.raises(AdapterError, match="is not 'reference', 'declarative'"):
        load_adapter("my_adapter")


# -- agent back ends: order, answers, binary frames, sessions ---------------------------

AGENTS = ROOT / "tests" / "fixtures" / "agents"


def _agent_config(name: str) -> dict[str, Any]:
    return copy.deepcopy(dict(load_target(AGENTS / f"{name}.toml").adapter_config))


def test_binary_frames_are_classified_by_prefix_and_size_with_their_frame_number():
    """voice_agent's audio: AUD0 and 320 bytes is a chunk numbered from its bytes 4-8; anything else is invalid."""
    voice = load_adapter(load_target(AGENTS / "voice_agent.toml"))
    audio = b"AUD0" + (7).to_bytes(4, "little") + bytes(312)
    chunk = voice.classify(audio, 9)
    assert (chunk.kind, chunk.seq, chunk.request_id, chunk.t_ns, chunk.delta) == ("chunk", 7, None, 9, None)
    short = voice.classify(audio[:100])
    assert short.kind == "invalid" and "100 bytes" in short.problem and "adapter_config.binary" in short.problem
    assert voice.classify(b"RIFF" + bytes(316)).kind == "invalid"
    assert voice.classify(b"").kind == "invalid"
    assert voice.classify('{"type": "speech_start", "role": "agent"}').kind == "meta"
    assert voice.classify('{"type": "speech_end", "role": "user"}').kind == "unknown"


def test_binary_shorthand_hex_prefixes_and_size_ranges():
    """"chunk of the active request", prefix_hex and min/max sizes all select binary frames."""
    cfg = _agent_config("voice_agent")
    cfg["binary"] = "chunk of the active request"
    assert DeclarativeAdapter(cfg).classify(b"\x00\x01").kind == "chunk"
    cfg["binary"] = [{"kind": "meta", "prefix_hex": "ff00", "min_size": 3, "max_size": 4},
                     {"kind": "chunk", "min_size": 5}]
    a = DeclarativeAdapter(cfg)
    assert [a.classify(b).kind for b in (b"\xff\x00\x01", b"\xff\x00", b"\xff\x00\x01\x02\x03", b"ab")] == \
        ["meta", "invalid", "chunk", "invalid"]


def test_interrupted_is_a_path_a_condition_or_not_said():
    """fields.interrupted: stopped = true, finish_reason == "interrupted", or false (the service does not say)."""
    path = load_adapter(load_target(AGENTS / "path_sessions.toml"))
    assert path.classify('{"type": "turn_done", "stopped": true}').interrupted is True
    assert path.classify('{"type": "turn_done"}').interrupted is False
    llm = load_adapter(load_target(AGENTS / "llm_proxy_agent.toml"))
    assert llm.classify('{"type": "end", "message_id": "m1", "finish_reason": "interrupted"}').interrupted is True
    assert llm.classify('{"type": "end", "message_id": "m1", "finish_reason": "stop"}').interrupted is False
    stop = load_adapter(load_target(AGENTS / "stop_no_ack.toml"))
    done = stop.classify('{"type": "done", "id": "m1"}')
    assert (done.kind, done.interrupted, done.request_id) == ("final", None, "m1")


def test_what_a_declared_protocol_has():
    """messages names the interrupt's answer, its target, sequence numbers; no interrupt, none of them."""
    cfg = _agent_config("path_sessions")
    assert DeclarativeAdapter(cfg).messages == {"request", "interrupt", "ack", "final"}
    cfg["interrupt"]["answer"] = "ack"
    assert DeclarativeAdapter(cfg).messages == {"request", "interrupt", "ack"}
    cfg["interrupt"] = {"template": {"type": "interrupt", "turn": "{target}"}, "answer": "final"}
    assert DeclarativeAdapter(cfg).messages == {"request", "interrupt", "interrupt_target", "final"}
    del cfg["interrupt"]
    no_interrupt = DeclarativeAdapter(cfg)
    assert no_interrupt.messages == {"request"}
    with pytest.raises(Unsupported, match="interrupt"):
        no_interrupt.encode_interrupt("i1", None, "user")
    assert {"seq", "ack", "final", "interrupt_target"} <= ReferenceAdapter().messages


def test_agent_config_errors_name_the_bad_key():
    """Sessions, correlation, answers, binary rules and conditions: one line naming the key."""
    base = _agent_config("path_sessions")
    voice = _agent_config("voice_agent")
    assert "adapter_config.correlation must be one of id, order" in _bad(base, lambda c: c.update(correlation="fifo"))
    assert "interrupt.answer must be one of" in _bad(base, lambda c: c["interrupt"].update(answer="maybe"))
    assert "session.create.id_path is required" in _bad(base, lambda c: c["session"]["create"].pop("id_path"))
    assert "needs exactly one of path" in _bad(base, lambda c: c["session"]["create"].update(url="http://x/"))
    assert "session.create.status" in _bad(base, lambda c: c["session"]["create"].update(status="201"))
    assert "{sid}" in _bad(base, lambda c: c["session"]["delete"].update(path="/api/sessions/{sid}"))
    assert "session.delete.methd" in _bad(base, lambda c: c["session"]["delete"].update(methd="GET"))
    assert "fields.interrupted as a table" in _bad(base, lambda c: c["fields"].update(interrupted={"path": "x"}))
    assert "fields.interrupted must be" in _bad(base, lambda c: c["fields"].update(interrupted=True))
    assert "binary[0].kind" in _bad(voice, lambda c: c["binary"][0].update(kind="audio"))
    assert "binary[0].seq.format" in _bad(voice, lambda c: c["binary"][0].update(seq={"format": "<II"}))
    assert "give size, or min_size/max_size" in _bad(voice, lambda c: c["binary"][0].update(max_size=400))
    assert "binary[0].prefix_hex is not hex" in _bad(
        voice, lambda c: c["binary"][0].update(prefix_hex="zz") or c["binary"][0].pop("prefix"))
    assert "adapter_config.binary must be" in _bad(voice, lambda c: c.update(binary="audio please"))


def test_a_session_id_in_the_path_needs_a_session_made_first(tmp_path):
    """ws_path with {session_id} and no adapter_config.session is refused before anything starts."""
    target = load_target(AGENTS / "path_sessions.toml")
    cfg = dict(target.adapter_config)
    del cfg["session"]
    with pytest.raises(AdapterError, match=r"uses \{session_id\}.*adapter_config.session.create"):
        load_adapter(target, config=cfg)


def test_a_python_adapter_is_imported_from_beside_its_target_file(tmp_path):
    """adapter = "module:Class" is found in the target file's directory, with no PYTHONPATH."""
    (tmp_path / "beside_adapter_mod.py").write_text(textwrap.dedent("""
        from beside_helper_mod import NAME
        from harness.protocol.adapters import ReferenceAdapter

        class Beside(ReferenceAdapter):
            name = NAME
            correlation = "order"
    """))
    (tmp_path / "beside_helper_mod.py").write_text('NAME = "beside"\n')
    (tmp_path / "t.toml").write_text('[target]\ncmd = "srv --port {port}"\nadapter = "beside_adapter_mod:Beside"\n')
    before = list(sys.path)
    try:
        adapter = load_adapter(load_target(tmp_path / "t.toml"))
        assert (adapter.name, adapter.correlation) == ("beside", "order")
        assert sys.path == before  # the directory is on the import path only while it loads
        with pytest.raises(AdapterError, match=r"cannot import 'beside_missing'.*looked beside the target file"):
            load_adapter(replace(load_target(tmp_path / "t.toml"), adapter="beside_missing:X"))
    finally:
        for mod in ("beside_adapter_mod", "beside_helper_mod"):
            sys.modules.pop(mod, None)
