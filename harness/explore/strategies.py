"""Hypothesis strategies: malformed frames, and the steps of a generated program.

Two users share this module:

* ``scenarios/bad_input.py`` sends thousands of :func:`bad_frames` (through
  :func:`sample_bad_frames`, which draws them with a seed) and counts the ERRORs;
* the explorer's ``bad`` step sends one, and holds the answer to the ERROR code
  the protocol's bad-input table names for it (:attr:`BadFrame.codes`).

Every malformed frame is invalid by construction: text that is not JSON (a
valid message cut short), JSON that is not an object, a binary frame, or a
valid message with exactly one rule broken (its type, its payload, its
``request_id``, a required field dropped or of the wrong type).

:func:`programs` generates the explorer's programs from what the target
supports (:class:`Capabilities`). Steps are plain JSON-ready dicts naming a
session by index and other requests symbolically ("the k-th request of this
session", "some request of another session"), so any list of steps is a
program the executor can run, a shrunk one included, and a program file
replays exactly. Draw order is simplest first, so Hypothesis shrinks a step
towards an earlier, plainer kind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "BAD_CODES",
    "NOT_STRING",
    "ODD_TEXT",
    "STEP_KINDS",
    "TABLE",
    "BadFrame",
    "Capabilities",
    "bad_frames",
    "decode_raw",
    "encode_raw",
    "generated_frames",
    "hypothesis_home",
    "programs",
    "sample",
    "sample_bad_frames",
    "step",
    "table_frames",
]

#: Values that are never a valid string field (and never a valid object payload).
NOT_STRING: list[Any] = [None, True, 1.5, -1, [], {}, ["x"], {"a": [1, {"b": None}]}]
#: Valid text that must still be handled: NUL, astral, right-to-left, long. (A lone
#: surrogate is left out: it cannot even be encoded into a text frame.)
ODD_TEXT = ["", "\u0000", "\U0001f600", "\u202e", "x" * 300]
#: The ERROR codes of the protocol's bad-input table.
BAD_CODES = ("BAD_JSON", "BAD_MESSAGE", "UNKNOWN_TYPE")

#: The protocol's bad-input table (PROTOCOL.md "Bad input"): label, frame, the ERROR code it requires.
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
    ("interrupt target wrong type", {"msg_type": "INTERRUPT", "request_id": "i-1", "payload": {"target_request_id": 7}},
     "BAD_MESSAGE"),
    ("binary frame", b"\x00\x01binary", "BAD_MESSAGE"),
]

_KINDS = ["REQUEST", "INTERRUPT", "SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH", "HEARTBEAT"]
_REQUIRED = {"REQUEST": ["text"], "INTERRUPT": [], "SUBSCRIBE": ["topic"], "UNSUBSCRIBE": ["topic"],
             "PUBLISH": ["topic", "data"], "HEARTBEAT": []}
#: msg_type replacements: unknown strings, and values that are not a string at all.
_BAD_TYPES: list[Any] = ["NOPE", "", "request", 3, None, ["REQUEST"]]


@dataclass(frozen=True)
class BadFrame:
    """One malformed frame, the ERROR codes the protocol allows for it, and how it was broken."""

    raw: str | bytes
    codes: tuple[str, ...]
    label: str
    #: The ``request_id`` the ERROR echoes, where the frame had a string one.
    echo: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"raw": encode_raw(self.raw), "codes": list(self.codes), "label": self.label, "echo": self.echo}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BadFrame:
        return cls(decode_raw(d["raw"]), tuple(d["codes"]), str(d["label"]), d.get("echo"))


def encode_raw(raw: str | bytes) -> Any:
    """A frame as JSON: text as it is, bytes as ``{"hex": ...}``."""
    return {"hex": raw.hex()} if isinstance(raw, bytes) else raw


def decode_raw(value: Any) -> str | bytes:
    if isinstance(value, dict) and isinstance(value.get("hex"), str):
        return bytes.fromhex(value["hex"])
    if isinstance(value, str):
        return value
    raise ValueError(f"a frame must be text or {{'hex': ...}}, not {type(value).__name__}")


@st.composite
def _valid_message(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(_KINDS))
    n = draw(st.integers(0, 10**6))
    payload: dict[str, Any]
    if kind == "REQUEST":
        payload = {"text": draw(st.sampled_from(ODD_TEXT))}
    elif kind == "INTERRUPT":
        payload = {"target_request_id": f"g{n}", "reason": "fuzz"}
    elif kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
        payload = {"topic": draw(st.sampled_from(ODD_TEXT))}
    elif kind == "PUBLISH":
        payload = {"topic": draw(st.sampled_from(ODD_TEXT)), "data": {"n": n}}
    else:
        payload = {}
    return {"msg_type": kind, "request_id": f"g{n}", "payload": payload}


@st.composite
def _broken_message(draw: st.DrawFn) -> BadFrame:
    """A valid message with exactly one rule broken, so the server must answer ERROR."""
    msg = draw(_valid_message())
    kind = msg["msg_type"]
    required = _REQUIRED[kind]
    choices = ["type", "payload"] + (["request_id"] if kind in ("REQUEST", "INTERRUPT") else [])
    choices += [f"drop:{k}" for k in required] + [f"retype:{k}" for k in required if k != "data"]
    if kind == "INTERRUPT":
        choices.append("retype:target_request_id")
    how = draw(st.sampled_from(choices))
    codes: tuple[str, ...] = ("BAD_MESSAGE",)
    if how == "type":
        new_type = draw(st.sampled_from(_BAD_TYPES))
        msg["msg_type"] = new_type
        if new_type == "":
            # An empty string is an unknown type, or a required field without a value.
            codes = ("UNKNOWN_TYPE", "BAD_MESSAGE")
        elif isinstance(new_type, str):
            codes = ("UNKNOWN_TYPE",)
    elif how == "payload":
        # Not null: a server may fairly read a null payload as the empty one.
        msg["payload"] = draw(st.sampled_from([3, "text", ["x"], True]))
    elif how == "request_id":
        if draw(st.booleans()):
            del msg["request_id"]
        else:
            msg["request_id"] = draw(st.sampled_from(NOT_STRING))
    elif how.startswith("drop:"):
        del msg["payload"][how[5:]]
    else:
        name = how[7:]
        bad = [v for v in NOT_STRING if v is not None] if name == "target_request_id" else NOT_STRING
        msg["payload"][name] = draw(st.sampled_from(bad))
    rid = msg.get("request_id")
    raw = json.dumps(msg, ensure_ascii=draw(st.booleans()))
    return BadFrame(raw, codes, f"{kind} with {how.replace(':', ' ')} broken", rid if isinstance(rid, str) else None)


@st.composite
def _cut_json(draw: st.DrawFn) -> BadFrame:
    good = json.dumps(draw(_valid_message()))
    cut = draw(st.integers(1, len(good) - 1))
    return BadFrame(good[:cut], ("BAD_JSON",), "JSON cut short")


def _not_an_object() -> st.SearchStrategy[BadFrame]:
    values = st.sampled_from([*NOT_STRING[:4], *ODD_TEXT, [1, 2]])
    return values.map(lambda v: BadFrame(json.dumps(v), ("BAD_JSON",), f"JSON {type(v).__name__}, not an object"))


def _binary() -> st.SearchStrategy[BadFrame]:
    return st.binary(min_size=1, max_size=63).map(lambda b: BadFrame(b, ("BAD_MESSAGE",), "binary frame"))


def _row(label: str, frame: Any, code: str) -> BadFrame:
    raw = frame if isinstance(frame, (str, bytes)) else json.dumps(frame)
    rid = frame.get("request_id") if isinstance(frame, dict) else None
    return BadFrame(raw, (code,), f"table: {label}", rid if isinstance(rid, str) else None)


def table_frames() -> st.SearchStrategy[BadFrame]:
    """One row of the protocol's bad-input table, as it stands."""
    return st.sampled_from([_row(*row) for row in TABLE])


def generated_frames() -> st.SearchStrategy[BadFrame]:
    """One generated malformed frame: about 15% cut JSON, 10% not an object, 5% binary, 70% one rule broken."""
    return st.one_of(
        _broken_message(), _broken_message(), _broken_message(), _broken_message(), _broken_message(),
        _broken_message(), _broken_message(), _broken_message(), _broken_message(), _broken_message(),
        _broken_message(), _broken_message(), _broken_message(), _broken_message(),
        _cut_json(), _cut_json(), _cut_json(),
        _not_an_object(), _not_an_object(),
        _binary(),
    )


def bad_frames(*, table: bool = False) -> st.SearchStrategy[BadFrame]:
    """A malformed frame: generated, or (with ``table``) a third of the time a row of the table."""
    if not table:
        return generated_frames()
    return _mixed()


@st.composite
def _mixed(draw: st.DrawFn) -> BadFrame:
    # Drawn in two steps: one_of would flatten the generated frames' own branches
    # beside the table's and give the table one branch in twenty-one.
    if draw(st.integers(0, 2)) == 0:
        return draw(table_frames())
    return draw(generated_frames())


@contextlib.contextmanager
def hypothesis_home(directory: str | os.PathLike[str] | None) -> Iterator[None]:
    """Keep what Hypothesis writes (its example database default, its cache of source
    constants) under ``directory`` for the block, or a temporary one for ``None``,
    instead of a ``.hypothesis`` in whatever the current directory is."""
    from hypothesis import configuration

    before = configuration.storage_directory(intent_to_write=False).home_directory
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="wschaos-hypothesis-"))
        configuration.set_hypothesis_home_dir(Path(directory))
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(before)


def sample(strategy: st.SearchStrategy[Any], seed: int, n: int, *, batch: int = 50,
           unique_by: Callable[[Any], Any] | None = None) -> list[Any]:
    """``n`` values drawn by Hypothesis with ``seed``: the same list for the same seed.

    Drawn in batches of ``batch`` values per example (distinct by ``unique_by``
    within a batch: Hypothesis likes to repeat itself), generation phase only and
    no database, so the draw is fast and depends on the seed alone.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[Any] = []
    examples = max(1, -(-n // batch))

    @hseed(seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(strategy, min_size=batch, max_size=batch, unique_by=unique_by))
    def collect(values: list[Any]) -> None:
        out.extend(values)

    with hypothesis_home(None):
        collect()
    return out[:n]


def sample_bad_frames(seed: int, n: int, *, table: bool = False) -> list[BadFrame]:
    """``n`` malformed frames for ``seed`` (see :func:`sample`), distinct within each batch."""
    return sample(bad_frames(table=table), seed, n, unique_by=_raw)


def _raw(frame: BadFrame) -> str | bytes:
    return frame.raw


# -- programs -----------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What the explorer may ask of this target; the steps are drawn from it alone."""

    sessions: int = 3
    max_steps: int = 8
    #: Agents a REQUEST may name (``options.agent``); empty: the target takes no options.
    agents: tuple[str, ...] = ()
    #: Whether a REQUEST's options shape its length (``chunks``, ``chunk_delay_ms``).
    options: bool = False
    heartbeat: bool = True
    pubsub: bool = True
    topics: tuple[str, ...] = ("a", "b")
    bad_frames: bool = True
    oversize: bool = True
    proxy: bool = True
    #: ``block_ms`` values for a blocking agent (short: a blocked thread delays the settle).
    block_ms: tuple[int, ...] = (0, 80, 600)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "max_steps": self.max_steps, "agents": list(self.agents),
                "options": self.options, "heartbeat": self.heartbeat, "pubsub": self.pubsub,
                "topics": list(self.topics), "bad_frames": self.bad_frames, "oversize": self.oversize,
                "proxy": self.proxy, "block_ms": list(self.block_ms)}


#: Step kinds with their draw weights, plainest first (a step shrinks towards the start).
STEP_KINDS: tuple[tuple[str, int], ...] = (
    ("connect", 3),
    ("pause", 5),
    ("heartbeat", 4),
    ("request", 24),
    ("interrupt", 18),
    ("burst", 16),
    ("wait", 6),
    ("subscribe", 5),
    ("unsubscribe", 2),
    ("publish", 6),
    ("close", 4),
    ("abort", 3),
    ("vanish", 3),
    ("stop_reading", 2),
    ("resume_reading", 1),
    ("bad", 5),
    ("oversize", 1),
    ("lag", 2),
    ("cut", 1),
)
#: What a burst may hold: frames sent in one write, nothing awaited between them.
_BURST_KINDS: tuple[tuple[str, int], ...] = (
    ("request", 5), ("interrupt", 5), ("heartbeat", 1), ("subscribe", 1), ("publish", 1), ("bad", 1),
)
INTERRUPT_TARGETS = ("all", "own", "again", "unknown", "foreign")


def _allowed(kind: str, caps: Capabilities) -> bool:
    return {
        "heartbeat": caps.heartbeat,
        "subscribe": caps.pubsub, "unsubscribe": caps.pubsub, "publish": caps.pubsub,
        "bad": caps.bad_frames, "oversize": caps.oversize,
        "lag": caps.proxy, "cut": caps.proxy,
    }.get(kind, True)


def _weighted(kinds: Sequence[tuple[str, int]], caps: Capabilities) -> st.SearchStrategy[str]:
    table = [k for k, w in kinds if _allowed(k, caps) for _ in range(w)]
    return st.sampled_from(table)


@st.composite
def _request(draw: st.DrawFn, caps: Capabilities) -> dict[str, Any]:
    d: dict[str, Any] = {"do": "request"}
    if caps.options:
        agent = draw(st.sampled_from(caps.agents)) if caps.agents else None
        if agent is not None:
            d["agent"] = agent
        if agent != "upstream":
            if draw(st.booleans()):
                d.update(chunks=100_000, delay_ms=draw(st.sampled_from([20, 50])))
            else:
                d.update(chunks=draw(st.sampled_from([1, 3, 0, 8])), delay_ms=draw(st.sampled_from([0, 2])))
        if agent == "blocking":
            d["block_ms"] = draw(st.sampled_from(caps.block_ms))
    if draw(st.integers(0, 9)) == 9:
        d["reuse"] = draw(st.integers(0, 7))  # the id of this session's k-th request, again
    return d


@st.composite
def _interrupt(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from(INTERRUPT_TARGETS))
    d: dict[str, Any] = {"do": "interrupt", "target": target}
    if target in ("own", "foreign"):
        d["pick"] = draw(st.integers(0, 7))
    return d


def _topic(caps: Capabilities) -> st.SearchStrategy[str]:
    # Mostly the first topic: a SUBSCRIBE and a PUBLISH only meet when they name the same one.
    return st.sampled_from([caps.topics[0]] * 3 + list(caps.topics[1:]))


@st.composite
def _frame(draw: st.DrawFn, kind: str, caps: Capabilities) -> dict[str, Any]:
    """A step that is one frame (a burst's member, or a step of its own)."""
    if kind == "request":
        return draw(_request(caps))
    if kind == "interrupt":
        return draw(_interrupt())
    if kind in ("subscribe", "unsubscribe"):
        d: dict[str, Any] = {"do": kind, "topic": draw(_topic(caps))}
        if draw(st.integers(0, 2)) == 2:
            d["times"] = 2  # the protocol makes both idempotent: the same frame twice in a row
        return d
    if kind == "publish":
        return {"do": kind, "topic": draw(_topic(caps))}
    if kind == "bad":
        return {"do": "bad", "frame": draw(bad_frames(table=True)).as_json()}
    return {"do": kind}


@st.composite
def step(draw: st.DrawFn, caps: Capabilities) -> dict[str, Any]:
    """One step of a program."""
    kind = draw(_weighted(STEP_KINDS, caps))
    s = draw(st.integers(0, caps.sessions - 1))
    if kind == "burst":
        n = draw(st.integers(2, 3))
        frames = [draw(_frame(draw(_weighted(_BURST_KINDS, caps)), caps)) for _ in range(n)]
        return {"do": "burst", "s": s, "frames": frames}
    if kind in ("request", "interrupt", "subscribe", "unsubscribe", "publish", "bad", "heartbeat"):
        d = {**draw(_frame(kind, caps)), "s": s}
        long = d.get("chunks") == 100_000 or d.get("agent") == "upstream"
        if kind == "request" and long and draw(st.integers(0, 2)) == 0:
            d["until"] = "chunk"  # as a person does: interrupt only what is already streaming
        return d
    if kind == "connect":
        return {"do": "connect", "s": s, "via": draw(st.sampled_from(["direct", "proxy"])) if caps.proxy else "direct"}
    if kind == "pause":
        return {"do": "pause", "ms": draw(st.sampled_from([5, 20, 60, 150]))}
    if kind == "wait":
        return {"do": "wait", "s": s, "pick": draw(st.integers(0, 7))}
    if kind == "lag":
        return {"do": "lag", "ms": draw(st.sampled_from([30, 0, 100]))}
    if kind == "cut":
        return {"do": "cut"}
    return {"do": kind, "s": s}


def programs(caps: Capabilities) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Programs of 1 to ``caps.max_steps`` steps across ``caps.sessions`` sessions."""
    return st.lists(step(caps), min_size=1, max_size=caps.max_steps)
