"""A watcher process that ends a target's tree when the harness dies.

The supervisor starts one guard per target and keeps the write end of a pipe
to the guard's stdin. Nothing is ever written to it except a detach byte, so
the guard learns the harness died, however it died (SIGKILL included), from
EOF on that pipe. It then stops the target's whole tree (its session, its
descendants, and anything carrying its marker variable) and exits.

The guard must not linger either: it exits after a detach byte (the
supervisor stopped the target itself), after cleaning up, or once the target
and its session are gone.

It runs as ``python -I harness/process/guard.py --pid P --sid S --marker M`` in a new
session of its own, so a Ctrl+C at the harness's terminal does not reach it
before it has done its work.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["DETACH", "main"]

#: Written by the supervisor after a normal stop: exit without killing anything.
DETACH = b"D"


def _import_proctree() -> Any:
    # Run with -I, the script's directory is not on sys.path; put the project
    # root there so the shared tree helpers are imported as harness.core.proctree.
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from harness.core import proctree

    return proctree


def _kill_tree(proctree: Any, pid: object, sid: int, marker: str) -> int:
    """Stop everything of the tree; a few rounds catch processes forked meanwhile."""
    total = 0
    for round_no in range(4):
        procs = proctree.collect_tree(pid, sid=sid, marker=marker)
        if not procs:
            break
        # First round is graceful so the target can still flush its logs; later
        # rounds only mop up and go straight to SIGKILL after a short wait.
        term = 1.0 if round_no == 0 else 0.1
        stopped, _ = proctree.stop_procs(procs, term_timeout=term, kill_timeout=1.0)
        total += len(stopped)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wschaos-guard")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--sid", type=int, required=True)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args(argv)

    # The harness's terminal may send these to its whole foreground group; the
    # guard answers only to its pipe.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)

    proctree = _import_proctree()
    import psutil

    # Captured once, with its creation time, so a recycled pid is never killed.
    root: object = args.pid
    try:
        root = psutil.Process(args.pid)
    except psutil.Error:
        pass
    fd = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], args.poll)
        if ready:
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            if DETACH in data:
                return 0
            if not data:
                started = time.monotonic()
                n = _kill_tree(proctree, root, args.sid, args.marker)
                print(
                    f"wschaos guard: harness gone; stopped {n} process(es) of target pid "
                    f"{args.pid} in {time.monotonic() - started:.2f}s",
                    file=sys.stderr,
                )
                return 0
            continue
        # Nothing left to guard: the target and every process of its session
        # are gone (a session scan only; cheap enough at this rate).
        if not proctree.collect_tree(root, sid=args.sid):
            return 0


if __name__ == "__main__":
    sys.exit(main())
