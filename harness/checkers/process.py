"""Checkers for the target process itself, whatever the scenario did to it."""

from __future__ import annotations

from harness.checkers.registry import checker
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["alive", "process_alive"]


@checker
def alive(alive: bool | None, *, what: str = "the target") -> Verdict:
    """The process is still running."""
    name = "process.alive"
    if alive is None:
        return unknown(name, f"cannot tell whether {what} runs")
    if alive:
        return passed(name, f"{what} still runs", alive=True)
    return fail(name, f"{what} died", alive=False)


#: The name scenarios call it by.
process_alive = alive
