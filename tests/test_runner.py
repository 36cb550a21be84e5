"""The gate runner: pytest underneath, progress lines, and the run directory it always writes.

The real end-to-end runs are in ``tests/test_cli.py``; here the runner's parts
are held to their promises with no server: the pytest arguments it builds,
the progress lines a CI log shows, the files written from one RunResult, and a
whole run whose only case does not apply to the target.
"""

from __future__ import annotations

import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from harness.results.gate import ExitCode
from harness.results.schema import CaseResult, RunResult, TargetInfo, VerdictResult
from harness.results.store import load_run
from harness.runner import GateOptions, _Collector, _pytest_args, run_gate, write_outputs

CASE = "interrupts.basic[one]"


def plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120, highlight=False), buf


def a_run(*, failing: bool, run_id: str = "20250101T000000Z-aaaaaa") -> RunResult:
    status = "fail" if failing else "pass"
    return RunResult(
        run_id, "2025-01-01T00:00:00Z", TargetInfo("reference"), seed=7, profile="gate", status="complete",
        cases=[CaseResult(CASE, "interrupts.basic", verdicts=[
            VerdictResult("interrupts.ack_latency", status, "p99 412 ms > bound 200 ms" if failing else "p99 4 ms",
                          {"p99_ms": 412.0 if failing else 4.0, "bound_ms": 200},
                          replay=f"wschaos run --case '{CASE}' --seed 7"),
        ])],
    )


def test_pytest_args_carry_every_option(tmp_path: Path) -> None:
    """Each gate option reaches the plugin as its --wschaos-* flag; the signal timeout method is forced."""
    opts = GateOptions(target_file="svc.toml", faults=["seq_gap", "late_chunks"], python_probe=True,
                       allow_remote=True, profile="release", cases=[CASE, "churn.*"])
    args = _pytest_args(opts, tmp_path, 42)
    joined = " ".join(args)
    for expected in ("--wschaos-target svc.toml", "--wschaos-fault seq_gap --wschaos-fault late_chunks",
                     f"--wschaos-case {CASE} --wschaos-case churn.*", "--wschaos-seed 42",
                     "--wschaos-profile release", f"--wschaos-run-dir {tmp_path}", "--wschaos-python-probe",
                     "--wschaos-allow-remote", "-o timeout_method=signal", "-o addopts="):
        assert expected in joined, expected
    assert "--wschaos-target-cmd" not in joined
    cmd_args = _pytest_args(GateOptions(target_cmd="svc --port {port}"), tmp_path, 1)
    assert cmd_args[cmd_args.index("--wschaos-target-cmd") + 1] == "svc --port {port}"


def _report(nodeid: str, when: str, outcome: str, duration: float = 1.25) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, passed=outcome == "passed", skipped=outcome == "skipped",
                           failed=outcome == "failed", duration=duration)


def test_plain_progress_names_each_case_as_it_starts_and_ends(monkeypatch) -> None:
    """Off a terminal: a count, a line when a case starts, one PASS/FAIL/SKIP line when it ends."""
    console, buf = plain_console()
    collector = _Collector(console, "gate")
    assert not collector.live
    ids = [f"scenarios/test_gate.py::test_case[{c}]" for c in (CASE, "shutdown.watchdog[default]", "churn.cycles[mixed]")]
    collector.pytest_collection_finish(SimpleNamespace(items=ids))
    collector.pytest_runtest_logstart(ids[0], None)
    collector.pytest_runtest_logreport(_report(ids[0], "setup", "passed"))  # not a result: no line
    collector.pytest_runtest_logreport(_report(ids[0], "call", "passed"))
    collector.pytest_runtest_logstart(ids[1], None)
    collector.pytest_runtest_logreport(_report(ids[1], "call", "failed"))
    collector.pytest_runtest_logstart(ids[2], None)
    collector.pytest_runtest_logreport(_report(ids[2], "setup", "skipped"))  # skipped before the call
    lines = buf.getvalue().splitlines()
    assert lines[0] == "wschaos: gate: 3 cases"
    assert lines[1] == f".... {CASE} (1/3)"
    assert lines[2].startswith(f"PASS {CASE} (1.2s, 1/3, ")
    assert lines[3] == ".... shutdown.watchdog[default] (2/3)"
    assert lines[4].startswith("FAIL shutdown.watchdog[default] (1.2s, 2/3, ")
    assert lines[6].startswith("SKIP churn.cycles[mixed] (1.2s, 3/3, ")
    assert len(lines) == 7


def test_no_live_display_under_ci(monkeypatch) -> None:
    """A terminal under CI (a pty-backed runner) still gets plain lines, not a redrawn progress bar."""
    monkeypatch.setenv("CI", "true")
    console = Console(file=io.StringIO(), force_terminal=True)
    assert not _Collector(console, "gate").live


def test_outputs_are_written_from_one_run(tmp_path: Path, monkeypatch) -> None:
    """results.json, summary.md, junit.xml, report.html; the step summary is appended to, not replaced."""
    step = tmp_path / "step.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    base_dir, run_dir = tmp_path / "base", tmp_path / "new"
    base_dir.mkdir()
    run_dir.mkdir()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    write_outputs(a_run(failing=False, run_id="base"), base_dir)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    write_outputs(a_run(failing=True), run_dir, baseline=base_dir)
    assert load_run(run_dir).cases[0].verdicts[0].status == "fail"
    summary = (run_dir / "summary.md").read_text()
    assert summary.startswith("## ❌ wschaos: FAIL")
    assert f"replay: `wschaos run --case '{CASE}' --seed 7`" in summary
    assert "p99_ms" in summary and "base" in summary  # the comparison against the baseline
    kept = json.loads((run_dir / "results.json").read_text())["comparison"]
    assert kept["baseline"]["run_id"] == "base" and kept["regressions"][0]["figure"] == "p99_ms"
    assert summary.index("Against baseline `base`: REGRESSED") < summary.index("<details><summary>All checks")
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    assert (run_dir / "report.html").stat().st_size > 0
    assert step.read_text().startswith("earlier step\n## ❌ wschaos: FAIL")


def test_kept_comparison_is_rendered_again_without_the_baseline(tmp_path: Path) -> None:
    """A run saved with its comparison renders the same trend when re-rendered alone (wschaos report)."""
    base_dir, run_dir = tmp_path / "base", tmp_path / "new"
    base_dir.mkdir()
    run_dir.mkdir()
    write_outputs(a_run(failing=False, run_id="base"), base_dir)
    write_outputs(a_run(failing=True), run_dir, baseline=base_dir)
    first = (run_dir / "summary.md").read_text()
    write_outputs(load_run(run_dir), run_dir)
    assert (run_dir / "summary.md").read_text() == first
    page = (run_dir / "report.html").read_text()
    assert 'id="trend"' in page and 'class="trend-plot"' in page


def test_run_with_nothing_applicable_is_no_checks(tmp_path: Path) -> None:
    """A whole gate run whose only case does not apply: NO_CHECKS, and still a complete run directory."""
    console, buf = plain_console()
    opts = GateOptions(target_cmd=f"{sys.executable} -m reference_server --port {{port}}", seed=3,
                       cases=["interactive.exit[quit-0]"], repeat=2, report_root=tmp_path)
    result = run_gate(opts, console)
    assert result.decision.code == ExitCode.NO_CHECKS, buf.getvalue()
    assert (tmp_path / "latest").resolve() == result.run_dir.resolve()
    data = json.loads((result.run_dir / "results.json").read_text())
    assert data["status"] == "complete" and data["exit_code"] == ExitCode.NO_CHECKS
    assert [(c["case_id"], c["repeat"]) for c in data["cases"]] == [("interactive.exit[quit-0]", 0),
                                                                     ("interactive.exit[quit-0]", 1)]
    assert all("interactive" in (c["skipped"] or "") for c in data["cases"])
    # Each repeat runs with its own seed, and says so in its replay line.
    assert [c["replay"].split("--seed ")[1].split()[0] for c in data["cases"]] == ["3", "4"]
    for name in ("summary.md", "junit.xml", "report.html"):
        assert (result.run_dir / name).is_file()
    assert buf.getvalue().count("SKIP interactive.exit[quit-0]") == 2


@pytest.mark.parametrize("status", ["interrupted", "running"])
def test_unfinished_run_decides_interrupted(status: str) -> None:
    """A run left "interrupted" or "running" exits 2 whatever its checks say."""
    from harness.results.gate import decide

    run = a_run(failing=False)
    run.status = status
    assert decide(run).code == ExitCode.INTERRUPTED
