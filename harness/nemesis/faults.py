"""Client-side fault actions: context managers that refuse to nest and always restore.

Each fault is reversible and scoped (websockets' ``delay_frames_sent`` habit):
entering it twice on the same object raises :class:`FaultNestingError`
instead of silently stacking, and leaving it — normally or by an exception —
puts things back, so a failing scenario never leaves a process stopped or a
socket paused behind it.

* :func:`paused_reading` — a slow reader: the client stops reading its socket.
* :func:`frozen_process` — SIGSTOP a process, SIGCONT on exit.
* :class:`TcpProxy` — a loopback TCP proxy that can black-hole, delay or reset.
* :class:`PeerProcess` — a separate client process (``harness.nemesis.peer``) to freeze.

These are the mechanisms; scenarios apply them through
:class:`harness.nemesis.nemesis.Nemesis`, which records each fault's begin and
end in the history. The socket primitives underneath (RST, FIN, paused
transport) live in :mod:`harness.core.sockets`, shared with the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING

import psutil

from harness.core.sockets import rst_close
from harness.core.timing import Deadline, scaled
from harness.target.spec import check_loopback

if TYPE_CHECKING:
    from harness.client.connection import Client

__all__ = [
    "FaultError",
    "FaultNestingError",
    "PeerProcess",
    "TcpProxy",
    "frozen_process",
    "paused_reading",
]


class FaultError(RuntimeError):
    """A fault could not be applied (the peer did not start, the proxy has no upstream)."""


class FaultNestingError(FaultError):
    """The same fault is already active on the same object."""


_active: set[tuple[str, Hashable]] = set()


@contextlib.contextmanager
def _exclusive(fault: str, key: Hashable) -> Iterator[None]:
    if (fault, key) in _active:
        raise FaultNestingError(f"{fault} is already active on {key!r}; faults do not nest")
    _active.add((fault, key))
    try:
        yield
    finally:
        _active.discard((fault, key))


# -- slow reader, frozen process -------------------------------------------------

@contextlib.contextmanager
def paused_reading(client: Client) -> Iterator[Client]:
    """The client stops reading: no frames, no pongs; the server's buffers fill."""
    with _exclusive("paused_reading", id(client)):
        client.stop_reading()
        try:
            yield client
        finally:
            if not client.closed:
                client.resume_reading()


@contextlib.contextmanager
def frozen_process(pid: int) -> Iterator[int]:
    """SIGSTOP ``pid``; SIGCONT on exit, whatever happened inside."""
    with _exclusive("frozen_process", pid):
        os.kill(pid, signal.SIGSTOP)
        try:
            # Signal delivery is asynchronous: the body starts once the kernel
            # reports the process stopped, so "frozen" is true inside it.
            _wait_state(pid, stopped=True)
            yield pid
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
                _wait_state(pid, stopped=False)
            except ProcessLookupError:
                pass  # it died while frozen (killed by the scenario): nothing to restore


def _wait_state(pid: int, *, stopped: bool, bound: float | None = None) -> None:
    deadline = Deadline.after(bound if bound is not None else scaled(2))
    try:
        proc = psutil.Process(pid)
        while (proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)) != stopped:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
            if deadline.expired():
                raise FaultError(f"pid {pid} not {'stopped' if stopped else 'running'} within the bound")
            time.sleep(0.001)  # the kernel offers no wait for another process's stop
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None


# -- TCP proxy ----------------------------------------------------------------------

#: A proxy's byte tap: (connection number, "open" | "up" | "down", the bytes read or None on a reset).
Tap = Callable[[int, str, "bytes | None"], None]


class _Pipe:
    __slots__ = ("client_w", "tasks", "upstream_w")

    def __init__(self, client_w: asyncio.StreamWriter, upstream_w: asyncio.StreamWriter) -> None:
        self.client_w, self.upstream_w = client_w, upstream_w
        self.tasks: list[asyncio.Task[None]] = []


class TcpProxy:
    """A loopback TCP proxy between the harness and a target.

    Modes: pass-through (default); :meth:`blackhole` (nothing forwarded either
    way, both sockets kept open: the target sees a half-open peer; held bytes
    flow on when it ends, as after a healed partition); :meth:`delay` (every
    chunk forwarded ``ms`` later, order kept); :meth:`reset_all` (RST every
    connection now).
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, allow_remote: bool = False, tap: Tap | None = None) -> None:
        check_loopback(upstream_host, where="TcpProxy upstream", allow_remote=allow_remote)
        check_loopback(listen_host, where="TcpProxy listen address")
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.listen_host, self.listen_port = listen_host, listen_port
        self.mode = "pass"
        #: How the nemesis names this proxy in the history.
        self.name = "proxy"
        #: Sees every byte: ``tap(n, "open", b"")`` when connection n is accepted, then
        #: ``tap(n, "up" | "down", data)`` per read (``b""``: that direction ended; None: reset).
        self.tap = tap
        self._delay_s = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[_Pipe] = set()
        self.accepted = 0

    def url(self, path: str = "/ws") -> str:
        return f"ws://{self.listen_host}:{self.listen_port}{path}"

    @property
    def connections(self) -> int:
        return len(self._pipes)

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._on_client, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        self.reset_all()
        tasks = [t for p in list(self._pipes) for t in p.tasks]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=scaled(2))
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), scaled(2))

    @contextlib.contextmanager
    def blackhole(self) -> Iterator[TcpProxy]:
        with _exclusive("blackhole", id(self)), self._mode("blackhole"):
            self._flowing.clear()
            try:
                yield self
            finally:
                self._flowing.set()

    @contextlib.contextmanager
    def delay(self, ms: float) -> Iterator[TcpProxy]:
        with _exclusive("delay", id(self)), self._mode("delay"):
            self._delay_s = ms / 1000
            try:
                yield self
            finally:
                self._delay_s = 0.0

    @contextlib.contextmanager
    def _mode(self, mode: str) -> Iterator[None]:
        if self.mode != "pass":
            raise FaultNestingError(f"proxy is in {self.mode} mode; cannot enter {mode}")
        self.mode = mode
        try:
            yield
        finally:
            self.mode = "pass"

    def reset_all(self) -> int:
        """RST both sides of every current connection; returns how many."""
        pipes = list(self._pipes)
        for p in pipes:
            rst_close(p.client_w.transport)
            rst_close(p.upstream_w.transport)
        return len(pipes)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        n = self.accepted
        if self.tap is not None:
            self.tap(n, "open", b"")
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), scaled(5))
        except (OSError, asyncio.TimeoutError):
            rst_close(writer.transport)  # what a refused connection looks like through a proxy
            return
        pipe = _Pipe(writer, up_w)
        self._pipes.add(pipe)
        pipe.tasks = [asyncio.ensure_future(self._direction(reader, up_w, n, "up")),
                      asyncio.ensure_future(self._direction(up_r, writer, n, "down"))]
        try:
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
        finally:
            self._pipes.discard(pipe)
            for w in (writer, up_w):
                w.close()

    async def _direction(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int, way: str) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        writer = asyncio.ensure_future(self._write(queue, dst))
        try:
            while True:
                await self._flowing.wait()  # black-holed: leave bytes in the kernel buffers
                try:
                    data = await src.read(65536)
                except OSError:
                    if self.tap is not None:
                        self.tap(n, way, None)
                    data = b""
                else:
                    if self.tap is not None:
                        self.tap(n, way, data)
                queue.put_nowait((loop.time(), data))
                if not data:
                    break
            await writer
        finally:
            writer.cancel()

    async def _write(self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t, data = await queue.get()
            await self._flowing.wait()
            if self._delay_s:
                await asyncio.sleep(max(0.0, t + self._delay_s - loop.time()))
            if not data:
                if dst.can_write_eof() and not dst.transport.is_closing():
                    try:
                        dst.write_eof()  # pass the half-close on, as a router would
                    except OSError:
                        pass
                return
            if dst.transport.is_closing():
                return
            dst.write(data)
            try:
                await dst.drain()
            except OSError:
                return


# -- peer process ---------------------------------------------------------------------

#: The directory holding the harness package, so the peer imports this very copy.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PeerProcess:
    """``python -m harness.nemesis.peer``: a client in its own process, to SIGSTOP or kill.

    ``async with PeerProcess(url) as peer:`` waits (bounded) for its
    ``CONNECTED <session_id>`` line; on exit it is continued if frozen and
    terminated, then killed if it lingers.
    """

    def __init__(self, url: str, mode: str = "idle", *, allow_remote: bool = False,
                 ready_timeout: float | None = None) -> None:
        if mode not in ("idle", "stream"):
            raise ValueError(f"peer mode must be idle or stream, not {mode!r}")
        check_loopback(url, where="peer url", allow_remote=allow_remote)
        self.url, self.mode, self.allow_remote = url, mode, allow_remote
        self.ready_timeout = ready_timeout if ready_timeout is not None else scaled(15)
        self.proc: asyncio.subprocess.Process | None = None
        self.session_id: str | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise FaultError("peer process not started")
        return self.proc.pid

    async def __aenter__(self) -> PeerProcess:
        argv = [sys.executable, "-m", "harness.nemesis.peer", "--url", self.url, "--mode", self.mode]
        if self.allow_remote:
            argv.append("--allow-remote")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), self.ready_timeout)  # type: ignore[union-attr]
        except asyncio.TimeoutError:
            line = b""
        text = line.decode(errors="replace").strip()
        if not text.startswith("CONNECTED "):
            await self.stop()
            err = b""
            if self.proc.stderr is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    err = await asyncio.wait_for(self.proc.stderr.read(), scaled(2))
            raise FaultError(f"peer did not connect to {self.url}: {text or 'no output'}; "
                             f"stderr: {err.decode(errors='replace')[-500:]}")
        self.session_id = text.split(" ", 1)[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> int | None:
        """Continue (if frozen), terminate, then kill; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), scaled(3))
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), scaled(3))
        return proc.returncode
