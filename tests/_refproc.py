"""Start ``python -m reference_server`` for a test and always take it down.

A minimal helper for the reference server's own tests (the harness's full
supervisor lives elsewhere): Popen in its own session, the ``LISTENING`` line
read with a bound, the whole process group killed at teardown.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.timing import scaled

__all__ = ["RefServer", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"LISTENING (\S+):(\d+)")


class RefServer:
    def __init__(self, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 ready_timeout: float = 15.0) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.pop("OPENAI_BASE_URL", None)
        full_env.update(env or {})
        self.argv = [sys.executable, "-m", "reference_server", "--port", "0", *args]
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=full_env, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self.pgid = self.pid
        self.stdout = b""
        self.stderr = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self._sel.register(stream, selectors.EVENT_READ)
        try:
            m = self.wait_for(_LISTENING, ready_timeout)
        except BaseException:
            self.kill()
            raise
        self.host = m.group(1).decode()
        self.port = int(m.group(2))
        self.ws_url = f"ws://{self.host}:{self.port}/ws"
        self.http = f"http://{self.host}:{self.port}"

    # --- output --------------------------------------------------------------

    def pump(self, timeout: float = 0.0) -> None:
        for key, _ in self._sel.select(timeout):
            try:
                data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                self._sel.unregister(key.fileobj)
                continue
            if key.fileobj is self.proc.stdout:
                self.stdout += data
            else:
                self.stderr += data

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float, stream: str = "stdout") -> re.Match[bytes]:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            m = pattern.search(self.stdout if stream == "stdout" else self.stderr)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._sel.get_map()):
                raise TimeoutError(
                    f"no {pattern.pattern!r} on {stream} within {timeout}s; "
                    f"stdout={self.stdout[-2000:]!r} stderr={self.stderr[-2000:]!r}"
                )
            self.pump(min(left, 0.05))

    def output(self) -> str:
        self.pump()
        return (self.stdout + self.stderr).decode("utf-8", "replace")

    # --- lifecycle -----------------------------------------------------------

    def signal(self, sig: int = signal.SIGINT) -> int:
        """Signal the server process only; monotonic ns when sent."""
        t = time.monotonic_ns()
        os.kill(self.pid, sig)
        return t

    def wait_exit(self, timeout: float) -> int | None:
        """The return code, or None if still running after ``timeout``; keeps reading output."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            rc = self.proc.poll()
            if rc is not None:
                while self._sel.get_map():
                    before = len(self.stdout) + len(self.stderr)
                    self.pump(0.05)
                    if len(self.stdout) + len(self.stderr) == before:
                        break
                return rc
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.pump(min(left, 0.01))

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and anything it left behind)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self._sel.close()

    def __enter__(self) -> RefServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
