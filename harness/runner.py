"""Run the gate: pytest underneath, live progress on stderr, one RunResult at the end.

``run_gate`` runs ``scenarios/test_gate.py`` in-process through ``pytest.main``
with the wschaos plugin, collects every case's outcome, and writes the run
directory: ``results.json``, ``summary.md``, ``junit.xml``, ``report.html``
and each case's history and target logs. The run directory is written even
when the run is interrupted, with the status saying so.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from harness.core.timing import FACTOR
from harness.engine.scenario import CaseOutcome
from harness.report.html import write_html
from harness.report.text import print_failures, render_console, to_junit, to_markdown
from harness.results.gate import Decision, case_word, decide
from harness.results.known_failures import KnownFailures, apply_known
from harness.results.schema import CaseResult, RunResult, TargetInfo, utc_now_iso
from harness.results.store import load_run, new_run_dir, save_run

__all__ = ["GateOptions", "GateRun", "run_gate"]

GATE_MODULE = Path(__file__).resolve().parent.parent / "scenarios" / "test_gate.py"


@dataclass
class GateOptions:
    target_file: str | None = None
    target_cmd: str | None = None
    faults: list[str] = field(default_factory=list)
    python_probe: bool = False
    allow_remote: bool = False
    client_cmd: str | None = None
    seed: int | None = None
    profile: str = "gate"
    cases: list[str] = field(default_factory=list)
    repeat: int = 1
    report_root: Path = Path("reports")
    known: KnownFailures | None = None
    baseline: Path | None = None
    verbose: bool = False


@dataclass
class GateRun:
    run: RunResult
    run_dir: Path
    decision: Decision


class _Collector:
    """Receives outcomes and drives the progress display; one per pytest session."""

    def __init__(self, console: Console, label: str, known: KnownFailures | None = None) -> None:
        self.console = console
        self.label = label
        self.known = known
        self.outcomes: list[CaseOutcome] = []
        self.settings: Any = None
        self.collect_errors: list[str] = []
        self._quarters: dict[str, int] = {}
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.live = console.is_terminal and not os.environ.get("CI")
        self.progress: Progress | None = None
        self.task: Any = None

    # pytest hooks -------------------------------------------------------------
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(str(report.longrepr))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        if self.live:
            self.progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=self.total)
        else:
            self.console.print(f"wschaos: {self.label}: {self.total} cases")

    def on_progress(self, case_id: str, done: int, total: int, unit: str) -> None:
        """A long case's own progress: live in the description, or a line every quarter."""
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.label}: {case_id} {done}/{total} {unit}")
        elif total:
            quarter = done * 4 // total
            if quarter > self._quarters.get(case_id, 0):
                self._quarters[case_id] = quarter
                self.console.print(Text.assemble(("....", "dim"), f" {case_id}: {done}/{total} {unit}"))

    def pytest_configure(self, config: pytest.Config) -> None:
        from harness.plugin import load_settings

        # Settings are loaded lazily; a bad option is reported by the plugin itself.
        with contextlib.suppress(Exception):
            self.settings = load_settings(config)
            self.settings.progress = self.on_progress

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        case = nodeid.split("[", 1)[1][:-1] if "[" in nodeid else nodeid
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.label}: {case}")
        else:
            # Without a live display, a line when each case starts: a CI log cut off by a
            # job timeout then still names the case that hung.
            self.console.print(Text.assemble(("....", "dim"), f" {case} ({self.done + 1}/{self.total})"))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and not report.passed):
            return
        self.done += 1
        case = report.nodeid.split("[", 1)[1][:-1] if "[" in report.nodeid else report.nodeid
        word = self._word(case, report)
        style = {"PASS": "green", "SKIP": "yellow", "FAIL": "bold red", "KNOWN": "magenta",
                 "UNKNOWN": "bold yellow"}[word]
        elapsed = time.monotonic() - self.started
        # Text, not markup: "[ctrl_c-idle]" in a case id would be read as a style tag.
        line = Text.assemble((f"{word:4}", style), f" {case} ({report.duration:.1f}s, {self.done}/{self.total}, "
                             f"{elapsed:.0f}s elapsed)")
        outcome = self._outcome(case)
        if word == "SKIP" and outcome is not None and outcome.skipped:
            line.append(f": {outcome.skipped}", style="dim")
        if self.progress is not None:
            self.progress.console.print(line)
            self.progress.advance(self.task)
        else:
            self.console.print(line)

    def _outcome(self, case: str) -> CaseOutcome | None:
        outcomes = getattr(self.settings, "outcomes", None) or []
        return next((o for o in reversed(outcomes) if o.case_id == case), None)

    def _word(self, case: str, report: pytest.TestReport) -> str:
        """The case's word as the gate will judge it: PASS, FAIL, KNOWN (excused), UNKNOWN or SKIP."""
        outcome = self._outcome(case)
        if outcome is None:
            return "PASS" if report.passed else "SKIP" if report.skipped else "FAIL"
        return case_word(case, [(v.check, v.status) for v in outcome.verdicts], skipped=outcome.skipped,
                         known=self.known)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.progress is not None:
            self.progress.stop()
        from harness.plugin import SETTINGS_KEY

        self.settings = session.config.stash.get(SETTINGS_KEY, None)
        if self.settings is not None:
            self.outcomes = list(self.settings.outcomes)


def _uncaptured(console: Console) -> Console:
    """A console on a duplicate of stderr's descriptor, made before pytest captures fd 2.

    pytest captures the standard descriptors while a case runs; progress from inside
    a case (cycle counts) would vanish into that capture without its own descriptor.
    """
    from harness.report.text import make_console

    try:
        stream = os.fdopen(os.dup(console.file.fileno()), "w", buffering=1, encoding="utf-8")
    except (AttributeError, OSError, ValueError):  # not a real file (tests, embedding)
        return console
    return make_console(stream, width=console.width if not console.is_terminal else None)


def _pytest_args(opts: GateOptions, run_dir: Path, seed: int) -> list[str]:
    args = [
        str(GATE_MODULE),
        "-p", "no:cacheprovider", "-p", "no:terminal",
        "-o", "addopts=", "-o", "timeout_method=signal",
        "--timeout", "900",
        "--rootdir", str(GATE_MODULE.parent),
        "--wschaos-run-dir", str(run_dir),
        "--wschaos-seed", str(seed),
        "--wschaos-profile", opts.profile,
    ]
    if opts.target_file:
        args += ["--wschaos-target", opts.target_file]
    if opts.target_cmd:
        args += ["--wschaos-target-cmd", opts.target_cmd]
    for f in opts.faults:
        args += ["--wschaos-fault", f]
    for c in opts.cases:
        args += ["--wschaos-case", c]
    if opts.client_cmd:
        args += ["--wschaos-client-cmd", opts.client_cmd]
    if opts.python_probe:
        args.append("--wschaos-python-probe")
    if opts.allow_remote:
        args.append("--wschaos-allow-remote")
    return args


def run_gate(opts: GateOptions, console: Console) -> GateRun:
    """Run the selected cases ``opts.repeat`` times; write the run directory; decide."""
    import random

    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 2**31)
    run_dir = new_run_dir(opts.report_root)
    started = time.monotonic()
    run = RunResult(
        run_id=run_dir.name,
        started_at=utc_now_iso(),
        target=TargetInfo(name="?"),
        seed=seed,
        profile=opts.profile,
        time_factor=FACTOR,
    )
    save_run(run, run_dir)  # status "running": a harness that dies leaves that behind, not nothing
    status = "complete"
    try:
        for i in range(opts.repeat):
            label = f"run {i + 1}/{opts.repeat}" if opts.repeat > 1 else "gate"
            collector = _Collector(_uncaptured(console), label, known=opts.known)
            try:
                code = pytest.main(_pytest_args(opts, run_dir, seed + i), plugins=[collector])
            finally:
                if collector.console is not console:
                    with contextlib.suppress(OSError):
                        collector.console.file.close()
            if collector.settings is not None:
                run.target = TargetInfo.from_target(collector.settings.target)
            run.cases += [CaseResult.from_outcome(o, repeat=i, run_dir=run_dir) for o in collector.outcomes]
            if collector.collect_errors:
                for err in collector.collect_errors:
                    console.print(Text("error collecting the scenarios:\n" + err, style="red"))
                status = "error"
                break
            if code == pytest.ExitCode.INTERRUPTED:
                status = "interrupted"
                break
            if code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
                status = "error"
                break
    except KeyboardInterrupt:
        status = "interrupted"
    run.status = status
    run.duration_s = time.monotonic() - started
    if opts.known is not None:
        run = apply_known(run, opts.known)
    decision = decide(run)
    run.exit_code = int(decision.code)
    write_outputs(run, run_dir, baseline=opts.baseline)
    return GateRun(run, run_dir, decision)


def write_outputs(run: RunResult, run_dir: Path, *, baseline: Path | None = None,
                  timelines: Sequence[str] = ("failing",)) -> None:
    """results.json, summary.md, junit.xml and report.html, all from the one RunResult.

    With ``baseline``, the comparison against it is computed and kept in
    results.json (``comparison``); without, a comparison the run already holds
    is rendered again.  ``timelines`` says which cases' HTML timelines to draw
    (see :func:`harness.report.html.to_html`).
    """
    from harness.results.compare import Comparison, compare

    comparison, base = None, None
    if baseline is not None:
        base = load_run(baseline)
        comparison = compare(base, run)
        run.comparison = comparison.to_dict()
    elif run.comparison:
        comparison = Comparison.from_dict(run.comparison)
    save_run(run, run_dir)
    (run_dir / "summary.md").write_text(to_markdown(run, comparison=comparison), encoding="utf-8")
    (run_dir / "junit.xml").write_text(to_junit(run), encoding="utf-8")
    write_html(run, run_dir / "report.html", baseline=base, comparison=comparison, run_dir=run_dir,
               timelines=timelines)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(to_markdown(run, comparison=comparison) + "\n")


def print_summary(result: GateRun, console: Console) -> None:
    """The table, then one line per check needing attention with its replay command."""
    render_console(result.run, console)
    print_failures(result.run, console)
    console.print(Text(f"run directory: {result.run_dir}"))
