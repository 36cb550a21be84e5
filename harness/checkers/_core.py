"""What the checkers share: formatting for messages and readers of the history.

Registration and the crash-to-unknown wrapper live in :mod:`harness.checkers.registry`;
the judgement of a value against a bound in :mod:`harness.checkers.bounds`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.core.history import History, Observation, Operation

__all__ = [
    "FrameRec",
    "as_frame_dict",
    "client_names",
    "closed_obs",
    "fmt_bytes",
    "fmt_ms",
    "fmt_num",
    "frames",
    "request_label",
    "request_ops",
    "signal_ns",
    "stack_lines",
    "summarize",
]

#: How many offending items a message lists before "and N more": enough to
#: diagnose, few enough that a console line stays readable.
SHOW = 5


# -- formatting ----------------------------------------------------------------
def fmt_num(x: float | None) -> str:
    """Integers without a point, others with one decimal: what reads best in a message."""
    if x is None:
        return "n/a"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.1f}"


def fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} ms"


def fmt_bytes(x: float) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1."""
    sign = "-" if x < 0 else ""
    v = abs(float(x))
    for unit in ("B", "KiB", "MiB"):
        if v < 1024:
            return f"{sign}{fmt_num(v) if unit == 'B' else f'{v:.1f}'} {unit}"
        v /= 1024
    return f"{sign}{v:.1f} GiB"


def summarize(items: Iterable[str], show: int = SHOW) -> str:
    """Join the first ``show`` items; say how many more were left out."""
    items = list(items)
    head = "; ".join(items[:show])
    return head + (f"; and {len(items) - show} more" if len(items) > show else "")


def request_label(client: str, request_id: Any) -> str:
    return f"request {request_id} of {client}"


# -- reading the history -------------------------------------------------------
@dataclass(frozen=True)
class FrameRec:
    """One received frame: which client, its place in the record, when, and its fields."""

    client: str
    pos: int  # index in History.records: the order one client's reader saw frames in
    t_ns: int
    data: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def frames(history: History, client: str | None = None) -> list[FrameRec]:
    """Every ``frame`` observation, in record order (per client, the order received)."""
    out = []
    for pos, rec in enumerate(history):
        if isinstance(rec, Observation) and rec.kind == "frame" and (client is None or rec.source == client):
            out.append(FrameRec(rec.source, pos, rec.t_ns, rec.data or {}))
    return out


def closed_obs(history: History, client: str | None = None) -> list[Observation]:
    return [o for o in history.observations("closed") if client is None or o.source == client]


def signal_ns(history: History) -> int | None:
    """When the first signal was sent to the target, from the supervisor's record."""
    sigs = history.observations("signal", source="supervisor")
    return min(o.t_ns for o in sigs) if sigs else None


def client_names(history: History) -> set[str]:
    names = {op.client for op in history.operations()}
    names |= {o.source for o in history.observations() if not o.source.startswith(("probe:", "supervisor"))}
    return names


def as_frame_dict(frame: Any) -> dict[str, Any] | None:
    """A frame's fields whether given as the observation's dict, an Observation or a Frame."""
    if frame is None:
        return None
    if isinstance(frame, dict):
        return frame
    if isinstance(frame, Observation):
        return frame.data
    # The keys of a frame observation (ARCHITECTURE.md), read off a protocol.Frame's properties.
    fields = ("kind", "msg_type", "request_id", "session_id", "seq", "final", "interrupted", "reason",
              "status", "interrupted_ids", "interrupted_count", "code", "message", "topic", "data", "payload")
    if any(hasattr(frame, f) for f in fields):
        return {f: getattr(frame, f, None) for f in fields}
    raise TypeError(f"not a frame: {type(frame).__name__}")


def request_ops(history: History, request_id: Any = None, client: str | None = None) -> list[Operation]:
    return [
        op for op in history.operations("request", client=client)
        if request_id is None or op.data.get("request_id") == request_id
    ]


def stack_lines(stacks: Any) -> list[str]:
    """Hang forensics as lines: None, a raw dump (str), a list or tuple of lines, or an object
    with ``key_lines()`` (:class:`harness.probes.forensics.Forensics`); anything else is one line."""
    if stacks is None:
        return []
    if isinstance(stacks, str):
        return [ln for ln in stacks.splitlines() if ln.strip()]
    if isinstance(stacks, (list, tuple)):
        return [str(x) for x in stacks]
    key_lines = getattr(stacks, "key_lines", None)
    if callable(key_lines):
        return [str(x) for x in key_lines()]
    return [str(stacks)]
