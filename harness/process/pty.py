"""A real Ctrl+C: the terminal's interrupt character typed into a pty.

Writing the pty's VINTR character to the master side is what a person's
Ctrl+C does: the line discipline turns it into SIGINT for the terminal's
whole foreground process group (``os.kill(pid, SIGINT)`` reaches one
process). The character is read from the pty itself, not from the harness's
own terminal: the target's or client's terminal is the one that counts.

Shared by :class:`harness.process.supervisor.Supervisor` (targets started
with ``pty=True``) and :class:`harness.process.terminal.InteractiveSession`.
"""

from __future__ import annotations

import os
import termios
from collections.abc import Callable

from harness.core.timing import now_ns

__all__ = ["DEFAULT_INTR", "intr_char", "send_intr"]

#: ^C, the interrupt character of a terminal left at its defaults.
DEFAULT_INTR = b"\x03"


def intr_char(fd: int) -> bytes:
    """The interrupt character of the pty open at ``fd``; ^C when its modes cannot be read."""
    try:
        cc = termios.tcgetattr(fd)[6][termios.VINTR]
    except termios.error:
        return DEFAULT_INTR
    return cc if isinstance(cc, bytes) else bytes([cc])


def send_intr(fd: int, stamp: Callable[[], int] = now_ns) -> int:
    """Type the interrupt character into the pty at ``fd``; the time ``stamp()`` took just before.

    ``stamp`` defaults to the monotonic clock; a caller that times from the
    keystroke passes its own marker so both see one instant.
    """
    char = intr_char(fd)
    sent = stamp()
    os.write(fd, char)
    return sent
