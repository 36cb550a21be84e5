"""Shutdown and process checkers, with plain values and timelines."""

from __future__ import annotations

import re

from test_checkers_timeline import Timeline, assert_fail, assert_pass, assert_unknown, ns

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


def test_a_hung_target_killed_by_wschaos_has_no_exit_code_of_its_own():
    """After a hang wschaos's SIGTERM (-15) is not the target's code: unknown, never "exit code -15"."""
    v = assert_unknown(checkers.exit_code(None, (0,), signal_killed=15, hung=True),
                       "not judged", "wschaos ended it (signal 15)", "shutdown.exit_time")
    assert "exit code -15" not in v.message and v.figures["hung"] is True
    assert_unknown(checkers.exit_code(-9, 0, signal_killed=9, hung=True), "not judged")


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


def test_output_of_a_hung_target_is_unknown_not_a_pass():
    """Quiet output of a process wschaos had to kill proves no clean shutdown: unknown, saying why."""
    v = assert_unknown(checkers.output_noise("LISTENING 127.0.0.1:1\n", "shutting down\n", hung=True),
                       "not judged", "hung", "no noisy line")
    assert v.figures["hung"] is True
    assert_unknown(checkers.output_noise("", NOISY, hung=True), "4 noisy lines", "before the kill")


def test_without_a_declared_line_limit_only_the_patterns_count():
    """uvicorn's INFO lines on stderr pass when the target declared no stderr line limit."""
    uvicorn = "INFO:     Shutting down\nINFO:     Waiting for application shutdown.\nINFO:     Finished server process [7]\n"
    assert_pass(checkers.output_noise("", uvicorn))
    assert_fail(checkers.output_noise("", uvicorn, max_stderr_lines=1), "3 lines on stderr > allowed 1")


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


def test_survivors_and_port_of_a_hung_target_are_not_judged():
    """wschaos ended the hung tree itself: no survivor could be seen, the port was freed by the kill."""
    assert_unknown(checkers.no_survivors([], hung=True), "not judged", "wschaos ended its whole tree")
    assert_unknown(checkers.port_free(True, port=8765, hung=True), "not judged", "port 8765", "by the kill")


def test_an_uninspected_tree_is_unknown():
    """No survivor list at all is unknown, not an empty pass."""
    assert_unknown(checkers.no_survivors(None), "not inspected")


def test_port_free_passes_fails_and_unknown():
    """A free port passes; a held port fails naming it; an unchecked one is unknown."""
    assert_pass(checkers.port_free(True, port=8765))
    assert_fail(checkers.port_free(False, port=8765), "port 8765", "still held")
    assert_unknown(checkers.port_free(None, port=8765), "port 8765 was not checked")


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


def test_a_declared_close_code_passes_and_an_undeclared_one_fails():
    """uvicorn's 1012 passes where the target declared (1001, 1012), and fails PROTOCOL.md's 1001."""
    h = _closes(1012, 1012, 1001).history
    v = assert_pass(checkers.close_codes(h, expected=(1001, 1012)))
    assert "1001 or 1012" in v.message
    assert_fail(checkers.close_codes(h), "2 of 3 clients closed with other codes than 1001", "1012 x2")
    assert_fail(checkers.close_codes(h, expected=1001), "1012 x2")


def test_connections_still_open_when_wschaos_killed_a_hung_target_are_not_its_1006():
    """A close seen only after wschaos's kill is reported as never closed by the shutdown, not as 1006."""
    t = _closes(1001, None)  # c1's connection ended, with no close frame, at 21 ms
    v = assert_fail(checkers.close_codes(t.history, killed_ns=ns(20.5)),
                    "1 of 2 connections were still open when wschaos ended the hung target", "c1")
    assert "1006" not in v.message and v.figures["open_at_kill"] == ["c1"]


def test_clients_that_closed_themselves_are_left_out_and_missing_closes_are_unknown():
    """A client that closed itself is not judged; one with no close recorded is unknown."""
    t = _closes(1001)
    t.connect(50, "c1")
    t.op(51, "c1", "close", code=1000)
    assert_pass(checkers.close_codes(t.history))
    assert_unknown(checkers.close_codes(t.history, clients=["c0", "c2"]), "1 of 2 clients recorded no close")
    assert_unknown(checkers.close_codes(Timeline().history), "no connected client")


# -- a second Ctrl+C --------------------------------------------------------------------
FORCED = {"forced_codes": (130,), "clean_codes": (0,)}


def test_a_second_ctrl_c_cutting_the_drain_short_passes():
    """Exit 40 ms after the second Ctrl+C, code 130: a forced exit within 500 ms."""
    v = assert_pass(checkers.shutdown.forced_exit(40.0, 500, returncode=130, drain_ms=95.0, **FORCED))
    assert "40.0 ms after the second Ctrl+C (95 ms after the first)" in v.message


def test_a_second_ctrl_c_ignored_until_the_drain_ends_fails():
    """Exit 2400 ms after the second Ctrl+C (code 0) is over the 500 ms bound, whatever the code."""
    assert_fail(checkers.shutdown.forced_exit(2400.0, 500, returncode=0, drain_ms=2450.0, **FORCED),
                "2400.0 ms > bound 500 ms")


def test_a_target_still_running_after_the_second_ctrl_c_fails_with_stacks():
    """Still running at the bound (wschaos ended it): fail, carrying the stacks."""
    v = assert_fail(checkers.shutdown.forced_exit(None, 500, returncode=None, stacks=["Thread 0x1: join"],
                                                  **FORCED), "still running 500 ms", "Thread 0x1")
    assert v.figures["hung"] is True


def test_a_drain_over_before_the_second_ctrl_c_is_unknown_with_its_length():
    """The drain ended 30 ms after the first Ctrl+C, before the second: nothing to cut short."""
    for v in (checkers.shutdown.forced_exit(-2.0, 500, returncode=0, drain_ms=30.0, **FORCED),
              checkers.shutdown.forced_exit(None, 500, returncode=0, drain_ms=30.0, second_sent=False, **FORCED)):
        assert_unknown(v, "the drain ended 30 ms after the first Ctrl+C", "nothing to cut short")


def test_a_clean_exit_just_after_the_second_ctrl_c_cannot_tell_handling_from_ignoring():
    """Code 0 within the bound: its drain may simply have ended; unknown, never a pass."""
    assert_unknown(checkers.shutdown.forced_exit(12.0, 500, returncode=0, drain_ms=60.0, **FORCED),
                   "exited cleanly (code 0)", "look the same")


def test_a_crash_on_the_second_ctrl_c_fails():
    """Within the bound but code -2 (killed by SIGINT) is not the declared forced exit 130."""
    assert_fail(checkers.shutdown.forced_exit(15.0, 500, returncode=-2, **FORCED),
                "expected a forced-exit code 130")


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
