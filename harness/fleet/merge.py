"""Merge the histories of several workers into one :class:`History` (pure, no I/O).

Each worker recorded into its own History on the monotonic clock of its
machine. The merge keeps what the checkers rely on and adds where each
record came from:

* **Origin.** Every merged record carries ``host`` and ``worker`` in its
  ``data`` (``data["host"]``, ``data["worker"]``): the JSON lines, the
  report's timeline loader and every checker keep working unchanged.
* **The clock rule.** ``time.monotonic_ns`` is one clock per machine (per
  boot) on Linux, so records of workers on one host compare by time. Records
  of different hosts do not: a checker may compare times only between
  records of the same ``host``, or within one session (one client). The merge
  keeps to that rule itself: within a host the records are interleaved by
  time; hosts follow one another in blocks, never interleaved.
* **Order within a worker.** A k-way merge never reorders the records of
  one input, so each client's frames stay in the order its reader saw them
  (what ``checkers._core.frames`` calls ``pos``).
* **Unique names.** A client name that does not already carry its worker's
  prefix (``w<i>.``) gets it; the harness's own sources (``supervisor``,
  ``probe:...``) are left as they are.
* **Unique ids.** Records are renumbered 1, 2, 3, ... in merged order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.core.history import History, Observation, Operation

__all__ = ["HARNESS_SOURCES", "Origin", "merge", "record_time", "tag"]

Record = Operation | Observation

#: Sources that are the harness's, not a client's: never renamed.
HARNESS_SOURCES = ("supervisor", "probe:")


@dataclass(frozen=True)
class Origin:
    """Where a worker's records were taken: its host, its index, its client-name prefix."""

    host: str
    worker: int | str
    prefix: str = ""


def record_time(rec: Record) -> int:
    """When a record happened on its host's monotonic clock: an operation's start, an observation's stamp."""
    return rec.started_ns if isinstance(rec, Operation) else rec.t_ns


def _rename(name: str, prefix: str) -> str:
    if not prefix or name.startswith(prefix) or name.startswith(HARNESS_SOURCES):
        return name
    return prefix + name


def tag(records: Iterable[Record], origin: Origin) -> list[Record]:
    """The records with their origin in ``data`` and client names prefixed (changed in place)."""
    out = list(records)
    for rec in out:
        if isinstance(rec, Operation):
            rec.client = _rename(rec.client, origin.prefix)
        else:
            rec.source = _rename(rec.source, origin.prefix)
        if rec.data is None:
            rec.data = {}
        rec.data["host"] = origin.host
        rec.data["worker"] = origin.worker
    return out


def merge(parts: Sequence[tuple[Origin, Sequence[Record]]]) -> History:
    """One History of every part: tagged, interleaved by time within each host, hosts in
    blocks (in the order each first appears), renumbered from 1."""
    by_host: dict[str, list[list[Record]]] = {}
    seen: dict[str, int | str] = {}
    for origin, records in parts:
        if origin.prefix in seen:
            raise ValueError(f"workers {seen[origin.prefix]!r} and {origin.worker!r} share the "
                             f"client-name prefix {origin.prefix!r}: their names would collide")
        seen[origin.prefix] = origin.worker
        by_host.setdefault(origin.host, []).append(tag(records, origin))
    merged: list[Record] = []
    for lists in by_host.values():
        merged.extend(heapq.merge(*lists, key=record_time))
    for n, rec in enumerate(merged, start=1):
        rec.id = n
    return History.from_records(merged)
