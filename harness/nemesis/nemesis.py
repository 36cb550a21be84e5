"""The nemesis: the one way a scenario injects a fault, and the record of it.

Jepsen's nemesis is a client whose operations are faults; here too. Every
fault the nemesis applies is an operation in the run's history with
``client == "nemesis"``: it begins when the fault is applied and ends when it
is lifted (a paused reader resumed, a process continued, a proxy back to
pass-through), so a failing run shows on its timeline exactly when the world
was broken and how. Instant faults (a TCP reset, a signal) begin and end at
the moment they are done.

Operation kinds (``data`` in brackets):

===============  =====================================================
``stop_reading``  a client stops reading its socket [``target``]
``freeze``        SIGSTOP of a process, SIGCONT at the end [``target``, ``pid``]
``rst``           a client's connection ended with a TCP RST [``target``, ``close_code``]
``fin``           a client's connection ended with a FIN, no close frame [``target``, ``close_code``]
``blackhole``     a proxy forwards nothing either way [``target``]
``delay``         a proxy forwards every chunk ``ms`` later [``target``, ``ms``]
``reset``         a proxy resets every current connection [``target``, ``count``]
``signal``        a signal to a process [``target``, ``pid``, ``signal``, ``sent_ns``]
``ctrl_c``        the terminal's interrupt character on a pty [``target``, ``pid``, ``sent_ns``]
===============  =====================================================

The mechanisms are in :mod:`harness.nemesis.faults` (context managers that
refuse to nest and always restore) and :mod:`harness.core.sockets`.
"""

from __future__ import annotations

import contextlib
import signal as signals
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from harness.core.history import History, Operation
from harness.nemesis.faults import Tap, TcpProxy, frozen_process, paused_reading

if TYPE_CHECKING:
    from harness.client.connection import Client

__all__ = ["NEMESIS", "Nemesis", "Signallable"]

T = TypeVar("T")

#: The ``client`` of every nemesis operation in the history.
NEMESIS = "nemesis"


class Signallable(Protocol):
    """What the nemesis needs of a running process to signal it (a supervisor, a terminal)."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int: ...

    def send_signal(self, sig: int) -> int: ...


class _PtyProcess(Signallable, Protocol):
    def ctrl_c(self) -> int: ...


class Nemesis:
    """Applies faults to clients, processes and proxies, recording each in the history."""

    def __init__(self, history: History) -> None:
        self.history = history

    # -- spans -------------------------------------------------------------------
    @contextlib.contextmanager
    def _fault(self, kind: str, cm: contextlib.AbstractContextManager[T], **data: object) -> Iterator[T]:
        """Apply ``cm`` as a recorded fault: the span ends once the fault is lifted.

        A fault that cannot be applied (a nested one, a process already gone) is
        recorded ``fail`` with the error and raised; one that could not be lifted
        likewise. What ended the body is kept beside a fault that did its job.
        """
        op = self.history.begin(NEMESIS, kind, **data)
        with contextlib.ExitStack() as stack:
            try:
                value = stack.enter_context(cm)
            except BaseException as exc:
                self.history.end(op, "fail", error=f"{type(exc).__name__}: {exc}")
                raise
            ended_by: dict[str, object] = {}
            try:
                yield value
            except BaseException as exc:
                ended_by["ended_by"] = type(exc).__name__
                raise
            finally:
                try:
                    stack.close()
                except BaseException as exc:
                    self.history.end(op, "fail", error=f"not lifted: {type(exc).__name__}: {exc}", **ended_by)
                    raise
                self.history.end(op, "ok", **ended_by)

    @contextlib.contextmanager
    def _applied(self, kind: str, **data: object) -> Iterator[Operation]:
        """A span whose application can fail: recorded ``fail`` with the error, then raised."""
        op = self.history.begin(NEMESIS, kind, **data)
        try:
            yield op
        except BaseException as exc:
            if op.outcome == "pending":
                self.history.end(op, "fail", error=f"{type(exc).__name__}: {exc}")
            raise
        if op.outcome == "pending":
            self.history.end(op, "ok")

    # -- clients -----------------------------------------------------------------
    @contextlib.contextmanager
    def stop_reading(self, client: Client) -> Iterator[Client]:
        """The client reads nothing (no frames, no pongs) until the block ends."""
        with self._fault("stop_reading", paused_reading(client), target=client.name):
            yield client

    async def rst(self, client: Client) -> None:
        """End the client's connection with a TCP RST: no close frame, no FIN."""
        with self._applied("rst", target=client.name) as op:
            await client.abort()
            op.data["close_code"] = client.close_code
        return None

    async def fin(self, client: Client) -> None:
        """End the client's connection with a FIN and no close frame, as a killed process would."""
        with self._applied("fin", target=client.name) as op:
            await client.vanish()
            op.data["close_code"] = client.close_code
        return None

    # -- processes ---------------------------------------------------------------
    @contextlib.contextmanager
    def freeze(self, pid: int, *, what: str) -> Iterator[int]:
        """SIGSTOP ``pid`` for the block; SIGCONT at the end, whatever happened inside."""
        with self._fault("freeze", frozen_process(pid), target=what, pid=pid):
            yield pid

    def signal(self, proc: Signallable, sig: int) -> int:
        """Send ``sig`` to the process alone; the monotonic ns it was sent at."""
        name = signals.Signals(sig).name
        with self._applied("signal", target=proc.name, pid=proc.pid, signal=name) as op:
            sent = proc.send_signal(sig)
            op.data["sent_ns"] = sent
        return sent

    def ctrl_c(self, proc: _PtyProcess) -> int:
        """Type the terminal's interrupt character, as a person's Ctrl+C; when it was sent."""
        with self._applied("ctrl_c", target=proc.name, pid=proc.pid) as op:
            sent = proc.ctrl_c()
            op.data["sent_ns"] = sent
        return sent

    # -- the network -------------------------------------------------------------
    def proxy(self, host: str, port: int, *, name: str = "proxy", allow_remote: bool = False,
              tap: Tap | None = None) -> TcpProxy:
        """A loopback TCP proxy in front of ``host:port`` (enter it with ``async with``); ``tap`` sees its bytes."""
        proxy = TcpProxy(host, port, allow_remote=allow_remote, tap=tap)
        proxy.name = name
        return proxy

    @contextlib.contextmanager
    def blackhole(self, proxy: TcpProxy) -> Iterator[TcpProxy]:
        """Nothing crosses the proxy either way for the block; held bytes flow on after."""
        with self._fault("blackhole", proxy.blackhole(), target=proxy.name):
            yield proxy

    @contextlib.contextmanager
    def delay(self, proxy: TcpProxy, ms: float) -> Iterator[TcpProxy]:
        """Every chunk through the proxy is forwarded ``ms`` later for the block."""
        with self._fault("delay", proxy.delay(ms), target=proxy.name, ms=ms):
            yield proxy

    def reset(self, proxy: TcpProxy) -> int:
        """RST both sides of every connection through the proxy now; how many."""
        with self._applied("reset", target=proxy.name) as op:
            count = proxy.reset_all()
            op.data["count"] = count
        return count
