"""What every bench figure shares: the result type, percentiles, the reference
server under a Supervisor, CPU accounting, and the table.

A figure is measured, never asserted: each goal is reported as met or missed
with the number beside it, and a figure that cannot be measured (a tool that
will not install, a server that will not start) is reported as unavailable
with the reason instead of ending the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the harness is importable from the checkout
    sys.path.insert(0, str(ROOT))

from harness.fleet import default_workers  # noqa: E402
from harness.process.supervisor import Supervisor  # noqa: E402
from harness.target.spec import Target, reference_target  # noqa: E402

T = TypeVar("T")

__all__ = [
    "ROOT",
    "Figure",
    "Goal",
    "bounded",
    "cpu_s",
    "driver_main",
    "fd_limits",
    "percentile",
    "raise_fd_limit",
    "ratio",
    "resolve_workers",
    "running",
    "spread",
    "tree_cpu_s",
]


@dataclass
class Goal:
    text: str  # "p99 < 100 ms"
    met: bool | None  # None: could not be judged (the figure is unavailable)
    actual: str = ""


@dataclass
class Figure:
    """One numbered figure of the bench: its measures, its goals, and how it was measured."""

    name: str
    title: str
    measures: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None
    seconds: float = 0.0

    def add(self, key: str, value: Any, unit: str = "") -> Any:
        self.measures[key] = value
        if unit:
            self.units[key] = unit
        return value

    def goal(self, text: str, met: bool | None, actual: str = "") -> None:
        self.goals.append(Goal(text, met, actual))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "unavailable": self.unavailable,
            "seconds": round(self.seconds, 2),
            "measures": self.measures,
            "units": self.units,
            "goals": [{"text": g.text, "met": g.met, "actual": g.actual} for g in self.goals],
            "notes": self.notes,
            "details": self.details,
        }


if sys.version_info >= (3, 11):
    async def bounded(aw: Awaitable[T], timeout: float) -> T:
        """``await aw`` within ``timeout``; on 3.11+ without the Task ``wait_for`` creates."""
        async with asyncio.timeout(timeout):
            return await aw
else:  # pragma: no cover - 3.10
    async def bounded(aw: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(aw, timeout)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def spread(values: Sequence[float], digits: int = 1) -> dict[str, float | None]:
    """p50, p99 and max, rounded: the shape every latency figure reports."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {"p50": r(percentile(values, 50)), "p99": r(percentile(values, 99)),
            "max": r(max(values) if values else None), "n": len(values)}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


def cpu_s(proc: psutil.Process) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants (Artillery runs in a worker child)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    return sum(cpu_s(p) for p in procs)


@contextlib.asynccontextmanager
async def running(target: Target | None = None, *, pty: bool = False, name: str = "bench",
                  log_dir: Path | None = None, extra_env: Mapping[str, str] | None = None,
                  ) -> AsyncIterator[Supervisor]:
    """A started target (the reference server by default), stopped with its whole tree on exit."""
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wschaos-bench-")))
        sup = Supervisor(target or reference_target(), log_dir, pty=pty, name=name, extra_env=extra_env)
        try:
            await sup.start()
            yield sup
        finally:
            await sup.stop()


def fmt(value: Any, unit: str = "") -> str:
    """A measure as the table shows it."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items() if k != "n") + (f" {unit}" if unit else "") + (
            f" (n={value['n']})" if "n" in value else "")
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def table_rows(figures: Iterable[Figure]) -> list[tuple[str, str, str, str]]:
    """(figure, measure, value, goal) rows, the same for the console and the plain text."""
    rows: list[tuple[str, str, str, str]] = []
    for fig in figures:
        head = f"{fig.name}"
        if fig.unavailable:
            rows.append((head, fig.title, "unavailable", fig.unavailable))
            continue
        first = True
        for key, value in fig.measures.items():
            rows.append((head if first else "", key, fmt(value, fig.units.get(key, "")), ""))
            first = False
        for g in fig.goals:
            verdict = "met" if g.met else ("MISSED" if g.met is False else "unknown")
            rows.append(("" if not first else head, "goal", g.actual, f"{g.text}: {verdict}"))
            first = False
        for note in fig.notes:
            rows.append(("", "note", "", note))
    return rows


# -- workers, fds, and a driver's own command line --------------------------------------------
def resolve_workers(workers: int | None, *, local_target: bool = True) -> int:
    """``--workers`` as given, else the fleet's rule (:func:`harness.fleet.default_workers`):
    the cores this process may use, half of them kept for a target on this machine, at least 1.
    Every bench target is the reference server on this machine."""
    if workers is None:
        return default_workers(local_target=local_target)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    return workers


def fd_limits() -> dict[str, int]:
    """This process's fd limits and the kernel's ceiling for any process (``fs.nr_open``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = hard
    return {"soft": soft, "hard": hard, "nr_open": nr_open}


def raise_fd_limit(want: int | None = None) -> dict[str, int | str]:
    """Raise the soft fd limit to the hard one; with ``want`` beyond the hard limit, try to raise
    the hard limit too (allowed to root: CAP_SYS_RESOURCE), up to ``fs.nr_open``. Children
    (the target, the fleet's workers) inherit the result. Returns before/after and what happened."""
    before = fd_limits()
    soft, hard = before["soft"], before["hard"]
    note = "unchanged"
    if want is not None and want > hard:
        new_hard = min(want, before["nr_open"])
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
            note = f"hard limit raised {hard} -> {new_hard}"
        except (ValueError, OSError) as exc:
            note = f"hard limit {hard} kept ({type(exc).__name__}: not allowed here)"
    soft2, hard2 = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft2 < hard2:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard2, hard2))
        note = note if note != "unchanged" else f"soft limit raised {soft} -> {hard2}"
    after = fd_limits()
    return {"soft_before": soft, "hard_before": hard, "soft": after["soft"], "hard": after["hard"],
            "nr_open": after["nr_open"], "how": note}


def driver_main(name: str, figure: Callable[..., Awaitable[Figure]], argv: list[str] | None = None,
                *, sources: bool = False) -> int:
    # ``sources`` also adds ``--servers``: both belong to the scale figure.
    """One figure from its own command line: ``python -m bench.<name> [--quick] [--workers N]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=(figure.__doc__ or name).split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, briefly")
    parser.add_argument("--workers", type=int, default=None,
                        help="client worker processes (default: half the cores with the target on this machine, at least 1)")
    if sources:
        parser.add_argument("--sources", type=int, default=None,
                            help="loopback source addresses 127.0.0.1..N for the clients (default: the kernel picks)")
        parser.add_argument("--servers", type=int, default=None,
                            help="reference server processes the connections are dealt to (default 1)")
    parser.add_argument("--json", default=None, help="also write the figure as JSON to this file")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if sources and args.sources is not None and not 1 <= args.sources <= 254:
        parser.error(f"--sources must be between 1 and 254, not {args.sources}")
    if sources and args.servers is not None and args.servers < 1:
        parser.error(f"--servers must be at least 1, not {args.servers}")
    kw: dict[str, Any] = {"workers": args.workers}
    if sources:
        kw["sources"], kw["servers"] = args.sources, args.servers
    fig = asyncio.run(figure(args.quick, **kw))
    for row in table_rows([fig]):
        print(f"{row[0]:<8}  {row[1]:<36}  {row[2]}  {row[3]}".rstrip())
    if args.json:
        Path(args.json).write_text(json.dumps(fig.as_dict(), indent=2, default=str))
    return 0
