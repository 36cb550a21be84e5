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

from harness.core.timing import scaled

__all__ = ["ROOT", "RefServer"]

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


# --- client-side helpers for the reference server's own tests -------------------

import asyncio  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

__all__ += ["WS", "get_json", "raw_ws_socket", "run", "wait_stats"]


_OPEN: list[WS] = []


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run one async test body with an overall bound; clients it left open are reset."""

    async def guarded() -> Any:
        try:
            return await asyncio.wait_for(coro, scaled(timeout))
        finally:
            while _OPEN:
                ws = _OPEN.pop()
                try:
                    ws.abort()
                except Exception:
                    pass

    return asyncio.run(guarded())


async def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=scaled(timeout))) as r:
        return r.status, await r.json()


async def wait_stats(http: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
    """Poll /stats until ``pred`` holds; the last sample is in the assertion message otherwise."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        _, stats = await get_json(http + "/stats")
        if pred(stats):
            return stats
        if time.monotonic() >= deadline:
            raise AssertionError(f"/stats never satisfied the condition: {stats}")
        await asyncio.sleep(0.02)


class WS:
    """A test client: every frame received is kept, waits are bounded."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.session_id: str | None = None
        self._n = 0

    @classmethod
    async def open(cls, url: str, **kw: Any) -> WS:
        ws = cls(await connect(url, open_timeout=scaled(5), **kw))
        _OPEN.append(ws)
        ready = await ws.next(5)
        assert ready["msg_type"] == "SESSION_READY", ready
        ws.session_id = ready["session_id"]
        return ws

    async def send(self, msg_type: str, request_id: str | None = None, **payload: Any) -> None:
        msg: dict[str, Any] = {"msg_type": msg_type, "payload": payload, "timestamp": time.time()}
        if request_id is not None:
            msg["request_id"] = request_id
        await self.conn.send(json.dumps(msg))

    async def send_together(self, *frames: tuple[str, str | None, dict[str, Any]]) -> None:
        """Send ``(msg_type, request_id, payload)`` frames in one socket write.

        The server then reads them all in one go, so it handles the later ones
        before any task the earlier ones started has had its first step.
        """
        conn = self.conn
        async with conn.send_context():
            for msg_type, request_id, payload in frames:
                msg: dict[str, Any] = {"msg_type": msg_type, "payload": payload, "timestamp": time.time()}
                if request_id is not None:
                    msg["request_id"] = request_id
                conn.protocol.send_text(json.dumps(msg).encode())
            conn.transport.write(b"".join(conn.protocol.data_to_send()))

    async def request(self, rid: str, text: str = "hello world", **options: Any) -> None:
        await self.send("REQUEST", rid, text=text, options=options)

    async def interrupt(self, iid: str, target: str | None, reason: str = "user") -> None:
        await self.send("INTERRUPT", iid, target_request_id=target, reason=reason)

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), scaled(timeout))
        frame = json.loads(raw)
        frame["_t"] = time.monotonic_ns()
        self.frames.append(frame)
        return frame

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            frame = await self.next(max(0.001, deadline - time.monotonic()))
            if pred(frame):
                return frame

    async def final(self, rid: str, timeout: float = 10.0) -> dict[str, Any]:
        return await self.until(lambda f: f.get("request_id") == rid and (
            f["msg_type"] == "ERROR" or (f["msg_type"] == "RESPONSE" and f["payload"]["final"])), timeout)

    async def ack(self, iid: str, timeout: float = 5.0) -> dict[str, Any]:
        return await self.until(lambda f: f["msg_type"] == "INTERRUPT_ACK" and f["request_id"] == iid, timeout)

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Frames that arrive within ``seconds`` (a bounded observation window)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.next(left))
            except asyncio.TimeoutError:
                break
        return got

    def of(self, rid: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("request_id") == rid]

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Read until the connection ends; its close code (None: no close frame)."""
        try:
            while True:
                await self.next(timeout)
        except ConnectionClosed:
            pass
        rcvd = self.conn.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None

    async def close(self) -> None:
        await self.conn.close()

    def abort(self) -> None:
        """A TCP reset: SO_LINGER 0 and close, no close frame."""
        sock = self.conn.transport.get_extra_info("socket")
        if sock is None or self.conn.transport.is_closing():
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.conn.transport.abort()


def raw_ws_socket(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A WebSocket handshake on a plain socket; the caller then never reads (or answers pings)."""
    import base64
    sock = socket.create_connection((host, port), timeout=scaled(timeout))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during handshake")
        buf += chunk
    assert buf.startswith(b"HTTP/1.1 101"), buf[:200]
    return sock


def masked_text_frame(text: str) -> bytes:
    """One client->server text frame (masked), for raw sockets."""
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
