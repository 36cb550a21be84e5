"""What one program runs against, what it leaves behind, and a session as the program holds it.

:class:`RunEnv` is the live target and how to speak to it; :class:`ProgramRun`
is everything a program produced (its history, the model fed along the way,
the verdicts judged on the spot, the target's books before and after);
:class:`ProgramSession` is one session of the program with its reading state.

:func:`cork` is how a ``burst`` step's frames leave in one write: the socket
is corked (``TCP_CORK``) while the client's own methods send each frame, and
uncorked once every frame has been handed to the kernel, so the target reads
them in one segment, as a fast client's REQUEST and INTERRUPT arrive together.
Every frame still goes through the client's public methods, so the history
records each as the operation it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.client.connection import Client, ClientError
from harness.core.history import History
from harness.core.verdict import Verdict
from harness.explore.model import Model
from harness.explore.program import ExploreConfig
from harness.protocol.adapters import Adapter

if TYPE_CHECKING:
    from harness.process.supervisor import Supervisor
    from harness.target.spec import Target
    from harness.upstream.fake import FakeUpstream

__all__ = ["ProgramRun", "ProgramSession", "RunEnv", "StepTrace", "cork"]

_CORK = getattr(socket, "TCP_CORK", None)


@dataclass
class RunEnv:
    """What a program runs against: one live target and how to speak to it."""

    target: Target
    sup: Supervisor
    adapter: Adapter
    config: ExploreConfig
    upstream: FakeUpstream | None = None
    #: Whether the protocol has a HEARTBEAT (the round trip that confirms a SUBSCRIBE took effect).
    heartbeat: bool = True
    #: Whether a REQUEST's options shape its reply (the reference protocol's): else every reply
    #: may end at any moment, and the model holds none of them active for sure.
    options: bool = True
    #: Long replies: far longer than any program; short ones end within a few ms.
    long_chunks: int = 100_000


@dataclass
class StepTrace:
    index: int
    step: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    ms: float = 0.0


@dataclass
class ProgramRun:
    """What happened: the history, the model fed along the way, on-the-spot verdicts, the books."""

    history: History
    model: Model
    traces: list[StepTrace] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    during: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    open_at_sample: dict[str, int] = field(default_factory=dict)
    target_alive: bool = True
    #: A problem of the harness itself (never blamed on the target).
    harness_error: str | None = None
    upstream_claims: list[tuple[str, int, int | None]] = field(default_factory=list)
    #: Sessions that stopped reading at some point, and whether the proxy ever delayed: their
    #: replies may be late for reasons of the program's own making.
    slowed: set[str] = field(default_factory=set)
    #: Clients that sent an oversize frame while not reading: the server's 1009 close is read,
    #: and judged, once they read again at the program's end.
    close_1009_later: list[str] = field(default_factory=list)
    #: When each client first sent an oversize frame (the server ends the session for it).
    oversize_at: dict[str, int] = field(default_factory=dict)
    #: The process from outside (psutil) before the program and once it settled.
    resources_before: dict[str, Any] | None = None
    resources_after: dict[str, Any] | None = None
    lagged: bool = False
    proxied: set[str] = field(default_factory=set)
    #: (client, topic) -> (at least, at most) EVENTs, as the model had it before the sessions closed.
    expected_events: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    stats_source: str = "none"
    duration_s: float = 0.0
    steps_run: int = 0


@contextlib.contextmanager
def cork(client: Client) -> Iterator[bool]:
    """Hold the client's outgoing bytes in the kernel until the block ends (one segment)."""
    sock = None
    try:
        sock = client.connection.transport.get_extra_info("socket")
    except ClientError:
        sock = None
    corked = False
    if sock is not None and _CORK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
            corked = True
        except OSError:
            corked = False
    try:
        yield corked
    finally:
        if corked and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)


class ProgramSession:
    """One session of a program: its client, how it connected, whether it reads."""

    def __init__(self, index: int, client: Client, via: str) -> None:
        self.index = index
        self.client = client
        self.via = via
        self.paused: contextlib.ExitStack | None = None
        #: Set while the client reads its socket: an answer can only be seen then.
        self.reading = asyncio.Event()
        self.reading.set()
        #: An answer already failed to come within its bound: later waits on this session
        #: are not waited out again (the checks over the history still see late answers).
        self.silent = False
        #: Done once the last malformed frame sent has taken its ERROR (answers come in order).
        self.last_bad: asyncio.Future[None] | None = None

    def pause(self, stack: contextlib.ExitStack) -> None:
        self.paused = stack
        self.reading.clear()

    def resume(self) -> None:
        if self.paused is not None:
            self.paused.close()
            self.paused = None
        self.reading.set()
