"""The timeline of a case: drawn from its history.jsonl, one lane per client, the target and the nemesis."""

from __future__ import annotations

import re
from pathlib import Path

from harness.cli import main
from harness.core.history import History, Observation, Operation
from harness.report.html import timeline_cases, to_html
from harness.report.timeline import late_frames, timeline_svg
from harness.results.schema import CaseResult, RunResult, TargetInfo, VerdictResult
from harness.results.store import load_run, save_run

MS = 1_000_000
T0 = 5_000 * MS
FAILING = "interrupts.basic[one]"
PASSING = "interrupts.basic[all]"


def frame(i: int, client: str, t_ms: float, kind: str, rid: str | None, **data) -> Observation:
    return Observation(i, client, "frame", T0 + int(t_ms * MS), {"kind": kind, "request_id": rid, **data})


def failing_history() -> History:
    """A server whose chunks keep flowing after the ACK, a fault on the path, then Ctrl+C and exit.

    t=0 target ready; c1 and c2 connect; c1 streams r1, c2 streams r2; a 40 ms delay fault
    from 20 to 60 ms; at 50 ms c1 interrupts r1, final then ACK at 58 ms, but chunks seq 5 and 6
    of r1 follow at 61 and 64 ms (late); Ctrl+C at 100 ms; c2's r2 never ends (1006); exit at 180 ms.
    """
    recs: list[Operation | Observation] = [
        Observation(1, "supervisor", "start", T0 - 900 * MS, {"pid": 4242, "name": "target1"}),
        Observation(2, "supervisor", "ready", T0, {"pid": 4242, "port": 40001, "name": "target1"}),
        Operation(3, "c1", "connect", T0 + 1 * MS, T0 + 4 * MS, "ok", {"url": "ws://127.0.0.1:40001/ws"}),
        Operation(4, "c2", "connect", T0 + 1 * MS, T0 + 5 * MS, "ok", {"url": "ws://127.0.0.1:40001/ws"}),
        Operation(5, "c1", "request", T0 + 10 * MS, T0 + 57 * MS, "ok",
                  {"request_id": "r1", "interrupted": True, "reason": "user", "chunks": 4}),
        Operation(6, "c2", "request", T0 + 12 * MS, None, "unknown", {"request_id": "r2", "chunks": 9}),
        Operation(7, "nemesis", "delay", T0 + 20 * MS, T0 + 60 * MS, "ok", {"delay_ms": 40}),
        frame(8, "c1", 30, "chunk", "r1", seq=0),
        Operation(9, "c1", "interrupt", T0 + 50 * MS, T0 + 58 * MS, "ok",
                  {"interrupt_id": "i1", "target": "r1", "status": "SUCCESS", "interrupted": ["r1"]}),
        frame(10, "c1", 57, "final", "r1", interrupted=True),
        frame(11, "c1", 58, "ack", "i1", interrupted_ids=["r1"], status="SUCCESS"),
        frame(12, "c1", 61, "chunk", "r1", seq=5),
        frame(13, "c1", 64, "chunk", "r1", seq=6),
        frame(14, "c2", 70, "chunk", "r2", seq=3),
        Observation(15, "supervisor", "signal", T0 + 100 * MS, {"signal": "SIGINT", "via": "pty", "name": "target1"}),
        Observation(16, "c2", "closed", T0 + 150 * MS, {"code": None, "reason": ""}),
        Observation(17, "c1", "closed", T0 + 151 * MS, {"code": 1001, "reason": "going away"}),
        Observation(18, "supervisor", "exit", T0 + 180 * MS, {"pid": 4242, "returncode": 0, "name": "target1"}),
        Observation(19, "probe:stats", "sample", T0 + 90 * MS, {"ok": True}),
    ]
    return History.from_records(recs)


def write_run(root: Path) -> Path:
    """A run directory: a failing case and a passing one, each with its history.jsonl."""
    run_dir = root / "run"
    for case_id, hist in ((FAILING, failing_history()), (PASSING, History.from_records(failing_history().records[:6]))):
        d = run_dir / case_id.replace("[", "_").replace("]", "_")
        d.mkdir(parents=True)
        hist.to_jsonl(d / "history.jsonl")
    cases = [
        CaseResult(FAILING, "interrupts.basic", {"mode": "one"}, 0, 1.0, [
            VerdictResult("interrupts.no_frames_after_ack", "fail", "request r1 of c1: 2 frames after its ACK",
                          {"claims": 1, "late_frames": 2, "requests_with_late_frames": 1, "grace_ms": 0}),
            VerdictResult("interrupts.ack_latency", "pass", "ACK p99 8.0 ms", {"p99_ms": 8.0, "bound_ms": 200.0}),
        ], artifacts={"history": "interrupts.basic_one_/history.jsonl"},
            figures={"ack_latencies_ms": [8.0]}),
        CaseResult(PASSING, "interrupts.basic", {"mode": "all"}, 0, 1.0, [
            VerdictResult("interrupts.ack_latency", "pass", "ACK p99 3.0 ms", {"p99_ms": 3.0, "bound_ms": 200.0}),
        ], artifacts={"history": "interrupts.basic_all_/history.jsonl"}),
    ]
    run = RunResult("20260101T000000Z-t1mel1", "2026-01-01T00:00:00Z", TargetInfo("reference", faults=["late_chunks"]),
                    seed=9, profile="gate", status="complete", cases=cases)
    save_run(run, run_dir)
    return run_dir


def lanes(svg: str) -> list[str]:
    return re.findall(r'data-lane="([^"]+)"', svg)


def test_late_frames_are_those_after_the_ack_that_claimed_them():
    """Chunks of r1 after its ACK are late; the interrupted final before it and other requests' frames are not."""
    late = late_frames(failing_history().records)
    assert [(f.source, f.data["seq"]) for f, _ in late] == [("c1", 5), ("c1", 6)]
    assert all(ack.data["kind"] == "ack" for _, ack in late)


def test_timeline_has_a_lane_each_for_nemesis_target_and_clients():
    """Lanes in order: nemesis, the target, then clients as they first appear; probes get none."""
    svg = timeline_svg(failing_history().records, title=FAILING)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="timeline"')
    assert lanes(svg) == ["nemesis", "target1", "c1", "c2"]
    assert svg.count('class="late"') == 2 and "seq 5 for r1 +3.0 ms after its ACK" in svg
    assert svg.count('class="fault"') == 1 and "fault delay at +" in svg and "delay_ms=40" in svg
    assert svg.count('class="signal"') == 1 and "SIGINT via pty" in svg
    assert "exit 0 at" in svg and "closed 1006 (no close frame)" in svg
    assert "request r1" in svg and "interrupted (user)" in svg and "request r2" in svg and "outcome unknown" in svg
    assert "INTERRUPT i1 for r1" in svg and "ACK SUCCESS for i1" in svg
    assert "<script" not in svg and "href" not in svg


def test_timeline_without_faults_says_so_and_caps_client_lanes():
    """No nemesis operation: the lane says no faults; past the cap, the clients where things went wrong stay."""
    recs: list[Operation | Observation] = [Observation(1, "supervisor", "ready", T0, {"name": "target1"})]
    for i in range(40):
        outcome = "fail" if i == 37 else "ok"
        recs.append(Operation(2 + i, f"k{i}", "connect", T0 + i * MS, T0 + (i + 1) * MS, outcome, {}))
    svg = timeline_svg(recs, title="churn", max_clients=10)
    assert "no faults injected" in svg
    drawn = lanes(svg)
    assert len(drawn) == 12 and "k37" in drawn and drawn[:3] == ["nemesis", "target1", "k0"]
    assert "30 more clients not drawn" in svg
    assert "the history is empty" in timeline_svg([], title="x")


def test_report_draws_a_timeline_for_failing_cases_only_by_default(tmp_path):
    """report.html holds the failing case's timeline; 'all' adds the passing one; a glob picks cases."""
    run_dir = write_run(tmp_path)
    run = load_run(run_dir)
    assert [c.case_id for c in timeline_cases(run)] == [FAILING]
    assert [c.case_id for c in timeline_cases(run, ["all"])] == [FAILING, PASSING]
    assert [c.case_id for c in timeline_cases(run, ["*[all]"])] == [PASSING]
    assert timeline_cases(run, ["none"]) == []
    page = to_html(run, run_dir=run_dir, plots=False)
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="timeline"') == 1
    assert f'data-case="{FAILING}"' in page and page.index(">FAIL<") < page.index('id="timelines"')
    (run_dir / "interrupts.basic_one_" / "history.jsonl").write_text("{not json\n")
    assert "cannot read the history" in to_html(run, run_dir=run_dir, plots=False)


def test_cli_report_timeline_all(tmp_path, capsys):
    """``wschaos report RUN --timeline all`` writes a report with a timeline for every case."""
    run_dir = write_run(tmp_path)
    assert main(["report", str(run_dir), "--timeline", "all"]) == 0
    capsys.readouterr()
    page = (run_dir / "report.html").read_text()
    assert page.count('class="timeline"') == 2
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").read_text().count('class="timeline"') == 1
