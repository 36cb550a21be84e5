"""Lines that agree with the verdict: excused failures say KNOWN, unjudged cases UNKNOWN, targets their command."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.results.gate import ExitCode, case_word
from harness.results.known_failures import KnownFailure, KnownFailures
from harness.results.schema import TargetInfo
from harness.target.spec import reference_target, target_from_cmd

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import wschaos


def test_a_case_word_agrees_with_the_gate():
    """Excused failures are KNOWN, an unknown is UNKNOWN even beside passes, an unexcused failure is FAIL."""
    known = KnownFailures((KnownFailure(check="c[x]::interrupts.ack_latency", reason="tracked"),))
    assert case_word("c[x]", [("a.b", "pass")]) == "PASS"
    assert case_word("c[x]", [("a.b", "pass"), ("a.c", "unknown")]) == "UNKNOWN"
    assert case_word("c[x]", [("interrupts.ack_latency", "fail")], known=known) == "KNOWN"
    assert case_word("c[x]", [("interrupts.ack_latency", "fail"), ("a.c", "fail")], known=known) == "FAIL"
    assert case_word("c[x]", [("interrupts.ack_latency", "fail")]) == "FAIL"
    assert case_word("c[x]", [], skipped="needs the blocking agent") == "SKIP"
    assert case_word("c[x]", []) == "UNKNOWN"


def test_outputs_name_a_target_by_its_command():
    """A --target-cmd target is named by its command (interpreter shortened), the reference server by name."""
    cmd = TargetInfo.from_target(target_from_cmd(f"{sys.executable} srv.py --port {{port}}"))
    assert cmd.label == "python3 srv.py --port '{port}'" or cmd.label.startswith("python")
    assert "srv.py --port" in cmd.label and sys.executable not in cmd.label
    assert TargetInfo.from_target(reference_target()).label == "reference"
    named = TargetInfo(name="path_sessions", argv=["python", "agents/path_sessions.py", "--port", "{port}"])
    assert named.label == "path_sessions (python agents/path_sessions.py --port '{port}')"


def test_an_excused_failure_is_known_in_the_progress_line_and_the_run_passes(tmp_path: Path):
    """With the failing check listed in a known-failures file the progress line says KNOWN and the run exits 0."""
    known = tmp_path / "known.toml"
    known.write_text('[[known_failure]]\ncheck = "interrupts.basic[one]::*"\n'
                     'reason = "late chunks, tracked"\n')
    root = Path(__file__).resolve().parent.parent
    res = wschaos("run", "--case", "interrupts.basic[one]", "--fault", "late_chunks", "--seed", "3",
                  "--known-failures", str(known), "--report-dir", str(tmp_path / "runs"), cwd=root)
    assert res.code == ExitCode.OK, res.err[-2000:]
    assert "KNOWN interrupts.basic[one]" in res.err
    assert "FAIL interrupts.basic[one]" not in res.err
