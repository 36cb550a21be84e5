"""wschaos's load on every core, and past one machine.

* :func:`run` / :func:`fleet` (:mod:`harness.fleet.local`): a client program in
  N worker processes on this machine, one merged History; one worker runs
  in-process, as a single-process run always has.
* :mod:`harness.fleet.dask_engine`: the same program spread over the workers of a
  Dask distributed cluster, merged the same way (needs the ``fleet`` extra).
* :mod:`harness.fleet.merge`: how histories merge, and the clock rule across hosts.

See docs/fleet.md.
"""

from __future__ import annotations

from harness.fleet.context import (
    FleetError,
    Program,
    WorkerContext,
    assign_sources,
    local_host,
    source_addresses,
)
from harness.fleet.local import (
    Fleet,
    FleetResult,
    FleetRunError,
    InProcessFleet,
    LocalFleet,
    WorkerReport,
    default_workers,
    fleet,
    run,
)
from harness.fleet.merge import Origin, merge

__all__ = [
    "Fleet",
    "FleetError",
    "FleetResult",
    "FleetRunError",
    "InProcessFleet",
    "LocalFleet",
    "Origin",
    "Program",
    "WorkerContext",
    "WorkerReport",
    "assign_sources",
    "default_workers",
    "fleet",
    "local_host",
    "merge",
    "run",
    "source_addresses",
]
