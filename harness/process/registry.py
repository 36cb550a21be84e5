"""The targets this process is running, and what stops them when the harness itself ends.

Every supervisor registers while its target runs. Whatever ends the harness,
nothing it started may survive:

* a normal exit, or Ctrl+C (SIGINT, a ``KeyboardInterrupt`` that unwinds to
  interpreter exit): ``atexit`` runs :func:`stop_all`;
* SIGTERM or SIGHUP would end the process without ``atexit``: a handler stops
  every target first, then lets the previous disposition act (installed once,
  from the main thread, only where nobody installed one already);
* SIGKILL runs nothing here: each target's guard process
  (:mod:`harness.process.guard`) and ``PR_SET_PDEATHSIG`` cover that.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any, Protocol, TypeVar

from harness.core.timing import scaled

__all__ = ["FATAL_SIGNALS", "Stoppable", "install_handlers", "live", "register", "stop_all", "unregister"]

#: Signals that would end the harness without atexit; their handler stops the targets first.
FATAL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: How long each target may take to go on SIGTERM when the harness is being ended.
_FATAL_TERM_S = 0.5

_R_co = TypeVar("_R_co", covariant=True)


class Stoppable(Protocol[_R_co]):
    """What the registry needs of a live target: a synchronous, bounded, idempotent stop."""

    def stop_sync(self, term_timeout: float | None = None) -> _R_co: ...


_LIVE: dict[int, Stoppable[Any]] = {}
_LIVE_LOCK = threading.RLock()
_PREV_HANDLERS: dict[int, Any] = {}


def register(target: Stoppable[Any]) -> None:
    """``target`` is running: stop it if the harness ends before it does."""
    with _LIVE_LOCK:
        _LIVE[id(target)] = target


def unregister(target: Stoppable[Any]) -> None:
    """``target`` is stopped (idempotent)."""
    with _LIVE_LOCK:
        _LIVE.pop(id(target), None)


def live() -> list[Stoppable[Any]]:
    """The targets registered now."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


def stop_all(term_timeout: float | None = None) -> list[Any]:
    """Stop every target this process started and has not stopped; synchronous, bounded."""
    reports = []
    for target in live():
        with contextlib.suppress(Exception):  # one failure must not spare the others
            reports.append(target.stop_sync(term_timeout))
    return reports


def _on_fatal_signal(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP would end the harness without atexit: stop the targets
    # first, then let the previous disposition act.
    stop_all(term_timeout=scaled(_FATAL_TERM_S))
    prev = _PREV_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(prev):
        prev(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_handlers() -> None:
    """Once, from the main thread, only where nobody installed a handler already."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in FATAL_SIGNALS:
        if sig in _PREV_HANDLERS:
            continue
        current = signal.getsignal(sig)
        if current in (signal.SIG_DFL, None):
            _PREV_HANDLERS[sig] = current
            signal.signal(sig, _on_fatal_signal)


atexit.register(stop_all)
