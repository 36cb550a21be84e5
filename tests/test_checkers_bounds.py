"""Generic checkers: bounds, terminal state, ERROR counts, process alive, /stats deltas."""

from __future__ import annotations

from dataclasses import dataclass

from test_checkers_timeline import assert_fail, assert_pass, assert_unknown

from harness import checkers
from harness.checkers.bounds import within_bound


@dataclass(frozen=True)
class FakeForensics:
    """The shape of probes.forensics.Forensics: a raw py-spy dump and its key_lines()."""

    stacks: str

    def key_lines(self) -> list[str]:
        return ["forensics of client (hung): 1 process(es)", *self.stacks.splitlines()]


@dataclass(frozen=True)
class FakeTerminalState:
    """The shape of terminal.TerminalState."""

    echo: bool | None
    icanon: bool | None
    isig: bool | None
    error: str | None = None


# -- within a bound ------------------------------------------------------------------
def test_something_within_its_bound_passes():
    """A silent peer dropped after 1850 ms, within 2500 ms."""
    v = assert_pass(within_bound(1850.0, 2500, what="drop of a silent peer"))
    assert v.check == "bounds.within" and "1850.0 ms" in v.message


def test_over_the_bound_or_never_fails_and_the_check_can_be_named():
    """3100 ms fails a 2500 ms bound; None (never) fails under the name the scenario gives."""
    assert_fail(within_bound(3100.0, 2500, what="drop"), "drop took 3100.0 ms > bound 2500 ms")
    v = assert_fail(within_bound(None, 2500, what="drop", check="keepalive.dropped_within"),
                    "drop: did not happen within 2500 ms")
    assert v.check == "keepalive.dropped_within"


def test_a_hung_client_carries_its_stacks_in_any_form():
    """Stacks as a forensics object, a raw dump or lines all reach the message and figures."""
    dump = 'Thread 0x1 (idle): "MainThread"\n    join (threading.py:1119)'
    for stacks in (FakeForensics(dump), dump, dump.splitlines()):
        v = assert_fail(checkers.within_bound(None, 1000, what="client exit", stacks=stacks),
                        "stacks:", "Thread 0x1")
        assert v.figures["hung"] is True and v.figures["stacks"]
    assert_fail(checkers.exit_time(None, 3000, stacks=FakeForensics(dump)), "hung", "Thread 0x1")


def test_stacks_of_another_shape_are_one_line_not_a_crash():
    """An object without key_lines() is carried as its text; None and empty forms give no lines."""
    from harness.checkers._core import stack_lines

    class Dump:
        def __str__(self) -> str:
            return "pid 7: join (threading.py:1119)"

    assert stack_lines(Dump()) == ["pid 7: join (threading.py:1119)"]
    assert stack_lines(None) == [] and stack_lines("") == [] and stack_lines(()) == []
    assert stack_lines(("a", 2)) == ["a", "2"]
    assert stack_lines(FakeForensics("Thread 0x1\n  f")) == ["forensics of client (hung): 1 process(es)",
                                                             "Thread 0x1", "  f"]


def test_within_bound_without_a_bound_is_unknown():
    """No bound given."""
    assert_unknown(within_bound(10.0, None, what="x"), "no bound")


# -- terminal state -----------------------------------------------------------------
def test_a_terminal_with_echo_and_line_editing_is_usable():
    """echo and icanon on, as an object or a dict."""
    assert_pass(checkers.terminal_usable(FakeTerminalState(True, True, True)))
    assert_pass(checkers.terminal_usable({"echo": True, "icanon": True}))


def test_a_terminal_left_without_echo_fails():
    """The spinner turned echo off and never restored it."""
    assert_fail(checkers.terminal_usable(FakeTerminalState(False, True, True)), "echo off")


def test_an_unreadable_terminal_is_unknown():
    """The pty modes could not be read, or no state at all."""
    assert_unknown(checkers.terminal_usable(FakeTerminalState(None, None, None, error="pty closed")), "pty closed")
    assert_unknown(checkers.terminal_usable(None), "could not be read")


# -- ERROR counts, process alive ------------------------------------------------------------
def test_one_error_per_malformed_frame():
    """2000 ERRORs for 2000 frames pass; 1987 fail naming the 13 unanswered; none sent is unknown."""
    assert_pass(checkers.errors_for_all(2000, 2000))
    assert_fail(checkers.errors_for_all(1987, 2000), "1987 ERROR frames for 2000", "13 unanswered")
    assert_fail(checkers.errors_for_all(2003, 2000), "3 extra")
    assert_unknown(checkers.errors_for_all(None, 2000), "nothing to compare")


def test_the_process_still_alive():
    """Running passes, gone fails, unchecked is unknown."""
    assert_pass(checkers.process_alive(True))
    assert_fail(checkers.process_alive(False), "the target died")
    assert_unknown(checkers.process_alive(None), "cannot tell")


# -- /stats deltas -------------------------------------------------------------------------------
BEFORE = {"connections": 3, "sessions": 3, "active_requests": 1, "subscriptions": 0}


def test_stats_moving_only_by_the_expected_deltas_pass():
    """The oversize sender's connection and session are gone (-1 each); nothing else moved."""
    after = {**BEFORE, "connections": 2, "sessions": 2}
    assert_pass(checkers.stats_unchanged(BEFORE, after, keys=list(BEFORE),
                                         expected_delta={"connections": -1, "sessions": -1}))


def test_stats_moving_otherwise_fail_naming_key_values_and_expectation():
    """active_requests 1 -> 4 after malformed frames: requests leaked."""
    after = {**BEFORE, "active_requests": 4}
    assert_fail(checkers.stats_unchanged(BEFORE, after, keys=list(BEFORE)),
                "active_requests 1 -> 4 (expected +0)")


def test_stats_without_a_sample_or_a_key_are_unknown():
    """No sample after, or a counter /stats does not report."""
    assert_unknown(checkers.stats_unchanged(BEFORE, None, keys=["connections"]), "no /stats sample after")
    assert_unknown(checkers.stats_unchanged(BEFORE, BEFORE, keys=["tasks"]), "no number for tasks")
