"""Checkers for how one connection ends or survives: silence, bad input, oversize frames.

A close not seen within the scenario's wait fails rather than being
"unknown": for these checks, the server not closing *is* the finding.
"""

from __future__ import annotations

from typing import Any

from harness.checkers._core import as_frame_dict, client_names, closed_obs, fmt_ms
from harness.checkers.bounds import duration_within
from harness.checkers.registry import checker
from harness.core.history import History
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["closed_with", "connection_usable", "dropped_within", "error_code", "errors_for_all"]


def _code(code: int | None) -> str:
    return "1006 (no close frame)" if code is None else str(code)


@checker
def dropped_within(history: History, client: str, since_ns: int | None, bound_ms: float) -> Verdict:
    """The server closed ``client``'s connection within ``bound_ms`` of ``since_ns`` (e.g. it went silent)."""
    name = "input.dropped_within"
    if since_ns is None:
        return unknown(name, f"{client}: no start time given", client=client)
    if client not in client_names(history):
        return unknown(name, f"no record of client {client}", client=client)
    context: dict[str, Any] = {"client": client}
    dropped_ms, note = None, ""
    closes = closed_obs(history, client)
    if closes:
        code = closes[0].data.get("code")
        dropped_ms, note = (closes[0].t_ns - since_ns) / 1e6, f" (code {_code(code)})"
        context["code"] = code
    return duration_within(name, dropped_ms, bound_ms, what=client, key="dropped_after_ms", context=context,
                           took="{what} dropped after {value}", note=note,
                           never="{what} still connected: no close within {bound} ms",
                           early="{what} closed {early} before the start: not exercised")


@checker
def closed_with(history: History, client: str, code: int) -> Verdict:
    """``client``'s connection was closed with ``code`` (e.g. 1009 for an oversize frame)."""
    name = "input.closed_with"
    if client not in client_names(history):
        return unknown(name, f"no record of client {client}", client=client, expected=code)
    closes = closed_obs(history, client)
    if not closes:
        return fail(name, f"{client} still open: no close observed (expected {code})",
                    client=client, expected=code, code=None)
    got = closes[0].data.get("code")
    figs = {"client": client, "expected": code, "code": got}
    if got != code:
        return fail(name, f"{client} closed with {_code(got)}, expected {code}", **figs)
    return passed(name, f"{client} closed with {code}", **figs)


@checker
def error_code(frame_record: Any, expected_code: str) -> Verdict:
    """The answer was an ERROR frame with ``expected_code``; None (no answer) fails."""
    name = "input.error_code"
    d = as_frame_dict(frame_record)
    if d is None:
        return fail(name, f"no frame answered (expected ERROR {expected_code})",
                    expected=expected_code, code=None)
    code = d.get("code")
    if code is None and isinstance(d.get("payload"), dict):
        code = d["payload"].get("code")
    kind = d.get("kind") or d.get("msg_type")
    figs = {"expected": expected_code, "code": code, "kind": kind}
    if kind is None and code is None:
        return unknown(name, f"unusable frame record, neither kind nor code: {sorted(d)}", **figs)
    if kind not in ("error", "ERROR") or code != expected_code:
        return fail(name, f"answered {kind} code {code}, expected ERROR {expected_code}", **figs)
    return passed(name, f"answered ERROR {expected_code}", **figs)


_PROOF = ("heartbeat", "request", "subscribe", "publish", "unsubscribe")


@checker
def connection_usable(history: History, client: str, since_ns: int | None = None,
                      until_ns: int | None = None) -> Verdict:
    """After ``since_ns`` (the bad input), ``client`` stayed open and an operation on it succeeded.

    ``until_ns``: when the client itself did something that ends the connection (an oversize
    frame); a close from then on is that frame's, and only operations begun before count.
    """
    name = "input.connection_usable"
    if client not in client_names(history):
        return unknown(name, f"no record of client {client}", client=client)
    since = since_ns if since_ns is not None else 0
    until = until_ns if until_ns is not None else None
    closes = [o for o in closed_obs(history, client) if o.t_ns >= since and (until is None or o.t_ns < until)]
    ops = [op for op in history.operations(client=client) if op.kind in _PROOF and op.started_ns >= since
           and (until is None or op.started_ns < until)]
    ok = [op for op in ops if op.outcome == "ok"]
    broken = [op for op in ops if op.outcome in ("fail", "unknown") and not op.data.get("error_code")]
    figs = {"client": client, "ops_after": len(ops), "ok_after": len(ok), "closed": bool(closes)}
    if closes:
        code = closes[0].data.get("code")
        figs["code"] = code
        after = f" {fmt_ms((closes[0].t_ns - since_ns) / 1e6)} after the bad input" if since_ns else ""
        return fail(name, f"{client} closed with {_code(code)}{after}", **figs)
    if broken:
        return fail(name, f"{client}: {len(broken)} of {len(ops)} operations after the bad input "
                          f"failed ({', '.join(sorted({op.kind + ' ' + op.outcome for op in broken}))})",
                    **figs)
    if not ok:
        before = " and before the client's own frame that ends the connection" if until is not None else ""
        return unknown(name, f"{client}: no completed operation after the bad input{before} to prove it usable",
                       **figs)
    return passed(name, f"{client} still open; {len(ok)} operations after the bad input succeeded "
                        f"({', '.join(sorted({op.kind for op in ok}))})", **figs)


@checker
def errors_for_all(errors: int | None, sent: int | None) -> Verdict:
    """Every malformed frame sent was answered by exactly one ERROR."""
    name = "input.errors_for_all"
    if errors is None or not sent:
        return unknown(name, f"nothing to compare: {errors} ERRORs for {sent} frames sent", errors=errors, sent=sent)
    if errors != sent:
        how = f"{sent - errors} unanswered" if errors < sent else f"{errors - sent} extra"
        return fail(name, f"{errors} ERROR frames for {sent} malformed frames ({how})", errors=errors, sent=sent)
    return passed(name, f"{errors} ERROR frames for {sent} malformed frames", errors=errors, sent=sent)
