"""Renderings of one run: Markdown, JUnit, console, comparison, aggregation, HTML."""

from __future__ import annotations

import functools
import io
import math
import re
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from harness.report.html import plot_svgs, to_html
from harness.report.text import failure_lines, make_console, render_console, to_junit, to_markdown
from harness.results.compare import aggregate, aggregate_markdown, compare, percentile
from harness.results.figures import figure_type
from harness.results.gate import ExitCode, decide
from harness.results.schema import CaseResult, HostInfo, RunResult, TargetInfo, VerdictResult


def synthetic_run(*, run_id: str = "20250101T000000Z-abc123", slower: float = 1.0, broken: bool = True) -> RunResult:
    """A gate run over the reference server: shutdown, interrupts and churn, with two failures and an unknown."""
    exit_samples = [310.0 * slower + 17 * math.sin(i) for i in range(12)]
    acks = [4.0 * slower + 3 * abs(math.sin(i * 0.7)) for i in range(200)] + [60.0 * slower]
    cycles = range(0, 1001, 50)
    storm_replay = "wschaos run --case 'interrupts.storm[10x10]' --seed 1234"
    cases = [
        CaseResult(
            "shutdown.sigint[idle]", "shutdown.sigint", {"streams": 0}, 0, 2.1,
            [VerdictResult("shutdown.exit_time", "pass", "exited in 312 ms", {"exit_ms": 312.0, "bound_ms": 3000})],
            figures={"exit_ms_samples": exit_samples},
        ),
        CaseResult(
            "shutdown.sigint[streaming]", "shutdown.sigint", {"streams": 5}, 0, 3.4,
            [VerdictResult("shutdown.exit_time", "fail" if broken else "pass",
                           "exited after 4210 ms, bound 3000 ms" if broken else "exited in 420 ms",
                           {"exit_ms": 4210.0 if broken else 420.0, "bound_ms": 3000},
                           replay="wschaos run --case 'shutdown.sigint[streaming]' --seed 1234")],
            figures={"exit_ms_samples": [s * (13 if broken else 1.3) for s in exit_samples]},
        ),
        CaseResult(
            "interrupts.storm[10x10]", "interrupts.storm", {"sessions": 10}, 0, 5.0,
            [
                VerdictResult("interrupts.ack_latency", "fail" if broken else "pass",
                              "p99 ACK latency 212 ms > bound 200 ms" if broken else "p99 9 ms",
                              {"p99_ms": 212.0 * slower if broken else 9.0, "p50_ms": 5.1 * slower, "bound_ms": 200},
                              replay=storm_replay),
                VerdictResult("interrupts.no_frames_after_ack", "pass", "no frames after any ACK", {"late_frames": 0}),
            ],
            figures={"ack_latencies_ms": acks},
            replay=storm_replay,
        ),
        CaseResult(
            "churn.cycles[mixed]", "churn.cycles", {"cycles": 1000}, 0, 9.0,
            [
                VerdictResult("churn.tasks_baseline", "pass", "tasks back to 3", {"tasks_delta": 0}),
                VerdictResult("churn.latency_drift", "unknown" if broken else "pass",
                              "the stats probe did not answer" if broken else "drift 1.04",
                              {} if broken else {"drift_ratio": 1.04}),
            ],
            series={
                "tasks": [[c, 3 + (c // 200 if broken else 0)] for c in cycles],
                "fds": [[c, 12.0] for c in cycles],
                "rss_mb": [[c, 40 + c * (0.01 if broken else 0.0005)] for c in cycles],
                "latency_ms": [[c, 2.0 + c * 0.001 * slower] for c in cycles],
            },
        ),
    ]
    return RunResult(
        run_id=run_id, started_at="2025-01-01T00:00:00Z", duration_s=19.5, seed=1234, profile="gate",
        target=TargetInfo("reference", ["python", "-m", "reference_server", "--token", "s3cret"], ["late_chunks"]),
        host=HostInfo("3.11.7", "Linux-x86_64", 8), cases=cases, status="complete",
    )


@functools.lru_cache(maxsize=1)
def sample_html() -> str:
    """The failing run beside a clean baseline, rendered once per session (matplotlib is the slow part)."""
    return to_html(synthetic_run(), baseline=synthetic_run(run_id="base", broken=False))


# -- markdown and junit ----------------------------------------------------------------


def test_markdown_leads_with_verdict_and_lists_each_problem_with_replay():
    """The summary's first line is the verdict; each failing or unknown check has its numbers and replay."""
    md = to_markdown(synthetic_run())
    assert md.splitlines()[0] == "## ❌ wschaos: FAIL"
    assert "seed 1234" in md and "target reference (faults: late_chunks)" in md
    line = next(ln for ln in md.splitlines() if "interrupts.storm[10x10]::interrupts.ack_latency" in ln)
    assert "p99_ms=212" in line and "`wschaos run --case 'interrupts.storm[10x10]' --seed 1234`" in line
    assert any("UNKNOWN" in ln and "churn.latency_drift" in ln for ln in md.splitlines())
    assert "<details><summary>All checks</summary>" in md
    assert md.count("\n| `") == 6  # one table row per check


def test_junit_parses_with_one_testcase_per_check():
    """JUnit: failures for fail, errors for unknown, seed and target as properties."""
    root = ET.fromstring(to_junit(synthetic_run()))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "2", "1")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["seed"] == "1234" and props["target"] == "reference"
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert {tc.get("classname") for tc in failed} == {"shutdown.sigint[streaming]", "interrupts.storm[10x10]"}
    assert "replay: wschaos run" in (failed[0].find("failure").text or "")


def test_junit_survives_control_characters():
    """ANSI escapes in a message do not make the XML unparseable."""
    run = synthetic_run()
    run.cases[1].verdicts[0].message = "\x1b[31mred\x1b[0m"
    ET.fromstring(to_junit(run))


# -- console ---------------------------------------------------------------------------


def test_console_plain_under_no_color(monkeypatch):
    """NO_COLOR and a non-terminal stream: no escape codes, brackets in case ids intact."""
    monkeypatch.setenv("NO_COLOR", "1")
    buf = io.StringIO()
    render_console(synthetic_run(), make_console(buf, width=160))
    out = buf.getvalue()
    assert "\x1b[" not in out
    assert "interrupts.storm[10x10]" in out
    assert "FAIL" in out and "exit 1 CHECKS_FAILED" in out


def test_console_terminal_without_no_color_has_colour(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    buf = io.StringIO()
    render_console(synthetic_run(), Console(file=buf, force_terminal=True, width=160))
    assert "\x1b[" in buf.getvalue()


def test_failure_lines_carry_replay():
    lines = failure_lines(synthetic_run())
    assert len(lines) == 3
    assert lines[0].startswith("FAIL shutdown.sigint[streaming]::shutdown.exit_time")
    assert "replay: wschaos run --case 'shutdown.sigint[streaming]' --seed 1234" in lines[0]


# -- compare and aggregate ---------------------------------------------------------------


def test_compare_flags_regression_beyond_tolerance_and_floor():
    """ACKs 50 ms slower regress; 50 % slower at 5 ms is noise under a 200 ms bound; bounds are never figures."""
    base = synthetic_run(run_id="base", broken=False)
    new = synthetic_run(run_id="new", slower=1.5, broken=False)
    cmp = compare(base, new, tolerance=0.2)
    assert cmp.ok and ("interrupts.storm[10x10]", "p50_ms") in {(f.case_id, f.figure) for f in cmp.noise}
    assert not any(f.figure == "bound_ms" for f in cmp.figures)
    new.cases[2].verdicts[0].figures["p50_ms"] += 50
    flagged = {(f.case_id, f.figure) for f in compare(base, new).regressions}
    assert flagged == {("interrupts.storm[10x10]", "p50_ms")}
    assert "❌" in compare(base, new).to_markdown()
    assert compare(base, synthetic_run(run_id="same", broken=False)).ok


def test_compare_flags_pass_to_fail():
    cmp = compare(synthetic_run(broken=False), synthetic_run(broken=True))
    changed = {(v.check, v.base, v.new) for v in cmp.verdict_regressions}
    assert ("shutdown.exit_time", "pass", "fail") in changed
    assert ("churn.latency_drift", "pass", "unknown") in changed


def test_figure_types():
    """Times and percentiles are lower-is-better metrics with their bound; bounds and cycles are parameters."""
    for check, name in (("shutdown.exit_time", "exit_ms"), ("interrupts.ack_latency", "p99_ms"),
                        ("resources.latency_within", "p95_ms")):
        ft = figure_type(check, name)
        assert (ft.role, ft.unit, ft.better, ft.bound) == ("metric", "ms", "lower", "bound_ms")
    assert figure_type("resources.growth_per_1000", "per_1000").unit_of({"unit": "B"}) == "B"
    assert {figure_type("x.y", n).role for n in ("bound_ms", "cycles", "allowed")} == {"parameter"}
    assert figure_type("shutdown.port_free", "port").role == "identifier"
    assert figure_type("input.error_code@not json", "expected").role == "parameter"
    assert figure_type("x.y", "brand_new_figure").role == "untyped"


def test_aggregate_percentiles_over_repeats():
    """Ten repeats of exit_ms 1..10 give numpy-style linear percentiles."""
    runs = []
    for i in range(1, 11):
        r = synthetic_run(broken=False)
        r.cases[0].verdicts[0].figures["exit_ms"] = float(i)
        runs.append(r)
    stats = aggregate(runs)[("shutdown.sigint[idle]", "shutdown.exit_time", "exit_ms")]
    assert (stats.n, stats.min, stats.max, stats.p50) == (10, 1.0, 10.0, 5.5)
    assert stats.p95 == pytest.approx(9.55) and stats.p99 == pytest.approx(9.91)
    samples = aggregate(runs[0])[("shutdown.sigint[idle]", "*", "exit_ms_samples")]
    assert samples.n == 12
    assert percentile([5.0], 99) == 5.0
    assert "| `shutdown.sigint[idle]` |" in aggregate_markdown(aggregate(runs))


def test_gate_on_synthetic_run():
    assert decide(synthetic_run()).code == ExitCode.CHECKS_FAILED
    assert decide(synthetic_run(broken=False)).code == ExitCode.OK


# -- html --------------------------------------------------------------------------------


def test_html_is_self_contained_with_plots():
    """One file: no external src/href, inline SVG plots, verdict first, secrets redacted by the writer."""
    page = sample_html()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page, re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count("<figure><svg") == 4
    assert page.index(">FAIL<") < page.index("<svg")
    assert page.count('class="trend-plot"') == len(compare(synthetic_run(run_id="base", broken=False),
                                                           synthetic_run()).regressions) > 0
    assert "wschaos run --case &#x27;interrupts.storm[10x10]&#x27; --seed 1234" in page
    assert "Against baseline base" in page
    assert "s3cret" not in page  # the in-memory run is redacted for rendering too


def test_text_reports_are_redacted():
    run = synthetic_run()
    run.cases[1].verdicts[0].replay = "wschaos run --target-cmd 'srv --api-key s3cret'"
    assert "s3cret" not in to_markdown(run) + to_junit(run) + "".join(failure_lines(run))


def test_html_renders_without_any_plot_data():
    run = synthetic_run(broken=False)
    for case in run.cases:
        case.series, case.figures = {}, {}
        for v in case.verdicts:
            v.figures = {}
    assert plot_svgs(run) == []
    page = to_html(run)
    assert ">PASS<" in page and "<svg" not in page and "All 6 checks passed." in page


def test_html_quotes_percentiles_for_repeated_cases():
    """A release run with repeats shows p50/p95/p99 per figure."""
    run = synthetic_run(broken=False)
    second = synthetic_run(broken=False).cases
    for case in second:
        case.repeat = 1
    run.cases += second
    page = to_html(run, plots=False)
    assert "<svg" not in page and "Percentiles over 2 repeats" in page and "<th>p99</th>" in page
