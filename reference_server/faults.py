"""Fault switches: each one re-introduces a single real lifecycle bug.

Every switch is a plain boolean attribute of :class:`Faults`, all False unless
``--fault NAME`` names it, and every use in the server sits behind
``if faults.NAME:`` so the correct path runs untouched when it is off. The
table of what each switch breaks lives in docs/ARCHITECTURE.md.

The few fault behaviours that need their own code (a leaked child process, a
never-ending thread, growing handler hooks) live here, away from the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable

__all__ = ["FAULT_NAMES", "Faults", "UnknownFaultError"]

FAULT_NAMES: tuple[str, ...] = (
    "to_thread_blocking",
    "nondaemon_thread",
    "noisy_shutdown",
    "bad_exit_code",
    "ignore_second_sigint",
    "no_watchdog",
    "health_ok_during_drain",
    "accept_during_drain",
    "shutdown_no_final",
    "shutdown_abrupt",
    "orphan_child",
    "interrupt_inline",
    "ack_without_cancel",
    "late_chunks",
    "ack_before_final",
    "double_claim",
    "global_request_ids",
    "sticky_interrupt",
    "upstream_left_open",
    "blocking_output_leak",
    "blocking_serializes",
    "leak_tasks",
    "cancel_before_start_leak",
    "leak_subscriptions",
    "leak_session_table",
    "leak_memory",
    "handler_growth",
    "dup_events",
    "stats_lie",
    "no_keepalive",
    "unbounded_buffer",
    "bad_json_closes",
    "type_error_closes",
    "no_max_size",
    "seq_gap",
    "double_final",
    "wrong_ack_status",
    "crash_on_binary",
    "wrong_error_code",
    "global_send_lock",
    "leak_sockets",
    "slow_ack",
)


class UnknownFaultError(ValueError):
    """A ``--fault`` name that is not in :data:`FAULT_NAMES`."""


class Faults:
    """One boolean per fault switch; unknown names are refused up front."""

    to_thread_blocking = nondaemon_thread = noisy_shutdown = bad_exit_code = False
    ignore_second_sigint = no_watchdog = health_ok_during_drain = False
    accept_during_drain = shutdown_no_final = shutdown_abrupt = orphan_child = False
    interrupt_inline = ack_without_cancel = late_chunks = ack_before_final = False
    double_claim = global_request_ids = sticky_interrupt = upstream_left_open = False
    blocking_output_leak = blocking_serializes = leak_tasks = cancel_before_start_leak = False
    leak_subscriptions = leak_session_table = leak_memory = handler_growth = False
    dup_events = stats_lie = no_keepalive = unbounded_buffer = False
    bad_json_closes = type_error_closes = no_max_size = False
    seq_gap = double_final = wrong_ack_status = crash_on_binary = wrong_error_code = False
    global_send_lock = leak_sockets = slow_ack = False

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.enabled: tuple[str, ...] = tuple(dict.fromkeys(names))
        for name in self.enabled:
            if name not in FAULT_NAMES:
                raise UnknownFaultError(
                    f"unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}"
                )
            setattr(self, name, True)

    def __bool__(self) -> bool:
        return bool(self.enabled)


# --- fault-only machinery -------------------------------------------------

#: leak_memory: 256 KiB per connection, never released. Filled with non-zero
#: bytes so the pages are really touched and show up in RSS.
LEAKED_BLOCKS: list[bytes] = []
LEAK_BLOCK = 256 * 1024


def leak_block() -> None:
    LEAKED_BLOCKS.append(os.urandom(16) * (LEAK_BLOCK // 16))


#: leak_sockets: a duplicate of every connection's socket, never closed.
LEAKED_SOCKETS: list[socket.socket] = []


def leak_socket(transport: object) -> None:
    # As a socket kept by a forgotten reference does: the server closes its own
    # descriptor, the duplicate keeps the connection in CLOSE_WAIT and the fd open.
    sock = transport.get_extra_info("socket") if transport is not None else None  # type: ignore[attr-defined]
    if sock is not None:
        LEAKED_SOCKETS.append(socket.socket(fileno=os.dup(sock.fileno())))


#: handler_growth: one hook per connection ever made, all run on every frame.
FRAME_HOOKS: list[object] = []


def _hook(frame_text: str) -> int:
    # A little real work per hook, as an instrumentation callback would do.
    total = 0
    for ch in frame_text[:64]:
        total += ord(ch)
    return total


def add_frame_hook() -> None:
    FRAME_HOOKS.append(_hook)


def run_frame_hooks(frame_text: str) -> None:
    for hook in FRAME_HOOKS:
        hook(frame_text)  # type: ignore[operator]


_SEND_LOCK: asyncio.Lock | None = None


def shared_send_lock() -> asyncio.Lock:
    """global_send_lock: the one lock every connection's writer takes (created on the loop)."""
    global _SEND_LOCK
    if _SEND_LOCK is None:
        _SEND_LOCK = asyncio.Lock()
    return _SEND_LOCK


def start_nondaemon_thread() -> threading.Thread:
    """nondaemon_thread: a background thread nobody ever stops; exit joins it."""
    forever = threading.Event()
    t = threading.Thread(target=forever.wait, name="background-flusher", daemon=False)
    t.start()
    return t


_ORPHAN_CODE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A helper that holds an inherited listening socket; it outlives its parent.
time.sleep(float(sys.argv[1]))
"""


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def spawn_orphan_child(listen_fd: int, lifetime_s: float = 300.0) -> subprocess.Popen[bytes]:
    """orphan_child: a helper process that inherits the listening socket.

    It stays in the server's process group (a supervisor that kills the group
    still reaches it) but ignores SIGINT/SIGTERM, so it survives the server.
    """
    os.set_inheritable(listen_fd, True)
    return subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_CODE, str(lifetime_s)],
        pass_fds=(listen_fd,),
        # Ignored before exec, so a Ctrl+C that comes while the helper's interpreter
        # is still starting cannot kill it (an ignored SIGINT survives exec).
        preexec_fn=_ignore_stop_signals,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
