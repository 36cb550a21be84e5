"""How a supervised target ended, judged from plain values alone.

The supervisor stamps the signals it sent and the instant the target was
reaped; :func:`classify` turns those, the return code and the target's
declared exit codes into one word, and :func:`exit_report` assembles the
:class:`ExitReport` scenarios and checkers read. Nothing here touches a
process, so every classification is unit-tested without one.

The classifications, in the order they are decided:

* ``hung``: the harness had to kill it (it was still running when stopped);
  its return code is the harness's kill, never the target's own;
* ``crashed``: a signal ended it;
* ``clean``: one of the declared clean exit codes;
* ``forced``: a forced-exit code after a second signal (the second Ctrl+C);
* ``watchdog``: a watchdog exit code no earlier than the hard limit allows;
* ``crashed`` again for any other code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from harness.target.spec import Limits

__all__ = [
    "CLASSIFICATIONS",
    "WATCHDOG_EARLIEST",
    "Classification",
    "ExitReport",
    "SentSignal",
    "classify",
    "exit_report",
]

Classification = Literal["clean", "forced", "watchdog", "hung", "crashed"]
CLASSIFICATIONS: tuple[Classification, ...] = ("clean", "forced", "watchdog", "hung", "crashed")

#: A watchdog fires at the hard limit; its code any earlier than this share of it is a plain failure.
WATCHDOG_EARLIEST = 0.9


class SentSignal(NamedTuple):
    """One signal the harness sent: its name, how ("pty" or "kill") and when (monotonic ns)."""

    name: str
    via: str
    t_ns: int


@dataclass
class ExitReport:
    """How the target ended. ``returncode`` follows subprocess: negative for a signal."""

    signal: str | None  # the first signal sent ("SIGINT" for a Ctrl+C), None if none was sent
    sent_ns: int | None
    exited_ns: int
    exit_ms: float | None  # exited_ns - sent_ns
    returncode: int
    signal_killed: int | None
    classification: str  # clean, forced, watchdog, hung, crashed
    noise: list[str]
    stdout_tail: str
    stderr_tail: str
    pid: int = 0
    #: Every signal sent, in order: (name, how: "pty" or "kill", monotonic ns).
    signals: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def hung(self) -> bool:
        """The harness had to kill the target: its exit time and code are the harness's, not its own."""
        return self.classification == "hung"

    @property
    def own_returncode(self) -> int | None:
        """The target's own exit code; None when the harness killed it (that code is ours)."""
        return None if self.hung else self.returncode

    @property
    def own_exit_ms(self) -> float | None:
        """Signal to exit in ms, when the target ended by itself; None when hung or never signalled."""
        return None if self.hung else self.exit_ms


def classify(
    returncode: int,
    *,
    signals: Sequence[tuple[str, str, int]],
    exited_ns: int,
    killed_by_harness: bool,
    limits: Limits,
) -> Classification:
    """One word for how the target ended (see the module docstring for the order of the rules).

    ``signals`` are the ones the harness sent, in order, as (name, via, monotonic ns);
    ``limits`` gives the declared exit codes and the hard limit (seconds, as declared).
    """
    if killed_by_harness:
        return "hung"
    if returncode < 0:
        return "crashed"
    if returncode in limits.exit_codes:
        return "clean"
    if returncode in limits.forced_exit_codes and len(signals) >= 2:
        return "forced"
    if returncode in limits.watchdog_exit_codes and signals:
        after_s = (exited_ns - signals[0][2]) / 1e9
        if after_s >= limits.hard_limit_s * WATCHDOG_EARLIEST:
            return "watchdog"
    return "crashed"


def exit_report(
    *,
    pid: int,
    returncode: int,
    exited_ns: int,
    signals: Sequence[tuple[str, str, int]],
    killed_by_harness: bool,
    limits: Limits,
    noise: Sequence[str] = (),
    stdout_tail: str = "",
    stderr_tail: str = "",
) -> ExitReport:
    """The :class:`ExitReport` of a target reaped at ``exited_ns`` with ``returncode``."""
    first = signals[0] if signals else None
    return ExitReport(
        signal=first[0] if first else None,
        sent_ns=first[2] if first else None,
        exited_ns=exited_ns,
        exit_ms=(exited_ns - first[2]) / 1e6 if first else None,
        returncode=returncode,
        signal_killed=-returncode if returncode < 0 else None,
        classification=classify(
            returncode, signals=signals, exited_ns=exited_ns, killed_by_harness=killed_by_harness, limits=limits
        ),
        noise=list(noise),
        stdout_tail=stdout_tail,
        stderr_tail=stderr_tail,
        pid=pid,
        signals=list(signals),
    )
