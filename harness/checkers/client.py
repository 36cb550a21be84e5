"""Checkers for interactive clients on a pty: they exit at once and leave the terminal usable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.checkers.bounds import duration_within
from harness.checkers.registry import checker
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["exit_time", "terminal_usable"]


@checker
def exit_time(exit_ms: float | None, bound_ms: float | None, *, what: str = "client exit",
              stacks: Any = ()) -> Verdict:
    """The client exited within ``bound_ms`` of quitting or Ctrl+C; None (still running) fails, with its stacks."""
    return duration_within("client.exit_time", exit_ms, bound_ms, what=what, stacks=stacks)


@checker
def terminal_usable(state: Any) -> Verdict:
    """After the client exited, the terminal has echo and canonical line editing on (TerminalState or dict)."""
    name = "client.terminal_usable"
    if not state:
        return unknown(name, "the terminal's state could not be read", state=None)
    get = state.get if isinstance(state, Mapping) else (lambda k: getattr(state, k, None))
    figs = {k: get(k) for k in ("echo", "icanon", "isig")}
    off = [k for k in ("echo", "icanon") if figs[k] is False]
    missing = [k for k in ("echo", "icanon") if figs[k] is None]
    if off:
        return fail(name, f"terminal left with {', '.join(off)} off: typing is invisible or unbuffered", **figs)
    if missing:
        why = get("error") or f"no value for {', '.join(missing)}"
        return unknown(name, f"terminal state unreadable: {why}", **figs)
    return passed(name, "terminal left with echo and icanon on", **figs)
