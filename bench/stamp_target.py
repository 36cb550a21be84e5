"""A tiny target for figure 4: its own clock stamp of the instant it exits.

Listens on a free loopback port (so it is ready the way the reference server
is: ``LISTENING host:port``), waits for SIGINT, writes ``time.monotonic_ns()``
to the file named on its command line and leaves with ``os._exit(0)``, so
nothing runs between the stamp and the exit. CLOCK_MONOTONIC is system-wide,
which makes the stamp comparable with the supervisor's ``exited_ns``.

    python bench/stamp_target.py STAMP_FILE
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def main() -> None:
    path = sys.argv[1]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def on_sigint(signum: int, frame: object) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stamp = time.monotonic_ns()
        os.write(fd, str(stamp).encode())
        os._exit(0)

    signal.signal(signal.SIGINT, on_sigint)
    host, port = sock.getsockname()
    print(f"LISTENING {host}:{port}", flush=True)
    while True:  # the handler ends the process; pause() only returns after a handler ran
        signal.pause()


if __name__ == "__main__":
    main()
