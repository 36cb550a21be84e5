"""How a target's exit is classified, from plain values: no process is started.

Timeline of every case: the harness sends its signals (monotonic ns), the
target is reaped at ``exited_ns`` with a return code (negative: killed by that
signal), and the target declared its clean, forced and watchdog exit codes.
"""

from __future__ import annotations

import signal

import pytest

from harness.process.exit import CLASSIFICATIONS, ExitReport, SentSignal, classify, exit_report
from harness.target.spec import Limits

MS = 1_000_000  # ns
T0 = 5_000 * MS  # when the first signal was sent
LIMITS = Limits(hard_limit_s=2.0, exit_codes=(0,), forced_exit_codes=(130,), watchdog_exit_codes=(1,))
CTRL_C = SentSignal("SIGINT", "pty", T0)
SECOND_CTRL_C = SentSignal("SIGINT", "pty", T0 + 400 * MS)


def judged(returncode: int, *signals: SentSignal, after_ms: float = 300, killed: bool = False,
           limits: Limits = LIMITS) -> str:
    """The classification of an exit ``after_ms`` after the first signal (or after T0 without one)."""
    return classify(returncode, signals=signals, exited_ns=T0 + int(after_ms * MS),
                    killed_by_harness=killed, limits=limits)


def test_a_declared_exit_code_after_ctrl_c_is_clean():
    """Exit 0 after one Ctrl+C, or with no signal at all, is clean."""
    assert judged(0, CTRL_C) == "clean"
    assert judged(0) == "clean"


def test_clean_codes_are_the_targets_declaration():
    """A target that declares exit 2 clean is held to that, and 0 is then not clean."""
    limits = Limits(exit_codes=(2,))
    assert judged(2, CTRL_C, limits=limits) == "clean"
    assert judged(0, CTRL_C, limits=limits) == "crashed"


def test_the_forced_code_after_a_second_signal_is_forced():
    """Exit 130 after a second Ctrl+C is forced; after a single one it is a plain failure."""
    assert judged(130, CTRL_C, SECOND_CTRL_C) == "forced"
    assert judged(130, CTRL_C) == "crashed"


def test_the_watchdog_code_at_the_hard_limit_is_the_watchdog():
    """Exit 1 at the 2 s hard limit (or from 90 % of it) is the watchdog; earlier it is a failure."""
    assert judged(1, CTRL_C, after_ms=2050) == "watchdog"
    assert judged(1, CTRL_C, after_ms=1800) == "watchdog"  # 0.9 x 2 s: the earliest a watchdog counts
    assert judged(1, CTRL_C, after_ms=1799) == "crashed"
    assert judged(1, after_ms=5000) == "crashed"  # no signal was sent: no watchdog was running


def test_a_target_the_harness_killed_is_hung_whatever_its_code():
    """Still running when stopped: hung, even where SIGKILL's code or a clean code came back."""
    assert judged(-signal.SIGKILL, CTRL_C, killed=True) == "hung"
    assert judged(0, CTRL_C, killed=True) == "hung"
    assert judged(-signal.SIGKILL, killed=True) == "hung"


def test_death_by_signal_or_an_undeclared_code_is_crashed():
    """A segfault, a SIGKILL from elsewhere, exit 3: crashed."""
    assert judged(-signal.SIGSEGV, CTRL_C) == "crashed"
    assert judged(-signal.SIGKILL) == "crashed"
    assert judged(3, CTRL_C) == "crashed"


def test_every_classification_is_reachable():
    """Each of the five words comes out of some exit."""
    seen = {judged(0, CTRL_C), judged(130, CTRL_C, SECOND_CTRL_C), judged(1, CTRL_C, after_ms=2000),
            judged(-9, CTRL_C, killed=True), judged(3, CTRL_C)}
    assert seen == set(CLASSIFICATIONS)


def report(returncode: int, *signals: SentSignal, after_ms: float = 300, killed: bool = False) -> ExitReport:
    return exit_report(pid=42, returncode=returncode, exited_ns=T0 + int(after_ms * MS), signals=signals,
                       killed_by_harness=killed, limits=LIMITS, noise=["Traceback"], stdout_tail="bye",
                       stderr_tail="")


def test_the_report_times_the_exit_from_the_first_signal():
    """Two Ctrl+C: exit_ms runs from the first; every signal is kept in order."""
    r = report(130, CTRL_C, SECOND_CTRL_C, after_ms=612.5)
    assert (r.signal, r.sent_ns, r.exit_ms) == ("SIGINT", T0, pytest.approx(612.5))
    assert r.signals == [("SIGINT", "pty", T0), ("SIGINT", "pty", T0 + 400 * MS)]
    assert r.classification == "forced" and not r.hung
    assert (r.returncode, r.own_returncode, r.own_exit_ms) == (130, 130, pytest.approx(612.5))
    assert (r.pid, r.noise, r.stdout_tail) == (42, ["Traceback"], "bye")


def test_a_report_without_a_signal_has_no_exit_time():
    """The target ended by itself: no signal, no exit time, and it is still judged."""
    r = report(0)
    assert (r.signal, r.sent_ns, r.exit_ms, r.signal_killed) == (None, None, None, None)
    assert r.classification == "clean"


def test_a_hung_report_disowns_the_harnesss_kill():
    """Killed by the harness: hung, the SIGKILL named, and neither code nor time is the target's."""
    r = report(-signal.SIGKILL, CTRL_C, after_ms=3000, killed=True)
    assert r.hung and r.classification == "hung"
    assert r.signal_killed == signal.SIGKILL and r.returncode == -signal.SIGKILL
    assert r.own_returncode is None and r.own_exit_ms is None
    assert r.exit_ms == pytest.approx(3000)
