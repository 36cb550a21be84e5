"""Known failures: excused, stale, expired, never for unknown; bad files named precisely."""

from __future__ import annotations

import datetime as dt

import pytest

from harness.results.gate import ExitCode, decide, signoff
from harness.results.known_failures import KnownFailure, KnownFailuresError, apply_known, load_known
from harness.results.schema import CaseResult, RunResult, TargetInfo, VerdictResult

DRIFT = "churn.cycles[mixed]::churn.latency_drift"


def run_with(*verdicts: tuple[str, str, str]) -> RunResult:
    """verdicts: (case id, check, status)."""
    cases: dict[str, CaseResult] = {}
    for cid, check, status in verdicts:
        case = cases.setdefault(cid, CaseResult(cid, cid.split("[")[0]))
        case.verdicts.append(VerdictResult(check, status, f"{check} {status}"))
    return RunResult("r", "2025-01-01T00:00:00Z", TargetInfo("t"), cases=list(cases.values()), status="complete")


def statuses(run: RunResult) -> dict[str, str]:
    return {f"{c.case_id}::{v.check}": v.status for c, v in run.checks()}


def write(tmp_path, text: str):
    p = tmp_path / "known-failures.toml"
    p.write_text(text)
    return p


def test_listed_failure_is_excused(tmp_path):
    """An exact id, brackets and all, turns its failure into known and the gate into OK."""
    known = load_known(write(tmp_path, f'[[known_failure]]\ncheck = "{DRIFT}"\nreason = "handler growth, #42"\n'))
    run = run_with(("churn.cycles[mixed]", "churn.latency_drift", "fail"), ("churn.cycles[mixed]", "churn.tasks", "pass"))
    assert decide(run).code == ExitCode.CHECKS_FAILED
    applied = apply_known(run, known)
    assert statuses(applied)[DRIFT] == "known"
    assert applied.cases[0].verdicts[0].known_reason == "handler growth, #42"
    assert decide(run, known) == (ExitCode.OK, [])
    assert statuses(run)[DRIFT] == "fail"  # the original is left alone


def test_glob_and_bare_check_names():
    entries = [KnownFailure("keepalive.*::*.dropped", "no keepalive"), KnownFailure("badinput.oversize", "no max size")]
    run = run_with(("keepalive.silent[1]", "keepalive.dropped", "fail"), ("keepalive.silent[2]", "keepalive.dropped", "fail"),
                   ("badinput.frames[big]", "badinput.oversize", "fail"), ("badinput.frames[big]", "badinput.json", "fail"))
    got = statuses(apply_known(run, entries))
    assert got == {"keepalive.silent[1]::keepalive.dropped": "known", "keepalive.silent[2]::keepalive.dropped": "known",
                   "badinput.frames[big]::badinput.oversize": "known", "badinput.frames[big]::badinput.json": "fail"}
    # "[" is literal: it must not act as a character class.
    assert not KnownFailure("a[xy]::c", "r").matches("ax", "c")


def test_stale_entry_fails_the_run():
    """A listed check that now passes is stale: the gate fails until the entry is removed."""
    run = run_with(("churn.cycles[mixed]", "churn.latency_drift", "pass"))
    applied = apply_known(run, [KnownFailure(DRIFT, "fixed?")])
    assert statuses(applied)[DRIFT] == "stale"
    code, reasons = decide(applied)
    assert code == ExitCode.CHECKS_FAILED and "STALE" in reasons[0] and "remove the entry" in reasons[0]
    assert signoff(applied) == "FAIL"


def test_unknown_is_never_excused():
    """An unknown verdict stays unknown even when listed, and the entry is not stale either."""
    run = run_with(("churn.cycles[mixed]", "churn.latency_drift", "unknown"))
    applied = apply_known(run, [KnownFailure(DRIFT, "flaky")])
    assert statuses(applied)[DRIFT] == "unknown"
    assert applied.known_failures["stale"] == []
    assert decide(applied).code == ExitCode.INTERNAL_ERROR
    assert signoff(applied) == "INCOMPLETE"


def test_expired_entry_no_longer_excuses():
    run = run_with(("churn.cycles[mixed]", "churn.latency_drift", "fail"))
    entry = KnownFailure(DRIFT, "until the fix lands", until=dt.date(2025, 3, 1))
    assert decide(apply_known(run, [entry], today=dt.date(2025, 3, 1))).code == ExitCode.OK
    late = apply_known(run, [entry], today=dt.date(2025, 3, 2))
    assert statuses(late)[DRIFT] == "fail" and late.known_failures["expired"][0]["until"] == "2025-03-01"


def test_apply_is_idempotent_and_unused_entries_are_noted():
    run = run_with(("churn.cycles[mixed]", "churn.latency_drift", "fail"))
    once = apply_known(run, [KnownFailure(DRIFT, "r"), KnownFailure("other::x", "r")])
    twice = apply_known(once, [KnownFailure(DRIFT, "r")])
    assert statuses(twice)[DRIFT] == "known"
    assert [u["check"] for u in once.known_failures["unused"]] == ["other::x"]
    assert statuses(apply_known(once, []))[DRIFT] == "fail"


def test_gate_exit_codes():
    assert decide(run_with()).code == ExitCode.NO_CHECKS
    assert decide(run_with(("a[x]", "c", "fail"), ("a[x]", "d", "unknown"))).code == ExitCode.CHECKS_FAILED
    interrupted = run_with(("a[x]", "c", "pass"))
    interrupted.status = "interrupted"
    assert decide(interrupted).code == ExitCode.INTERRUPTED
    crashed = run_with(("a[x]", "c", "pass"))
    crashed.cases[0].error = "Traceback...\nRuntimeError: boom"
    code, reasons = decide(crashed)
    assert code == ExitCode.INTERNAL_ERROR and "RuntimeError: boom" in reasons[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[known_failure]]\ncheck = \n", r"not valid TOML"),
        ('[[known_failure]]\ncheck = "a::b"\nreason = "r"\n\n[[known_failure]]\ncheck = "c"\n',
         r"known-failures.toml:5 \(known_failure #2\): reason is required"),
        ('[[known_failure]]\ncheck = "a::b"\nreason = "r"\nuntil = "soon"\n', r":1 \(known_failure #1\): until 'soon' is not a date"),
        ('[[known_failure]]\ncheck = "a::b"\nreason = "r"\nowner = "me"\n', r"unknown key\(s\) owner"),
        ('[[known_failure]]\ncheck = 3\nreason = "r"\n', r"check must be a non-empty string"),
        ('[known_failure]\ncheck = "a"\n', r"must be an array of tables"),
        ('[[known]]\ncheck = "a"\n', r"unknown top-level key\(s\) known"),
    ],
)
def test_bad_files_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(KnownFailuresError, match=message):
        load_known(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(KnownFailuresError, match="no such known-failures file"):
        load_known(tmp_path / "nope.toml")


def test_toml_date_accepted(tmp_path):
    known = load_known(write(tmp_path, '[[known_failure]]\ncheck = "a::b"\nreason = "r"\nuntil = 2025-09-30\n'))
    assert known.entries[0].until == dt.date(2025, 9, 30) and known.entries[0].where.endswith(":1 (known_failure #1)")
