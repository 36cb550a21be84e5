"""The append-only record of what happened in a run.

Clients record *operations* (something the harness did: connect, send a
request, interrupt, close) with a start and an end on the monotonic clock and
an outcome: ``ok``, ``fail``, or ``unknown`` when the harness cannot tell
(a send whose connection died under it). Everything seen from outside —
frames received, probe samples, process events — is an *observation*.
Checkers judge only this record, so they can be tested with plain data.
"""

from __future__ import annotations

import gc
import itertools
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.core.timing import now_ns

__all__ = ["History", "Observation", "Operation", "Outcome", "collect_less_often"]

#: The young generation's threshold for a process that records a long history (CPython's is 700).
LOAD_GC_THRESHOLD = 5000


def collect_less_often() -> None:
    """For a load driver (a fleet worker, the bench): collect the young generation every
    5,000 allocations instead of 700. Every record a run keeps is scanned by the
    collections it lives through; with the default, 40 of a churn cycle's ~330 us of
    client CPU went to collecting, with this 23 (bench/churn.py, picows + uvloop).
    The older generations keep their thresholds."""
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < LOAD_GC_THRESHOLD:
        gc.set_threshold(LOAD_GC_THRESHOLD, gen1, gen2)

Outcome = Literal["pending", "ok", "fail", "unknown"]


@dataclass(slots=True)
class Operation:
    id: int
    client: str
    kind: str  # connect, request, interrupt, heartbeat, subscribe, publish, close, abort, ...
    started_ns: int
    ended_ns: int | None = None
    outcome: Outcome = "pending"
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float | None:
        return None if self.ended_ns is None else (self.ended_ns - self.started_ns) / 1e6


@dataclass(slots=True)
class Observation:
    id: int
    source: str  # a client name, "probe:stats", "supervisor", ...
    kind: str  # frame, close, stats, process, exit, ...
    t_ns: int
    data: dict[str, Any] = field(default_factory=dict)


class History:
    """Thread-safe, append-only; records are never changed after they end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.records: list[Operation | Observation] = []

    # -- writing -------------------------------------------------------------
    def begin(self, client: str, kind: str, /, **data: Any) -> Operation:
        op = Operation(id=next(self._ids), client=client, kind=kind, started_ns=now_ns(), data=data)
        with self._lock:
            self.records.append(op)
        return op

    def end(self, op: Operation, outcome: Outcome, /, **data: Any) -> Operation:
        if op.outcome != "pending":
            raise RuntimeError(f"operation {op.id} ({op.kind}) already ended {op.outcome}")
        op.ended_ns = now_ns()
        op.data.update(data)
        op.outcome = outcome
        return op

    def observe(self, source: str, kind: str, /, t_ns: int | None = None, **data: Any) -> Observation:
        obs = Observation(id=next(self._ids), source=source, kind=kind, t_ns=t_ns or now_ns(), data=data)
        with self._lock:
            self.records.append(obs)
        return obs

    # -- reading -------------------------------------------------------------
    def operations(self, kind: str | None = None, client: str | None = None) -> list[Operation]:
        with self._lock:
            recs = list(self.records)
        return [
            r for r in recs
            if isinstance(r, Operation) and (kind is None or r.kind == kind) and (client is None or r.client == client)
        ]

    def observations(self, kind: str | None = None, source: str | None = None) -> list[Observation]:
        with self._lock:
            recs = list(self.records)
        return [
            r for r in recs
            if isinstance(r, Observation) and (kind is None or r.kind == kind) and (source is None or r.source == source)
        ]

    def __iter__(self) -> Iterator[Operation | Observation]:
        with self._lock:
            return iter(list(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def tail(self, n: int = 20) -> list[Operation | Observation]:
        with self._lock:
            return list(self.records[-n:])

    # -- persistence ---------------------------------------------------------
    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for rec in self:
                fh.write(json.dumps(record_to_dict(rec), default=str) + "\n")

    @classmethod
    def from_records(cls, records: Iterable[Operation | Observation]) -> History:
        h = cls()
        h.records = list(records)
        top = max((r.id for r in h.records), default=0)
        h._ids = itertools.count(top + 1)
        return h

    @classmethod
    def from_jsonl(cls, path: str | Path) -> History:
        recs: list[Operation | Observation] = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                t = d.pop("type")
                recs.append(Operation(**d) if t == "op" else Observation(**d))
        return cls.from_records(recs)


def record_to_dict(rec: Operation | Observation) -> dict[str, Any]:
    d = asdict(rec)
    d["type"] = "op" if isinstance(rec, Operation) else "obs"
    return d
