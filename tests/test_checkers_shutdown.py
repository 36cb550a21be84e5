"""Shutdown and process checkers, with plain values and timelines."""

from __future__ import annotations

import re

from test_checkers_timeline import Timeline, assert_fail, assert_pass, assert_unknown

from harness import checkers


# -- exit time and code ----------------------------------------------------------
def test_exit_within_the_grace_period_passes():
    """An exit 812 ms after Ctrl+C is within a 3000 ms bound."""
    v = assert_pass(checkers.exit_time(812.4, 3000, what="exit after Ctrl+C"))
    assert v.figures["exit_ms"] == 812.4 and "812.4 ms" in v.message


def test_a_slow_exit_fails_naming_both_numbers():
    """An exit after 4210 ms fails a 3000 ms bound, and says so."""
    assert_fail(checkers.exit_time(4210.0, 3000), "4210.0 ms", "3000 ms")


def test_a_target_still_running_at_the_bound_is_hung():
    """exit_ms None means still running at the bound: fail as hung, carrying the stacks."""
    v = assert_fail(checkers.exit_time(None, 3000, stacks=["Thread 0x1 (most recent call first):"]),
                    "hung", "3000 ms")
    assert v.figures["hung"] is True and v.figures["stacks"]


def test_exit_time_without_a_bound_is_unknown():
    """No bound to judge against is unknown."""
    assert_unknown(checkers.exit_time(100, None), "no bound")


def test_an_allowed_exit_code_passes():
    """Code 0 is allowed for a clean shutdown; 130 among (130, -2) for a second Ctrl+C."""
    assert_pass(checkers.exit_code(0, 0))
    assert_pass(checkers.exit_code(130, (130, -2)))


def test_a_wrong_exit_code_fails_and_a_signal_death_is_named():
    """Exit 1 where 0 is expected fails; a SIGKILL death is reported as killed by signal 9."""
    assert_fail(checkers.exit_code(1, 0), "exit code 1", "expected 0")
    v = assert_fail(checkers.exit_code(None, [0], signal_killed=9), "-9", "killed by signal 9")
    assert v.figures["returncode"] == -9


def test_no_exit_code_is_unknown():
    """A process never seen exiting has no code to judge."""
    assert_unknown(checkers.exit_code(None, 0), "no exit code")


# -- output noise ----------------------------------------------------------------
NOISY = """\
shutting down
Traceback (most recent call last):
  File "server.py", line 3, in <module>
KeyboardInterrupt
Task was destroyed but it is pending!
Task was destroyed but it is pending!
"""


def test_one_line_on_stderr_saying_it_shuts_down_is_clean():
    """The one allowed stderr line, and stdout without noise, pass."""
    assert_pass(checkers.output_noise("LISTENING 127.0.0.1:8765\n", "shutting down\n",
                                      max_stderr_lines=1))


def test_tracebacks_and_destroyed_tasks_fail_with_counts_and_lines():
    """Each noisy pattern is counted and the first offending lines are quoted."""
    v = assert_fail(checkers.output_noise("", NOISY), "4 noisy lines", "'Task was destroyed but it is pending' x2",
                    "stderr: Traceback (most recent call last):")
    assert v.figures["per_pattern"]["KeyboardInterrupt"] == 1


def test_more_stderr_lines_than_allowed_fail():
    """Two harmless stderr lines exceed a budget of one."""
    assert_fail(checkers.output_noise("", "shutting down\nbye\n", (), max_stderr_lines=1),
                "2 lines on stderr > allowed 1")


def test_regex_patterns_match_too():
    """A compiled pattern matches by regex; plain strings by substring."""
    assert_fail(checkers.output_noise("warn: coroutine 'x' was never awaited\n", "",
                                      [re.compile(r"coroutine '\w+' was never")]), "1 noisy lines")


def test_no_captured_output_is_unknown():
    """Neither stream captured: nothing to judge."""
    assert_unknown(checkers.output_noise(None, None), "no output captured")
    assert_unknown(checkers.output_noise("", None, max_stderr_lines=1), "stderr not captured")


# -- survivors, port ---------------------------------------------------------------
def test_no_survivors_passes():
    """An empty survivor list: the whole tree is gone."""
    assert_pass(checkers.no_survivors([]))


def test_a_surviving_child_fails_naming_pid_and_command():
    """An orphaned helper holding the socket is named by pid and command line."""
    assert_fail(checkers.no_survivors([{"pid": 4242, "name": "python", "cmdline": ["python", "-m", "helper"]}]),
                "1 processes survived", "pid 4242", "python -m helper")


def test_an_uninspected_tree_is_unknown():
    """No survivor list at all is unknown, not an empty pass."""
    assert_unknown(checkers.no_survivors(None), "not inspected")


def test_port_free_passes_fails_and_unknown():
    """A free port passes; a held port fails naming it; an unchecked one is unknown."""
    assert_pass(checkers.port_free(True, 8765))
    assert_fail(checkers.port_free(False, 8765), "port 8765", "still held")
    assert_unknown(checkers.port_free(None, 8765), "port 8765 was not checked")


# -- finals with reason "shutdown" ---------------------------------------------------
def _shutdown_timeline(final_reason: str | None = "shutdown", with_final: bool = True) -> Timeline:
    t = Timeline()
    # c0 streams r1 (done before the signal) and r2 (still active at the signal).
    r1 = t.request(0, "c0", "r1")
    t.chunks(1, "c0", "r1", range(2))
    t.final(3, "c0", "r1", 2, op=r1)
    r2 = t.request(5, "c0", "r2")
    t.chunks(6, "c0", "r2", range(5))
    t.signal(20)
    # The drain ends r2 at 25 ms, then closes the connection with 1001.
    if with_final:
        t.final(25, "c0", "r2", 5, interrupted=True, reason=final_reason, op=r2)
    t.closed(30, "c0", 1001, "going away")
    return t


def test_requests_active_at_the_signal_end_interrupted_with_reason_shutdown():
    """r2 was active at the signal and got its final frame interrupted, reason "shutdown"."""
    v = assert_pass(checkers.shutdown_finals(_shutdown_timeline().history))
    assert v.figures["active"] == 1  # r1 had finished before the signal


def test_a_request_closed_without_its_final_frame_fails():
    """r2 got no final frame before the connection closed: named."""
    assert_fail(checkers.shutdown_finals(_shutdown_timeline(with_final=False).history),
                "1 of 1", "request r2 of c0: no final frame")


def test_a_final_with_the_wrong_reason_fails():
    """A final interrupted with reason "user" is not a shutdown final."""
    assert_fail(checkers.shutdown_finals(_shutdown_timeline(final_reason="user").history),
                "reason='user'")


def test_finals_without_a_signal_or_active_requests_are_unknown():
    """No recorded signal, or nothing active at it, leaves nothing to judge."""
    t = Timeline()
    t.request(0, "c0", "r1")
    assert_unknown(checkers.shutdown_finals(t.history), "no signal")
    assert_unknown(checkers.shutdown_finals(_shutdown_timeline().history, clients=["c9"]), "no request was active")


# -- close codes -----------------------------------------------------------------------
def _closes(*codes: int | None) -> Timeline:
    t = Timeline()
    for i, _ in enumerate(codes):
        t.connect(i, f"c{i}")
    t.signal(10)
    for i, code in enumerate(codes):
        t.closed(20 + i, f"c{i}", code)
    return t


def test_every_connection_closed_with_1001_passes():
    """Three clients all closed with 1001 by the shutdown."""
    assert_pass(checkers.close_codes(_closes(1001, 1001, 1001).history))


def test_an_abrupt_close_fails_as_1006():
    """A connection dropped without a close frame (code None) is reported as 1006."""
    assert_fail(checkers.close_codes(_closes(1001, None, 1011).history),
                "2 of 3 clients", "1006 x1", "1011 x1", "c1: 1006")


def test_clients_that_closed_themselves_are_left_out_and_missing_closes_are_unknown():
    """A client that closed itself is not judged; one with no close recorded is unknown."""
    t = _closes(1001)
    t.connect(50, "c1")
    t.op(51, "c1", "close", code=1000)
    assert_pass(checkers.close_codes(t.history))
    assert_unknown(checkers.close_codes(t.history, clients=["c0", "c2"]), "1 of 2 clients recorded no close")
    assert_unknown(checkers.close_codes(Timeline().history), "no connected client")


# -- health and refusals during the drain --------------------------------------------------
def test_health_turning_503_during_the_drain_passes():
    """200 before the handler ran, then 503, then no answer once the port closed."""
    assert_pass(checkers.health_during_drain([200, 503, 503, None]))


def test_health_staying_200_during_the_drain_fails():
    """Four polls, all 200: the drain was never announced."""
    assert_fail(checkers.health_during_drain([200, 200, 200, 200]), "no 503", "4 polls")
    assert_fail(checkers.health_during_drain([503, 200]), "back to 200 1 times")


def test_health_never_answering_is_unknown():
    """No poll answered (or none made): no evidence either way."""
    assert_unknown(checkers.health_during_drain([None, None]), "no answer to any of 2 polls")
    assert_unknown(checkers.health_during_drain([]), "0 polls")


def test_new_connections_refused_during_the_drain():
    """All refused passes; one accepted fails naming the count; none tried is unknown."""
    assert_pass(checkers.connections_refused([True, True, True]))
    assert_fail(checkers.connections_refused([True, False, True]), "1 of 3 connection attempts")
    assert_unknown(checkers.connections_refused([]), "0 of 0")


# -- watchdog dump ---------------------------------------------------------------------------
DUMP = """\
shutting down
watchdog: shutdown exceeded the hard limit
Thread 0x00007f3a1c7fe700 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait
Current thread 0x00007f3a2a3b4740 (most recent call first):
  File "server.py", line 88 in drain
"""


def test_a_faulthandler_dump_on_stderr_passes():
    """Two thread headers with their frames: the watchdog printed every stack."""
    v = assert_pass(checkers.watchdog_dump(DUMP))
    assert v.figures["threads"] == 2 and v.figures["frame_lines"] == 2


def test_a_watchdog_exit_without_stacks_fails():
    """Only a message, no stacks: fail, quoting the tail."""
    assert_fail(checkers.watchdog_dump("shutting down\nwatchdog fired\n"), "0 thread headers",
                "watchdog fired")


def test_no_stderr_is_unknown():
    """stderr not captured: unknown."""
    assert_unknown(checkers.watchdog_dump(None), "not captured")
