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


@checker
def closed_cleanly(connections: Any, *, what: str = "client") -> Verdict:
    """Every WebSocket connection the client opened carried its close frame (masked, opcode 0x8) before the socket closed.

    ``connections``: one mapping per TCP connection the client made through
    wschaos's proxy (:meth:`harness.process.wire.WireConnection.summary`):
    ``conn``, ``websocket`` (the server answered 101), ``upgrade_requested``,
    ``close_frame``, ``masked``, ``close_code``, ``ended`` ("fin", "rst" or None:
    still open), ``server_dropped_first`` (the server's socket went first, without
    a close frame: not the client's to close), ``scan_error``. None: the wire was
    not watched.
    """
    name = "client.closed_cleanly"
    if connections is None:
        return unknown(name, f"{what}: its connections were not watched (no proxy in front of the target)")
    rows = [c if isinstance(c, Mapping) else vars(c) for c in connections]
    ws = [c for c in rows if c.get("websocket")]
    figs: dict[str, Any] = {"what": what, "connections": rows[:20], "websocket_connections": len(ws)}
    if not ws:
        asked = sum(1 for c in rows if c.get("upgrade_requested"))
        if asked:
            return unknown(name, f"{what}: asked for a WebSocket {asked} time(s), the server never answered 101: "
                                 f"no connection to close", **figs)
        return unknown(name, f"{what}: no WebSocket connection went through wschaos's proxy "
                             f"({len(rows)} TCP connection(s)): the address it used is not the one it was given",
                       **figs)
    problems: list[str] = []
    unsure: list[str] = []
    for c in ws:
        n, ended = c.get("conn"), c.get("ended")
        if not c.get("close_frame"):
            if c.get("scan_error"):
                unsure.append(f"connection {n}: its frames could not be read ({c['scan_error']})")
            elif c.get("server_dropped_first"):
                unsure.append(f"connection {n}: the server dropped it first, with no close frame: "
                              f"nothing was left for the client to close")
            elif ended is None:
                problems.append(f"connection {n} still open, no close frame sent")
            else:
                how = {"fin": "a FIN", "rst": "a TCP reset"}.get(str(ended), str(ended))
                problems.append(f"connection {n} ended with {how} and no close frame (the server sees 1006)")
        elif c.get("masked") is False:
            problems.append(f"connection {n}: its close frame was not masked (RFC 6455 5.1: the server must "
                            f"fail the connection)")
    codes = [c.get("close_code") for c in ws if c.get("close_frame")]
    figs.update(with_close_frame=len(codes), close_codes=codes)
    if problems:
        return fail(name, f"{what}: " + "; ".join(problems), **figs)
    if unsure:
        return unknown(name, f"{what}: " + "; ".join(unsure), **figs)
    answered = sum(1 for c in ws if c.get("server_closed_first"))
    still_open = sum(1 for c in ws if c.get("ended") is None)
    notes = [f"{answered} answering the server's close"] if answered else []
    notes += [f"{still_open} socket(s) not yet closed"] if still_open else []
    shown = ", ".join("no code" if code is None else str(code) for code in codes)
    note = f" ({'; '.join(notes)})" if notes else ""
    return passed(name, f"{what}: {len(ws)} WebSocket connection(s), each with its close frame "
                        f"(code {shown}) before its socket closed{note}", **figs)
