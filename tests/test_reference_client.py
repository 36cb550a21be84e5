"""The reference interactive client on a real pty, against the fixture chat server.

What a person at the terminal expects: quit and Ctrl+C end the client within a
second, without a traceback, with the terminal still usable and the
connection closed with a close frame. With ``--fault`` each switch brings back
the bug it names, and the harness must catch it.

The one bound these tests are about is the client's exit, ``scaled(1.0)``;
every other wait is generous, for a loaded 2-core machine.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.timing import scaled
from harness.process.terminal import ClientExit, InteractiveSession
from reference_server.client import EXIT_INTERRUPTED, EXIT_SERVER_GONE, LOOP_THREAD_NAME

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "wschaos_fixture_chat_server", ROOT / "tests" / "fixtures" / "servers" / "chat_server.py"
)
assert _spec is not None and _spec.loader is not None
chat_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chat_server)

#: The bound under test: a person waits at most a second for quit or Ctrl+C.
CLIENT_EXIT = scaled(1.0)
#: Everything else: generous, these are not what is tested.
START = scaled(15)
WAIT = scaled(5)
PROMPT = re.escape("> ")


class ClientSession(InteractiveSession):
    """The pty session of one reference client, with the session id it printed."""

    session_id = ""


@pytest.fixture(scope="module")
def server():
    srv = chat_server.ServerProcess()
    srv.start(START)
    yield srv
    srv.stop(WAIT)


@pytest.fixture
def sessions():
    started: list[ClientSession] = []

    def start(url: str, *args: str) -> ClientSession:
        s = ClientSession(name="reference-client")
        started.append(s)
        argv = [sys.executable, "-m", "reference_server.client", "--url", url, *args]
        s.start(argv, cwd=str(ROOT), timeout=START)
        s.session_id = s.expect(r"CONNECTED (\S+)", START).group(1)
        s.expect(PROMPT, START)
        return s

    yield start
    for s in started:
        assert s.close().survivors == []


# -- domain assertions ---------------------------------------------------------


def assert_exited_in_time(exit_: ClientExit, codes: tuple[int, ...]) -> None:
    assert not exit_.hung, f"client still running {WAIT:.1f} s after the keystroke:\n{exit_.output[-1500:]}"
    assert exit_.exitstatus in codes, f"{exit_.describe()}:\n{exit_.output[-1500:]}"
    assert exit_.exit_ms <= CLIENT_EXIT * 1000, f"exit took {exit_.exit_ms:.0f} ms > {CLIENT_EXIT * 1000:.0f} ms"


def assert_quiet(exit_: ClientExit) -> None:
    assert exit_.noise() == [], f"noise on the way out: {exit_.noise()}"


def assert_terminal_usable(session: InteractiveSession) -> None:
    state = session.terminal_state()
    assert state.error is None, state.error
    assert state.usable, f"terminal left unusable: {state}"


def assert_closed_with_frame(server, session_id: str) -> None:
    line = server.wait_line(rf"CLOSED {re.escape(session_id)} ", WAIT)
    assert line.endswith("code=1000"), f"server saw {line!r}: no close frame from the client"


# -- a correct client ------------------------------------------------------------


@pytest.mark.parametrize("key", ["0", "q"])
def test_quit_exits_at_once(server, sessions, key):
    """Quit from the menu: exit 0 within a second, no traceback, close frame sent, terminal usable."""
    client = sessions(server.url)
    client.sendline(key)
    exit_ = client.wait_exit(WAIT)
    assert_exited_in_time(exit_, codes=(0,))
    assert_quiet(exit_)
    assert "bye" in exit_.output
    assert_closed_with_frame(server, client.session_id)
    assert_terminal_usable(client)


def test_ctrl_c_while_idle(server, sessions):
    """Ctrl+C at the menu prompt: exit 130 (or 0) within a second, quietly, terminal usable."""
    client = sessions(server.url)
    client.ctrl_c()
    exit_ = client.wait_exit(WAIT)
    assert_exited_in_time(exit_, codes=(EXIT_INTERRUPTED, 0))
    assert_quiet(exit_)
    assert_closed_with_frame(server, client.session_id)
    assert_terminal_usable(client)


def test_ctrl_c_while_a_reply_streams(server, sessions):
    """Ctrl+C in the middle of a streamed reply (echo hidden for it): same, and echo is back on."""
    client = sessions(server.url, "--chunks", "200", "--chunk-delay-ms", "20")
    # 1. ask for a long reply; 2. wait until it is visibly streaming; 3. Ctrl+C.
    client.sendline("1")
    client.expect(r"chunk3 ", WAIT)
    client.ctrl_c()
    exit_ = client.wait_exit(WAIT)
    assert_exited_in_time(exit_, codes=(EXIT_INTERRUPTED, 0))
    assert_quiet(exit_)
    assert "[done" not in client.transcript  # it really was cut short
    assert_closed_with_frame(server, client.session_id)
    assert_terminal_usable(client)


def test_quit_while_a_reply_streams(server, sessions):
    """Quit typed (unseen, echo is off) during a stream still exits at once with the terminal restored."""
    client = sessions(server.url, "--chunks", "200", "--chunk-delay-ms", "20")
    client.sendline("1")
    client.expect(r"chunk3 ", WAIT)
    client.sendline("0")
    exit_ = client.wait_exit(WAIT)
    assert_exited_in_time(exit_, codes=(0,))
    assert_quiet(exit_)
    assert_terminal_usable(client)


def test_request_then_interrupt(server, sessions):
    """Interrupting a streaming request prints the interrupted final, then the ACK."""
    client = sessions(server.url, "--chunks", "200", "--chunk-delay-ms", "20")
    client.sendline("1 tell me a long story")
    rid = client.expect(r"\[sent (r\d+)\]", WAIT).group(1)
    client.expect(r"chunk2 ", WAIT)
    client.sendline("2")
    # Protocol rule 2: the interrupted final frame comes before the ACK.
    client.expect(rf"\[interrupted {rid} chunks=\d+ reason=user\]", WAIT)
    client.expect(rf"\[ack SUCCESS interrupted=1 ids={rid}\]", WAIT)
    assert_terminal_usable(client)  # echo back on once the stream ended
    # The menu still works (its prompt was already printed): a new reply streams.
    client.sendline("1")
    rid2 = client.expect(r"\[sent (r\d+)\]", WAIT).group(1)
    assert rid2 != rid
    client.expect(r"<< chunk0 chunk1 ", WAIT)
    client.sendline("q")
    assert_exited_in_time(client.wait_exit(WAIT), codes=(0,))


def test_a_finished_request_prints_done(server, sessions):
    """A short reply streams its deltas and ends with [done]."""
    client = sessions(server.url, "--chunks", "3", "--chunk-delay-ms", "1")
    client.sendline("1")
    client.expect(r"<< chunk0 chunk1 chunk2 \s*\[done r\d+ chunks=3\]", WAIT)
    client.sendline("0")
    assert_exited_in_time(client.wait_exit(WAIT), codes=(0,))


def test_server_going_away_ends_the_client(sessions):
    """When the server vanishes the client says so and exits non-zero, without a traceback."""
    srv = chat_server.ServerProcess()
    srv.start(START)
    try:
        client = sessions(srv.url)
        srv.kill()
        exit_ = client.wait_exit(WAIT)
    finally:
        srv.stop(WAIT)
    assert not exit_.hung, exit_.output
    assert exit_.exitstatus == EXIT_SERVER_GONE, exit_.describe()
    assert "[server closed the connection" in exit_.output
    assert_quiet(exit_)
    assert_terminal_usable(client)


def test_ctrl_c_while_the_handshake_hangs(sessions):
    """Ctrl+C while the server never answers the handshake: the client does not sit out its open timeout."""
    with socket.socket() as silent:  # accepts TCP (backlog), never speaks HTTP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}/ws"
        client = ClientSession(name="reference-client")
        with client:
            client.start([sys.executable, "-m", "reference_server.client", "--url", url], cwd=str(ROOT), timeout=START)
            client.expect(r"CONNECTING ", START)
            client.ctrl_c()
            exit_ = client.wait_exit(WAIT)
            assert_exited_in_time(exit_, codes=(EXIT_INTERRUPTED, 0))
            assert_quiet(exit_)
            assert_terminal_usable(client)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:1/ws"], "must start with ws://"),
        (["--url", "ws://192.0.2.1:1/ws"], "loopback"),
        (["--url", "ws://127.0.0.1:1/ws", "--fault", "no_such_fault"], "invalid choice: 'no_such_fault'"),
        (["--url", "ws://127.0.0.1:1/ws"], "cannot connect"),
    ],
    ids=["not-ws", "remote", "unknown-fault", "refused"],
)
def test_bad_arguments_fail_clearly(args, message):
    """Bad --url, unknown --fault, nothing listening: one clear error line, no traceback."""
    done = subprocess.run([sys.executable, "-m", "reference_server.client", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=START, stdin=subprocess.DEVNULL)
    assert done.returncode in (1, 2)
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# -- the faults, caught ----------------------------------------------------------


def test_fault_loop_thread_leak_hangs_on_quit(server, sessions):
    """loop_thread_leak: quit leaves the loop thread running; hung at the bound, and the stacks show the thread."""
    client = sessions(server.url, "--fault", "loop_thread_leak")
    client.sendline("0")
    exit_ = client.wait_exit(CLIENT_EXIT)
    assert exit_.hung
    forensics = client.forensics("quit did not end the client")
    assert LOOP_THREAD_NAME in forensics.stacks, forensics.render()
    assert "_shutdown" in forensics.stacks  # the main thread waits for it at interpreter exit
    assert [p["pid"] for p in forensics.tree] == [client.pid]


def test_fault_loop_thread_leak_ctrl_c_prints_keyboardinterrupt_and_hangs(server, sessions):
    """loop_thread_leak: Ctrl+C prints a KeyboardInterrupt traceback and the process still hangs."""
    client = sessions(server.url, "--fault", "loop_thread_leak")
    client.ctrl_c()
    client.expect(r"KeyboardInterrupt", WAIT)
    exit_ = client.wait_exit(CLIENT_EXIT)
    assert exit_.hung
    assert "Traceback (most recent call last)" in client.transcript
    assert LOOP_THREAD_NAME in client.forensics("Ctrl+C did not end the client").stacks


def test_fault_tty_not_restored_leaves_echo_off(server, sessions):
    """tty_not_restored: the client exits normally but the terminal is left without echo."""
    client = sessions(server.url, "--fault", "tty_not_restored", "--chunks", "3", "--chunk-delay-ms", "1")
    client.sendline("1")
    client.expect(r"\[done r\d+", WAIT)
    client.sendline("0")
    exit_ = client.wait_exit(WAIT)
    assert_exited_in_time(exit_, codes=(0,))
    state = client.terminal_state()
    assert state.error is None
    assert state.echo is False and not state.usable


def test_no_fault_code_runs_without_the_switch(server, sessions):
    """The same stream without the switch leaves echo on: the check is not a false alarm."""
    client = sessions(server.url, "--chunks", "3", "--chunk-delay-ms", "1")
    client.sendline("1")
    client.expect(r"\[done r\d+", WAIT)
    client.sendline("0")
    assert_exited_in_time(client.wait_exit(WAIT), codes=(0,))
    assert_terminal_usable(client)


# -- against the reference server ------------------------------------------------


@pytest.mark.skipif(not (ROOT / "reference_server" / "__main__.py").exists(), reason="no reference server yet")
def test_against_the_reference_server(sessions):
    """The real pairing: stream, interrupt, stream again, Ctrl+C mid-reply; exits within a second, quietly."""
    srv = chat_server.ServerProcess(argv=[sys.executable, "-m", "reference_server", "--port", "0"], cwd=str(ROOT))
    srv.start(START)
    try:
        client = sessions(srv.url, "--chunks", "200", "--chunk-delay-ms", "20")
        client.sendline("1")
        rid = client.expect(r"\[sent (r\d+)\]", WAIT).group(1)
        client.expect(r"<< \S+ \S+ ", WAIT)
        client.sendline("2")
        client.expect(rf"\[interrupted {rid} ", WAIT)
        client.expect(rf"\[ack SUCCESS interrupted=1 ids={rid}\]", WAIT)
        client.sendline("1")
        client.expect(r"<< \S+ \S+ ", WAIT)
        client.ctrl_c()
        exit_ = client.wait_exit(WAIT)
    finally:
        srv.stop(WAIT)
    assert_exited_in_time(exit_, codes=(EXIT_INTERRUPTED, 0))
    assert_quiet(exit_)
    assert_terminal_usable(client)
