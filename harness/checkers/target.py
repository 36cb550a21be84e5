"""Checkers of the target's own conduct during a case, whatever the case was about.

The engine, not a scenario, makes these: when the target refused or dropped a
connection, answered ERROR where a reply was due, crashed while nobody
signalled it, or printed a traceback, the case fails *the target* with what the
target said, instead of reporting "the scenario crashed" as if wschaos had.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.checkers.registry import checker
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["served", "started"]


@checker
def served(problems: Sequence[str] | None) -> Verdict:
    """The target served the case: no refused or dropped connection, no crash, no traceback."""
    name = "target.served"
    if problems is None:
        return unknown(name, "the target's conduct was not observed")
    if problems:
        return fail(name, "; ".join(problems), problems=list(problems))
    return passed(name, "no refused or dropped connection, no crash, no traceback")


@checker
def started(problem: str | None) -> Verdict:
    """The target started and became ready as its description says."""
    name = "target.started"
    if problem:
        return fail(name, problem)
    return passed(name, "the target became ready")
