"""Honest blame: what the target did wrong, as opposed to what wschaos did.

A target's refusal, dropped connection or ERROR where a reply was due is the
target's (``blames_target``); a line only a failure inside it prints is its
(``TRACEBACK_MARKS``); a pass that holds only because the time factor
stretched the target's own bound says so (``flag_stretched``). The engine
(:mod:`harness.engine.scenario`) applies these to every case.
"""

from __future__ import annotations

from dataclasses import replace

from harness.core.verdict import Verdict

__all__ = ["TRACEBACK_MARKS", "NotApplicable", "ScenarioError", "blames_target", "flag_stretched", "quote"]


class NotApplicable(Exception):
    """The case cannot run against this target (it needs a capability it lacks)."""


class ScenarioError(RuntimeError):
    """The target did not let a scenario set up its situation: refused, silent, or an ERROR where a reply was due."""


#: The figure a bounded verdict judged, in order of preference.
_JUDGED = ("p99_ms", "value_ms", "exit_ms", "ms")


def flag_stretched(v: Verdict, factor: float) -> Verdict:
    """A pass that holds only because WSCHAOS_TIME_FACTOR stretched the bound says so.

    Bounds are scaled by the time factor so a loaded machine does not fail a
    correct target; but a 5.4 s exit "within" a 3 s grace at factor 2 broke the
    target's own contract, and no output may call that a plain pass.
    """
    if factor <= 1 or v.status != "pass":
        return v
    bound = v.figures.get("bound_ms")
    value = next((v.figures[k] for k in _JUDGED if isinstance(v.figures.get(k), (int, float))), None)
    if not isinstance(bound, (int, float)) or value is None or value <= bound / factor:
        return v
    note = (f" (passes only because WSCHAOS_TIME_FACTOR={factor:g} stretched the bound: "
            f"{value:.0f} ms is over the unscaled {bound / factor:g} ms)")
    return replace(v, message=v.message + note, figures={**v.figures, "stretched_by_time_factor": factor})


#: Lines that only a failure inside the target prints.
TRACEBACK_MARKS = ("Traceback (most recent call last)", "Task exception was never retrieved",
                   "Exception in thread", "Exception in callback")


def quote(text: str, lines: int = 4) -> str:
    tail = [ln.rstrip() for ln in text.strip().splitlines()[-lines:]]
    return " | ".join(tail)


def blames_target(exc: BaseException) -> str | None:
    """What the target did, when ``exc`` is the target refusing, dropping or answering wrong."""
    from harness.client.connection import ClientError
    from harness.process.supervisor import TargetStartError
    from harness.protocol.adapters.base import HandshakeError

    if isinstance(exc, TargetStartError):
        return None  # target.started says it
    if isinstance(exc, (ClientError, ScenarioError, HandshakeError)):
        return str(exc)
    return None
