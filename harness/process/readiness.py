"""Readiness: when a started target accepts connections, and at which address.

The kinds of :class:`harness.target.spec.Readiness`:

* ``line``: a stdout line matches the pattern; its ``port`` and ``host``
  groups, when present, name the address actually bound;
* ``port``: the TCP port accepts a connection;
* ``http``: ``GET url`` answers 2xx (``{port}`` and ``{host}`` filled in).

What a ready line says, which URL is polled and how a wait is named in a
message are pure functions (:func:`address_from_line`, :func:`readiness_url`,
:func:`describe_wait`), unit-tested without a process. :func:`await_ready`
does the waiting: bounded, and it ends early when the target exits, so a
target that dies at start is reported by its exit code, not by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.core.timing import Deadline, scaled
from harness.process.capture import Flag, OutputCapture
from harness.process.launch import probe_http, probe_port
from harness.target.spec import Readiness, check_loopback

__all__ = [
    "KINDS",
    "Ready",
    "address_from_line",
    "await_ready",
    "describe_wait",
    "has_port_placeholder",
    "port_problem",
    "readiness_url",
]

#: The readiness kinds a target may declare.
KINDS = ("line", "port", "http")
#: Between two polls of a port or a URL; the wait still ends at once when the target exits.
_POLL_S = 0.05


@dataclass(frozen=True)
class Ready:
    """The address the target is reached at, and why it is not ready (None: it is)."""

    host: str
    port: int
    problem: str | None = None


def has_port_placeholder(argv: Sequence[str]) -> bool:
    """The command line takes the port from the harness (``{port}`` in an argument)."""
    return any("{port}" in a for a in argv)


def port_problem(readiness: Readiness, port: int) -> str | None:
    """Why the readiness cannot work without a port, before anything is started; else None."""
    if not port and readiness.kind == "port":
        return "readiness 'port' needs a port: give target.port or a {port} in argv"
    return None


def readiness_url(readiness: Readiness, host: str, port: int) -> str:
    """The URL an ``http`` readiness polls, with ``{port}`` and ``{host}`` filled in."""
    return (readiness.url or "").replace("{port}", str(port)).replace("{host}", host)


def describe_wait(readiness: Readiness, host: str, port: int) -> str:
    """What is waited for, as the tail of a message ("a stdout line matching /.../", ...)."""
    if readiness.kind == "line":
        where = "an output line" if readiness.stream == "any" else f"a {readiness.stream} line"
        return f"{where} matching /{readiness.pattern}/"
    if readiness.kind == "port":
        return f"port {host}:{port} to accept"
    return f"GET {readiness_url(readiness, host, port)} to answer 2xx"


def address_from_line(m: re.Match[str], *, host: str, port: int, port_given: bool) -> Ready:
    """What a matching ready line says about the address.

    A ``port`` group gives the port unless the harness gave one (``port_given``:
    the target's port or a ``{port}`` in argv); a ``host`` group (brackets
    stripped) is taken only when it is a loopback address. A pattern that
    promises a port must deliver one; a peer process or a client (no port
    group, no port) is ready without listening anywhere.
    """
    groups = m.groupdict()
    if groups.get("port") and not port_given:
        port = int(groups["port"])
    named = (groups.get("host") or "").strip("[]")
    if named:
        with contextlib.suppress(Exception):
            check_loopback(named)
            host = named
    if not port and "(?P<port>" in m.re.pattern:
        return Ready(host, port, f"ready line {m.string!r} named no port and the target has none")
    return Ready(host, port)


async def await_ready(
    readiness: Readiness,
    *,
    out: OutputCapture,
    exited: Flag,
    returncode: Callable[[], int | None],
    host: str,
    port: int,
    port_given: bool,
    bound: float,
    where: str,
    allow_remote: bool = False,
) -> Ready:
    """Wait until the target is ready, it exits, or ``bound`` seconds pass.

    ``exited`` is set when the target is reaped, ``returncode()`` then gives its
    code; ``where`` names the target in a refused (non-loopback) readiness URL.
    """
    if readiness.kind == "line":
        return await _await_line(readiness, out, exited, returncode, host, port, port_given, bound)
    deadline = Deadline.after(bound)
    url = readiness_url(readiness, host, port)
    what = describe_wait(readiness, host, port)
    if readiness.kind == "http":
        check_loopback(url, where=f"{where} readiness url", allow_remote=allow_remote)
    while not deadline.expired():
        if exited.is_set():
            return Ready(host, port, f"exited with code {returncode()} before it was ready (waiting for {what})")
        attempt = min(scaled(1.0), deadline.remaining())
        if readiness.kind == "port":
            ok = await probe_port(host, port, attempt)
        else:
            ok = await probe_http(url, host, attempt)
        if ok:
            return Ready(host, port)
        # A bounded poll of the condition; ends early if the process exits.
        await exited.wait(min(_POLL_S, deadline.remaining()))
    return Ready(host, port, f"not ready within {bound:.1f}s: waited for {what}")


async def _await_line(
    readiness: Readiness,
    out: OutputCapture,
    exited: Flag,
    returncode: Callable[[], int | None],
    host: str,
    port: int,
    port_given: bool,
    bound: float,
) -> Ready:
    deadline = Deadline.after(bound)
    what = describe_wait(readiness, host, port)
    match_task = asyncio.ensure_future(out.wait_match(readiness.pattern, bound, readiness.stream))
    exit_task = asyncio.ensure_future(exited.wait(bound))
    try:
        await asyncio.wait({match_task, exit_task}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (match_task, exit_task):
            t.cancel()
    m = match_task.result() if match_task.done() and not match_task.cancelled() else None
    stream_closed = all(out.eof[s].is_set() for s in out.streams(readiness.stream))
    if m is None and stream_closed and not exited.is_set():
        # The stream ended without the line: the process is most likely on its
        # way out, and its exit code is the better explanation.
        await exited.wait(deadline.remaining())
    if exited.is_set():
        return Ready(host, port, f"exited with code {returncode()} before it was ready (waiting for {what})")
    if m is None:
        if stream_closed:
            gone = "its output" if readiness.stream == "any" else f"its {readiness.stream}"
            return Ready(host, port, f"closed {gone} without {what}")
        return Ready(host, port, f"not ready within {bound:.1f}s: waited for {what}")
    return address_from_line(m, host=host, port=port, port_given=port_given)
