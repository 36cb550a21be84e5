"""Leak, drift, delivery and per-connection checkers, with plain numbers and timelines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from test_checkers_timeline import Timeline, assert_fail, assert_pass, assert_unknown, ns

from harness import checkers
from harness.core.history import History

IDLE = {"connections": 0, "sessions": 0, "active_requests": 0, "subscriptions": 0,
        "per_session_state": 0, "tasks": 3, "threads": 1}


@dataclass
class FakeSample:
    """The shape of probes.Sample, without importing the probes."""

    source: str
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- idle counters, baselines --------------------------------------------------------
def test_idle_counters_all_zero_pass_from_a_dict_or_a_sample():
    """After churn every idle counter is 0, given as a dict or as a probe Sample."""
    assert_pass(checkers.counters_zero(IDLE))
    assert_pass(checkers.counters_zero(FakeSample("probe:stats", True, IDLE)))


def test_leaked_counters_fail_naming_each_key_and_value():
    """Subscriptions 12 and per_session_state 300 are left after every client went."""
    v = assert_fail(checkers.counters_zero({**IDLE, "subscriptions": 12, "per_session_state": 300}),
                    "subscriptions=12", "per_session_state=300")
    assert v.figures["nonzero"] == {"subscriptions": 12, "per_session_state": 300}


def test_a_missing_or_failed_sample_is_unknown():
    """No sample, a failed probe, or a key the sample lacks: unknown, saying which."""
    assert_unknown(checkers.counters_zero(None), "no sample")
    assert_unknown(checkers.counters_zero(FakeSample("probe:stats", False, error="connection refused")),
                   "connection refused")
    assert_unknown(checkers.counters_zero({"connections": 0}, keys=("connections", "sessions")),
                   "sessions=None")


def test_tasks_back_to_baseline_pass():
    """Tasks 3 -> 4 after 300 cycles is within an allowance of +2."""
    assert_pass(checkers.back_to_baseline(4, 3, 2, what="tasks", cycles=300))


def test_leaked_tasks_fail_with_the_whole_story():
    """Tasks 3 -> 57 after 300 cycles exceeds baseline 3 + 2."""
    v = assert_fail(checkers.back_to_baseline(57, 3, 2, what="tasks", cycles=300),
                    "tasks 3 -> 57 after 300 cycles (baseline 3, allowed +2)")
    assert v.figures["delta"] == 54


def test_back_to_baseline_without_a_figure_is_unknown():
    """A probe that gave no figure leaves nothing to compare."""
    assert_unknown(checkers.back_to_baseline(4, None, 1, what="threads"), "threads")


# -- growth and drift ------------------------------------------------------------------
def test_flat_rss_after_warm_up_passes():
    """RSS jumps during the first cycles (warm-up), then stays flat over 1000 cycles."""
    series = [(c, 50_000_000 + (5_000_000 if c >= 50 else c * 100_000)) for c in range(0, 1000, 10)]
    v = assert_pass(checkers.growth_per_1000(series, 1024 * 1024, what="rss", unit="B"))
    assert abs(v.figures["per_1000"]) < 1


def test_rss_growing_per_connection_fails_with_the_rate():
    """256 KiB retained per cycle is 250 MiB per 1000 cycles, over a 1 MiB bound."""
    series = [(c, 50_000_000 + c * 262_144) for c in range(0, 300, 10)]
    v = assert_fail(checkers.growth_per_1000(series, 1024 * 1024, what="rss"),  # "rss" implies bytes
                    "rss grows 250.0 MiB per 1000 cycles > bound 1.0 MiB")
    assert round(v.figures["per_1000"]) == 262_144_000


def test_too_few_points_for_a_slope_is_unknown():
    """Two points (one dropped as warm-up) cannot show a trend."""
    assert_unknown(checkers.growth_per_1000([(0, 1), (10, 2)], 100, what="rss"), "need at least 3")
    assert_unknown(checkers.growth_per_1000(None, 100, what="rss"), "0 usable points")


def test_growth_of_a_count_is_reported_without_byte_units():
    """Open fds growing 5 per 1000 cycles against a bound of 1: plain numbers."""
    series = [(c, 20 + c * 0.005) for c in range(0, 2000, 50)]
    assert_fail(checkers.growth_per_1000(series, 1, what="fds"), "fds grows 5 per 1000 cycles > bound 1")


def test_steady_latency_passes():
    """100 round trips around 2 ms: last tenth's median equals the first's."""
    assert_pass(checkers.latency_drift([2.0 + (i % 3) * 0.1 for i in range(100)]))


def test_latency_growing_with_every_connection_fails_naming_both_medians():
    """Latency climbing from 2 ms to 11.9 ms: x5.5 over a x1.5 ratio."""
    v = assert_fail(checkers.latency_drift([2.0 + i * 0.1 for i in range(100)]),
                    "median latency 3.0 ms (first 20) -> 10.9 ms (last 20)", "> x1.5", "more than 5 ms slower")
    assert v.figures["ratio"] > 3


def test_a_millisecond_of_noise_on_a_fast_round_trip_is_not_drift():
    """2 ms growing to 3.3 ms is x1.65 but only 1.3 ms slower: under the absolute floor, so it passes."""
    series = [2.0] * 24 + [3.3] * 6
    v = assert_pass(checkers.latency_drift(series))
    assert "x1.65 > x1.5, not more than 5 ms slower" in v.message
    assert v.figures["floor_ms"] == 5.0
    assert checkers.latency_drift(series, floor_ms=1.0).status == "fail"


def test_latency_drift_with_fewer_than_20_points_is_unknown():
    """19 points are too few to compare fifths."""
    assert_unknown(checkers.latency_drift([1.0] * 19), "19 latency points")


# -- probe agreement ------------------------------------------------------------------------
def test_stats_and_probe_agreeing_pass():
    """/stats says 3 tasks, the injected probe sees 4: within a tolerance of 1."""
    assert_pass(checkers.probe_agrees(3, 4, what="tasks", tolerance=1))


def test_stats_that_lie_fail():
    """/stats says 3 tasks while the probe counts 57."""
    assert_fail(checkers.probe_agrees(3, 57, what="tasks", tolerance=1), "/stats says 3, probe says 57 (difference 54")


def test_probe_agreement_without_the_probe_is_unknown():
    """The probe gave no figure."""
    assert_unknown(checkers.probe_agrees(3, None, what="tasks", tolerance=1), "a figure is missing")


# -- slow consumer ---------------------------------------------------------------------------
def test_memory_bounded_under_a_slow_consumer_passes():
    """RSS 40 MiB -> peak 44 MiB: 4 MiB growth within a 16 MiB bound."""
    mib = 1024 * 1024
    assert_pass(checkers.memory_bounded([40 * mib, 42 * mib, 44 * mib, 43 * mib], 16 * mib))


def test_an_unbounded_buffer_fails_naming_growth_and_peak():
    """RSS 40 MiB -> 300 MiB while the reader is paused."""
    mib = 1024 * 1024
    assert_fail(checkers.memory_bounded([40 * mib, 120 * mib, 300 * mib], 16 * mib),
                "RSS growth 260.0 MiB > bound 16.0 MiB over 3 samples", "peak 300.0 MiB")
    assert_fail(checkers.memory_bounded([40 * mib, 300 * mib], 64 * mib, relative=False), "RSS peak 300.0 MiB")


def test_memory_with_one_sample_is_unknown():
    """One sample shows no growth."""
    assert_unknown(checkers.memory_bounded([1000], 10), "1 RSS samples")


def test_other_sessions_latency_within_the_bound_passes():
    """Healthy sessions' heartbeats stay under 50 ms at p99 while another reads slowly."""
    assert_pass(checkers.latency_within([3.0 + i % 5 for i in range(100)], 50))


def test_slow_or_lost_heartbeats_fail():
    """A p99 of 900 ms and 2 timeouts (None) are both named."""
    v = assert_fail(checkers.latency_within([5.0] * 95 + [900.0] * 3 + [None, None], 50),
                    "p99 900.0 ms > bound 50 ms over 98 samples", "2 of 100 operations timed out")
    assert v.figures["timeouts"] == 2


def test_latency_within_without_samples_is_unknown():
    """No latency samples at all."""
    assert_unknown(checkers.latency_within([], 50), "no latency samples")


# -- pub/sub delivery --------------------------------------------------------------------------
def _pubsub(dup_for: str | None = None, leak_to: str | None = None) -> Timeline:
    """c0 and c1 subscribe to "news", c2 does not; c0 publishes once at 10 ms."""
    t = Timeline()
    for c in ("c0", "c1"):
        t.end(t.op(0, c, "subscribe", topic="news"), 1)
    t.end(t.op(10, "c0", "publish", topic="news", data={"n": 1}), 10)
    for c in ("c0", "c1", *([dup_for] if dup_for else []), *([leak_to] if leak_to else [])):
        t.frame(11, c, "event", topic="news", data={"n": 1})
    return t


def test_each_subscriber_gets_the_event_once():
    """c0 (the publisher, subscribed) and c1 get one EVENT; c2 none."""
    assert_pass(checkers.exactly_once(_pubsub().history, "news", ["c0", "c1"], ["c2"]))


def test_duplicate_or_stray_events_fail():
    """c1 gets the EVENT twice; c2, not subscribed, gets it once."""
    assert_fail(checkers.exactly_once(_pubsub(dup_for="c1", leak_to="c2").history, "news", ["c0", "c1"], ["c2"]),
                "c1 got 2 EVENTs on 'news' (expected 1)", "c2 (not subscribed) got 1 EVENTs")


def test_delivery_without_a_publish_is_unknown():
    """No PUBLISH on the topic recorded: nothing was delivered to judge."""
    assert_unknown(checkers.exactly_once(_pubsub().history, "sports", ["c0"], []), "no successful PUBLISH")


# -- keepalive, bad input, oversize ----------------------------------------------------------------
def _silent_peer(closed_at_ms: float | None) -> Timeline:
    """c0 connects, stops reading at 100 ms (no pongs); the server may drop it later."""
    t = Timeline()
    t.connect(0, "c0")
    if closed_at_ms is not None:
        t.closed(closed_at_ms, "c0", None)
    return t


def test_a_silent_peer_dropped_within_two_heartbeats_passes():
    """Dropped 1850 ms after going silent, within a 2000 ms bound."""
    assert_pass(checkers.dropped_within(_silent_peer(1950).history, "c0", ns(100), 2000))


def test_a_silent_peer_never_reaped_fails():
    """Still connected at the end of the wait, or dropped only after 5000 ms."""
    assert_fail(checkers.dropped_within(_silent_peer(None).history, "c0", ns(100), 2000), "still connected")
    assert_fail(checkers.dropped_within(_silent_peer(5100).history, "c0", ns(100), 2000),
                "dropped after 5000.0 ms > bound 2000 ms")


def test_dropped_within_without_a_start_or_client_is_unknown():
    """No start time, or a client the history never heard of."""
    assert_unknown(checkers.dropped_within(_silent_peer(None).history, "c0", None, 2000), "no start time")
    assert_unknown(checkers.dropped_within(_silent_peer(None).history, "c7", ns(0), 2000), "no record of client c7")


def test_closed_with_the_expected_code():
    """The oversize sender is closed with 1009; a 1011 or no close at all fails; an unknown client is unknown."""
    assert_pass(checkers.closed_with(_closed(1009), "c0", 1009))
    assert_fail(checkers.closed_with(_closed(1011), "c0", 1009), "c0 closed with 1011, expected 1009")
    assert_fail(checkers.closed_with(_silent_peer(None).history, "c0", 1009), "still open")
    assert_unknown(checkers.closed_with(_silent_peer(None).history, "c9", 1009), "no record of client c9")


def _closed(code: int | None) -> History:
    """c0 connects at 0 ms and is closed by the server at 60 ms."""
    t = _silent_peer(None)
    t.closed(60, "c0", code)
    return t.history


def test_bad_input_answered_with_the_expected_error_code():
    """Non-JSON text is answered ERROR BAD_JSON (a frame record, or a Frame-like object)."""
    assert_pass(checkers.error_code({"kind": "error", "code": "BAD_JSON"}, "BAD_JSON"))

    @dataclass
    class FrameLike:
        kind: str = "error"
        msg_type: str = "ERROR"
        request_id: str | None = None
        code: str = "BAD_MESSAGE"

    assert_pass(checkers.error_code(FrameLike(), "BAD_MESSAGE"))


def test_a_wrong_or_missing_error_fails():
    """UNKNOWN_TYPE where BAD_JSON was due; no answer at all."""
    assert_fail(checkers.error_code({"kind": "error", "code": "UNKNOWN_TYPE"}, "BAD_JSON"),
                "answered error code UNKNOWN_TYPE, expected ERROR BAD_JSON")
    assert_fail(checkers.error_code(None, "BAD_JSON"), "no frame answered")


def test_an_unusable_frame_record_is_unknown():
    """A record with neither kind nor code."""
    assert_unknown(checkers.error_code({"raw": "x"}, "BAD_JSON"), "neither kind nor code")


def _after_bad_input(closed_code: int | None = None, heartbeat: str = "ok") -> Timeline:
    """c0 sends garbage at 10 ms, gets ERROR BAD_JSON, then a HEARTBEAT at 20 ms."""
    t = Timeline()
    t.connect(0, "c0")
    t.end(t.op(10, "c0", "send_raw", data="{not json"), 10)
    t.frame(11, "c0", "error", code="BAD_JSON")
    if closed_code is not None:
        t.closed(12, "c0", closed_code)
    if heartbeat:
        t.end(t.op(20, "c0", "heartbeat"), 21, heartbeat)
    return t


def test_the_connection_stays_usable_after_bad_input():
    """The HEARTBEAT after the garbage is answered; the connection never closed."""
    assert_pass(checkers.connection_usable(_after_bad_input().history, "c0", ns(10)))


def test_a_connection_closed_by_bad_input_fails():
    """A 1011 close 2 ms after the garbage; or a HEARTBEAT that got no answer."""
    assert_fail(checkers.connection_usable(_after_bad_input(1011, "").history, "c0", ns(10)),
                "c0 closed with 1011 2.0 ms after the bad input")
    assert_fail(checkers.connection_usable(_after_bad_input(heartbeat="unknown").history, "c0", ns(10)),
                "1 of 1 operations after the bad input failed (heartbeat unknown)")


def test_a_close_the_client_caused_later_is_not_the_bad_inputs():
    """The client sent an oversize frame at 15 ms (closed 1009 at 16 ms): judged up to 15 ms, the
    close is not the garbage's; with no proof before it, unknown; the 1011 at 12 ms still fails."""
    t = _after_bad_input(heartbeat="")
    t.closed(16, "c0", 1009)
    t.end(t.op(20, "c0", "heartbeat"), 21, "unknown")
    assert_unknown(checkers.connection_usable(t.history, "c0", ns(10), until_ns=ns(15)),
                   "before the client's own frame that ends the connection")
    assert_fail(checkers.connection_usable(t.history, "c0", ns(10)), "closed with 1009")
    assert_fail(checkers.connection_usable(_after_bad_input(1011, "").history, "c0", ns(10), until_ns=ns(15)),
                "closed with 1011")


def test_usability_without_a_proving_operation_is_unknown():
    """Nothing was tried after the bad input, so usability is unproven."""
    assert_unknown(checkers.connection_usable(_after_bad_input(heartbeat="").history, "c0", ns(10)),
                   "no completed operation")
