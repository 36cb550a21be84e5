"""The gate: one run's results -> one exit code and the reasons for it.

Exit codes (an ``IntEnum`` in the manner of pytest's ``ExitCode``):

===  ================  ==========================================================
 0   OK                every check ran and passed (known failures excused)
 1   CHECKS_FAILED     a check failed, or a known-failures entry is stale or expired
 2   INTERRUPTED       the run was interrupted (Ctrl+C) or never finished
 3   INTERNAL_ERROR    no check failed, but the harness could not judge: a verdict
                       is ``unknown`` or a case crashed
 4   USAGE_ERROR       bad command line, target file or known-failures file (the CLI)
 5   NO_CHECKS         nothing was judged: no case ran, or every case was skipped
===  ================  ==========================================================

Why ``unknown`` is INTERNAL_ERROR and not CHECKS_FAILED: ``unknown`` says
nothing about the target (a probe that could not answer, a checker without
data, a scenario that crashed), and a CI job that can tell "the service
regressed" (1) from "the harness could not tell" (3) knows whom to page.  It is
never 0.  A definite failure outranks it, as ``fail`` outranks ``unknown`` in
:func:`harness.core.verdict.worst`: when both are present the code is 1 and the
unknowns are still listed among the reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Literal, NamedTuple

from harness.results.known_failures import KnownFailures, apply_known
from harness.results.schema import RunResult, check_id

__all__ = ["CaseWord", "Decision", "ExitCode", "SignOff", "case_word", "decide", "signoff"]


class ExitCode(IntEnum):
    OK = 0
    CHECKS_FAILED = 1
    INTERRUPTED = 2
    INTERNAL_ERROR = 3
    USAGE_ERROR = 4
    NO_CHECKS = 5


SignOff = Literal["PASS", "FAIL", "INCOMPLETE"]
CaseWord = Literal["PASS", "FAIL", "KNOWN", "UNKNOWN", "SKIP"]


class Decision(NamedTuple):
    code: ExitCode
    reasons: list[str]


def decide(run: RunResult, known: KnownFailures | None = None) -> Decision:
    """The exit code for ``run`` and one human line per reason it is not OK.

    With ``known``, the known-failures file is applied first (on a copy); a run
    it was already applied to is judged by the statuses it carries.
    """
    if known is not None:
        run = apply_known(run, known)
    reasons: list[str] = []
    failed = unknown = 0
    for case, v in run.checks():
        cid = check_id(case.case_id, v.check)
        if v.status == "fail":
            failed += 1
            reasons.append(f"FAIL {cid}: {v.message}")
        elif v.status == "stale":
            failed += 1
            reasons.append(f"STALE {cid}: listed as a known failure ({v.known_reason}) but passes; remove the entry")
        elif v.status == "unknown":
            unknown += 1
            reasons.append(f"UNKNOWN {cid}: {v.message}")
    for entry in (run.known_failures or {}).get("expired", []):
        failed += 1
        reasons.append(f"EXPIRED known failure {entry['check']} (until {entry.get('until')}): {entry['reason']}")
    crashed = [c for c in run.cases if c.error]
    for c in crashed:
        first = c.error.strip().splitlines()[-1] if c.error and c.error.strip() else "crashed"
        reasons.append(f"ERROR {c.case_id}: the case crashed: {first}")

    if run.status in ("interrupted", "running"):
        why = "interrupted" if run.status == "interrupted" else "did not finish (the harness stopped before writing a final status)"
        return Decision(ExitCode.INTERRUPTED, [f"the run {why}", *reasons])
    if failed:
        return Decision(ExitCode.CHECKS_FAILED, reasons)
    if unknown or crashed or run.status == "error":
        if run.status == "error":
            reasons.append("the harness stopped with an internal error")
        return Decision(ExitCode.INTERNAL_ERROR, reasons)
    if run.summary["checks"] == 0:
        return Decision(ExitCode.NO_CHECKS, ["no checks ran (no case selected, or every case skipped)"])
    return Decision(ExitCode.OK, reasons)


def case_word(case_id: str, verdicts: Iterable[tuple[str, str]], *, skipped: str | None = None,
              known: KnownFailures | None = None) -> CaseWord:
    """One case's word in the progress line, agreeing with what the gate will decide.

    ``verdicts`` are ``(check, status)`` pairs. A failure a known-failures
    entry excuses is KNOWN (the run can still exit 0); a case whose worst
    verdict is unknown is UNKNOWN, never FAIL nor PASS.
    """
    pairs = list(verdicts)
    if not pairs:
        return "SKIP" if skipped is not None else "UNKNOWN"
    entries = known.entries if known is not None else ()
    failing = [check for check, status in pairs if status == "fail"]
    if any(not any(e.matches(case_id, check) for e in entries) for check in failing):
        return "FAIL"
    if any(status == "unknown" for _, status in pairs):
        return "UNKNOWN"
    if failing or any(status == "known" for _, status in pairs):
        return "KNOWN"
    return "PASS"


def signoff(run: RunResult, known: KnownFailures | None = None) -> SignOff:
    """The release manager's word: PASS, FAIL (a definite failure), or INCOMPLETE (anything else)."""
    code = decide(run, known).code
    return "PASS" if code == ExitCode.OK else "FAIL" if code == ExitCode.CHECKS_FAILED else "INCOMPLETE"
