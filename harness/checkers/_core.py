"""What every checker shares: the crash-to-unknown wrapper and history readers.

A checker must never turn missing data or its own bug into a pass, and a run's
report must never fail to serialise because a checker put an odd value in its
figures; :func:`checker` enforces both at one place.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.checkers import stats
from harness.core.history import History, Observation, Operation
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = [
    "FrameRec",
    "as_frame_dict",
    "checker",
    "client_names",
    "closed_obs",
    "fmt_bytes",
    "fmt_ms",
    "fmt_num",
    "frames",
    "jsonable",
    "request_label",
    "request_ops",
    "signal_ns",
    "stack_lines",
    "summarize",
]

F = TypeVar("F", bound=Callable[..., Verdict])

#: How many offending items a message lists before "and N more": enough to
#: diagnose, few enough that a console line stays readable.
SHOW = 5


def checker(name: str, *, needs_history: bool = False) -> Callable[[F], F]:
    """Give a checker its stable name; exceptions become ``unknown`` with their text."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Verdict:
            if needs_history:
                hist = args[0] if args else kwargs.get("history")
                if not isinstance(hist, History):
                    return unknown(name, f"no history to judge (got {type(hist).__name__})")
            try:
                v = fn(*args, **kwargs)
            except Exception as exc:  # a checker's bug must not read as a verdict
                return unknown(name, f"checker crashed: {type(exc).__name__}: {exc}",
                               error=f"{type(exc).__name__}: {exc}")
            return Verdict(v.check, v.status, v.message, jsonable(v.figures))

        run.check_name = name  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return wrap


def jsonable(value: Any) -> Any:
    """Figures as plain JSON: tuples/sets to lists, NaN/inf to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


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
              "status", "interrupted_ids", "interrupted_count", "code", "topic", "data", "payload")
    if any(hasattr(frame, f) for f in fields):
        return {f: getattr(frame, f, None) for f in fields}
    raise TypeError(f"not a frame: {type(frame).__name__}")


def request_ops(history: History, request_id: Any = None, client: str | None = None) -> list[Operation]:
    return [
        op for op in history.operations("request", client=client)
        if request_id is None or op.data.get("request_id") == request_id
    ]


def stack_lines(stacks: Any) -> list[str]:
    """Hang forensics as lines, however they were handed over.

    Scenarios pass a list of lines, a raw py-spy dump, a forensics object with
    ``key_lines()`` or ``render()``, or one with a ``stacks`` text; a hung
    verdict must carry them whatever the form, never crash on it.
    """
    if stacks is None:
        return []
    if isinstance(stacks, str):
        return [ln for ln in stacks.splitlines() if ln.strip()]
    if isinstance(stacks, (list, tuple)):
        return [str(x) for x in stacks]
    for method in ("key_lines", "render"):
        fn = getattr(stacks, method, None)
        if callable(fn):
            out = fn()
            return stack_lines(out)
    text = getattr(stacks, "stacks", None)
    if isinstance(text, (str, dict)):
        return stack_lines("\n".join(text.values()) if isinstance(text, dict) else text)
    return [str(stacks)]


def percentile_within(name: str, values: list[float], figs: dict[str, Any], *, bound_ms: float, p: float,
                      missing: int, missing_text: str, noun: str, label: str = "") -> Verdict:
    """The p-th percentile of ``values`` within ``bound_ms``; ``missing`` answers fail too.

    One judgement for every latency bound (ACKs, replies): the figures and the
    message name the percentile, the median, the maximum and how many never answered.
    """
    pv, p50, mx = stats.percentile(values, p), stats.median(values), max(values)
    figs.update({f"p{p:g}_ms": pv, "p50_ms": p50, "max_ms": mx})
    spread = f"over {len(values)} {noun} (p50 {fmt_ms(p50)}, max {fmt_ms(mx)})"
    problems = []
    if pv > bound_ms:
        problems.append(f"{label}p{p:g} {fmt_ms(pv)} > bound {bound_ms:g} ms {spread}")
    if missing:
        problems.append(missing_text)
    if problems:
        return fail(name, "; ".join(problems), **figs)
    return passed(name, f"{label}p{p:g} {fmt_ms(pv)} <= bound {bound_ms:g} ms {spread}", **figs)
