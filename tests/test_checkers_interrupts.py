"""Interrupt and reply checkers, judged on narrated timelines."""

from __future__ import annotations

from test_checkers_timeline import Timeline, assert_fail, assert_pass, assert_unknown, ns

from harness import checkers


def _interrupted_stream(*, final_after_ack: bool = False, late_seqs: tuple[int, ...] = ()) -> Timeline:
    """c0 streams r1; INTERRUPT i1 at 10 ms; final (interrupted) and ACK around 12-13 ms."""
    t = Timeline()
    r1 = t.request(0, "c0", "r1", chunks=50)
    t.chunks(1, "c0", "r1", range(5))  # seq 0..4 at 1..5 ms
    i1 = t.interrupt(10, "c0", "i1", "r1")
    if final_after_ack:
        t.acked(i1, 12, ["r1"])
        t.final(13, "c0", "r1", 5, interrupted=True, reason="user", op=r1)
    else:
        t.final(12, "c0", "r1", 5, interrupted=True, reason="user", op=r1)
        t.acked(i1, 13, ["r1"])
    for i, seq in enumerate(late_seqs):  # chunks that leak out after the ACK
        t.frame(25.4 + i, "c0", "chunk", request_id="r1", seq=seq, final=False)
    return t


# -- ACK latency -------------------------------------------------------------------
def _latencies(ms: list[float], unanswered: int = 0) -> Timeline:
    t = Timeline()
    for i, lat in enumerate(ms):
        op = t.interrupt(i * 100, "c0", f"i{i}", None)
        t.acked(op, i * 100 + lat, [])
    for j in range(unanswered):
        op = t.interrupt(10_000 + j, "c0", f"lost{j}", None)
        t.end(op, 12_000 + j, "unknown")
    return t


def test_prompt_acks_pass():
    """100 ACKs between 5 and 50 ms are well under a 200 ms p99 bound."""
    v = assert_pass(checkers.ack_latency(_latencies([5 + (i % 10) * 5 for i in range(100)]).history, 200))
    assert v.figures["answered"] == 100 and v.figures["p99_ms"] <= 50


def test_a_slow_tail_fails_naming_p99_p50_and_max():
    """Three ACKs of 400-530 ms in 100 push p99 over 200 ms; the message names p99, p50 and max."""
    lat = [35.1] * 97 + [400.0, 412.3, 530.0]
    v = assert_fail(checkers.ack_latency(_latencies(lat).history, 200),
                    "ACK p99", "> bound 200 ms over 100 interrupts", "p50 35.1 ms", "max 530.0 ms")
    assert v.figures["p99_ms"] > 200


def test_unanswered_interrupts_fail_naming_how_many():
    """Two INTERRUPTs that timed out fail even when every answered ACK was fast."""
    assert_fail(checkers.ack_latency(_latencies([10.0] * 20, unanswered=2).history, 200),
                "2 of 22 INTERRUPTs got no ACK")


def test_an_interrupt_its_own_client_cut_short_is_not_judged_one_left_unanswered_is():
    """INTERRUPT i1 still waiting when c0 resets its own connection: its missing ACK is not the
    target's (unknown alone, beside an answered one a pass that says so); i2, whose wait ended
    unanswered before c1 closed, still fails."""
    t = Timeline()
    i1 = t.interrupt(10, "c0", "i1", None)
    t.end(t.op(12, "c0", "abort"), 13)
    t.end(i1, 14, "unknown")
    v = assert_unknown(checkers.one_ack_each(t.history), "ended by its own client before the ACK was read")
    assert v.figures["cut_by_client"] == 1
    t.acked(t.interrupt(20, "c2", "j1", None), 22, [])
    assert "1 not judged" in assert_pass(checkers.one_ack_each(t.history)).message
    i2 = t.interrupt(30, "c1", "i2", None)
    t.end(i2, 35, "unknown")
    t.end(t.op(40, "c1", "close"), 41)
    assert_fail(checkers.one_ack_each(t.history), "INTERRUPT i2 of c1: 0 ACKs")


def test_ack_latency_without_interrupts_is_unknown():
    """No INTERRUPT sent: nothing to measure."""
    assert_unknown(checkers.ack_latency(Timeline().history, 200), "no INTERRUPT")


# -- one ACK: status and ids ---------------------------------------------------------
def test_an_ack_with_the_expected_status_and_ids_passes():
    """SUCCESS naming exactly r1 and r2 (in any order)."""
    ack = {"kind": "ack", "request_id": "i1", "status": "SUCCESS", "interrupted_ids": ["r2", "r1"]}
    assert_pass(checkers.ack_status(ack, "SUCCESS", ["r1", "r2"]))


def test_an_ack_with_wrong_status_or_ids_fails():
    """NOT_FOUND where SUCCESS was due, and an id missing, are both named."""
    ack = {"kind": "ack", "request_id": "i1", "status": "NOT_FOUND", "interrupted_ids": ["r1"]}
    assert_fail(checkers.ack_status(ack, "SUCCESS", ["r1", "r2"]), "status NOT_FOUND",
                "expected ['r1', 'r2']")
    assert_fail(checkers.ack_status(None, "SUCCESS"), "no INTERRUPT_ACK")


def test_an_interrupt_answered_with_an_error_says_so_quoting_code_and_message():
    """An ERROR answering the INTERRUPT is named with its code and message, not as a missing ACK."""
    err = {"kind": "error", "request_id": "i1", "code": "BAD_MESSAGE", "message": "payload.reason is required"}
    v = assert_fail(checkers.ack_status(err, "SUCCESS", ["r1"]), "INTERRUPT i1 was answered with an ERROR",
                    "BAD_MESSAGE", "'payload.reason is required'", "expected an ACK SUCCESS")
    assert "no INTERRUPT_ACK" not in v.message and v.figures["error_code"] == "BAD_MESSAGE"


def test_an_interrupt_result_is_judged_by_its_ack_or_else_its_error():
    """The client's InterruptResult: its ACK when one came, else the ERROR that answered it."""
    from harness.protocol.frames import Frame, InterruptResult

    error = Frame("error", "ERROR", "i1", "s1", {"code": "BUSY", "message": "try later"}, "", 0)
    assert_fail(checkers.ack_status(InterruptResult("i1", "r1", None, None, 0, None, error), "SUCCESS"),
                "ERROR BUSY", "'try later'")
    ack = Frame("ack", "INTERRUPT_ACK", "i1", "s1", {"status": "SUCCESS", "interrupted": ["r1"]}, "", 0)
    assert_pass(checkers.ack_status(InterruptResult("i1", "r1", ack, 3.0, 0, 3), "SUCCESS", ["r1"]))


def test_an_ack_record_without_a_status_is_unknown():
    """A record missing its status cannot be judged."""
    assert_unknown(checkers.ack_status({"kind": "ack", "request_id": "i1"}, "SUCCESS"), "without a status")


def test_every_interrupt_getting_one_ack_passes_and_strays_fail():
    """One ACK per INTERRUPT passes; a duplicate ACK or a missing one fails; none sent is unknown."""
    t = _latencies([10.0, 20.0])
    assert_pass(checkers.one_ack_each(t.history))
    t.ack(500, "c0", "i1", [])  # a second ACK for i1
    t.interrupt(600, "c0", "i9", None)  # never answered
    assert_fail(checkers.one_ack_each(t.history), "2 of 3 INTERRUPTs", "INTERRUPT i1 of c0: 2 ACKs",
                "INTERRUPT i9 of c0: 0 ACKs")
    assert_unknown(checkers.one_ack_each(Timeline().history), "no INTERRUPT")


# -- order: final before ACK, nothing after ---------------------------------------------
def test_the_interrupted_final_before_the_ack_passes():
    """final at 12 ms, ACK at 13 ms: the order the protocol requires."""
    assert_pass(checkers.final_before_ack(_interrupted_stream().history))


def test_an_ack_before_the_final_fails_with_the_gap():
    """ACK at 12 ms, final at 13 ms: named with the +1.0 ms gap."""
    assert_fail(checkers.final_before_ack(_interrupted_stream(final_after_ack=True).history),
                "request r1 of c0: final +1.0 ms after its ACK i1")


def test_an_ack_whose_request_never_got_a_final_fails():
    """An ACK claiming r1 with no interrupted final for r1 at all."""
    t = Timeline()
    t.request(0, "c0", "r1")
    t.acked(t.interrupt(10, "c0", "i1", "r1"), 12, ["r1"])
    assert_fail(checkers.final_before_ack(t.history), "no interrupted final frame at all")


def test_a_final_after_the_ack_passes_where_the_target_declared_that_order():
    """ACK at 12 ms, final at 13 ms: fine for a target declaring ack_then_final or either."""
    h = _interrupted_stream(final_after_ack=True).history
    for order in ("ack_then_final", "either"):
        v = assert_pass(checkers.final_before_ack(h, order=order))
        assert v.figures["final_after_ack"] == 1
    assert_fail(checkers.final_before_ack(h), "final +1.0 ms after its ACK")  # PROTOCOL.md's order


def test_a_final_within_the_declared_grace_after_the_ack_passes():
    """A final 1 ms after the ACK is within a declared 5 ms grace, not within none."""
    h = _interrupted_stream(final_after_ack=True).history
    assert_pass(checkers.final_before_ack(h, grace_ms=5))
    assert_fail(checkers.final_before_ack(h, grace_ms=0.5), "final +1.0 ms after its ACK")


def test_a_declared_order_still_needs_the_interrupted_final():
    """Whatever the order, an ACK claiming r1 with no interrupted final for r1 fails."""
    t = Timeline()
    t.request(0, "c0", "r1")
    t.acked(t.interrupt(10, "c0", "i1", "r1"), 12, ["r1"])
    for order in ("ack_then_final", "either"):
        assert_fail(checkers.final_before_ack(t.history, order=order), "no interrupted final frame at all",
                    f"order {order}")


def test_after_the_ack_only_the_interrupted_final_may_follow_in_the_declared_order():
    """ack_then_final: the final after the ACK is allowed, a chunk after it is not; PROTOCOL.md allows neither."""
    h = _interrupted_stream(final_after_ack=True).history
    assert_pass(checkers.no_frames_after_ack(h, order="ack_then_final"))
    assert_fail(checkers.no_frames_after_ack(h), "1 frames after its ACK", "(seq 5)")
    late = _interrupted_stream(final_after_ack=True, late_seqs=(6,)).history
    assert_fail(checkers.no_frames_after_ack(late, order="either"), "1 frames after its ACK at +13.4 ms (seq 6)")


def test_a_second_final_after_the_ack_is_not_the_one_allowed():
    """The one final allowed after the ACK is the request's first: a final before it and one after fail."""
    t = _interrupted_stream()  # final at 12 ms, then the ACK at 13 ms
    t.final(20, "c0", "r1", 5, interrupted=True, reason="user")
    assert_fail(checkers.no_frames_after_ack(t.history, order="ack_then_final"), "1 frames after its ACK")


def test_an_unknown_interrupt_order_is_not_a_verdict():
    """An order no target can declare makes the checker unknown, naming it."""
    assert_unknown(checkers.final_before_ack(_interrupted_stream().history, order="sideways"), "sideways")


def test_order_checks_without_claims_are_unknown():
    """No ACK claimed any request: neither order check has anything to judge."""
    t = _latencies([10.0])  # an ACK that claimed nothing
    assert_unknown(checkers.final_before_ack(t.history), "no INTERRUPT_ACK claimed")
    assert_unknown(checkers.no_frames_after_ack(t.history), "no INTERRUPT_ACK claimed")


def test_no_frames_after_the_ack_passes():
    """After the ACK at 13 ms nothing more for r1."""
    assert_pass(checkers.no_frames_after_ack(_interrupted_stream().history))


def test_chunks_after_the_ack_fail_naming_count_time_and_seqs():
    """Chunks 14, 15, 16 at 25.4-27.4 ms, after the ACK at 13 ms: 3 frames at +12.4 ms."""
    v = assert_fail(checkers.no_frames_after_ack(_interrupted_stream(late_seqs=(14, 15, 16)).history),
                    "request r1 of c0: 3 frames after its ACK at +12.4 ms (seq 14, 15, 16)")
    assert v.figures["late_frames"] == 3


def test_late_frames_within_the_grace_or_for_a_reused_id_are_not_counted():
    """A grace of 20 ms forgives frames at +12.4 ms; a new REQUEST r1 starts its own frames."""
    t = _interrupted_stream(late_seqs=(14,))
    assert_pass(checkers.no_frames_after_ack(t.history, grace_ms=20))
    t2 = _interrupted_stream()
    t2.request(30, "c0", "r1")  # the client reuses the id for a new request
    t2.chunks(31, "c0", "r1", range(3))
    assert_pass(checkers.no_frames_after_ack(t2.history))


def test_an_id_reused_before_its_ack_is_not_judged_never_passed():
    """REQUEST r1 pipelined between INTERRUPT i1 and its ACK: r1's frames after the ACK may be
    the new request's, so that claim is not judged; alone it leaves the check unknown, and
    beside a judged claim with late frames the check still fails."""
    t = Timeline()
    r1 = t.request(0, "c0", "r1", chunks=50)
    t.chunks(1, "c0", "r1", range(3))
    i1 = t.interrupt(10, "c0", "i1", "r1")
    t.request(10.5, "c0", "r1", chunks=50)  # in the same write as the INTERRUPT
    t.final(12, "c0", "r1", 3, interrupted=True, reason="user", op=r1)
    t.acked(i1, 13, ["r1"])
    t.chunks(14, "c0", "r1", range(3))
    v = assert_unknown(checkers.no_frames_after_ack(t.history), "sent again in a new REQUEST before its ACK",
                       "request r1 of c0")
    assert v.figures["not_judged"] == 1
    t.request(20, "c0", "r2", chunks=50)
    t.chunks(21, "c0", "r2", range(2))
    t.final(22, "c0", "r2", 2, interrupted=True, reason="user")
    t.acked(t.interrupt(21.5, "c0", "i2", "r2"), 23, ["r2"])
    v = assert_pass(checkers.no_frames_after_ack(t.history))
    assert "for any of 1 interrupted requests (1 not judged" in v.message
    t.frame(30, "c0", "chunk", request_id="r2", seq=2, final=False)
    assert_fail(checkers.no_frames_after_ack(t.history), "request r2 of c0: 1 frames after its ACK")


# -- one terminal per request, double claims ----------------------------------------------
def test_each_request_ending_once_passes():
    """r1 ends with one final; r2 is refused with one ERROR (BUSY)."""
    t = _interrupted_stream()
    r2 = t.request(20, "c0", "r2")
    t.frame(21, "c0", "error", request_id="r2", code="BUSY")
    t.end(r2, 21, "fail", error_code="BUSY")
    assert_pass(checkers.one_terminal_per_request(t.history))


def test_two_finals_or_a_final_and_an_error_fail():
    """r1 gets a second final at 30 ms; r2 gets a final and an ERROR."""
    t = _interrupted_stream()
    t.final(30, "c0", "r1", 6)
    r2 = t.request(40, "c0", "r2")
    t.final(41, "c0", "r2", 0, op=r2)
    t.frame(42, "c0", "error", request_id="r2", code="BAD_MESSAGE")
    assert_fail(checkers.one_terminal_per_request(t.history), "2 of 2 requests",
                "request r1 of c0: 2 final frames", "request r2 of c0: 1 final and 1 ERROR frames")


def test_a_request_lost_with_its_connection_is_not_a_failure_and_no_requests_is_unknown():
    """A REQUEST whose connection died (outcome unknown) is unresolved, not failed."""
    t = Timeline()
    r1 = t.request(0, "c0", "r1")
    t.end(r1, 5, "unknown")
    v = assert_pass(checkers.one_terminal_per_request(t.history))
    assert v.figures["unresolved"] == 1
    assert_unknown(checkers.one_terminal_per_request(Timeline().history), "no request")


def test_each_request_claimed_by_one_ack_passes():
    """Two concurrent INTERRUPTs for r1: one claims it, the other answers NOT_FOUND."""
    t = _interrupted_stream()
    t.acked(t.interrupt(14, "c0", "i2", "r1"), 15, [], status="NOT_FOUND")
    assert_pass(checkers.no_double_claim(t.history))


def test_a_request_claimed_by_two_acks_fails():
    """i1 and i2 both report r1 interrupted."""
    t = _interrupted_stream()
    t.acked(t.interrupt(14, "c0", "i2", "r1"), 15, ["r1"])
    assert_fail(checkers.no_double_claim(t.history), "1 requests claimed by more than one ACK",
                "request r1 of c0: claimed by 2 ACKs (i1, i2)")


def test_an_id_claimed_sent_again_and_claimed_again_is_two_requests():
    """r1 claimed by i1; a new REQUEST r1 (after the ACK, or right behind the INTERRUPT in its
    write) claimed by i2 is another request, claimed once; i3 claiming that one again fails."""
    for reuse_ms in (14, 10.5):
        t = _interrupted_stream()
        t.request(reuse_ms, "c0", "r1", chunks=50)
        t.acked(t.interrupt(20, "c0", "i2", "r1"), 22, ["r1"])
        assert "2 requests each claimed by one of 2 ACKs" in assert_pass(checkers.no_double_claim(t.history)).message
        t.acked(t.interrupt(30, "c0", "i3", "r1"), 32, ["r1"])
        assert_fail(checkers.no_double_claim(t.history), "request r1 of c0: claimed by 2 ACKs (i2, i3)")


def test_the_same_id_in_two_sessions_is_not_a_double_claim_and_no_claims_is_unknown():
    """r1 of c0 and r1 of c1 are different requests; ACKs claiming nothing are unknown."""
    t = _interrupted_stream()
    t.ack(20, "c1", "j1", ["r1"])
    assert_pass(checkers.no_double_claim(t.history))
    assert_unknown(checkers.no_double_claim(_latencies([5.0]).history), "claimed no request")
    assert_unknown(checkers.no_double_claim(Timeline().history), "no INTERRUPT_ACK")


# -- NOT_FOUND, untouched, completes -------------------------------------------------------
def _not_found(status: str = "NOT_FOUND", claimed: list[str] | None = None) -> Timeline:
    """c0 interrupts an unknown id, a finished id and c1's request r9; c1's r9 runs on."""
    t = Timeline()
    r9 = t.request(0, "c1", "r9", chunks=3)
    for i, target in enumerate(("nope", "done", "r9")):
        op = t.interrupt(10 + i, "c0", f"i{i}", target)
        t.acked(op, 11 + i, claimed if (claimed and target == "r9") else [],
                status=status if target == "r9" else "NOT_FOUND")
    t.chunks(20, "c1", "r9", range(3))
    t.final(25, "c1", "r9", 3, op=r9)
    return t


def test_foreign_and_unknown_ids_answered_not_found_and_untouched_pass():
    """Three INTERRUPTs answered NOT_FOUND, count 0; c1's r9 completes untouched."""
    t = _not_found()
    assert_pass(checkers.not_found(t.history, ["i0", "i1", "i2"]))
    assert_pass(checkers.untouched(t.history, ["r9"]))


def test_a_foreign_id_that_cancels_another_sessions_request_fails():
    """i2 claims c1's r9 (SUCCESS, count 1), and r9 ends interrupted."""
    t = Timeline()
    r9 = t.request(0, "c1", "r9")
    t.acked(t.interrupt(10, "c0", "i2", "r9"), 11, ["r9"])
    t.final(12, "c1", "r9", 2, interrupted=True, reason="user", op=r9)
    assert_fail(checkers.not_found(t.history, ["i2"]), "INTERRUPT i2 of c0: status SUCCESS, interrupted_count 1 (r9)")
    assert_fail(checkers.untouched(t.history, ["r9"]), "request r9 of c1: ended interrupted (reason 'user')")


def test_not_found_and_untouched_without_records_are_unknown():
    """An INTERRUPT never answered, or a request never sent, cannot be judged."""
    t = Timeline()
    t.end(t.interrupt(0, "c0", "i0", "nope"), 2000, "unknown")
    assert_unknown(checkers.not_found(t.history, ["i0"]), "i0: no ACK (unknown)")
    assert_unknown(checkers.not_found(t.history, []), "no INTERRUPT ids")
    assert_unknown(checkers.untouched(t.history, ["r1"]), "request r1: no REQUEST recorded")


def test_a_request_after_an_interrupt_completes():
    """r2, sent right after i1, streams all 3 chunks it asked for."""
    t = _interrupted_stream()
    r2 = t.request(14, "c0", "r2", chunks=3)
    t.chunks(15, "c0", "r2", range(3))
    t.final(18, "c0", "r2", 3, op=r2)
    assert_pass(checkers.request_completes(t.history, "r2", client="c0"))


def test_a_sticky_interrupt_or_a_short_reply_fails():
    """r2 ends at once as interrupted; r3 completes with 1 of its 3 chunks; r4 never ends."""
    t = _interrupted_stream()
    r2 = t.request(14, "c0", "r2", chunks=3)
    t.final(15, "c0", "r2", 0, interrupted=True, reason="user", op=r2)
    r3 = t.request(16, "c0", "r3", chunks=3)
    t.chunks(17, "c0", "r3", range(1))
    t.final(18, "c0", "r3", 1, op=r3)
    t.request(19, "c0", "r4")
    assert_fail(checkers.request_completes(t.history, "r2"), "ended interrupted")
    assert_fail(checkers.request_completes(t.history, "r3"), "1 chunks, asked for 3")
    assert_fail(checkers.request_completes(t.history, "r4"), "no final frame")


def test_a_request_whose_connection_died_is_unknown():
    """Outcome unknown (connection lost) is not evidence either way."""
    t = Timeline()
    t.end(t.request(0, "c0", "r1"), 3, "unknown")
    assert_unknown(checkers.request_completes(t.history, "r1"), "outcome unknown")
    assert_unknown(checkers.request_completes(t.history, "zz"), "no REQUEST recorded")


# -- sequence numbers ------------------------------------------------------------------------
def test_chunks_numbered_from_zero_without_gaps_pass():
    """r1: 0..4; r2 (interleaved on c1): 0..2; a reused r1 after its final starts at 0 again."""
    t = _interrupted_stream()
    t.chunks(20, "c1", "r2", range(3))
    t.chunks(30, "c0", "r1", range(2))
    assert_pass(checkers.seq_gap_free(t.history))


def test_a_gap_or_a_repeat_in_seq_fails():
    """r1 jumps from 2 to 4, then repeats 4."""
    t = Timeline()
    t.chunks(0, "c0", "r1", [0, 1, 2, 4, 4])
    assert_fail(checkers.seq_gap_free(t.history), "2 out-of-sequence chunks in 5",
                "request r1 of c0: seq 4 where 3 was due", "seq 4 where 5 was due")


def test_no_chunks_is_unknown():
    """No chunk frames at all."""
    assert_unknown(checkers.seq_gap_free(Timeline().history), "no chunk frames")


# -- cancellation reaches the agent ------------------------------------------------------------
def test_upstream_closed_within_the_bound():
    """INTERRUPT at 1000 ms, upstream closed at 1042.5 ms: 42.5 ms <= 200 ms."""
    v = assert_pass(checkers.upstream_closed_within(ns(1000), ns(1042.5), 200))
    assert v.figures["closed_after_ms"] == 42.5


def test_upstream_closed_late_or_never_fails():
    """Closed 350 ms after, or still open: both fail."""
    assert_fail(checkers.upstream_closed_within(ns(1000), ns(1350), 200), "350.0 ms", "bound 200 ms")
    assert_fail(checkers.upstream_closed_within(ns(1000), None, 200), "upstream stream still open")


def test_upstream_without_an_interrupt_time_or_closed_before_it_is_unknown():
    """No send time, or a stream that ended before the INTERRUPT: not exercised."""
    assert_unknown(checkers.upstream_closed_within(None, ns(5), 200), "no INTERRUPT send time")
    assert_unknown(checkers.upstream_closed_within(ns(1000), ns(900), 200), "before the INTERRUPT")


def test_a_first_chunk_not_delayed_passes_and_a_delayed_one_fails():
    """18.2 ms passes a 400 ms bound; 1512 ms behind a stuck thread fails; never seen fails."""
    assert_pass(checkers.not_delayed(18.2, 400, what="first chunk"))
    assert_fail(checkers.not_delayed(1512.0, 400, what="first chunk of r2"), "first chunk of r2 after 1512.0 ms",
                "bound 400 ms")
    assert_fail(checkers.not_delayed(None, 400), "not seen within the wait")


def test_not_delayed_without_a_bound_is_unknown():
    """No bound to judge against."""
    assert_unknown(checkers.not_delayed(10, None), "no bound")


# -- what the client derived is not the service's to be judged on ----------------------------
DERIVED_ACK = ["kind", "request_id", "status", "interrupted_ids"]


def test_an_interrupt_with_nothing_to_stop_has_no_latency():
    """i2 was answered by nothing (no ACK exists, nothing ran): its 600 ms wait is no ACK latency."""
    t = _latencies([10.0])
    t.end(t.interrupt(100, "c0", "i2", "nope"), 700, status="NOT_FOUND", interrupted=[], answered_by="nothing",
          chunks_after=0)
    v = assert_pass(checkers.ack_latency(t.history, 200))
    assert v.figures["answered"] == 1 and v.figures["nothing_to_stop"] == 1
    only = Timeline()
    only.end(only.interrupt(0, "c0", "i0", None), 500, status="NOT_FOUND", interrupted=[], answered_by="nothing")
    assert_unknown(checkers.ack_latency(only.history, 200), "none of 1 INTERRUPTs had a reply to stop")


def _stopped_by_its_end() -> Timeline:
    """A service without ACKs: r1's usual end answers i1; the client derived the ACK and the flag."""
    t = Timeline()
    r1 = t.request(0, "c0", "r1")
    t.chunks(1, "c0", "r1", range(5))
    i1 = t.interrupt(10, "c0", "i1", "r1")
    t.frame(12, "c0", "final", request_id="r1", final=True, interrupted=True, derived=["interrupted"])
    t.end(r1, 12, interrupted=True, chunks=5)
    t.frame(12, "c0", "ack", request_id="i1", status="SUCCESS", interrupted_ids=["r1"], session_id="s-c0",
            derived=DERIVED_ACK)
    t.end(i1, 12, status="SUCCESS", interrupted=["r1"], latency_ms=2.0, answered_by="final", chunks_after=0)
    return t


def test_claims_the_client_derived_are_not_judged():
    """An ACK worked out from a stopped reply's end, or one listing no ids, leaves nothing to judge."""
    h = _stopped_by_its_end().history
    assert_unknown(checkers.final_before_ack(h), "the service's answers carry no ids to judge",
                   "ACKs the client derived from the stopped replies' ends")
    assert_unknown(checkers.no_double_claim(h), "the service's answers carry no ids to judge")
    assert not checkers.interrupts.acks_name_requests(h)
    t = _interrupted_stream()  # an ACK that names no request: the client listed r1 itself
    t.records[-1].data["derived"] = ["request_id", "interrupted_ids"]
    assert_unknown(checkers.final_before_ack(t.history), "ACKs without the ids of the requests they stopped")
    assert_unknown(checkers.no_double_claim(t.history), "1 ACKs without the ids")


def test_the_services_own_claims_are_judged_beside_derived_ones():
    """c0's ACK names r1 itself and comes before r1's final; c1's derived ACK is left out, not passed."""
    t = _interrupted_stream(final_after_ack=True)
    t.request(30, "c1", "q1")
    t.frame(40, "c1", "final", request_id="q1", final=True, interrupted=True, derived=["interrupted"])
    t.frame(40, "c1", "ack", request_id="j1", status="SUCCESS", interrupted_ids=["q1"], derived=DERIVED_ACK)
    v = assert_fail(checkers.final_before_ack(t.history), "1 of 1 interrupted requests",
                    "request r1 of c0: final +1.0 ms after its ACK i1")
    assert v.figures["left_out"] == 1
    assert checkers.interrupts.acks_name_requests(t.history)


def test_a_final_the_client_made_up_at_the_ack_is_not_a_final_before_it():
    """A service that ends a stopped reply with its ACK alone: the derived final before it proves nothing."""
    t = Timeline()
    t.request(0, "c0", "r1")
    t.chunks(1, "c0", "r1", range(3))
    i1 = t.interrupt(10, "c0", "i1", "r1")
    t.frame(12, "c0", "final", request_id="r1", final=True, interrupted=True,
            derived=["kind", "request_id", "interrupted"])
    t.acked(i1, 12, ["r1"])
    assert_unknown(checkers.final_before_ack(t.history), "claims of replies the client ended at the ACK")


def test_a_final_that_does_not_say_it_was_interrupted_counts_where_the_service_never_says():
    """r1's final carries no interrupted flag: missing where the flag is due, enough with require_flag=False."""
    t = Timeline()
    t.request(0, "c0", "r1")
    i1 = t.interrupt(10, "c0", "i1", "r1")
    t.frame(12, "c0", "final", request_id="r1", final=True, interrupted=None)
    t.acked(i1, 13, ["r1"])
    assert_fail(checkers.final_before_ack(t.history), "request r1 of c0: no interrupted final frame at all")
    v = assert_pass(checkers.final_before_ack(t.history, require_flag=False))
    assert v.figures["require_flag"] is False


# -- chunks after an interrupt ------------------------------------------------------------------
def _stream_on(every_ms: float, late: int, *, ack_ms: float | None = None) -> Timeline:
    """r1 streams; i1 at 10 ms; ``late`` more chunks every ``every_ms``, then r1's final and the answer."""
    t = Timeline()
    r1 = t.request(0, "c0", "r1")
    t.chunks(1, "c0", "r1", range(5))
    i1 = t.interrupt(10, "c0", "i1", "r1")
    end = t.chunks(10 + every_ms, "c0", "r1", range(5, 5 + late), every_ms=every_ms) if late else 10.5
    t.final(end, "c0", "r1", 5 + late, interrupted=True, reason="user", op=r1)
    answer = ack_ms if ack_ms is not None else end + 0.5
    t.acked(i1, answer, ["r1"]).data.update(answered_by="ack", chunks_after=late)
    return t


def test_a_reply_that_stops_at_once_has_no_chunks_after_its_interrupt():
    """i1 at 10 ms, r1's final at 10.5 ms: no chunk between the INTERRUPT and its answer."""
    v = assert_pass(checkers.interrupts.chunks_after_interrupt(_stream_on(20, 0).history, 0, in_flight_ms=200))
    assert v.message.startswith("no chunk of a stopped reply arrived more than 200 ms after its INTERRUPT")
    assert v.figures["judged"] == 1


def test_a_reply_streaming_on_after_its_stop_fails_naming_how_many_and_when():
    """19 chunks 20 ms apart after the stop (late_stop): 9 of them more than 200 ms after it."""
    h = _stream_on(20, 19).history
    assert_fail(checkers.interrupts.chunks_after_interrupt(h, 0, in_flight_ms=200),
                "1 of 1 INTERRUPTs were followed by more chunks", "than allowed (none)",
                "INTERRUPT i1 of c0: 9 chunks of the replies it stopped more than 200 ms after it (19 in all), "
                "answered 400.5 ms after it")
    assert_fail(checkers.interrupts.chunks_after_interrupt(h, 1), "19 chunks of the replies it stopped, answered")
    assert_fail(checkers.interrupts.chunks_after_interrupt(h, 8, in_flight_ms=200), "than allowed (at most 8)")
    v = assert_pass(checkers.interrupts.chunks_after_interrupt(h, 9, in_flight_ms=200))
    assert "at most 9 chunks (allowed 9)" in v.message


def test_chunks_on_their_way_before_the_target_read_the_interrupt_are_in_flight():
    """Two chunks 1 ms and 2 ms after the INTERRUPT: in flight within 200 ms; counted without a window."""
    h = _stream_on(1, 2).history
    v = assert_pass(checkers.interrupts.chunks_after_interrupt(h, 0, in_flight_ms=200))
    assert "up to 2 arrived sooner, in flight" in v.message
    assert_fail(checkers.interrupts.chunks_after_interrupt(h, 0), "2 chunks of the replies it stopped")
    assert_pass(checkers.interrupts.chunks_after_interrupt(h, 2))


def test_a_late_ack_after_a_prompt_end_is_no_chunk_after_the_interrupt():
    """r1 ends 1 ms after the stop with one chunk in flight; the ACK comes at 300 ms: no late chunk."""
    v = assert_pass(checkers.interrupts.chunks_after_interrupt(_stream_on(1, 1, ack_ms=310).history, 0,
                                                               in_flight_ms=200))
    assert v.figures["most_late"] == 0


def test_frames_after_a_replys_end_are_not_chunks_after_its_interrupt():
    """Chunks leaking after r1's final are no_frames_after_ack's to judge, not counted here."""
    t = _stream_on(20, 0, ack_ms=400)
    t.chunks(250, "c0", "r1", range(6, 9))
    assert_pass(checkers.interrupts.chunks_after_interrupt(t.history, 0, in_flight_ms=200))


def test_chunks_after_interrupts_without_a_reply_stopped_by_the_service_are_unknown():
    """Nothing to stop (answered by nothing), no answer at all, or no INTERRUPT: nothing to count."""
    t = Timeline()
    t.end(t.interrupt(0, "c0", "i0", None), 1, status="NOT_FOUND", interrupted=[], answered_by="nothing",
          chunks_after=0)
    t.end(t.interrupt(5, "c0", "i1", "r1"), 2005, "unknown")
    assert_unknown(checkers.interrupts.chunks_after_interrupt(t.history, 0, in_flight_ms=200),
                   "none of 2 INTERRUPTs was answered by the service")
    assert_unknown(checkers.interrupts.chunks_after_interrupt(Timeline().history, 0), "no INTERRUPT was sent")
    t2 = Timeline()  # answered NOT_FOUND by the service: it stopped nothing
    t2.acked(t2.interrupt(0, "c0", "i0", "nope"), 2, [], status="NOT_FOUND").data.update(answered_by="ack",
                                                                                      chunks_after=0)
    assert_unknown(checkers.interrupts.chunks_after_interrupt(t2.history, 0), "stopped a reply")
