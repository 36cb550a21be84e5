"""A real slowdown, seeded with the reference server's ``slow_ack`` switch, found by ``run --baseline``.

``slow_ack`` holds every INTERRUPT_ACK back 50 ms: still within the 200 ms
bound (every check passes), so only the comparison against a baseline run of
the correct server can see it, and it must see exactly that.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from harness.cli import main
from harness.results.gate import ExitCode
from harness.runner import GateOptions, GateRun, run_gate

CASE = "interrupts.basic[one]"

try:
    from reference_server.faults import FAULT_NAMES
except ImportError:  # pragma: no cover - the reference server is part of the project
    FAULT_NAMES = ()

pytestmark = pytest.mark.skipif("slow_ack" not in FAULT_NAMES, reason="the reference server has no slow_ack switch")


def gate(root: Path, *faults: str, baseline: Path | None = None) -> GateRun:
    opts = GateOptions(faults=list(faults), seed=17, cases=[CASE], report_root=root, baseline=baseline)
    return run_gate(opts, Console(file=io.StringIO(), width=120))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[GateRun, GateRun]:
    root = tmp_path_factory.mktemp("slowdown")
    correct = gate(root / "correct")
    slow = gate(root / "slow", "slow_ack", baseline=correct.run_dir)
    return correct, slow


@pytest.mark.slow
def test_slow_ack_is_reported_as_exactly_that_regression(runs: tuple[GateRun, GateRun]) -> None:
    """Every check passes on both servers; the comparison names the ACK latency of that case, nothing else."""
    correct, slow = runs
    assert correct.decision.code == ExitCode.OK and slow.decision.code == ExitCode.OK, slow.decision.reasons
    kept = json.loads((slow.run_dir / "results.json").read_text())["comparison"]
    assert kept["baseline"]["run_id"] == correct.run_dir.name and kept["ok"] is False
    regs = {(r["case_id"], r["check"], r["figure"]) for r in kept["regressions"]}
    assert regs == {(CASE, "interrupts.ack_latency", "p99_ms"), (CASE, "interrupts.ack_latency", "p50_ms")}
    assert kept["verdict_changes"] == [] and kept["not_comparable"] == [] and kept["untyped"] == []
    p99 = next(r for r in kept["regressions"] if r["figure"] == "p99_ms")
    assert p99["new_value"] - p99["base_value"] >= 40 and p99["bound"] == 200
    summary = (slow.run_dir / "summary.md").read_text()
    assert f"| ❌ `{CASE}::interrupts.ack_latency` | p99_ms |" in summary
    assert 'class="trend-plot"' in (slow.run_dir / "report.html").read_text()


@pytest.mark.slow
def test_cli_compare_exits_1_on_the_slowdown_and_0_against_itself(runs: tuple[GateRun, GateRun], capsys) -> None:
    """``wschaos compare`` of the two runs exits 1 naming the ACK latency; a run against itself exits 0."""
    correct, slow = runs
    assert main(["compare", str(correct.run_dir), str(slow.run_dir)]) == ExitCode.CHECKS_FAILED
    err = capsys.readouterr().err
    assert f"{CASE}::interrupts.ack_latency p99_ms:" in err and "REGRESSED: 2 regressions" in err
    assert main(["compare", str(correct.run_dir), str(correct.run_dir)]) == ExitCode.OK
