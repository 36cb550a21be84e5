"""What each figure a checker records *is*: a metric, a parameter of the run, or an identifier.

``compare`` must not read a port number or a cycle count as a measurement.
Every figure name is looked up in one table (:data:`TABLE`), by the check it
belongs to first (``(check, name)``, for names that mean different things in
different checks) and then by name alone:

* ``metric``: a measurement with a unit and a direction (``lower`` or
  ``higher`` is better) and, where the verdict has one, the figure holding its
  bound (``p99_ms`` is judged against ``bound_ms``).  Only metrics are compared.
* ``parameter``: how the run was set up (``cycles``, ``bound_ms``,
  ``allowed``).  Two runs whose parameters differ are not comparable.
* ``identifier``: names a thing (``port``, ``pid``, ``client``, a resource's
  ``name``).  Never compared; string identifiers tell verdicts of one check
  apart (``resources.back_to_baseline`` for ``tasks`` and for ``fds``).
* ``observed``: what the run saw that its verdict already judges, or that
  follows from its parameters (INTERRUPTs sent, late frames, a resource's level
  before the churn).  Shown, never compared: a late frame is a verdict change.
* ``untyped``: a name the table does not know.  Never compared, and listed by
  ``compare`` so a new figure is noticed and typed here.

The table covers every figure ``harness.checkers`` and ``scenarios/`` record;
``tests/test_compare_figures.py`` holds it to that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CASE_CHECK",
    "TABLE",
    "UNIT_FLOORS",
    "FigureType",
    "Role",
    "base_check",
    "figure_type",
    "label_of",
]

Role = Literal["metric", "parameter", "identifier", "observed", "untyped"]
Better = Literal["lower", "higher"]

#: The check name case-level figures (``Context.figure``) are filed under.
CASE_CHECK = "*"

#: The smallest change that can mean anything, per unit, whatever the relative change:
#: a millisecond of scheduling, a MiB of allocator slack, one task or fd, a tenth of a ratio.
UNIT_FLOORS: dict[str, float] = {"ms": 1.0, "B": float(2**20), "count": 1.0, "ratio": 0.1, "": 1.0}


@dataclass(frozen=True)
class FigureType:
    role: Role
    unit: str = ""
    better: Better | None = None
    #: The figure (of the same verdict) holding this metric's bound, e.g. "bound_ms".
    bound: str | None = None
    #: The figure (of the same verdict) naming the unit, for metrics whose unit varies ("per_1000").
    unit_from: str | None = None
    #: The floor as a share of the bound, where it is not the rule's (a tenth): a resource delta's
    #: bound is the allowance its check already grants for noise, so all of it is the floor.
    floor_share: float | None = None

    def unit_of(self, figures: dict[str, Any]) -> str:
        if self.unit_from and isinstance(figures.get(self.unit_from), str):
            return str(figures[self.unit_from])
        return self.unit


def _metric(unit: str, bound: str | None = None, better: Better = "lower", unit_from: str | None = None,
            floor_share: float | None = None) -> FigureType:
    return FigureType("metric", unit, better, bound, unit_from, floor_share)


PARAMETER = FigureType("parameter")
IDENTIFIER = FigureType("identifier")
OBSERVED = FigureType("observed")
UNTYPED = FigureType("untyped")

_MS = _metric("ms", "bound_ms")

#: name -> type, or (check, name) -> type; a check name is without its "@label".
TABLE: dict[str | tuple[str, str], FigureType] = {
    # -- parameters: how the check or the case was set up --------------------------------
    **dict.fromkeys(
        ("bound_ms", "bound_per_1000", "bound_bytes", "bound_ratio", "allowed", "tolerance", "grace_ms",
         "percentile", "cycles", "max_stderr_lines", "expected", "expected_status", "expected_ids",
         "relative", "reason", "unit", "warmup_fraction"),
        PARAMETER),
    # -- identifiers: what a figure is about, never how much ----------------------------
    **dict.fromkeys(
        ("port", "pid", "run_id", "session_id", "request_id", "interrupt_id", "client", "topic", "name",
         "what", "host"),
        IDENTIFIER),
    # -- metrics --------------------------------------------------------------------------
    "p50_ms": _MS, "p95_ms": _MS, "p99_ms": _MS,
    "exit_ms": _MS, "value_ms": _MS, "ms": _MS, "closed_after_ms": _MS, "dropped_after_ms": _MS,
    ("resources.growth_per_1000", "per_1000"): _metric("", "bound_per_1000", unit_from="unit"),
    # The drift ratio of one run moves by tenths between runs of a correct server on a loaded
    # machine (a first tenth of 3 batches against a last tenth of 3): its verdict judges it
    # against the bound, and pass -> fail is the change compare reports.  The medians were
    # held to no bound at all.
    ("resources.latency_drift", "ratio"): OBSERVED,
    ("resources.latency_drift", "first_median_ms"): OBSERVED,
    ("resources.latency_drift", "last_median_ms"): OBSERVED,
    ("resources.back_to_baseline", "delta"): _metric("count", "allowed", floor_share=1.0),
    ("resources.memory_bounded", "value"): _metric("B", "bound_bytes"),
    ("resources.probe_agrees", "difference"): _metric("count", "tolerance", floor_share=1.0),
    # -- observed: judged by the verdict, or following from the parameters ---------------
    **dict.fromkeys(
        ("interrupts", "answered", "unanswered", "acks", "bad", "stray", "claims", "claimed", "double_claimed",
         "late_frames", "requests_with_late_frames", "requests", "unresolved", "unknown", "chunks", "points",
         "used", "samples", "timeouts", "first", "last", "peak", "baseline", "after", "publishes",
         "subscribers", "others", "received", "count", "returncode", "signal_killed", "noisy_lines",
         "per_pattern", "offending", "stderr_lines", "stderr_missing", "hung", "stacks", "free", "alive",
         "echo", "icanon", "isig", "error", "polls", "tally", "attempts", "accepted", "unsure", "threads",
         "frame_lines", "errors", "sent", "ok_after", "ops_after", "closed", "code", "kind", "status", "ids",
         "values", "nonzero", "missing", "codes", "wrong", "clients", "active", "stats", "probe",
         "survivors", "state", "before", "problems", "not_judged", "cut_by_client",
         # The slowest single sample: with the few dozen a case takes, p99 already follows it.
         "max_ms"),
        OBSERVED),
    ("shutdown.exit_code", "allowed"): PARAMETER,
    # /stats keys as [before, after]: judged by the verdict itself.
    ("resources.stats_unchanged", "*"): OBSERVED,
    # Case-level figures repeat what a verdict of the case holds (and compares).
    **{(CASE_CHECK, n): OBSERVED for n in (
        "ack_latencies_ms", "ack_p50_ms", "ack_p99_ms", "client_exit_ms", "dropped_after_ms", "errors_received",
        "exit_ms", "exit_ms_samples", "interrupts", "latency_first_tenth_ms", "latency_last_tenth_ms",
        "malformed_frames", "next_first_chunk_ms", "others_p99_ms", "published_bytes", "rss_growth_bytes",
        "second_ctrl_c_ms", "tasks_delta", "upstream_close_ms", "watchdog_exit_ms")},
    (CASE_CHECK, "cycles"): PARAMETER,
    # -- added with honest blame, conventions and the explorer -----------------------------
    **dict.fromkeys(("floor_ms", "order", "heartbeat_interval_s", "limit", "require_flag", "in_flight_ms"),
                    PARAMETER),
    **dict.fromkeys(
        ("close_codes", "with_close_frame", "error_code", "error_message", "final_after_ack", "open_at_kill",
         "finding", "found_after_s", "programs", "replays", "reproduced", "steps", "shrunk_steps",
         "programs_per_s", "target_restarts", "active_requests_after", "blocking_in_flight",
         "blocking_left_out", "drain_ms", "drain_seen_by", "stretched_by_time_factor", "left_out",
         "most_chunks_after", "most_late", "nothing_to_stop", "judged", "stopping"),
        OBSERVED),
    **{(CASE_CHECK, n): OBSERVED for n in (
        "found_after_s", "programs", "programs_per_s", "shrunk_steps", "steps", "target_restarts",
        "active_requests_after", "blocking_in_flight", "blocking_left_out", "drain_ms", "drain_seen_by",
        "claims_judged")},
    (CASE_CHECK, "heartbeat_interval_s"): PARAMETER,
}

#: Percentiles of any order a latency checker names ``p<p>_ms`` (``percentile=95`` gives ``p95_ms``).
_PERCENTILE = re.compile(r"^p\d+(?:\.\d+)?_ms$")


def base_check(check: str) -> str:
    """A check name without its item label: ``input.error_code@not json`` -> ``input.error_code``."""
    return check.split("@", 1)[0]


def figure_type(check: str, name: str) -> FigureType:
    """The type of figure ``name`` of ``check``: by (check, name), then (check, "*"), then name; else untyped."""
    bc = base_check(check)
    for key in ((bc, name), (bc, "*"), name):
        if key in TABLE:
            return TABLE[key]
    if _PERCENTILE.match(name):
        return _MS
    return UNTYPED


#: The identifiers that name what a verdict is about (client names are left out: numbered per run).
_LABELS = ("name", "what", "topic")


def label_of(check: str, figures: dict[str, Any]) -> str:
    """What tells verdicts of one check in one case apart: their string identifiers (``name=tasks``)."""
    parts = []
    for name in sorted(figures):
        val = figures[name]
        if isinstance(val, str) and figure_type(check, name).role == "identifier" and name in _LABELS:
            parts.append(val)
    return "/".join(parts)
