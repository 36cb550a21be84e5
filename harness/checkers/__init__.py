"""Pure functions from the history and probe samples to a :class:`~harness.core.verdict.Verdict`.

No checker does I/O. Each takes plain values, names the numbers it judged in
its message and in ``figures`` (JSON-serialisable), and returns ``unknown``
(never ``pass``) when data is missing or it crashes. Check names are stable:
reports, baselines, known-failures files and CI filters key on them.

Names come from where a checker is defined
------------------------------------------
A checker is a public function in a module directly under this package,
decorated with :func:`checker`; its check name is ``<module>.<function>``::

    # harness/checkers/keepalive.py
    @checker
    def dropped_within(dropped_ms, bound_ms, *, what="drop of a silent peer", stacks=()) -> Verdict:
        \"\"\"The server dropped a silent peer within ``bound_ms`` ...\"\"\"

is the check ``keepalive.dropped_within``. Importing this package imports
every module in it, which fills the registry: :data:`CHECKS` (name ->
checker), :func:`resolve` (name or earlier alias -> :class:`Check`) and
:func:`canonical` (a name as it is called now) all read it, so no list of
checks is kept by hand. The catalogue, from the registry:
``python -m harness.checkers``.

A scenario calls a checker as ``checkers.<area>.<rule>(...)`` (the call reads
as the check it makes), or by the flat name below that it has always had.

Two signature conventions
-------------------------
* ``(history, ...)``: checkers that judge the record of a run take the
  :class:`~harness.core.history.History` first (then what to look at: a
  client, request ids, a bound). Given no History, they are ``unknown``.
* ``(value, bound, *, what)``: checkers of measured values take the observed
  value(s) first, then what they are held to (a bound, the expected or
  allowed values), then keyword-only options; ``what`` names the subject in
  the message (``"exit after Ctrl+C"``, ``"rss"``).

Every duration check is a thin wrapper of one judgement,
:func:`harness.checkers.bounds.duration_within`; every latency percentile of
:func:`~harness.checkers.bounds.percentile_within`.

Areas (modules): ``bounds`` (generic ``bounds.within``), ``client``
(interactive clients), ``delivery`` (pub/sub), ``input`` (bad input, closes),
``interrupts`` (ACK rules and how replies end), ``keepalive``, ``process``,
``resources`` (leaks, drift, /stats), ``shutdown``. Helpers: ``stats``
(percentile by linear interpolation, numpy's default; median; slope).
"""

from __future__ import annotations

import importlib
import pkgutil

# The flat names scenarios have always called (frozen: a new checker is called
# through its area, ``checkers.<area>.<rule>``, and needs no line here).
from harness.checkers.bounds import within_bound
from harness.checkers.client import terminal_usable
from harness.checkers.delivery import exactly_once
from harness.checkers.input import (
    closed_with,
    connection_usable,
    dropped_within,
    error_code,
    errors_for_all,
)
from harness.checkers.interrupts import (
    ack_latency,
    ack_status,
    final_before_ack,
    no_double_claim,
    no_frames_after_ack,
    not_delayed,
    not_found,
    one_ack_each,
    one_terminal_per_request,
    request_completes,
    seq_gap_free,
    untouched,
    upstream_closed_within,
)
from harness.checkers.process import process_alive
from harness.checkers.registry import (
    CHECKS,
    REGISTRY,
    Check,
    RegistryError,
    UnknownCheck,
    canonical,
    checker,
    resolve,
)
from harness.checkers.resources import (
    IDLE_COUNTERS,
    back_to_baseline,
    counters_zero,
    growth_per_1000,
    latency_drift,
    latency_within,
    memory_bounded,
    probe_agrees,
    stats_unchanged,
)
from harness.checkers.shutdown import (
    SHUTDOWN_NOISE,
    close_codes,
    connections_refused,
    exit_code,
    exit_time,
    health_during_drain,
    no_survivors,
    output_noise,
    port_free,
    shutdown_finals,
    watchdog_dump,
)
from harness.checkers.stats import median, percentile, slope
from harness.core.verdict import Verdict

# Every module of the package, so the registry holds every checker defined in one.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = [
    "CHECKS",
    "IDLE_COUNTERS",
    "REGISTRY",
    "SHUTDOWN_NOISE",
    "Check",
    "RegistryError",
    "UnknownCheck",
    "Verdict",
    "ack_latency",
    "ack_status",
    "back_to_baseline",
    "canonical",
    "checker",
    "close_codes",
    "closed_with",
    "connection_usable",
    "connections_refused",
    "counters_zero",
    "dropped_within",
    "error_code",
    "errors_for_all",
    "exactly_once",
    "exit_code",
    "exit_time",
    "final_before_ack",
    "growth_per_1000",
    "health_during_drain",
    "latency_drift",
    "latency_within",
    "median",
    "memory_bounded",
    "no_double_claim",
    "no_frames_after_ack",
    "no_survivors",
    "not_delayed",
    "not_found",
    "one_ack_each",
    "one_terminal_per_request",
    "output_noise",
    "percentile",
    "port_free",
    "probe_agrees",
    "process_alive",
    "request_completes",
    "resolve",
    "seq_gap_free",
    "shutdown_finals",
    "slope",
    "stats_unchanged",
    "terminal_usable",
    "untouched",
    "upstream_closed_within",
    "watchdog_dump",
    "within_bound",
]
