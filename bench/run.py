"""wschaos bench: every performance figure in one run, side by side.

    .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]] [--out DIR] [--workers N] [--sources N] [--servers N]

Performance is measured here and never asserted in unit tests. All figures
run in one process, one after another against fresh servers, so ratios hold
on a noisy shared machine; each prints its goals as met or missed, and the
whole table is written as JSON to ``DIR/<timestamp>.json`` and
``DIR/latest.json`` (default ``reports/bench/``). A figure that cannot be
measured is reported as unavailable with its reason; the run goes on.

The peers run inside the figures they are compared in, in the same run:
Artillery and k6 (:mod:`bench.artillery`, :mod:`bench.k6`) in ``churn``, k6
in ``storm``; ``--only churn,storm`` selects exactly the figures with peers.
The load average at the start and the end goes into the JSON, since every
figure is measured on whatever else the machine is doing.

``--workers N`` is passed on to the figures that drive load from
:mod:`harness.fleet` workers (``churn``, ``storm``, ``scale``); without it
each uses the fleet's rule: half the cores this process may use (the target
runs on this machine), at least 1. ``--sources N`` gives ``scale``'s clients
the loopback source addresses 127.0.0.1 .. 127.0.0.N, and ``--servers N``
deals its connections to N reference server processes (one process holds
no more connections than its fd limit).

Exit code: 0 when the run completed (missed goals are findings, not errors),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import churn, exit_clock, explore, gate, probe_overhead, scale, shutdown, storm
from bench.common import ROOT, Figure, table_rows

__all__ = ["FIGURES", "main"]

FigureFn = Callable[..., Awaitable[Figure]]

#: In the issue's order; names are what ``--only`` takes.
FIGURES: dict[str, FigureFn] = {
    "churn": churn.figure,
    "storm": storm.figure,
    "shutdown": shutdown.figure,
    "exit_clock": exit_clock.figure,
    "probe": probe_overhead.figure,
    "gate": gate.figure,
    "scale": scale.figure,
    "explore": explore.figure,
}


def _options(fn: FigureFn, options: dict[str, int | None]) -> dict[str, int | None]:
    """The options a figure takes (``workers``, ``sources``), as given on the command line."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}


async def _run(names: list[str], quick: bool, options: dict[str, int | None] | None = None) -> list[Figure]:
    figures = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            fig = await FIGURES[name](quick, **_options(FIGURES[name], options or {}))
        except Exception as exc:  # one broken figure must not lose the others
            fig = Figure(name, name, unavailable=f"{type(exc).__name__}: {exc}")
            fig.details["traceback"] = traceback.format_exc()
        fig.seconds = time.monotonic() - t0
        print(f"bench: {name} done in {fig.seconds:.1f} s", file=sys.stderr, flush=True)
        figures.append(fig)
    return figures


def _print_table(figures: list[Figure], title: str) -> None:
    rows = table_rows(figures)
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title)
            for col in ("figure", "measure", "value", "goal"):
                table.add_column(col)
            for row in rows:
                style = "red" if "MISSED" in row[3] or row[2] == "unavailable" else None
                table.add_row(*row, style=style)
            Console().print(table)
            return
    widths = [max(len(r[i]) for r in rows) if rows else 0 for i in range(3)]
    print(title)
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: every figure, briefly")
    parser.add_argument("--only", default="", help=f"comma-separated figures: {', '.join(FIGURES)}"
                        " (the peers, Artillery and k6, are rows of churn and storm)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="where the JSON goes")
    parser.add_argument("--workers", type=int, default=None,
                        help="client worker processes for churn, storm and scale (default: half the cores, at least 1)")
    parser.add_argument("--sources", type=int, default=None,
                        help="loopback source addresses 127.0.0.1..N for scale's clients")
    parser.add_argument("--servers", type=int, default=None,
                        help="reference server processes scale deals its connections to (default 1)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if args.sources is not None and not 1 <= args.sources <= 254:
        parser.error(f"--sources must be between 1 and 254, not {args.sources}")
    if args.servers is not None and args.servers < 1:
        parser.error(f"--servers must be at least 1, not {args.servers}")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    started = datetime.now(timezone.utc)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.monotonic()
    figures = asyncio.run(_run(names, args.quick, {"workers": args.workers, "sources": args.sources,
                                                          "servers": args.servers}))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result = {
        "schema": 1,
        "started": started.isoformat(),
        "seconds": round(time.monotonic() - t0, 1),
        "quick": args.quick,
        "workers": args.workers,
        "sources": args.sources,
        "servers": args.servers,
        "command": " ".join([os.path.relpath(sys.executable), "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_start": load_at_start, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "figures": [f.as_dict() for f in figures],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    (out / "latest.json").write_text(path.read_text())
    load = result["machine"]["loadavg_at_end"]
    _print_table(figures, f"wschaos bench {stamp}{' (quick)' if args.quick else ''}, {result['seconds']} s,"
                          f" load average {load_at_start[0]} at start, {load[0]} at end")
    print(f"written {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
