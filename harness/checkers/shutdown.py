"""Checkers for the process side of shutdown (PROTOCOL.md "Shutdown").

Inputs are what the supervisor reports (exit time, return code, output,
survivors, port) and what clients recorded around the signal.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from harness.checkers._core import (
    closed_obs,
    fmt_ms,
    fmt_num,
    frames,
    request_label,
    signal_ns,
    stack_lines,
    summarize,
)
from harness.checkers.bounds import duration_within
from harness.checkers.registry import checker
from harness.core.history import History
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = [
    "SHUTDOWN_NOISE",
    "close_codes",
    "connections_refused",
    "exit_code",
    "exit_time",
    "finals",
    "forced_exit",
    "health_503",
    "health_during_drain",
    "no_survivors",
    "output_noise",
    "port_free",
    "refuses_connections",
    "shutdown_finals",
    "watchdog_dump",
]

#: Lines that never belong in the output of a clean shutdown (PROTOCOL.md).
SHUTDOWN_NOISE: tuple[str, ...] = (
    "Traceback",
    "KeyboardInterrupt",
    "Task was destroyed but it is pending",
    "Exception ignored",
    "never awaited",
)


@checker
def exit_time(exit_ms: float | None, bound_ms: float | None, *, what: str = "exit",
              stacks: Any = ()) -> Verdict:
    """Pass when the process exited within ``bound_ms``; None (still running) fails as hung.

    ``stacks`` (lines, a dump, or a forensics object) are taken before the kill; a hung verdict carries them.
    """
    return duration_within("shutdown.exit_time", exit_ms, bound_ms, what=what, key="exit_ms", stacks=stacks,
                           never="{what}: hung, still running at the bound {bound} ms")


@checker
def exit_code(returncode: int | None, allowed: int | Collection[int], *,
              signal_killed: int | None = None, hung: bool = False, what: str = "the target") -> Verdict:
    """Pass when the exit code is one of ``allowed``; a death by signal is named as such.

    ``hung``: the harness had to end the target (it was still running at the bound); the
    code it died with is then wschaos's SIGTERM or SIGKILL, not the target's own, and is
    not judged (``shutdown.exit_time`` fails the hang, with its stacks).
    """
    name = "shutdown.exit_code"
    allowed_set = {allowed} if isinstance(allowed, int) else set(allowed)
    want = " or ".join(str(a) for a in sorted(allowed_set))
    if hung:
        by = f" (signal {signal_killed})" if signal_killed is not None else ""
        return unknown(name, f"not judged: {what} hung and wschaos ended it{by}, so the exit code "
                             f"is wschaos's, not {what}'s (expected {want}); the hang is "
                             f"{'client' if 'client' in what else 'shutdown'}.exit_time's finding", allowed=sorted(allowed_set), hung=True,
                       signal_killed=signal_killed)
    if returncode is None and signal_killed is not None:
        returncode = -signal_killed  # how subprocess reports a death by signal
    if returncode is None:
        return unknown(name, "no exit code: the process has not exited or was not watched",
                       allowed=sorted(allowed_set))
    figs = {"returncode": returncode, "allowed": sorted(allowed_set), "signal_killed": signal_killed}
    how = f" (killed by signal {signal_killed})" if signal_killed is not None else ""
    if returncode in allowed_set:
        return passed(name, f"exit code {returncode}{how}, expected {want}", **figs)
    return fail(name, f"exit code {returncode}{how}, expected {want}", **figs)


@checker
def forced_exit(after_ms: float | None, bound_ms: float | None, *, returncode: int | None,
                forced_codes: Collection[int], clean_codes: Collection[int] = (0,),
                drain_ms: float | None = None, second_sent: bool = True, stacks: Any = ()) -> Verdict:
    """A second Ctrl+C during the drain ends the process within ``bound_ms`` with a forced-exit code.

    ``after_ms``: the exit, in ms after the second Ctrl+C (negative: it exited before the
    second could land; None: still running at the bound, wschaos ended it); ``second_sent``
    False: the process had exited before the second Ctrl+C was sent. ``drain_ms``:
    the exit after the *first* Ctrl+C. A clean exit before the second Ctrl+C, or a clean
    exit within the bound after it, cannot tell a handled second Ctrl+C from an ignored
    one whose drain just ended: unknown, saying so, never a pass.
    """
    name = "shutdown.forced_exit"
    forced, clean = sorted(set(forced_codes)), sorted(set(clean_codes))
    want = " or ".join(map(str, forced))
    figs: dict[str, Any] = {"after_ms": after_ms, "bound_ms": bound_ms, "drain_ms": drain_ms,
                            "returncode": returncode, "forced_codes": forced, "clean_codes": clean}
    if bound_ms is None:
        return unknown(name, "exit after the second Ctrl+C: no bound given", **figs)
    drain = f"{fmt_num(drain_ms)} ms" if drain_ms is not None else "an unmeasured time"
    if not second_sent or (after_ms is not None and after_ms < 0):
        how = "cleanly" if returncode in clean else f"with code {returncode}"
        return unknown(name, f"not judged: the drain ended {drain} after the first Ctrl+C (exit {how}), "
                             f"before the second Ctrl+C could land: nothing to cut short", **figs)
    if after_ms is None:
        lines = stack_lines(stacks)
        tail = f"; stacks: {summarize(lines, 3)}" if lines else ""
        return fail(name, f"still running {bound_ms:g} ms after the second Ctrl+C: it was not cut short "
                          f"(wschaos ended it){tail}", hung=True, stacks=lines[:200], **figs)
    took = f"exit {fmt_ms(after_ms)} after the second Ctrl+C ({drain} after the first), code {returncode}"
    if after_ms > bound_ms:
        return fail(name, f"{took}: {fmt_ms(after_ms)} > bound {bound_ms:g} ms", **figs)
    if returncode in forced:
        return passed(name, f"{took}: within {bound_ms:g} ms, a forced exit ({want})", **figs)
    if returncode in clean:
        return unknown(name, f"not judged: exited cleanly (code {returncode}) {fmt_ms(after_ms)} after the "
                             f"second Ctrl+C, {drain} after the first; its drain may simply have ended, so a "
                             f"handled second Ctrl+C and an ignored one look the same (forced exit: {want})",
                       **figs)
    return fail(name, f"{took}: expected a forced-exit code {want}", **figs)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@checker
def output_noise(stdout: str | None, stderr: str | None,
                 patterns: Iterable[str | re.Pattern[str]] = SHUTDOWN_NOISE, *,
                 max_stderr_lines: int | None = None, hung: bool = False) -> Verdict:
    """Fail on any line matching ``patterns`` (substring or regex), or more stderr lines than allowed.

    ``max_stderr_lines`` None (the default) judges the patterns only; a target that asks
    for a line limit (PROTOCOL.md's reference server: 1) declares it. ``hung``: the target
    never finished its shutdown (wschaos ended it), so its output is not that of a clean
    shutdown and cannot pass: unknown, with what was seen in the figures.
    """
    name = "shutdown.output_noise"
    if stdout is None and stderr is None:
        return unknown(name, "no output captured (stdout and stderr both missing)")
    # Plain strings match as substrings (what target files list); compiled patterns as regexes.
    pats = [(p.pattern, p) if isinstance(p, re.Pattern) else (p, re.compile(re.escape(p))) for p in patterns]
    per_pattern: Counter[str] = Counter()
    offending: list[str] = []
    for stream, text in (("stdout", stdout or ""), ("stderr", stderr or "")):
        for ln in _lines(text):
            hits = [label for label, rx in pats if rx.search(ln)]
            if hits:
                per_pattern.update(hits)
                offending.append(f"{stream}: {ln.strip()[:160]}")
    err_lines = len(_lines(stderr or ""))
    problems = []
    if offending:
        counts = ", ".join(f"{pat!r} x{n}" for pat, n in per_pattern.items())
        problems.append(f"{len(offending)} noisy lines ({counts}): {summarize(offending, 3)}")
    if max_stderr_lines is not None and err_lines > max_stderr_lines:
        problems.append(f"{err_lines} lines on stderr > allowed {max_stderr_lines}: "
                        f"{summarize(_lines(stderr or ''), 3)}")
    figs = {"noisy_lines": len(offending), "per_pattern": dict(per_pattern),
            "offending": offending[:20], "stderr_lines": err_lines,
            "max_stderr_lines": max_stderr_lines, "stderr_missing": stderr is None}
    if hung:
        seen = f"{len(offending)} noisy lines and {err_lines} stderr lines seen" if offending else \
            f"no noisy line and {err_lines} stderr lines seen"
        return unknown(name, f"not judged: the target hung and wschaos ended it, so its output is not that of "
                             f"a shutdown it finished ({seen} before the kill)", hung=True, **figs)
    if problems:
        return fail(name, "; ".join(problems), **figs)
    if max_stderr_lines is not None and stderr is None:
        return unknown(name, f"stderr not captured, cannot count its lines (allowed {max_stderr_lines})", **figs)
    return passed(name, f"no noisy lines; {err_lines} lines on stderr", **figs)


@checker
def no_survivors(survivors: Sequence[dict] | None, *, hung: bool = False) -> Verdict:
    """Pass when no process of the target's tree outlived it.

    ``hung``: wschaos ended the tree itself, so whether a child would have outlived
    the target's own exit cannot be seen: unknown.
    """
    name = "shutdown.no_survivors"
    if hung:
        return unknown(name, "not judged: the target hung and wschaos ended its whole tree, so no process "
                             "could outlive the target's own exit", hung=True)
    if survivors is None:
        return unknown(name, "no survivor list: the process tree was not inspected")
    if not survivors:
        return passed(name, "no process of the target's tree survived", count=0)
    desc = [f"pid {s.get('pid')} {s.get('name') or '?'} {' '.join(s.get('cmdline') or [])[:80]}".rstrip()
            for s in survivors]
    return fail(name, f"{len(survivors)} processes survived: {summarize(desc)}",
                count=len(survivors), survivors=[dict(s) for s in survivors[:20]])


@checker
def port_free(free: bool | None, *, port: int | None, hung: bool = False) -> Verdict:
    """Pass when the target's port can be bound again after it exited.

    ``hung``: the port was freed by wschaos's kill, not by the target's exit: unknown.
    """
    name = "shutdown.port_free"
    if hung:
        return unknown(name, f"not judged: the target hung and wschaos ended it, so port {port} "
                             "was released by the kill, not by the target's exit", port=port, hung=True)
    if free is None:
        return unknown(name, f"port {port} was not checked", port=port)
    if free:
        return passed(name, f"port {port} is free", port=port, free=True)
    return fail(name, f"port {port} is still held after the target exited", port=port, free=False)


@checker
def finals(history: History, clients: Collection[str] | None = None,
                    reason: str = "shutdown") -> Verdict:
    """Every request active at the first signal got a final frame interrupted with ``reason``."""
    name = "shutdown.finals"
    sig = signal_ns(history)
    if sig is None:
        return unknown(name, "no signal recorded by the supervisor")
    active = [op for op in history.operations("request")
              if (clients is None or op.client in clients) and op.started_ns < sig
              and (op.ended_ns is None or op.ended_ns >= sig)]
    if not active:
        return unknown(name, "no request was active at the signal; nothing to judge")
    finals: dict[tuple[str, object], list] = {}
    for f in frames(history):
        if f.get("kind") == "final":
            finals.setdefault((f.client, f.get("request_id")), []).append(f)
    bad = []
    for op in active:
        rid = op.data.get("request_id")
        got = finals.get((op.client, rid))
        if not got:
            bad.append(f"{request_label(op.client, rid)}: no final frame")
            continue
        last = got[-1]
        if last.get("interrupted") is not True or last.get("reason") != reason:
            bad.append(f"{request_label(op.client, rid)}: final interrupted={last.get('interrupted')} "
                       f"reason={last.get('reason')!r}")
    figs = {"active": len(active), "bad": len(bad), "reason": reason}
    if bad:
        return fail(name, f"{len(bad)} of {len(active)} requests active at the signal lack a final "
                          f"interrupted frame with reason {reason!r}: {summarize(bad)}", **figs)
    return passed(name, f"all {len(active)} requests active at the signal ended interrupted, "
                        f"reason {reason!r}", **figs)


@checker
def close_codes(history: History, expected: int | Collection[int] = (1001,),
                clients: Collection[str] | None = None, *, killed_ns: int | None = None) -> Verdict:
    """Every client (default: connected ones that did not close themselves) was closed with an ``expected`` code.

    ``expected`` is one code or the collection a target declared (``conventions.close_codes``;
    PROTOCOL.md: 1001). ``killed_ns``: when wschaos ended a hung target; a connection that
    ended after it was still open at the kill, and is reported so, never as the target's 1006.
    """
    name = "shutdown.close_codes"
    allowed = {expected} if isinstance(expected, int) else set(expected)
    want = " or ".join(str(c) for c in sorted(allowed))
    if clients is None:
        selfclosed = {op.client for op in history.operations() if op.kind in ("close", "abort", "vanish")}
        clients = sorted({op.client for op in history.operations("connect") if op.outcome == "ok"} - selfclosed)
    if not clients:
        return unknown(name, "no connected client to judge", expected=sorted(allowed))
    codes: dict[str, int | None] = {}
    at_kill: list[str] = []
    for o in closed_obs(history):
        if o.source in clients and o.source not in codes and o.source not in at_kill:
            if killed_ns is not None and o.t_ns >= killed_ns:
                at_kill.append(o.source)
            else:
                codes[o.source] = o.data.get("code")
    wrong = {c: (code if code is not None else 1006) for c, code in codes.items() if code not in allowed}
    missing = [c for c in clients if c not in codes and c not in at_kill]
    figs = {"expected": sorted(allowed), "clients": len(clients), "codes": codes,
            "wrong": wrong, "missing": missing, "open_at_kill": at_kill}
    problems = []
    if wrong:
        tally = Counter(wrong.values())
        problems.append(f"{len(wrong)} of {len(clients)} clients closed with other codes than {want}: "
                        + ", ".join(f"{code} x{n}" for code, n in sorted(tally.items()))
                        + f" ({summarize(f'{c}: {code}' for c, code in wrong.items())})")
    if at_kill:
        problems.append(f"{len(at_kill)} of {len(clients)} connections were still open when wschaos ended "
                        f"the hung target: never closed by its shutdown ({summarize(at_kill)})")
    if problems:
        return fail(name, "; ".join(problems), **figs)
    if missing:
        return unknown(name, f"{len(missing)} of {len(clients)} clients recorded no close: "
                             f"{summarize(missing)}", **figs)
    got = sorted({c for c in codes.values() if c is not None})
    return passed(name, f"all {len(clients)} clients closed with {' or '.join(map(str, got))} "
                        f"(allowed {want})", **figs)


@checker
def health_503(statuses: Sequence[int | None] | None) -> Verdict:
    """/health answered 503 during the drain and never 200 after its first 503 (None = no answer)."""
    name = "shutdown.health_503"
    statuses = list(statuses or [])
    answered = [s for s in statuses if s is not None]
    tally = dict(Counter("none" if s is None else s for s in statuses))
    figs = {"polls": len(statuses), "tally": tally}
    if not answered:
        return unknown(name, f"/health gave no answer to any of {len(statuses)} polls after the signal", **figs)
    if 503 not in answered:
        return fail(name, f"no 503 from /health in {len(statuses)} polls after the signal "
                          f"(statuses {tally})", **figs)
    after = answered[answered.index(503):]
    late_ok = sum(1 for s in after if s == 200)
    if late_ok:
        return fail(name, f"/health went back to 200 {late_ok} times after its first 503 "
                          f"(statuses {tally})", **figs)
    return passed(name, f"/health answered 503 during the drain (statuses {tally})", **figs)


@checker
def refuses_connections(attempts: Sequence[bool | None] | None) -> Verdict:
    """Every connection attempt during the drain was refused (True = refused, None = unsure)."""
    name = "shutdown.refuses_connections"
    attempts = list(attempts or [])
    accepted = sum(1 for a in attempts if a is False)
    unsure = sum(1 for a in attempts if a is None)
    figs = {"attempts": len(attempts), "accepted": accepted, "unsure": unsure}
    if accepted:
        return fail(name, f"{accepted} of {len(attempts)} connection attempts during the drain "
                          f"were accepted", **figs)
    if not attempts or unsure:
        return unknown(name, f"{unsure} of {len(attempts)} connection attempts had no clear outcome", **figs)
    return passed(name, f"all {len(attempts)} connection attempts during the drain were refused", **figs)


_THREAD_HDR = re.compile(r"^(Current thread|Thread) 0x[0-9a-fA-F]+")
_FRAME_LINE = re.compile(r'^\s*File "')


@checker
def watchdog_dump(stderr: str | None) -> Verdict:
    """stderr holds thread stacks as faulthandler prints them ("Thread 0x..." headers, File lines)."""
    name = "shutdown.watchdog_dump"
    if stderr is None:
        return unknown(name, "stderr was not captured")
    lines = stderr.splitlines()
    threads = sum(1 for ln in lines if _THREAD_HDR.match(ln.strip()))
    frame_lines = sum(1 for ln in lines if _FRAME_LINE.match(ln))
    figs = {"threads": threads, "frame_lines": frame_lines, "stderr_lines": len(lines)}
    if threads and frame_lines:
        return passed(name, f"stack dump of {threads} threads ({frame_lines} frames) on stderr", **figs)
    tail = summarize([ln.strip() for ln in lines[-3:] if ln.strip()], 3) or "empty"
    return fail(name, f"no thread stacks on stderr: {threads} thread headers, {frame_lines} frame lines "
                      f"in {len(lines)} lines (tail: {tail})", **figs)


# The names scenarios call them by.
shutdown_finals = finals
health_during_drain = health_503
connections_refused = refuses_connections
