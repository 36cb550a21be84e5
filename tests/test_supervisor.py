"""The supervisor against tiny real programs: readiness, exit timing, classification,
noise, process trees, a real Ctrl+C through a pty, and hang forensics."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.core import proctree
from harness.core.timing import scaled
from harness.nemesis.faults import frozen_process
from harness.process.supervisor import (
    OutputWaitError,
    Supervisor,
    SupervisorError,
    TargetStartError,
)
from harness.target.spec import Readiness, Target

PROGRAMS = Path(__file__).parent / "fixtures" / "programs"


def program(name: str, *args: str, **changes: object) -> Target:
    limits = changes.pop("limits", {})
    t = Target(name=name, argv=(sys.executable, str(PROGRAMS / f"{name}.py"), *args), cwd=str(PROGRAMS), **changes)
    return t.with_limits(**limits) if limits else t


def run(coro):  # one event loop per test: the supervisor works with any loop
    return asyncio.run(coro)


def assert_tree_gone(sup: Supervisor, timeout: float = scaled(5)) -> None:
    """No process of the target's session or carrying its marker is left (bounded poll)."""
    deadline = time.monotonic() + timeout
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = proctree.collect_tree(None, sid=sup.pid, marker=sup.env[proctree.MARKER_ENV])
        if not left:
            return
        time.sleep(0.05)  # polling a condition with a bound
    pytest.fail(f"processes of {sup.name} survive: {[proctree.describe(p) for p in left]}")


@pytest.mark.parametrize("how", ["kill", "pty"])
def test_clean_exit_is_timed_within_a_few_ms_of_the_programs_own_clock(tmp_path, how, record_property):
    """exit_ms is stamped when the pid is reaped: compare with the program's own monotonic clock."""
    stamp = tmp_path / "own_exit_ns"

    async def main():
        sup = Supervisor(program("clean_exit", str(stamp)), tmp_path, pty=(how == "pty"))
        await sup.start()
        # Timeline: signal sent -> handler writes its clock -> os._exit -> waitpid returns.
        sent = sup.ctrl_c() if how == "pty" else sup.send_signal(signal.SIGINT)
        report = await sup.wait_exit(scaled(5))
        cleanup = await sup.stop()
        return sent, report, cleanup

    sent, report, cleanup = run(main())
    assert report is not None
    assert report.classification == "clean"
    assert report.returncode == 0 and report.signal_killed is None
    assert report.signal == "SIGINT" and report.sent_ns == sent
    own_ns = int(stamp.read_text())
    error_ms = (report.exited_ns - own_ns) / 1e6
    record_property("exit_stamp_error_ms", error_ms)
    print(f"exit stamp error vs the program's own clock ({how}): {error_ms:.3f} ms")
    assert 0 <= error_ms < 50
    assert report.exit_ms == pytest.approx((report.exited_ns - sent) / 1e6)
    assert cleanup.survivors == [] and cleanup.port_free is True
    assert (tmp_path / "target.stdout.log").read_text().startswith("LISTENING 127.0.0.1:")


def test_port_comes_from_the_ready_line(tmp_path):
    """With port 0 and no {port} in argv, the LISTENING line names the port actually bound."""

    async def main():
        sup = Supervisor(program("clean_exit"), tmp_path)
        await sup.start()
        try:
            line = await sup.wait_for_output(r"^LISTENING", scaled(1), stream="stdout")
            with pytest.raises(OutputWaitError, match="no stderr line matched"):
                await sup.wait_for_output("never printed", 0.2, stream="stderr")
            return sup, line
        finally:
            await sup.stop()

    sup, line = run(main())
    assert line.endswith(f":{sup.port}") and sup.port > 0
    assert sup.ws_url == f"ws://127.0.0.1:{sup.port}/ws"
    assert sup.http_base == f"http://127.0.0.1:{sup.port}"


def test_port_readiness_with_a_picked_port(tmp_path):
    """readiness 'port': the harness picks a free port for {port} and waits until it accepts."""
    code = "import socket,sys,threading; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); threading.Event().wait()"
    target = Target(name="portwait", argv=(sys.executable, "-c", code, "{port}"), readiness=Readiness(kind="port"))

    async def main():
        sup = Supervisor(target, tmp_path, name="portwait")
        await sup.start()
        return sup, await sup.stop()

    sup, cleanup = run(main())
    assert sup.port > 0 and sup.exit_report is not None and sup.exit_report.classification == "hung"
    assert cleanup.port_free is True


def test_a_program_ignoring_sigint_is_hung_and_killed(tmp_path):
    """Ctrl+C is ignored: wait_exit gives None at its bound, stop() kills it, the report says hung."""

    async def main():
        sup = Supervisor(program("ignore_sigint"), tmp_path, pty=True)
        await sup.start()
        sup.ctrl_c()
        pending = await sup.wait_exit(scaled(0.5))
        assert sup.is_running()
        cleanup = await sup.stop()
        again = await sup.stop()
        return sup, pending, cleanup, again

    sup, pending, cleanup, again = run(main())
    assert pending is None
    assert again is cleanup  # idempotent
    assert cleanup.target_was_running and cleanup.survivors == []
    assert [k["pid"] for k in cleanup.killed] == [sup.pid]
    assert cleanup.port_free is True
    report = sup.exit_report
    assert report is not None and report.classification == "hung"
    assert report.signal_killed == signal.SIGKILL  # SIGTERM was ignored too
    with pytest.raises(SupervisorError):
        sup.send_signal(signal.SIGINT)
    assert_tree_gone(sup)


def test_hang_forensics_show_the_stuck_thread(tmp_path):
    """A non-daemon thread blocks exit: forensics name its function before the kill."""

    async def main():
        sup = Supervisor(program("nondaemon_thread"), tmp_path)
        await sup.start()
        sup.send_signal(signal.SIGINT)
        await sup.wait_for_output("main returns", scaled(5))
        assert await sup.wait_exit(scaled(0.5)) is None
        forensics = await sup.forensics("no exit after SIGINT")
        await sup.stop()
        return sup, forensics

    sup, forensics = run(main())
    assert sup.exit_report is not None and sup.exit_report.classification == "hung"
    text = (tmp_path / "target.forensics.txt").read_text()
    assert "worker_that_never_ends" in text
    assert "_shutdown" in text  # the main thread joining it at interpreter exit
    assert any("worker_that_never_ends" in ln for ln in forensics.key_lines())
    assert forensics.pids == [sup.pid]
    assert any(s["status"] == "LISTEN" for s in forensics.sockets)


def test_traceback_on_exit_is_flagged_as_noise(tmp_path):
    """Exit code 0 after Ctrl+C, but the traceback and the asyncio warning are reported."""

    async def main():
        sup = Supervisor(program("noisy_exit"), tmp_path, pty=True)
        await sup.start()
        sup.ctrl_c()
        report = await sup.wait_exit(scaled(5))
        await sup.stop()
        return report

    report = run(main())
    assert report is not None and report.classification == "clean"
    joined = "\n".join(report.noise)
    assert "Traceback (most recent call last):" in joined
    assert "KeyboardInterrupt" in joined
    assert "Task was destroyed but it is pending!" in joined
    assert "KeyboardInterrupt" in report.stderr_tail


def _helper_pids(sup: Supervisor) -> dict[str, int]:
    pids = {}
    for line in sup.output("stdout").splitlines():
        if line.startswith("UP "):
            role, pid = line.split()[1:3]
            pids[role] = int(pid)
    return pids


async def _start_forker(tmp_path: Path, pty: bool = False) -> Supervisor:
    sup = Supervisor(program("forker"), tmp_path, pty=pty)
    await sup.start()
    for role in ("child", "grandchild", "escapee"):
        await sup.wait_for_output(f"^UP {role} ", scaled(10))
    return sup


@pytest.mark.parametrize("how", ["kill", "pty"])
def test_helpers_that_outlive_the_parent_are_survivors(tmp_path, how):
    """The parent exits 0 on SIGTERM or Ctrl+C; its child (holding the port), grandchild and a
    setsid'd helper are reported and killed. On a pty the terminal stays up after the target
    exits, as a person's shell keeps it, so no hangup hides the helpers."""

    async def main():
        sup = await _start_forker(tmp_path, pty=(how == "pty"))
        if how == "pty":
            sup.ctrl_c()
        else:
            sup.send_signal(signal.SIGTERM)
        report = await sup.wait_exit(scaled(5))
        return sup, report, await sup.stop()

    sup, report, cleanup = run(main())
    assert report is not None and report.classification == "clean"
    assert cleanup.port_free is False  # the child inherited the listening socket
    helpers = _helper_pids(sup)
    assert {s["pid"] for s in cleanup.survivors} == set(helpers.values())
    assert set(helpers.values()) <= {k["pid"] for k in cleanup.killed}
    assert os.getsid(0) != helpers["escapee"]  # it really left; the marker found it
    assert not any(psutil.pid_exists(p) and not proctree.is_gone(psutil.Process(p)) for p in helpers.values())
    assert_tree_gone(sup)


def test_stopping_a_running_tree_kills_everything_without_survivors(tmp_path):
    """stop() on a live tree: all four processes killed, none counted as a survivor."""

    async def main():
        sup = await _start_forker(tmp_path)
        return sup, await sup.stop()

    sup, cleanup = run(main())
    helpers = _helper_pids(sup)
    assert cleanup.survivors == [] and cleanup.port_free is True
    assert {sup.pid, *helpers.values()} <= {k["pid"] for k in cleanup.killed}
    assert sup.exit_report is not None and sup.exit_report.classification == "hung"
    assert_tree_gone(sup)


def test_never_ready_raises_within_its_bound_with_the_tail(tmp_path):
    """No LISTENING line: TargetStartError after ready_timeout_s, naming the cause, with the output tail."""
    target = program("never_ready", limits={"ready_timeout_s": 1.0})
    started = time.monotonic()

    async def main():
        sup = Supervisor(target, tmp_path)
        with pytest.raises(TargetStartError) as info:
            await sup.start()
        return sup, info.value

    sup, err = run(main())
    took = time.monotonic() - started
    assert "not ready within" in str(err)
    assert str(err).rstrip().endswith("(empty)")  # stderr tail ends the message
    assert "still loading the model" in str(err)
    assert took < scaled(1.0) + scaled(8)
    assert not sup.is_running()
    assert_tree_gone(sup)


def test_dying_at_start_raises_with_its_stderr(tmp_path):
    """Exit 3 before the ready line: the error gives the code and the stderr line."""

    async def main():
        sup = Supervisor(program("dies_at_start"), tmp_path)
        with pytest.raises(TargetStartError) as info:
            await sup.start()
        return info.value

    err = str(run(main()))
    assert "exited with code 3 before it was ready" in err
    assert err.rstrip().endswith("fatal: config file wschaos-missing.toml not found")


def test_missing_executable_is_a_start_error(tmp_path):
    """A command that cannot be executed is a TargetStartError, not a bare OSError."""
    target = Target(name="nothing", argv=(str(tmp_path / "no-such-program"),))
    with pytest.raises(TargetStartError, match="cannot start"):
        run(Supervisor(target, tmp_path).start())


@pytest.mark.parametrize("how", ["kill", "pty"])
def test_ctrl_c_reaches_the_whole_foreground_group_and_kill_only_the_pid(tmp_path, how):
    """os.kill(pid, SIGINT) reaches the parent alone; the pty's Ctrl+C reaches parent and child."""
    wait_s = "1.0" if how == "kill" else str(scaled(10))

    async def main():
        sup = Supervisor(program("pgroup_sigint", wait_s), tmp_path, pty=True)
        await sup.start()
        if how == "pty":
            sup.ctrl_c()
        else:
            sup.send_signal(signal.SIGINT)
        report = await sup.wait_exit(scaled(15))
        return sup, report, await sup.stop()

    sup, report, cleanup = run(main())
    out = sup.output("stdout")
    assert report is not None and report.returncode == 0
    assert "GOT SIGINT parent" in out
    if how == "pty":
        assert "GOT SIGINT child" in out and "CHILD EXITED rc=0" in out
    else:
        assert "GOT SIGINT child" not in out and "CHILD STILL RUNNING" in out
    assert cleanup.survivors == []
    assert_tree_gone(sup)


def test_ctrl_c_without_a_pty_is_refused(tmp_path):
    """ctrl_c() needs the pty; without one it says so instead of faking a signal."""

    async def main():
        sup = Supervisor(program("clean_exit"), tmp_path)
        await sup.start()
        try:
            with pytest.raises(SupervisorError, match="pty=True"):
                sup.ctrl_c()
        finally:
            await sup.stop()

    run(main())


def test_forensics_include_asyncio_tasks_from_the_injected_probe(tmp_path):
    """With the Python probe injected, forensics list every task's stack, not only threads."""

    async def main():
        sup = Supervisor(program("stuck_asyncio", python_probe=True), tmp_path)
        await sup.start()
        try:
            return await sup.forensics("asyncio target stuck")
        finally:
            await sup.stop()

    forensics = run(main())
    assert forensics.tasks is not None, forensics.errors
    text = forensics.text()
    assert "stuck-task" in text and "stuck_coroutine" in text
    assert any("stuck_coroutine" in ln for ln in forensics.key_lines())


def test_a_target_that_exited_but_is_not_reaped_yet_is_not_running(tmp_path):
    """The pty's leader shim reaps the target; stopped (SIGSTOP), it cannot, and the killed
    target stays a zombie: is_running() already says it is gone (a late reaper on a loaded
    machine once let process.alive pass a crashed target)."""

    async def main():
        sup = Supervisor(program("clean_exit"), tmp_path, pty=True)
        await sup.start()
        leader = sup._leader_pid
        assert leader is not None and sup.is_running()
        pidfd = os.pidfd_open(sup.pid)  # readable once the process has terminated, reaped or not
        try:
            # Stopped for sure (the kernel says so) before the target dies: nobody reaps it.
            with frozen_process(leader):
                os.kill(sup.pid, signal.SIGKILL)
                ready, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], scaled(5))
                assert ready, "the killed target did not terminate"
                assert psutil.Process(sup.pid).status() == psutil.STATUS_ZOMBIE
                assert not sup.is_running() and sup.exit_report is None  # not reaped, yet not running
        finally:
            os.close(pidfd)
            await sup.stop()

    run(main())
