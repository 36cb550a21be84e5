"""The pty harness itself, against tiny scripts whose behaviour is known exactly.

Each script prints a line when it is ready, so the tests wait on output, never
on sleeps; every wait is bounded through ``harness.core.timing.scaled``.
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
import termios
import textwrap
import time

import psutil
import pytest

from harness.core.proctree import is_gone
from harness.core.timing import Deadline, scaled
from harness.probes.forensics import find_py_spy
from harness.process.aterminal import AsyncTerminal
from harness.process.pty import DEFAULT_INTR, intr_char, send_intr
from harness.process.terminal import (
    ClientGone,
    ExpectTimeout,
    InteractiveSession,
    TerminalError,
    drive_menu,
)

#: Generous bounds for a loaded 2-core machine: these are not what is tested.
START = scaled(15)
WAIT = scaled(5)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


@pytest.fixture
def session():
    s = InteractiveSession(name="script")
    yield s
    cleanup = s.close()
    assert cleanup.survivors == [], f"unkillable: {cleanup.survivors}"


def assert_gone(*pids: int, within: float = WAIT) -> None:
    """Each pid ends within the bound (a zombie counts as ended: only its parent can reap it)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    deadline = Deadline.after(within)
    while (alive := [p.pid for p in procs if not is_gone(p)]) and not deadline.expired():
        time.sleep(0.01)  # a bounded poll on process state; nothing to wait on for a non-child
    assert alive == [], f"still running {within:.1f} s later: {alive}"


def test_expect_and_transcript(session):
    """What the client prints is matched by expect and kept in the transcript."""
    session.start(script("""
        print("READY menu", flush=True)
        line = input("> ")
        print("got", line, flush=True)
    """), ready="READY", timeout=START)
    drive_menu(session, "hello", timeout=WAIT)
    assert session.expect(r"got (\w+)", WAIT).group(1) == "hello"
    exit_ = session.wait_exit(WAIT)
    assert not exit_.hung and exit_.exitstatus == 0
    assert "READY menu" in session.transcript and "got hello" in session.transcript


def test_expect_timeout_names_what_was_printed(session):
    """A missing line fails with the output tail, not a bare timeout."""
    session.start(script('print("READY only this", flush=True); input()'), ready="READY", timeout=START)
    with pytest.raises(ExpectTimeout, match="only this"):
        session.expect("never printed", scaled(0.3))


def test_expect_after_exit_says_the_client_ended(session):
    """Expecting from a client that already exited raises ClientGone."""
    session.start(script('print("READY bye", flush=True)'), ready="READY", timeout=START)
    with pytest.raises(ClientGone):
        session.expect("anything else", WAIT)


def test_wait_exit_times_from_the_keystroke(session):
    """Exit time runs from the quit line to the process being gone; the status is kept."""
    session.start(script("""
        import sys
        input("READY> ")
        print("leaving", flush=True)
        sys.exit(7)
    """), ready="READY", timeout=START)
    session.sendline("0")
    exit_ = session.wait_exit(WAIT)
    assert not exit_.hung
    assert exit_.exitstatus == 7 and exit_.returncode == 7
    assert 0 <= exit_.exit_ms < WAIT * 1000
    assert "leaving" in exit_.output and "READY" not in exit_.output
    assert exit_.noise() == []


def test_ctrl_c_reaches_the_whole_foreground_group(session):
    """The pty's interrupt character signals the client and the child it started, as a person's Ctrl+C does."""
    session.start(script("""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; print('CHILD', flush=True); time.sleep(60)"])
        print("READY", child.pid, flush=True)
        child.wait()
    """), timeout=START)
    child_pid = int(session.expect(r"READY (\d+)", START).group(1))
    session.expect("CHILD", START)
    session.ctrl_c()
    exit_ = session.wait_exit(WAIT)
    assert not exit_.hung
    # Both got SIGINT: the child died of it, the parent got KeyboardInterrupt.
    assert "KeyboardInterrupt" in exit_.output
    assert_gone(child_pid)


def test_hung_client_is_reported_with_forensics_then_killed(session):
    """A client that ignores Ctrl+C is hung at the bound; forensics show its stacks and tree; close kills it."""
    session.start(script("""
        import signal, threading
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stuck = threading.Event()
        def spin():
            stuck.wait()
        threading.Thread(target=spin, name="stuck-worker").start()
        print("READY", flush=True)
        stuck.wait()
    """), ready="READY", timeout=START)
    pid = session.pid
    session.ctrl_c()
    exit_ = session.wait_exit(scaled(0.5))
    assert exit_.hung and exit_.exit_ms is None and exit_.returncode is None
    forensics = session.forensics("ignored Ctrl+C")
    assert [p["pid"] for p in forensics.tree] == [pid]
    if find_py_spy() is not None:
        assert forensics.stacks_error is None, forensics.stacks_error
        assert "stuck-worker" in forensics.stacks and "MainThread" in forensics.stacks
        assert any("stuck-worker" in ln for ln in forensics.key_lines())
    assert "ignored Ctrl+C" in forensics.text()
    cleanup = session.close()
    assert [p.pid for p in cleanup.stopped] == [pid] and cleanup.survivors == []
    assert_gone(pid)


def test_close_kills_the_tree_leaves_first_even_through_sigterm(session):
    """close() ends a client that ignores SIGTERM, and the grandchild it left behind."""
    session.start(script("""
        import signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('CHILD', flush=True); time.sleep(60)"])
        print("READY", child.pid, flush=True)
        child.wait()
    """), timeout=START)
    child_pid = int(session.expect(r"READY (\d+)", START).group(1))
    session.expect("CHILD", START)
    pid = session.pid
    cleanup = session.close(term_timeout=scaled(0.3), kill_timeout=scaled(1))
    assert {p.pid for p in cleanup.stopped} == {pid, child_pid}
    assert cleanup.survivors == []
    assert_gone(pid, child_pid)
    assert session.close() is cleanup  # idempotent


def test_double_ctrl_c_times_from_the_first_press(session):
    """After two presses the exit time still counts from the first one."""
    session.start(script("""
        import os, signal, sys
        def first(*_):
            print("FIRST", flush=True)
            signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        signal.signal(signal.SIGINT, first)
        print("READY", flush=True)
        while True:
            signal.pause()
    """), ready="READY", timeout=START)
    session.double_ctrl_c(scaled(0.2))
    exit_ = session.wait_exit(WAIT)
    assert not exit_.hung and exit_.exitstatus == 130
    assert "FIRST" in exit_.output
    assert exit_.exit_ms >= scaled(0.2) * 1000 * 0.9


@pytest.mark.parametrize(
    ("body", "usable"),
    [
        ('print("READY", flush=True)', True),
        ("""
            import termios
            attrs = termios.tcgetattr(0)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(0, termios.TCSANOW, attrs)
            print("READY", flush=True)
        """, False),
    ],
    ids=["modes-kept", "echo-left-off"],
)
def test_terminal_state_after_exit(session, body, usable):
    """The pty modes a client leaves behind are read after it exits, and after close."""
    session.start(script(body), ready="READY", timeout=START)
    assert not session.wait_exit(WAIT).hung
    state = session.terminal_state()
    assert state.error is None
    assert state.usable is usable and state.echo is usable and state.icanon
    session.close()
    assert session.terminal_state() == state


def test_start_failure_is_a_terminal_error():
    """A command that cannot be started raises TerminalError naming it."""
    s = InteractiveSession()
    with pytest.raises(TerminalError, match="no-such-binary"):
        s.start(["/nonexistent/no-such-binary"], timeout=START)
    s.close()


def test_the_interrupt_character_is_the_ptys_own():
    """Ctrl+C types the pty's VINTR, whatever it is set to; ^C where the modes cannot be read."""
    master, slave = os.openpty()
    r, w = os.pipe()
    try:
        assert intr_char(master) == DEFAULT_INTR
        attrs = termios.tcgetattr(slave)
        attrs[6][termios.VINTR] = b"\x07"
        # Raw enough to read the character back on the slave instead of it signalling anyone.
        attrs[3] &= ~(termios.ISIG | termios.ICANON)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        assert intr_char(master) == b"\x07"
        before = time.monotonic_ns()
        sent = send_intr(master)
        assert before <= sent <= time.monotonic_ns()
        assert select.select([slave], [], [], WAIT)[0] == [slave]
        assert os.read(slave, 16) == b"\x07"
        assert intr_char(r) == DEFAULT_INTR  # a pipe has no terminal modes
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)


def test_output_is_decoded_in_the_clients_encoding():
    """A client printing GBK is read as GBK when that is its encoding; what is typed is encoded alike."""
    s = InteractiveSession(name="gbk", encoding="gbk")
    try:
        # The script itself stays ASCII: the command line is encoded in the session's encoding too.
        s.start(script(r"""
            import sys
            sys.stdout.buffer.write("\u5df2\u8fde\u63a5\n".encode("gbk")); sys.stdout.flush()
            line = sys.stdin.buffer.readline().decode("gbk").strip()
            sys.stdout.buffer.write(("\u6536\u5230 " + line + "\n").encode("gbk")); sys.stdout.flush()
        """), ready="已连接", timeout=START)
        s.sendline("你好")
        assert s.expect(r"收到 (\S+)", WAIT).group(1) == "你好"
    finally:
        assert s.close().survivors == []


def test_an_unknown_encoding_is_a_terminal_error():
    """An encoding Python does not know is refused when the session is made, naming it."""
    with pytest.raises(TerminalError, match="no-such-codec"):
        InteractiveSession(encoding="no-such-codec")


def test_the_async_terminal_drives_a_client_as_steps():
    """start, expect, sendline and wait_exit are awaited one after the other while the loop runs on."""
    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)  # proves the loop is free while a step waits
                ticks += 1

        tick = asyncio.ensure_future(ticker())
        async with AsyncTerminal(name="steps") as term:
            await term.start(script("""
                import time
                print("READY", flush=True)
                line = input("> ")
                time.sleep(0.3)
                print("bye", line, flush=True)
            """), timeout=START)
            await term.expect("READY", START)
            await term.expect("> ", WAIT)
            await term.sendline("q")
            exit_ = await term.wait_exit(WAIT)
            assert not exit_.hung and exit_.exitstatus == 0 and "bye q" in exit_.output
            assert term.terminal_state().usable
        tick.cancel()
        assert ticks >= 5, ticks

    asyncio.run(main())


def test_the_async_terminal_saves_a_hung_clients_forensics_and_close_ends_it(tmp_path):
    """A client ignoring Ctrl+C: its forensics go to the given file; close() stops it, as cleanup does."""
    async def main() -> None:
        term = AsyncTerminal(name="hung")
        await term.start(script("""
            import signal, threading
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            print("READY", flush=True)
            threading.Event().wait()
        """), ready="READY", timeout=START)
        pid = term.pid
        sent = term.ctrl_c()
        exit_ = await term.wait_exit(scaled(0.3))
        assert exit_.hung and exit_.sent_ns == sent
        found = await term.forensics("ignored Ctrl+C", path=tmp_path / "hung.forensics.txt")
        assert found.path == tmp_path / "hung.forensics.txt"
        assert "ignored Ctrl+C" in found.path.read_text(encoding="utf-8")
        cleanup = await term.close()
        assert [p.pid for p in cleanup.stopped] == [pid] and cleanup.survivors == []
        assert await term.close() is cleanup
        assert_gone(pid)

    asyncio.run(main())
