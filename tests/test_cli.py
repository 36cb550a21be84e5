"""``wschaos`` on the command line: exit codes, one-line errors, run directories, repro, compare.

Bad input is checked in-process through ``main(argv)``: nothing starts, so it
is fast. Everything that runs scenarios runs ``wschaos`` as a user would, in
a subprocess against the real reference server, with the smallest case
(``interrupts.basic[one]``, about 3 s). Each such subprocess carries a marker
in its environment, which every target and helper it starts inherits: after
it ends, no process with that marker may be left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from harness.cli import main
from harness.core.timing import Deadline, scaled
from harness.results.gate import ExitCode

ROOT = Path(__file__).resolve().parent.parent
CASE = "interrupts.basic[one]"
FAULT = "ack_before_final"
#: The checks ack_before_final breaks in CASE (tests/test_proofs.py proves the first).
BROKEN = ("interrupts.final_before_ack", "interrupts.no_frames_after_ack")
SEED = 7
ANSI = re.compile(r"\x1b\[")
#: SGR colour parameters (30-37, 38;..., 90-97 and their backgrounds): what NO_COLOR forbids.
COLOUR = re.compile(r"\x1b\[[0-9;]*(?<![0-9])(3[0-8]|4[0-8]|9[0-7]|10[0-7])[;m]")
MARK = "WSCHAOS_TEST_CLI_MARK"


# -- helpers ------------------------------------------------------------------------


@dataclass
class Cli:
    code: int
    out: str
    err: str

    def run_dir(self) -> Path:
        m = re.search(r"^run directory: (.+)$", self.err, re.M)
        assert m, f"no run directory line in:\n{self.err}"
        return Path(m.group(1).strip())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "CI", "GITHUB_STEP_SUMMARY")
           and not (k.startswith("WSCHAOS_") and k != "WSCHAOS_TIME_FACTOR")}
    env.update(extra)
    return env


def _marked(mark: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == mark:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_nothing_left(mark: str) -> None:
    """No process started under ``mark`` survives (bounded wait; survivors are killed, then reported)."""
    procs = _marked(mark)
    _, alive = psutil.wait_procs(procs, timeout=scaled(10))
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not alive, f"processes of the run survived: {[(p.pid, p.cmdline()) for p in alive]}"


def wschaos(*args: str, cwd: Path, timeout: float = 90, **env: str) -> Cli:
    """Run ``wschaos ARGS`` in its own session, bounded; whatever it started must be gone after."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=_env(**{MARK: mark}, **env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=scaled(timeout))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert_nothing_left(mark)
    assert "Traceback" not in err, err
    return Cli(proc.returncode, out, err)


def run_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> Cli:
    code = main(list(argv))
    captured = capsys.readouterr()
    return Cli(code, captured.out, captured.err)


def known_failures(path: Path, *entries: tuple[str, str]) -> Path:
    path.write_text("".join(f'[[known_failure]]\ncheck = "{c}"\nreason = "{r}"\n\n' for c, r in entries))
    return path


# -- bad input: one line, USAGE_ERROR, no traceback ---------------------------------


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    remote = tmp / "remote.toml"
    remote.write_text('cmd = "python -m myservice --port {port}"\nhost = "10.1.2.3"\n')
    unknown_key = tmp / "typo.toml"
    unknown_key.write_text('cmd = "python -m myservice --port {port}"\nreadyness = "line"\n')
    missing = str(tmp / "missing")
    return [
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--seed", "abc"], "invalid int value: 'abc'"),
        (["run", "--profile", "nightly"], "invalid choice: 'nightly'"),
        (["run", "--target", missing + ".toml"], "no such target file"),
        (["run", "--target", str(unknown_key)], "unknown key(s) readyness"),
        (["run", "--target", str(remote)], "outside loopback; pass --allow-remote"),
        (["run", "--fault", "no_such_fault"], "unknown fault no_such_fault; known: accept_during_drain"),
        (["run", "--fault", FAULT, "--target-cmd", "python -m myservice --port {port}"],
         "--fault applies to the embedded reference server only"),
        (["run", "--target", str(remote), "--target-cmd", "python x.py"], "give --target or --target-cmd, not both"),
        (["run", "--repeat", "0"], "--repeat must be at least 1"),
        (["run", "--known-failures", missing + ".toml"], "no such known-failures file"),
        (["run", "--case", "no_such_scenario.*"], "no scenario case matches"),
        (["repro", CASE], "needs a seed to rerun exactly"),
        (["repro", f"wschaos run --case '{CASE}' --seed 1", "--times", "0"], "--times must be at least 1"),
        (["compare", missing, missing], "no such results file"),
        (["report", missing], "no such results file"),
    ]


@pytest.mark.parametrize("index", range(16))
def test_bad_input_is_one_line_and_a_usage_error(index: int, tmp_path: Path, capsys, monkeypatch) -> None:
    """Each bad flag, file or name: exit 4 and one line on stderr saying what is wrong, no traceback."""
    monkeypatch.chdir(tmp_path)  # no wschaos-known-failures.toml of the repository picked up
    argv, expected = _bad_inputs(tmp_path)[index]
    res = run_in_process(capsys, *argv)
    assert res.code == ExitCode.USAGE_ERROR, res
    assert res.err.strip().count("\n") == 0, f"more than one line for {argv}:\n{res.err}"
    assert expected in res.err, res.err
    assert res.out == ""


def test_the_bad_input_table_is_all_exercised(tmp_path: Path) -> None:
    """The parametrization above covers every row of the table."""
    assert len(_bad_inputs(tmp_path)) == 16


def test_bad_time_factor_is_a_usage_error(tmp_path: Path, capsys, monkeypatch) -> None:
    """WSCHAOS_TIME_FACTOR that is not a positive number stops the run before anything starts."""
    monkeypatch.chdir(tmp_path)
    for value, words in (("abc", "is not a number"), ("0", "must be greater than 0")):
        monkeypatch.setenv("WSCHAOS_TIME_FACTOR", value)
        res = run_in_process(capsys, "run", "--report-dir", str(tmp_path))
        assert res.code == ExitCode.USAGE_ERROR
        assert f"WSCHAOS_TIME_FACTOR='{value}' {words}" in res.err
        assert res.err.strip().count("\n") == 0
    assert not any(tmp_path.iterdir()), "a run directory was made for a refused run"


def test_no_command_prints_usage(capsys) -> None:
    """``wschaos`` alone shows the commands and exits with the usage code."""
    res = run_in_process(capsys)
    assert res.code == ExitCode.USAGE_ERROR
    assert "usage: wschaos" in res.err and "repro" in res.err


def test_list_names_every_case(capsys) -> None:
    """``wschaos list``: one line per case, its id and the first line of its steps."""
    from harness.engine.scenario import load_scenarios

    res = run_in_process(capsys, "list")
    assert res.code == ExitCode.OK
    lines = res.out.splitlines()
    assert len(lines) == len(load_scenarios())
    assert f"{CASE}\t1. Open a session streaming three long replies" in res.out
    assert any(line.startswith("shutdown.watchdog[default]\t") for line in lines)


# -- real runs against the reference server -----------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def passing(work: Path) -> Cli:
    """One passing case, with --json and a GitHub step summary file."""
    return wschaos("run", "--case", CASE, "--seed", str(SEED), "--json", "--report-dir", str(work / "reports"),
                   cwd=work, GITHUB_STEP_SUMMARY=str(work / "step-summary.md"))


@pytest.fixture(scope="module")
def failing(work: Path) -> Cli:
    """The same case against a server whose ACK overtakes the interrupted final frame."""
    return wschaos("run", "--case", CASE, "--seed", str(SEED), "--fault", FAULT,
                   "--report-dir", str(work / "reports-fault"), cwd=work)


@pytest.mark.slow
def test_passing_run_exits_ok_with_a_json_summary(passing: Cli) -> None:
    """Exit 0; --json puts a parseable summary on stdout and nothing else there."""
    assert passing.code == ExitCode.OK, passing.err
    summary = json.loads(passing.out)
    assert summary["exit_code"] == 0 and summary["status"] == "OK"
    assert summary["seed"] == SEED and summary["cases"] == 1
    assert summary["pass"] == summary["checks"] > 0 and summary["fail"] == 0
    assert Path(summary["run_dir"]) == passing.run_dir()


@pytest.mark.slow
def test_run_directory_holds_every_report(passing: Cli, work: Path) -> None:
    """results.json, summary.md, junit.xml and report.html, and reports/latest pointing at the run."""
    run_dir = passing.run_dir()
    for name in ("results.json", "summary.md", "junit.xml", "report.html"):
        assert (run_dir / name).is_file(), name
    latest = work / "reports" / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["exit_code"] == 0
    (case,) = results["cases"]
    assert case["case_id"] == CASE and (run_dir / case["artifacts"]["history"]).is_file()
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert int(suite.get("tests")) == len(case["verdicts"]) and suite.get("failures") == "0"
    assert "wschaos: PASS" in (run_dir / "summary.md").read_text()
    assert "wschaos: PASS" in (work / "step-summary.md").read_text()


@pytest.mark.slow
def test_plain_output_off_a_terminal(passing: Cli) -> None:
    """Piped stderr: no escape codes, a progress line per case, a table wide enough not to fold ids."""
    assert not ANSI.search(passing.err), passing.err
    assert f".... {CASE} (1/1)" in passing.err
    assert re.search(rf"^PASS {re.escape(CASE)} \(", passing.err, re.M)
    rows = [line for line in passing.err.splitlines() if line.startswith("| ")]
    assert rows and all(len(line) <= 120 for line in rows)
    first_cells = {line.split("|")[1].strip() for line in rows[1:]}
    assert first_cells <= {CASE, ""}, f"a case id was folded across lines: {first_cells}"


def test_no_color_is_honoured_on_a_terminal(monkeypatch) -> None:
    """On a terminal the verdicts are coloured, under NO_COLOR they are not."""
    import io

    from harness.report.text import make_console, render_console
    from harness.results.schema import CaseResult, RunResult, TargetInfo, VerdictResult

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    run = RunResult("r1", "2025-01-01T00:00:00Z", TargetInfo("reference"), seed=1, profile="gate", status="complete",
                    cases=[CaseResult(CASE, "interrupts.basic", verdicts=[
                        VerdictResult("interrupts.ack_latency", "fail", "p99 300 ms > bound 200 ms")])])
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    coloured = Tty()
    render_console(run, make_console(coloured))
    assert COLOUR.search(coloured.getvalue()), "the test cannot see colour at all"
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Tty()
    render_console(run, make_console(plain))
    assert "FAIL" in plain.getvalue() and not COLOUR.search(plain.getvalue())


@pytest.mark.slow
def test_failing_check_exits_1_with_its_replay_line(failing: Cli) -> None:
    """A fault switch makes the case fail: exit 1, one FAIL line per broken check, each with a replay."""
    assert failing.code == ExitCode.CHECKS_FAILED, failing.err
    replay = f"replay: wschaos run --case '{CASE}' --seed {SEED} --fault {FAULT}"
    for check in BROKEN:
        assert f"FAIL {CASE}::{check}: " in failing.err
    assert replay in failing.err
    results = json.loads((failing.run_dir() / "results.json").read_text())
    assert results["target"]["faults"] == [FAULT] and results["exit_code"] == 1


@pytest.mark.slow
def test_compare_flags_the_regression(passing: Cli, failing: Cli, work: Path) -> None:
    """compare of the passing run against the failing one exits 1; a run against itself exits 0."""
    base, new = str(passing.run_dir()), str(failing.run_dir())
    res = wschaos("compare", base, new, "--markdown", cwd=work)
    assert res.code == ExitCode.CHECKS_FAILED, res.err
    assert BROKEN[0] in res.out
    assert wschaos("compare", base, base, cwd=work).code == ExitCode.OK


def test_report_renders_a_saved_run_again(passing: Cli, tmp_path: Path, capsys) -> None:
    """``wschaos report RUN`` writes summary.md, junit.xml and report.html from results.json alone."""
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(passing.run_dir() / "results.json", copy / "results.json")
    res = run_in_process(capsys, "report", str(copy))
    assert res.code == ExitCode.OK, res.err
    for name in ("summary.md", "junit.xml", "report.html"):
        assert (copy / name).stat().st_size > 0
    assert CASE in res.err and "PASS" in res.err


@pytest.mark.slow
def test_repro_reproduces_a_failure_on_the_first_run(failing: Cli, work: Path) -> None:
    """The replay line of a failure, given to ``repro``: it fails again at once and says so."""
    line = re.search(r"replay: (wschaos run .+)$", failing.err, re.M).group(1)
    res = wschaos("repro", line, "--times", "2", "--report-dir", str(work / "repro"), cwd=work)
    assert res.code == ExitCode.CHECKS_FAILED, res.err
    assert "reproduced on run 1 of 2" in res.err


@pytest.mark.slow
def test_repro_of_a_passing_case_does_not_reproduce(work: Path) -> None:
    """A case that passes N times: exit 0, and the words "did not reproduce"."""
    line = f"wschaos run --case '{CASE}' --seed {SEED}"
    res = wschaos("repro", line, "--times", "2", "--report-dir", str(work / "repro-ok"), cwd=work)
    assert res.code == ExitCode.OK, res.err
    assert "run 2 of 2 passed" in res.err and "did not reproduce: 2 runs passed with seed 7" in res.err


@pytest.mark.slow
def test_known_failures_excuse_the_failing_checks(work: Path) -> None:
    """Every failing check listed: the run exits 0 and reports them as known."""
    kf = known_failures(work / "kf-excuse.toml", *((f"{CASE}::{c}", "ACK overtakes the final, #12") for c in BROKEN))
    res = wschaos("run", "--case", CASE, "--seed", str(SEED), "--fault", FAULT, "--known-failures", str(kf),
                  "--report-dir", str(work / "reports-known"), cwd=work)
    assert res.code == ExitCode.OK, res.err
    assert "KNOWN" in res.err
    results = json.loads((res.run_dir() / "results.json").read_text())
    assert sorted(results["known_failures"]["excused"]) == sorted(f"{CASE}::{c}" for c in BROKEN)


@pytest.mark.slow
def test_stale_known_failure_fails_the_run(work: Path) -> None:
    """An entry for a check that passes is stale: exit 1, and the line says to remove it."""
    kf = known_failures(work / "kf-stale.toml", (f"{CASE}::interrupts.ack_latency", "slow ACKs, #7"))
    res = wschaos("run", "--case", CASE, "--seed", str(SEED), "--known-failures", str(kf),
                  "--report-dir", str(work / "reports-stale"), cwd=work)
    assert res.code == ExitCode.CHECKS_FAILED, res.err
    assert f"STALE {CASE}::interrupts.ack_latency" in res.err and "listed as known: slow ACKs, #7" in res.err


@pytest.mark.slow
def test_every_case_skipped_is_no_checks(work: Path) -> None:
    """A target without an interactive client, only the interactive cases selected: exit 5."""
    res = wschaos("run", "--target-cmd", f"{sys.executable} -m reference_server --port {{port}}",
                  "--case", "interactive.exit[quit-0]", "--report-dir", str(work / "reports-skip"), cwd=work)
    assert res.code == ExitCode.NO_CHECKS, res.err
    assert "SKIP interactive.exit[quit-0]" in res.err


@pytest.mark.slow
def test_sigint_ends_the_run_as_interrupted(work: Path) -> None:
    """SIGINT during a long case: exit 2, results.json says interrupted, no server of the run survives."""
    mark = uuid.uuid4().hex
    report_dir = work / "reports-sigint"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--case", "churn.cycles[mixed]", "--seed", "1",
         "--report-dir", str(report_dir)],
        cwd=work, env=_env(**{MARK: mark}), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        # 1. The case has started (its progress line) ...
        assert proc.stderr is not None
        deadline = Deadline.after(scaled(30))
        for line in _lines(proc.stderr, deadline):
            if ".... churn.cycles[mixed]" in line:
                break
        # 2. ... and its target is up: the readiness line is in the target's log.
        log = report_dir / "latest" / "churn.cycles_mixed_" / "target1.stdout.log"
        assert _wait_for(lambda: log.is_file() and "LISTENING" in log.read_text(), deadline), "the target never came up"
        servers = [p for p in _marked(mark) if "reference_server" in " ".join(p.cmdline())]
        assert servers, "no reference server found for the run"
        # 3. Ctrl+C's signal to the harness alone; it must stop the target itself.
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=scaled(30))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    results = json.loads((report_dir / "latest" / "results.json").read_text())
    assert results["status"] == "interrupted" and results["exit_code"] == ExitCode.INTERRUPTED
    (case,) = results["cases"]
    assert case["case_id"] == "churn.cycles[mixed]" and "target1.stdout" in case["artifacts"]
    assert "(exit 2 INTERRUPTED)" in err
    assert_nothing_left(mark)


def _lines(stream, deadline: Deadline) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Lines of a pipe until the deadline; the read itself is bounded by select."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    buf = ""
    while not deadline.expired():
        if not sel.select(timeout=deadline.remaining()):
            break
        chunk = os.read(stream.fileno(), 4096).decode(errors="replace")
        if not chunk:
            break
        buf += chunk
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            yield line
    pytest.fail("the run never reported the case starting")


def _wait_for(predicate, deadline: Deadline) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition until the deadline (a file written by another process has no event to wait on)."""
    import time

    while not deadline.expired():
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- the examples in docs are valid -------------------------------------------------


def test_examples_load_with_the_real_loaders() -> None:
    """examples/reference_target.toml and known-failures.toml load; the workflow parses as YAML."""
    from harness.results.known_failures import load_known
    from harness.target.spec import load_target

    target = load_target(ROOT / "examples" / "reference_target.toml")
    assert target.name and target.argv and target.readiness.kind in ("line", "port", "http")
    known = load_known(ROOT / "examples" / "known-failures.toml")
    assert known.entries and all(e.reason for e in known.entries)
    text = (ROOT / "examples" / "github-workflow.yml").read_text()
    try:
        import yaml
    except ImportError:
        assert "wschaos run" in text and "upload-artifact" in text
        return
    workflow = yaml.safe_load(text)
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    assert any("wschaos run" in s.get("run", "") for s in steps)
