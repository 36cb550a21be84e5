"""The reference interactive client: a small terminal client for the chat protocol.

    python -m reference_server.client --url ws://127.0.0.1:PORT/ws [--fault NAME]

It is shaped like the clients developers write to poke their servers, because
that shape is where a real lifecycle bug lives: an asyncio event loop runs in a
background thread with a reader task and a writer task over one
``websockets.asyncio.client`` connection, while the main thread runs a menu on
``input()``:

    1 [text]  send a request (default text "hello"); deltas print as they arrive,
              then ``[done <id> chunks=N]`` or ``[interrupted <id> reason=R]``
    2         interrupt the current request; ``[ack STATUS ...]`` when acknowledged
    0 / q     quit (so does end of input)

Lines a driver can wait on: ``CONNECTED <session_id>`` after SESSION_READY, and
the prompt ``> `` whenever the menu waits for input.

Exit codes: 0 quit, 130 Ctrl+C, 1 cannot connect, 2 bad arguments, 3 the
server went away. Quit and Ctrl+C both end the process within a second: the
loop thread is stopped, its tasks finished, the connection closed with a close
frame, and the terminal modes put back as they were.

``--fault`` switches (none of their code runs without the switch) re-introduce
the bugs the harness's terminal checks exist to catch:

``loop_thread_leak``
    quit returns from the menu without stopping the non-daemon loop thread, so
    the interpreter waits for it forever; Ctrl+C is not handled, prints a
    KeyboardInterrupt traceback, and hangs the same way.
``tty_not_restored``
    echo is turned off while a reply streams (so typed keys do not garble it,
    as spinner code does) and never turned back on.
``no_close_frame``
    on quit the socket is just dropped: the process exits at once, cleanly,
    but the server never gets a close frame (it sees 1006), the bug a
    missing ``disconnect()`` before exit leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import signal
import sys
import termios
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "EXIT_CONNECT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER_GONE",
    "EXIT_USAGE",
    "FAULTS",
    "LOOP_THREAD_NAME",
    "PROMPT",
    "ChatClient",
    "ConnectError",
    "ServerGone",
    "main",
]

FAULTS = ("loop_thread_leak", "tty_not_restored", "no_close_frame")

EXIT_OK = 0
EXIT_CONNECT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVER_GONE = 3
EXIT_INTERRUPTED = 130

PROMPT = "> "
MENU = "menu: 1 [text] send a request | 2 interrupt | 0 or q quit"
#: Named so that hang forensics (py-spy, the harness) can point at it.
LOOP_THREAD_NAME = "wschaos-client-loop"
DEFAULT_TEXT = "hello"

OPEN_TIMEOUT_S = 5.0
#: The closing handshake must fit inside the one second a user waits for quit.
CLOSE_TIMEOUT_S = 0.5
#: How long quit waits for the loop thread before giving up on it.
JOIN_TIMEOUT_S = 2.0


class ConnectError(RuntimeError):
    """The connection or its SESSION_READY did not come; the message says why."""


class ServerGone(Exception):
    """Raised in the main thread when the server ended the connection."""


class _Terminal:
    """The termios modes of stdin at start, to put back however the client ends."""

    def __init__(self, stream: TextIO) -> None:
        self.fd: int | None = None
        self.saved: list[Any] | None = None
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                self.fd, self.saved = fd, termios.tcgetattr(fd)
        except (OSError, ValueError, termios.error):
            pass  # not a terminal (a pipe in a script): nothing to save or restore

    def set_echo(self, on: bool) -> None:
        if self.fd is None:
            return
        try:
            attrs = termios.tcgetattr(self.fd)
            attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        except termios.error:
            pass  # the terminal went away; nothing left to protect

    def restore(self) -> None:
        if self.fd is None or self.saved is None:
            return
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        except termios.error:
            pass


class ChatClient:
    """One connection, driven from the main thread, served by a loop thread.

    The main thread only calls :meth:`start`, :meth:`request`,
    :meth:`interrupt` and :meth:`close`; everything on the socket happens in
    the loop thread, and frames cross over through ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        url: str,
        *,
        faults: Sequence[str] = (),
        chunks: int | None = None,
        chunk_delay_ms: int | None = None,
        terminal: _Terminal | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.url = url
        self.faults = frozenset(faults)
        self.options = {k: v for k, v in (("chunks", chunks), ("chunk_delay_ms", chunk_delay_ms)) if v is not None}
        self.terminal = terminal or _Terminal(sys.stdin)
        self.out = out or sys.stdout
        self.session_id: str | None = None
        self.current: str | None = None  # the request still streaming, if any
        self.closing = False
        self._ids = itertools.count(1)
        self._print_lock = threading.Lock()
        self._ready = threading.Event()
        self._error: str | None = None
        self._loop = asyncio.new_event_loop()
        # Non-daemon on purpose: that is how such clients are written, and it
        # is why an unstopped loop keeps the process alive (the fault).
        self._thread = threading.Thread(target=self._run_loop, name=LOOP_THREAD_NAME, daemon=False)
        self._main_ident = threading.main_thread().ident
        self._stop: asyncio.Event | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[str] | None = None
        self._chunks: dict[str, int] = {}

    # -- main thread ---------------------------------------------------------

    def start(self, timeout: float = OPEN_TIMEOUT_S + 1) -> str:
        """Connect and wait for SESSION_READY; the session id."""
        # Created before the loop runs anywhere, so close() can always reach it,
        # even while the connection is still being opened.
        self._main_task = self._loop.create_task(self._main())
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ConnectError(f"no SESSION_READY from {self.url} within {timeout:g} s")
        if self._error is not None:
            raise ConnectError(self._error)
        if self.session_id is None:
            raise ConnectError(f"the connection to {self.url} ended before SESSION_READY")
        return self.session_id

    def request(self, text: str = DEFAULT_TEXT) -> str:
        rid = f"r{next(self._ids)}"
        payload: dict[str, Any] = {"text": text}
        if self.options:
            payload["options"] = dict(self.options)
        self.current = rid
        self._post(self._frame("REQUEST", rid, payload))
        return rid

    def interrupt(self) -> str:
        iid = f"i{next(self._ids)}"
        self._post(self._frame("INTERRUPT", iid, {"target_request_id": self.current, "reason": "user"}))
        return iid

    def close(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the loop thread: close frame, tasks finished, loop closed. True when it stopped."""
        self.closing = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed itself
                self._loop.call_soon_threadsafe(self._request_stop)
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def say(self, text: str, end: str = "\n") -> None:
        with self._print_lock:
            self.out.write(text + end)
            self.out.flush()

    def _post(self, frame: str) -> None:
        if self._outbox is None or not self._thread.is_alive():
            raise ServerGone()
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, frame)

    def _frame(self, msg_type: str, rid: str, payload: dict[str, Any]) -> str:
        return json.dumps({"msg_type": msg_type, "session_id": self.session_id, "request_id": rid,
                           "payload": payload, "timestamp": time.time()})

    # -- loop thread ---------------------------------------------------------

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self.session_id is None and self._main_task is not None:
            # Still connecting: a handshake can take open_timeout; quit cannot wait.
            self._main_task.cancel()

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        assert self._main_task is not None
        try:
            loop.run_until_complete(self._main_task)
        except asyncio.CancelledError:
            pass  # close() while connecting
        finally:
            # Whatever is left (nothing, when _main did its job) is cancelled and
            # awaited, so no "Task was destroyed but it is pending" at exit.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._ready.set()  # never leave start() waiting on a loop that is gone

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._outbox = asyncio.Queue()
        try:
            ws = await connect(self.url, open_timeout=OPEN_TIMEOUT_S, close_timeout=CLOSE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
            self._error = f"cannot connect to {self.url}: {exc or type(exc).__name__}"
            return
        except Exception as exc:  # handshake refused: InvalidStatus, InvalidMessage...
            self._error = f"cannot connect to {self.url}: {exc}"
            return
        reader = writer = waiter = None
        try:
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
            except (ConnectionClosed, asyncio.TimeoutError, ValueError) as exc:
                self._error = f"no SESSION_READY from {self.url}: {exc or type(exc).__name__}"
                return
            if not isinstance(first, dict) or first.get("msg_type") != "SESSION_READY":
                self._error = f"expected SESSION_READY from {self.url}, got {str(first)[:200]}"
                return
            self.session_id = str(first.get("session_id") or (first.get("payload") or {}).get("session_id"))
            self.say(f"CONNECTED {self.session_id}")
            self._ready.set()
            reader = asyncio.ensure_future(self._reader(ws))
            writer = asyncio.ensure_future(self._writer(ws))
            waiter = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not self.closing:
                self.say(f"\n[server closed the connection: code={ws.close_code} reason={ws.close_reason!r}]")
                self._wake_main()
        finally:
            # Closing order: stop sending, then the closing handshake (bounded by
            # close_timeout), which also ends the reader's iteration.
            for task in (writer, waiter):
                if task is not None:
                    task.cancel()
            if "no_close_frame" in self.faults:
                ws.transport.abort()  # the bug: no closing handshake, the socket just goes
            else:
                await ws.close()
            if reader is not None:
                try:
                    await asyncio.wait_for(reader, CLOSE_TIMEOUT_S)
                except asyncio.TimeoutError:
                    pass  # wait_for cancelled it
            await asyncio.gather(*(t for t in (reader, writer, waiter) if t is not None), return_exceptions=True)

    async def _reader(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    self.say(f"[unreadable frame {str(raw)[:80]!r}]")
                    continue
                if isinstance(frame, dict):
                    self._on_frame(frame)
        except ConnectionClosed:
            pass  # an abnormal end; _main reports it with the close code

    async def _writer(self, ws: ClientConnection) -> None:
        assert self._outbox is not None
        while True:
            frame = await self._outbox.get()
            try:
                await ws.send(frame)
            except ConnectionClosed:
                return

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind, rid = frame.get("msg_type"), frame.get("request_id")
        payload = frame.get("payload") or {}
        if kind == "RESPONSE" and not payload.get("final"):
            first = rid not in self._chunks
            self._chunks[rid] = self._chunks.get(rid, 0) + 1
            if first:
                # Keys typed during the stream would garble it: hide them.
                self.terminal.set_echo(False)
            self.say(("\n<< " if first else "") + str(payload.get("delta", "")), end="")
        elif kind == "RESPONSE":
            n = self._chunks.pop(rid, 0)
            if "tty_not_restored" not in self.faults:
                self.terminal.set_echo(True)
            if self.current == rid:
                self.current = None
            if payload.get("interrupted"):
                self.say(f"\n[interrupted {rid} chunks={n} reason={payload.get('reason')}]")
            else:
                self.say(f"\n[done {rid} chunks={n}]")
        elif kind == "INTERRUPT_ACK":
            ids = ",".join(payload.get("interrupted") or []) or "-"
            self.say(f"[ack {payload.get('status')} interrupted={payload.get('interrupted_count')} ids={ids}]")
        elif kind == "ERROR":
            self.say(f"[error {payload.get('code')} {payload.get('message')}]")
            if rid is not None and self.current == rid:
                self.current = None
        else:
            self.say(f"[{kind}]")

    def _wake_main(self) -> None:
        # The main thread sits in input(); a signal to it is the one thing that
        # ends that read (the handler raises ServerGone there).
        if self._main_ident is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pthread_kill(self._main_ident, signal.SIGUSR1)


def _menu(client: ChatClient) -> int:
    client.say(MENU)
    while True:
        try:
            line = input(PROMPT).strip()
        except EOFError:
            return EXIT_OK
        cmd, _, text = line.partition(" ")
        if cmd in ("0", "q", "quit"):
            return EXIT_OK
        if cmd == "1":
            client.say(f"[sent {client.request(text.strip() or DEFAULT_TEXT)}]")
        elif cmd == "2":
            target = client.current or "all"
            client.say(f"[interrupt {client.interrupt()} -> {target}]")
        elif cmd in ("", "?", "h", "help"):
            client.say(MENU)
        else:
            client.say(f"unknown choice {cmd!r}; {MENU}")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reference_server.client",
        description="wschaos reference interactive client for the chat protocol",
    )
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws (loopback only)")
    parser.add_argument("--fault", action="append", default=[], choices=FAULTS, metavar="NAME",
                        help=f"re-introduce a client bug: {', '.join(FAULTS)}")
    parser.add_argument("--chunks", type=int, help="chunks per reply (REQUEST options)")
    parser.add_argument("--chunk-delay-ms", type=int, help="pause before each chunk (REQUEST options)")
    args = parser.parse_args(argv)
    problem = _url_problem(args.url)
    if problem:
        parser.error(f"--url {args.url!r}: {problem}")
    return args


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("ws", "wss"):
        return "must start with ws:// or wss://"
    host = (parts.hostname or "").strip("[]")
    if not host:
        return "has no host"
    if host == "localhost":
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else "wschaos only talks to loopback (127.0.0.0/8, ::1, localhost)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)  # argparse prints the usage error and exits 2
    leak = "loop_thread_leak" in args.fault
    terminal = _Terminal(sys.stdin)
    client = ChatClient(args.url, faults=args.fault, chunks=args.chunks,
                        chunk_delay_ms=args.chunk_delay_ms, terminal=terminal)

    def on_server_gone(signum: int, frame: Any) -> None:
        if not client.closing:
            raise ServerGone()

    def exit_now(signum: int, frame: Any) -> None:
        # A second Ctrl+C while closing: the user means it. Leave the terminal
        # as we found it, skip the rest.
        if "tty_not_restored" not in client.faults:
            terminal.restore()
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGUSR1, on_server_gone)
    try:
        client.say(f"CONNECTING {args.url}")
        client.start()
        rc = _menu(client)
    except ConnectError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        rc = EXIT_CONNECT_FAILED
    except ServerGone:
        rc = EXIT_SERVER_GONE
    except KeyboardInterrupt:
        if leak:
            raise  # the bug: a traceback, then the interpreter waits on the loop thread
        client.say("\n[ctrl-c] closing")
        rc = EXIT_INTERRUPTED
    if leak:
        return rc  # the bug: the loop thread is never stopped
    client.closing = True  # from here on a late SIGUSR1 is ignored
    signal.signal(signal.SIGINT, exit_now)
    stopped = client.close()
    if "tty_not_restored" not in client.faults:
        terminal.restore()
    if not stopped:
        print(f"error: the {LOOP_THREAD_NAME} thread did not stop within {JOIN_TIMEOUT_S:g} s",
              file=sys.stderr, flush=True)
        os._exit(rc or EXIT_CONNECT_FAILED)
    if rc == EXIT_OK:
        client.say("\nbye" if client.current else "bye")  # end a half-printed reply line first
    return rc


if __name__ == "__main__":
    sys.exit(main())
