"""Timing, history and verdict basics, with plain data."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.history import History
from harness.core.timing import Deadline, TimeFactorError, time_factor
from harness.core.verdict import fail, passed, unknown, worst


def test_time_factor_reads_the_environment():
    """WSCHAOS_TIME_FACTOR scales every bound; bad values are errors naming the variable."""
    assert time_factor({}) == 1.0
    assert time_factor({"WSCHAOS_TIME_FACTOR": "2.5"}) == 2.5
    for bad in ("fast", "0", "-1"):
        with pytest.raises(TimeFactorError, match="WSCHAOS_TIME_FACTOR"):
            time_factor({"WSCHAOS_TIME_FACTOR": bad})


def test_deadline_never_goes_negative():
    """An expired deadline has zero remaining, not a negative wait."""
    d = Deadline.after(-1)
    assert d.expired() and d.remaining() == 0.0


def test_history_records_operations_and_observations(tmp_path: Path):
    """Operations end once; the record survives a JSONL round trip."""
    h = History()
    op = h.begin("c1", "request", request_id="r1")
    h.observe("c1", "frame", kind="chunk", request_id="r1", seq=0)
    h.end(op, "ok", chunks=1)
    with pytest.raises(RuntimeError, match="already ended"):
        h.end(op, "fail")
    assert op.duration_ms is not None and op.duration_ms >= 0
    path = tmp_path / "h.jsonl"
    h.to_jsonl(path)
    back = History.from_jsonl(path)
    assert [r.id for r in back] == [r.id for r in h]
    assert back.operations("request")[0].data == {"request_id": "r1", "chunks": 1}
    assert back.observations("frame", source="c1")[0].data["seq"] == 0
    assert back.begin("c2", "close").id == 3


def test_worst_verdict_never_turns_unknown_into_pass():
    """fail beats unknown beats pass, and no verdicts at all is unknown."""
    assert worst([passed("a", "")]) == "pass"
    assert worst([passed("a", ""), unknown("b", "")]) == "unknown"
    assert worst([unknown("b", ""), fail("c", "")]) == "fail"
    assert worst([]) == "unknown"


def test_a_load_driver_collects_the_young_generation_less_often():
    """collect_less_often raises only the young generation's threshold, and never lowers one."""
    import gc

    from harness.core.history import LOAD_GC_THRESHOLD, collect_less_often

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        collect_less_often()
        assert gc.get_threshold() == (LOAD_GC_THRESHOLD, 10, 10)
        gc.set_threshold(LOAD_GC_THRESHOLD * 2, 5, 5)
        collect_less_often()
        assert gc.get_threshold() == (LOAD_GC_THRESHOLD * 2, 5, 5)
    finally:
        gc.set_threshold(*saved)
