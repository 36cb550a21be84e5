"""The timeline builder the checker tests share, and the checkers' common machinery.

Other ``test_checkers_*`` modules import :class:`Timeline` and the ``assert_*``
helpers from here: histories are written as timelines at explicit
milliseconds, so a test reads like the run it stands for.
"""

from __future__ import annotations

import json
import math
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from harness import checkers
from harness.checkers.registry import Registry, jsonable
from harness.core.history import History, Observation, Operation
from harness.core.verdict import Verdict, passed

FRAME_KEYS = ("kind", "msg_type", "request_id", "session_id", "seq", "final", "interrupted", "reason",
              "status", "interrupted_ids", "code", "topic", "data")


def ns(ms: float) -> int:
    return int(ms * 1_000_000)


class Timeline:
    """Writes a History record by record at explicit times (ms), in the order given."""

    def __init__(self) -> None:
        self._ids = count(1)
        self.records: list[Operation | Observation] = []

    @property
    def history(self) -> History:
        return History.from_records(self.records)

    # -- raw records ---------------------------------------------------------
    def op(self, t_ms: float, client: str, kind: str, **data: Any) -> Operation:
        op = Operation(id=next(self._ids), client=client, kind=kind, started_ns=ns(t_ms), data=data)
        self.records.append(op)
        return op

    def end(self, op: Operation, t_ms: float, outcome: str = "ok", **data: Any) -> Operation:
        op.ended_ns, op.outcome = ns(t_ms), outcome  # type: ignore[assignment]
        op.data.update(data)
        return op

    def observe(self, t_ms: float, source: str, kind: str, data: dict[str, Any]) -> Observation:
        obs = Observation(id=next(self._ids), source=source, kind=kind, t_ns=ns(t_ms), data=data)
        self.records.append(obs)
        return obs

    def frame(self, t_ms: float, client: str, kind: str, **fields: Any) -> Observation:
        data = {k: None for k in FRAME_KEYS}
        data.update(kind=kind, **fields)
        return self.observe(t_ms, client, "frame", data)

    # -- the protocol's vocabulary -------------------------------------------
    def connect(self, t_ms: float, client: str, session: str | None = None) -> Operation:
        op = self.op(t_ms, client, "connect", url="ws://127.0.0.1:1/ws")
        self.frame(t_ms + 1, client, "ready", session_id=session or f"s-{client}")
        return self.end(op, t_ms + 1, session_id=session or f"s-{client}")

    def request(self, t_ms: float, client: str, rid: str, **options: Any) -> Operation:
        return self.op(t_ms, client, "request", request_id=rid, text="hello", options=options)

    def chunks(self, t_ms: float, client: str, rid: str, seqs: range | list[int], every_ms: float = 1) -> float:
        """Chunk frames for ``rid`` from ``t_ms``, one every ``every_ms``; returns the next free time."""
        for i, seq in enumerate(seqs):
            self.frame(t_ms + i * every_ms, client, "chunk", request_id=rid, seq=seq, final=False)
        return t_ms + len(list(seqs)) * every_ms

    def final(self, t_ms: float, client: str, rid: str, seq: int, *, interrupted: bool = False,
              reason: str | None = None, op: Operation | None = None) -> Observation:
        f = self.frame(t_ms, client, "final", request_id=rid, seq=seq, final=True,
                       interrupted=interrupted, reason=reason)
        if op is not None:
            self.end(op, t_ms, interrupted=interrupted, reason=reason, chunks=seq, last_seq=seq - 1)
        return f

    def ack(self, t_ms: float, client: str, iid: str, ids: list[str], status: str = "SUCCESS",
            session: str | None = None) -> Observation:
        return self.frame(t_ms, client, "ack", request_id=iid, status=status, interrupted_ids=list(ids),
                          session_id=session or f"s-{client}")

    def interrupt(self, t_ms: float, client: str, iid: str, target: str | None) -> Operation:
        return self.op(t_ms, client, "interrupt", interrupt_id=iid, target=target)

    def acked(self, op: Operation, t_ms: float, ids: list[str], status: str = "SUCCESS") -> Operation:
        """The ACK frame for an INTERRUPT op, and the op ended as the client would end it."""
        self.ack(t_ms, op.client, op.data["interrupt_id"], ids, status)
        return self.end(op, t_ms, status=status, interrupted=list(ids), interrupted_count=len(ids),
                        latency_ms=t_ms - op.started_ns / 1e6)

    def closed(self, t_ms: float, client: str, code: int | None, reason: str = "") -> Observation:
        return self.observe(t_ms, client, "closed", {"code": code, "reason": reason})

    def signal(self, t_ms: float, sig: str = "SIGINT") -> Observation:
        return self.observe(t_ms, "supervisor", "signal", {"signal": sig})


# -- verdict assertions in the domain's words ----------------------------------
def _serialisable(v: Verdict) -> None:
    json.dumps(v.figures)  # reports write figures as JSON: a checker must never break that


def assert_pass(v: Verdict) -> Verdict:
    assert v.status == "pass", str(v)
    _serialisable(v)
    return v


def assert_fail(v: Verdict, *needles: str) -> Verdict:
    assert v.status == "fail", str(v)
    for n in needles:
        assert n in v.message, f"{n!r} not in {v.message!r}"
    _serialisable(v)
    return v


def assert_unknown(v: Verdict, *needles: str) -> Verdict:
    assert v.status == "unknown", str(v)
    for n in needles:
        assert n in v.message, f"{n!r} not in {v.message!r}"
    _serialisable(v)
    return v


# -- the machinery every checker shares -----------------------------------------
def test_a_crashing_checker_is_unknown_with_the_exception_text():
    """An exception inside a checker becomes unknown naming the exception, never a pass."""

    def crashy(x: Any) -> Verdict:
        """Fine unless x is 0."""
        return passed("scratch.crashy", "fine", value=1 / x)

    crashy.__module__, crashy.__qualname__ = "harness.checkers.scratch", "crashy"  # as if defined there
    crashy = Registry().checker(crashy)
    v = assert_unknown(crashy(0), "ZeroDivisionError", "division by zero")
    assert v.check == "scratch.crashy"
    assert_pass(crashy(2))


def test_odd_data_inside_a_history_is_unknown_not_a_crash():
    """A frame record with a non-list interrupted_ids makes the checker unknown, not raise."""
    t = Timeline()
    t.frame(1, "c0", "ack", request_id="i1", interrupted_ids=42)
    assert_unknown(checkers.no_double_claim(t.history), "checker crashed", "TypeError")


def test_history_checkers_without_a_history_are_unknown():
    """Passing None where a History belongs is unknown, saying there was no history."""
    for fn in (checkers.ack_latency, checkers.seq_gap_free, checkers.shutdown_finals):
        args = (None, 200) if fn is checkers.ack_latency else (None,)
        assert_unknown(fn(*args), "no history")


def test_figures_are_made_json_serialisable():
    """Tuples, sets, NaN and non-string keys in figures come out as plain JSON."""
    out = jsonable({"a": (1, 2), "b": {3, 1}, 4: math.nan, "c": math.inf, "d": Path("/x"), "e": 1.23456})
    assert out == {"a": [1, 2], "b": [1, 3], "4": None, "c": None, "d": "/x", "e": 1.235}
    json.dumps(out)


def test_every_checker_has_a_stable_dotted_name():
    """CHECKS maps each dotted check name to its checker; every exported checker is in it."""
    assert all("." in name for name in checkers.CHECKS)
    assert len(checkers.CHECKS) >= 35
    for name, fn in checkers.CHECKS.items():
        assert fn.__doc__ and fn.__doc__.strip(), name
        area, rule = name.split(".")
        assert getattr(getattr(checkers, area), rule) is fn, name
    exported = [getattr(checkers, n) for n in checkers.__all__]
    assert [fn for fn in exported if hasattr(fn, "check_name") and fn.check_name not in checkers.CHECKS] == []


def test_percentile_interpolates_linearly_between_ranks():
    """p0 is the minimum, p100 the maximum, p50 the median; in between is interpolated."""
    xs = [40, 10, 30, 20]
    assert checkers.percentile(xs, 0) == 10
    assert checkers.percentile(xs, 100) == 40
    assert checkers.percentile(xs, 50) == 25
    assert checkers.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert checkers.median([3, 1, 2]) == 2
    with pytest.raises(ValueError, match="no values"):
        checkers.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        checkers.percentile([1], 101)


def test_slope_is_the_least_squares_fit():
    """The slope of y = 2x + 1 is 2; x that never varies is refused."""
    assert checkers.slope([(0, 1), (1, 3), (2, 5), (3, 7)]) == pytest.approx(2)
    with pytest.raises(ValueError, match="distinct"):
        checkers.slope([(1, 1), (1, 2)])


def test_a_history_judged_after_a_jsonl_round_trip_gets_the_same_verdict(tmp_path: Path):
    """Checkers judge a history loaded from disk exactly as the live one."""
    # c0: REQUEST r1 at 0 ms, chunks 0..2, INTERRUPT i1 at 10 ms; final at 12 ms; ACK at 13 ms.
    t = Timeline()
    r1 = t.request(0, "c0", "r1")
    t.chunks(1, "c0", "r1", range(3))
    i1 = t.interrupt(10, "c0", "i1", "r1")
    t.final(12, "c0", "r1", 3, interrupted=True, reason="user", op=r1)
    t.acked(i1, 13, ["r1"])
    live = t.history
    live.to_jsonl(tmp_path / "h.jsonl")
    loaded = History.from_jsonl(tmp_path / "h.jsonl")
    for fn in (checkers.final_before_ack, checkers.no_frames_after_ack, checkers.seq_gap_free):
        assert fn(live) == fn(loaded)
        assert_pass(fn(loaded))
