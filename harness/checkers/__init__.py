"""Pure functions from the history and probe samples to a :class:`~harness.core.verdict.Verdict`.

No checker does I/O. Each takes plain values, names the numbers it judged in
its message and in ``figures`` (JSON-serialisable), and returns ``unknown``
(never ``pass``) when data is missing or it crashes. Check names are stable:
reports, baselines and CI filters key on them.

Shutdown / process (``shutdown``):
  exit_time            shutdown.exit_time            exited within the bound; None = hung
  exit_code            shutdown.exit_code            exit code allowed; death by signal named
  output_noise         shutdown.output_noise         no Traceback/KeyboardInterrupt/... lines; stderr line budget
  no_survivors         shutdown.no_survivors         nothing of the process tree outlived it
  port_free            shutdown.port_free            the port can be bound again
  shutdown_finals      shutdown.finals               requests active at the signal ended interrupted, reason "shutdown"
  close_codes          shutdown.close_codes          connections closed with 1001
  health_during_drain  shutdown.health_503           /health 503 during the drain, never 200 again
  connections_refused  shutdown.refuses_connections  new connections refused during the drain
  watchdog_dump        shutdown.watchdog_dump        thread stacks on stderr at a watchdog exit
Interrupts (``interrupts``):
  ack_latency               interrupts.ack_latency          ACK latency percentile within the bound
  ack_status                interrupts.ack_status           one ACK's status and interrupted ids
  one_ack_each              interrupts.one_ack_each         every INTERRUPT got exactly one ACK
  final_before_ack          interrupts.final_before_ack     interrupted final frame before the ACK
  no_frames_after_ack       interrupts.no_frames_after_ack  nothing for a claimed id after its ACK
  no_double_claim           interrupts.no_double_claim      no id claimed by two ACKs
  not_found                 interrupts.not_found            unknown ids answered NOT_FOUND, count 0
Replies (``replies``; check names keep the ``interrupts.`` prefix, the rules they hold):
  one_terminal_per_request  interrupts.one_terminal         exactly one final (or ERROR) per request
  untouched                 interrupts.untouched            those requests completed, not interrupted
  request_completes         interrupts.request_completes    one request completed normally
  seq_gap_free              interrupts.seq_gap_free         chunk seq 0, 1, 2, ... per request
  upstream_closed_within    interrupts.upstream_closed      upstream HTTP stream closed within the bound
  not_delayed               interrupts.not_delayed          a first chunk was not held back
Resources (``resources``):
  counters_zero     resources.counters_zero     /stats idle counters all 0
  back_to_baseline  resources.back_to_baseline  a figure back within baseline + allowance
  growth_per_1000   resources.growth_per_1000   least-squares growth per 1000 cycles within the bound
  latency_drift     resources.latency_drift     last-tenth median within ratio x first-tenth median
  probe_agrees      resources.probe_agrees      /stats agrees with the injected probe
  memory_bounded    resources.memory_bounded    RSS growth under a slow consumer within the bound
  latency_within    resources.latency_within    latency percentile within the bound
Delivery (``delivery``):
  exactly_once  delivery.exactly_once  one EVENT per PUBLISH to each subscriber, none to others
Connections (``input``):
  dropped_within     input.dropped_within     a silent peer dropped within the bound
  closed_with        input.closed_with        closed with the given code (1009 for oversize)
  error_code         input.error_code         bad input answered with the given ERROR code
  connection_usable  input.connection_usable  still open and working after bad input
Generic (``bounds``; scenarios also import these from the submodule):
  within_bound     bounds.within (or ``check=``)  something happened within a bound; None = never
  terminal_usable  client.terminal_usable         the pty left with echo and line editing on
  errors_for_all   input.errors_for_all           one ERROR per malformed frame sent
  process_alive    process.alive                  the target is still running
  stats_unchanged  resources.stats_unchanged      /stats counters moved only by the expected deltas
Helpers (``stats``): percentile (linear interpolation, numpy's default), median, slope.
"""

from __future__ import annotations

from harness.checkers.bounds import (
    errors_for_all,
    process_alive,
    stats_unchanged,
    terminal_usable,
    within_bound,
)
from harness.checkers.delivery import exactly_once
from harness.checkers.input import closed_with, connection_usable, dropped_within, error_code
from harness.checkers.interrupts import (
    ack_latency,
    ack_status,
    final_before_ack,
    no_double_claim,
    no_frames_after_ack,
    not_found,
    one_ack_each,
)
from harness.checkers.replies import (
    not_delayed,
    one_terminal_per_request,
    request_completes,
    seq_gap_free,
    untouched,
    upstream_closed_within,
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

__all__ = [
    "CHECKS",
    "IDLE_COUNTERS",
    "SHUTDOWN_NOISE",
    "Verdict",
    "ack_latency",
    "ack_status",
    "back_to_baseline",
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

#: Stable check name -> checker function, for reports and documentation.
CHECKS = {
    vars(fn)["check_name"]: fn
    for fn in (
        exit_time, exit_code, output_noise, no_survivors, port_free, shutdown_finals, close_codes,
        health_during_drain, connections_refused, watchdog_dump,
        ack_latency, ack_status, one_ack_each, final_before_ack, no_frames_after_ack, one_terminal_per_request, no_double_claim,
        not_found, untouched, request_completes, seq_gap_free, upstream_closed_within, not_delayed,
        counters_zero, back_to_baseline, growth_per_1000, latency_drift, probe_agrees, memory_bounded,
        latency_within, stats_unchanged, exactly_once, dropped_within, closed_with, error_code,
        errors_for_all, connection_usable, within_bound, process_alive, terminal_usable,
    )
}
