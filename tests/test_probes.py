"""The probes against real processes: an in-process aiohttp /stats, a psutil view
of a subprocess, and the injected Python probe inside a WebSocket server that
has no /stats at all (or one that lies); and hang forensics summarised from a
py-spy dump."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from harness.core.history import History
from harness.core.timing import Deadline, scaled
from harness.probes.forensics import Forensics, parse_py_spy
from harness.probes.sampling import (
    PYPROBE_DIR,
    ProcessProbe,
    PythonProbe,
    Sample,
    StatsProbe,
    probe_address_from_env,
    python_probe_env,
    settle,
)

pytestmark = pytest.mark.timeout(90)

NOSTATS = Path(__file__).parent / "fixtures" / "servers" / "nostats_server.py"
NOISE = ("Traceback", "Exception ignored", "Task was destroyed", "never awaited", "Error in sitecustomize")


# -- processes -----------------------------------------------------------------
class Proc:
    """A subprocess in its own session, whose stdout we can wait on with a bound."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0, start_new_session=True,
        )
        self.pid = self.popen.pid
        self.stdout = b""

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with ``prefix``, read within ``timeout``."""
        deadline = Deadline.after(timeout)
        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ)
        eof = False
        try:
            while True:
                # Whole lines only: a pipe may hand over half a line.
                for line in self.stdout.decode(errors="replace").split("\n")[:-1]:
                    if line.startswith(prefix):
                        return line
                if eof or deadline.expired():
                    why = "it closed stdout" if eof else f"none within {timeout:g} s"
                    raise AssertionError(f"no {prefix!r} line: {why}; stdout={self.stdout!r}, "
                                         f"stderr={self._stderr_now()!r}")
                if sel.select(deadline.remaining()):
                    chunk = os.read(self.popen.stdout.fileno(), 65536)
                    eof = not chunk
                    self.stdout += chunk
        finally:
            sel.close()

    def _stderr_now(self) -> bytes:
        if self.popen.poll() is None:
            return b"(still running)"
        return self.popen.stderr.read() or b""  # it exited: this read ends at once

    def interrupt_and_wait(self, timeout: float) -> tuple[int, str, str]:
        """SIGINT, as a person's Ctrl+C would deliver it, then the exit code and output."""
        self.popen.send_signal(signal.SIGINT)
        out, err = self.popen.communicate(timeout=timeout)
        return self.popen.returncode, (self.stdout + out).decode(), err.decode()

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.communicate(timeout=scaled(5))
        except (subprocess.TimeoutExpired, ValueError):
            pass


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill_group()


@pytest.fixture
def start_nostats(procs: list[Proc], tmp_path: Path):
    """Start the no-/stats server, the Python probe injected; returns (proc, port, probe address)."""

    def start(*flags: str, probe: bool = True) -> tuple[Proc, int, str | None]:
        extra = python_probe_env(tmp_path) if probe else {}
        env = {**os.environ, **extra}
        proc = Proc([sys.executable, str(NOSTATS), "--port", "0", *flags], env=env)
        procs.append(proc)
        line = proc.wait_line("LISTENING ", scaled(15))
        return proc, int(line.rsplit(":", 1)[1]), probe_address_from_env(extra)

    return start


def assert_clean_exit(proc: Proc, *, socket_path: str | None = None) -> None:
    """Ctrl+C ends the target with code 0, its only output the LISTENING line."""
    code, out, err = proc.interrupt_and_wait(scaled(10))
    assert code == 0, (code, out, err)
    assert err == "", err
    assert [ln for ln in out.splitlines() if not ln.startswith("LISTENING ")] == [], out
    assert not any(n in out + err for n in NOISE)
    if socket_path is not None:
        assert not os.path.exists(socket_path), "the probe left its socket behind"


async def echo(port: int, n: int) -> None:
    """n sessions, one after another, each proven served by one echo, then closed."""
    for i in range(n):
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=scaled(5)) as ws:
            await ws.send(f"hello {i}")
            assert await asyncio.wait_for(ws.recv(), scaled(5)) == f"hello {i}"


# -- StatsProbe ------------------------------------------------------------------
async def _stats_app(payloads: dict[str, tuple[str, str]]) -> tuple[web.AppRunner, str]:
    """An aiohttp app answering each path with (content type, body)."""
    app = web.Application()
    for path, (ctype, body) in payloads.items():
        async def answer(request: web.Request, ctype: str = ctype, body: str = body) -> web.Response:
            return web.Response(text=body, content_type=ctype)
        app.router.add_get(path, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def test_stats_probe_reads_the_stats_object_and_records_it() -> None:
    """A 200 JSON object from /stats is an ok sample, recorded as probe:stats."""

    async def main() -> None:
        stats = {"pid": 1, "connections": 0, "tasks": 3, "threads": 1}
        runner, base = await _stats_app({
            "/stats": ("application/json", json.dumps(stats)),
            "/broken": ("text/plain", "not json"),
        })
        history = History()
        probe = StatsProbe(base, history=history)
        broken = StatsProbe(base, "/broken")
        missing = StatsProbe(base, "/nowhere")
        try:
            s1 = await probe.sample()
            s2 = await probe.sample()  # the session is reused
            bad = await broken.sample()
            absent = await missing.sample()
        finally:
            for p in (probe, broken, missing):
                await p.close()
            await runner.cleanup()
        assert s1.ok and s1.data == stats and s1.error is None and s1.source == "probe:stats"
        assert s2.ok and s2.t_ns > s1.t_ns
        assert not bad.ok and "JSON" in (bad.error or "")
        assert not absent.ok and "404" in (absent.error or "")
        recorded = history.observations(kind="sample", source="probe:stats")
        assert [Sample.from_observation(o) for o in recorded] == [s1, s2]

    asyncio.run(main())


def test_stats_probe_on_a_closed_port_says_it_could_not_tell() -> None:
    """Nothing listening: ok False with an error, promptly, and no exception."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> Sample:
        probe = StatsProbe(f"http://127.0.0.1:{port}", timeout=scaled(2))
        try:
            return await probe.sample()
        finally:
            await probe.close()

    t0 = time.monotonic()
    sample = asyncio.run(main())
    assert not sample.ok and sample.error and sample.data.get("status") is None
    assert time.monotonic() - t0 < scaled(3)


# -- ProcessProbe -----------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import socket, subprocess, sys, threading
    stop = threading.Event()
    for i in range(3):
        threading.Thread(target=stop.wait, name=f"idle-{i}", daemon=True).start()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    client.close()  # the peer's FIN: server_side sits in CLOSE_WAIT, never closed by us
    print("READY", listener.getsockname()[1], child.pid, flush=True)
    sys.stdin.read()
""")


def test_process_probe_sees_threads_fds_children_and_a_close_wait_socket(procs: list[Proc]) -> None:
    """psutil view of a tree: 4 threads, a child, a listener and a CLOSE_WAIT socket."""
    proc = Proc([sys.executable, "-c", HOLDER])
    procs.append(proc)
    _, port, child_pid = proc.wait_line("READY ", scaled(10)).split()
    history = History()
    probe = ProcessProbe(proc.pid, history=history)
    sample = asyncio.run(settle(probe, lambda s: s.data["tcp"].get("CLOSE_WAIT") == 1, scaled(5)))
    assert sample.ok, sample.error
    d = sample.data
    assert d["tcp"].get("CLOSE_WAIT") == 1 and d["tcp"].get("LISTEN") == 1, d["tcp"]
    assert d["tcp_listen"] == [{"laddr": ["127.0.0.1", int(port)], "pids": [proc.pid]}]
    assert d["num_threads"] >= 4
    assert d["children"] == 1 and d["child_pids"] == [int(child_pid)]
    assert d["num_fds"] >= 5 and d["rss"] > 0 and d["vms"] >= d["rss"]
    assert isinstance(d["cpu_percent"], float)
    assert history.observations(kind="sample", source="probe:process")

    proc.kill_group()
    gone = probe.sample()
    assert not gone.ok and "exist" in (gone.error or "")


# -- PythonProbe inside a server with no /stats ----------------------------------------
def test_python_probe_sees_tasks_leaked_per_connection(start_nostats) -> None:
    """Under --leak-tasks, tasks and SessionState objects grow by one per connection."""
    proc, port, address = start_nostats("--leak-tasks")

    async def main() -> tuple[Sample, Sample, Sample]:
        history = History()
        probe = PythonProbe(address, history=history)
        before = await probe.sample(gc_types=["SessionState"])
        await echo(port, 5)
        after = await settle(probe, lambda s: s.data["tasks"] == before.data["tasks"] + 5, scaled(5))
        counted = await probe.sample(gc_types=["SessionState", "__main__.SessionState"])
        assert len(history.observations(kind="sample", source="probe:python")) >= 3
        return before, after, counted

    before, after, counted = asyncio.run(main())
    assert before.ok, before.error
    assert before.data["gc"] == {"SessionState": 0}
    assert after.data["tasks"] == before.data["tasks"] + 5, (before.data["tasks"], after.data["tasks"])
    leaked = [t for t in after.data["loops"][0]["tasks"] if t["coro"] == "_linger"]
    assert len(leaked) == 5 and all(t["stack"] and "_linger" in t["stack"][-1] for t in leaked)
    assert counted.data["gc"] == {"SessionState": 5, "__main__.SessionState": 5}
    assert_clean_exit(proc, socket_path=address)


def test_python_probe_tasks_return_to_baseline_without_the_leak(start_nostats) -> None:
    """Without --leak-tasks, the task count settles back where it started; threads,
    the default executor's thread and the loop's lag are all reported."""
    proc, port, address = start_nostats()

    async def main() -> tuple[Sample, Sample]:
        probe = PythonProbe(address)
        before = await probe.sample()
        await echo(port, 5)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("executor")
            assert await asyncio.wait_for(ws.recv(), scaled(5)) == "executor"
        after = await settle(probe, lambda s: s.data["tasks"] == before.data["tasks"], scaled(5))
        return before, after

    before, after = asyncio.run(main())
    assert after.ok and after.data["tasks"] == before.data["tasks"]
    names = {t["name"]: t for t in after.data["threads"]}
    assert names["MainThread"]["frames"] and names["MainThread"]["alive"]
    assert names["wschaos-probe"]["daemon"] and names["wschaos-probe"]["probe"]
    assert after.data["executor_threads"] == ["asyncio_0"]
    assert after.data["thread_count"] == len(after.data["threads"]) == 3
    loop = after.data["loops"][0]
    assert loop["thread_name"] == "MainThread" and loop["tasks_source"] == "loop"
    assert not after.data["blocked"] and 0 <= after.data["loop_lag_ms"] < 500
    assert_clean_exit(proc, socket_path=address)


def test_python_probe_reports_a_blocked_loop_within_its_bound(start_nostats) -> None:
    """A loop stuck in time.sleep is reported blocked after the lag bound, not waited on;
    once it unblocks, the probe's late callback does no harm and the exit is clean."""
    proc, port, address = start_nostats("--leak-tasks")
    lag_bound = scaled(0.3)

    async def main() -> tuple[Sample, float, Sample]:
        probe = PythonProbe(address, lag_timeout=lag_bound)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("block 1500")
            # The server answers "blocking" and sleeps in the same task step.
            assert await asyncio.wait_for(ws.recv(), scaled(5)) == "blocking"
            t0 = time.monotonic()
            stuck = await probe.sample()
            took = time.monotonic() - t0
            assert await asyncio.wait_for(ws.recv(), scaled(5)) == "blocked 1500"
        free = await settle(probe, lambda s: not s.data["blocked"], scaled(5))
        return stuck, took, free

    stuck, took, free = asyncio.run(main())
    assert stuck.ok, stuck.error
    assert stuck.data["blocked"] is True
    loop = stuck.data["loops"][0]
    assert loop["blocked"] and loop["tasks_source"] == "best_effort"
    assert loop["lag_ms"] >= lag_bound * 1000 * 0.9
    assert loop["tasks_count"] >= 1 and any(t["coro"] == "_linger" for t in loop["tasks"])
    main_thread = next(t for t in stuck.data["threads"] if t["name"] == "MainThread")
    assert any("handler" in f for f in main_thread["frames"]), main_thread["frames"]
    assert took < lag_bound + scaled(1.5)
    assert free.ok and not free.data["blocked"]
    assert_clean_exit(proc, socket_path=address)


def test_python_probe_sees_past_a_lying_stats(start_nostats) -> None:
    """/stats says idle; the injected probe counts the leaked tasks anyway."""
    proc, port, address = start_nostats("--leak-tasks", "--stats-lie")

    async def main() -> tuple[Sample, Sample]:
        await echo(port, 3)
        stats = StatsProbe(f"http://127.0.0.1:{port}")
        try:
            told = await stats.sample()
        finally:
            await stats.close()
        seen = await settle(PythonProbe(address), lambda s: s.data["tasks"] >= 4, scaled(5))
        return told, seen

    told, seen = asyncio.run(main())
    assert told.ok and told.data["tasks"] == 1
    assert seen.data["tasks"] >= 4 > told.data["tasks"]
    assert_clean_exit(proc, socket_path=address)


def test_python_probe_without_a_probe_says_it_could_not_tell(start_nostats, tmp_path: Path) -> None:
    """A target started without the probe: ok False and an error, promptly; /stats is 404."""
    proc, port, _ = start_nostats(probe=False)
    address = python_probe_env(tmp_path)["WSCHAOS_PROBE_SOCKET"]

    async def main() -> tuple[Sample, Sample]:
        stats = StatsProbe(f"http://127.0.0.1:{port}")
        try:
            return await PythonProbe(address).sample(), await stats.sample()
        finally:
            await stats.close()

    missing, stats = asyncio.run(main())
    assert not missing.ok and "no Python probe socket" in (missing.error or "")
    assert not stats.ok and stats.data == {"status": 404}
    assert_clean_exit(proc)


# -- injection ------------------------------------------------------------------
def test_python_probe_env_prepends_and_keeps_the_socket_path_short(tmp_path: Path) -> None:
    """PYTHONPATH keeps the target's own entries after pyprobe; over-long socket paths move to tmp."""
    env = python_probe_env(tmp_path, base_env={"PYTHONPATH": "/a:/b"})
    assert env["PYTHONPATH"] == f"{PYPROBE_DIR}{os.pathsep}/a:/b"
    assert Path(env["WSCHAOS_PROBE_SOCKET"]).parent == tmp_path
    assert python_probe_env(tmp_path, base_env={})["PYTHONPATH"] == str(PYPROBE_DIR)
    assert env["WSCHAOS_PROBE_SOCKET"] != python_probe_env(tmp_path)["WSCHAOS_PROBE_SOCKET"]
    deep = python_probe_env(tmp_path / ("x" * 120))["WSCHAOS_PROBE_SOCKET"]
    assert len(deep.encode()) <= 100
    assert probe_address_from_env({}) is None


def test_probe_chains_the_targets_own_sitecustomize(tmp_path: Path) -> None:
    """A sitecustomize already on the target's path still runs, and is what `import sitecustomize` gives."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nTARGETS_OWN = True\n")
    env = {**os.environ, **python_probe_env(tmp_path, base_env={"PYTHONPATH": str(own)})}
    code = ("import sitecustomize, sys, threading; "
            "print(getattr(sitecustomize, 'TARGETS_OWN', False), "
            "any(t.name == 'wschaos-probe' for t in threading.enumerate()))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=scaled(15))
    assert (done.returncode, done.stdout, done.stderr) == (0, "True True\n", "")


STDLIB_TARGET = textwrap.dedent("""
    import asyncio, os, signal
    pid = os.fork()  # from __main__, with the probe's thread running: 3.12+ must not warn
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        leak = [asyncio.create_task(asyncio.Event().wait(), name=f"leak-{i}") for i in range(3)]
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        print("LISTENING 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
        await stop.wait()
        server.close()
        for t in leak:
            t.cancel()
    asyncio.run(main())
""")


def _interpreters() -> list[str]:
    """This Python plus any other supported one on PATH or under pyenv (shims may be inactive)."""
    found = [sys.executable]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for v in ("3.10", "3.11", "3.12", "3.13"):
        if v == f"{sys.version_info[0]}.{sys.version_info[1]}":
            continue
        candidates = [shutil.which(f"python{v}"), *sorted(map(str, pyenv.glob(f"{v}*/bin/python{v}")))]
        for exe in filter(None, candidates):
            ok = subprocess.run([exe, "-c", ""], capture_output=True, timeout=30).returncode == 0
            if ok:
                found.append(exe)
                break
    return found


@pytest.mark.parametrize("python", _interpreters())
def test_probe_works_on_every_supported_python(python: str, procs: list[Proc], tmp_path: Path) -> None:
    """The probe is stdlib-only, answers the same on 3.10 to 3.13, and adds no fork warning."""
    extra = python_probe_env(tmp_path)
    proc = Proc([python, "-c", STDLIB_TARGET], env={**os.environ, **extra})
    procs.append(proc)
    proc.wait_line("LISTENING ", scaled(15))
    sample = asyncio.run(PythonProbe(extra["WSCHAOS_PROBE_SOCKET"]).sample(gc_types=["Task"]))
    assert sample.ok, sample.error
    assert sample.data["tasks"] == 4 and sample.data["gc"]["Task"] >= 4, json.dumps(sample.data)[:500]
    assert not sample.data["blocked"] and sample.data["errors"] == []
    assert_clean_exit(proc, socket_path=extra["WSCHAOS_PROBE_SOCKET"])


TWO_LOOPS = textwrap.dedent("""
    import asyncio, signal, threading, time
    def stuck_loop():
        async def sync_agent():
            time.sleep(60)  # a sync call inside a coroutine: this loop never answers
        asyncio.new_event_loop().run_until_complete(sync_agent())
    threading.Thread(target=stuck_loop, name="agent-loop", daemon=True).start()
    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        print("LISTENING 127.0.0.1:0", flush=True)
        await stop.wait()
    asyncio.run(main())
""")


def test_python_probe_reports_each_loop_and_waits_one_bound_for_all(procs: list[Proc], tmp_path: Path) -> None:
    """A healthy main loop and a blocked loop in a thread: both reported, in one lag bound."""
    extra = python_probe_env(tmp_path)
    proc = Proc([sys.executable, "-c", TWO_LOOPS], env={**os.environ, **extra})
    procs.append(proc)
    proc.wait_line("LISTENING ", scaled(15))
    bound = scaled(0.3)
    probe = PythonProbe(extra["WSCHAOS_PROBE_SOCKET"], lag_timeout=bound)
    sample = asyncio.run(settle(probe, lambda s: len(s.data["loops"]) == 2 and s.data["blocked"], scaled(5)))
    assert sample.ok, sample.error
    by_thread = {lp["thread_name"]: lp for lp in sample.data["loops"]}
    assert by_thread["agent-loop"]["blocked"] and by_thread["agent-loop"]["tasks_source"] == "best_effort"
    assert [t["coro"] for t in by_thread["agent-loop"]["tasks"]] == ["stuck_loop.<locals>.sync_agent"]
    assert not by_thread["MainThread"]["blocked"] and by_thread["MainThread"]["tasks_count"] == 1
    assert sample.data["tasks"] == 2
    assert sample.data["probe_ms"] < (bound + scaled(1)) * 1000
    assert_clean_exit(proc, socket_path=extra["WSCHAOS_PROBE_SOCKET"])


def test_settle_returns_the_last_sample_at_its_bound() -> None:
    """A condition that never holds ends at the bound with the last sample, not an exception."""
    calls: list[int] = []

    def fake() -> Sample:  # plain data: settle's own logic, no target involved
        calls.append(1)
        return Sample("probe:test", len(calls), False, {}, "unreachable")

    t0 = time.monotonic()
    last = asyncio.run(settle(fake, lambda s: s.data["never"], 0.2, interval=0.02))
    assert time.monotonic() - t0 < 0.2 + scaled(1)
    assert last.t_ns == len(calls) > 1 and not last.ok


# -- forensics, from plain data --------------------------------------------------
PY_SPY_DUMP = """Process 4242: python server.py
Python v3.11.9 (/usr/bin/python3.11)

Thread 4242 (idle): "MainThread"
    _shutdown (threading.py:1583)
Thread 4250 (active): "worker"
    worker_that_never_ends (server.py:12)
    run (threading.py:982)
Thread 4251 (idle): "wschaos-probe"
    serve (sitecustomize.py:40)
"""


def test_forensics_summarise_busy_threads_first_and_leave_out_the_probes_own() -> None:
    """One Forensics for targets and clients: the key lines put the busy thread first, omit the probe's thread."""
    f = Forensics(reason="no exit after SIGINT", t_ns=1, name="target", pids=[4242],
                  dumps={4242: PY_SPY_DUMP}, threads=parse_py_spy(4242, PY_SPY_DUMP),
                  output_tail="KeyboardInterrupt", output_label="transcript")
    assert [t.idle for t in f.threads] == [True, False, True]
    lines = f.key_lines()
    assert lines[0] == "forensics of target (no exit after SIGINT): 1 process(es)"
    assert lines[1] == 'pid 4242 Thread 4250 (active): "worker": worker_that_never_ends (server.py:12) < run (threading.py:982)'
    assert not any("wschaos-probe" in ln for ln in lines)
    assert f.stacks == PY_SPY_DUMP and f.stacks_error is None
    assert "## transcript tail\nKeyboardInterrupt" in f.text() and f.render() == f.text()
