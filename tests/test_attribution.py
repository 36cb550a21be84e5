"""Blame honestly: the target's crashes and refusals fail the target, quoting it; wschaos's own errors are its own."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from harness.core.timing import scaled
from harness.engine.scenario import Case, run_case_sync
from harness.target.spec import Target, reference_target


def case(fn) -> Case:  # type: ignore[no-untyped-def]
    return Case(scenario="attribution.test", name="x", fn=fn)


def by_check(outcome):  # type: ignore[no-untyped-def]
    return {v.check: v for v in outcome.verdicts}


async def crash_mid_case(ctx) -> None:  # type: ignore[no-untyped-def]
    sup = await ctx.start_target()
    c = await ctx.client(sup)
    await c.send_raw(b"\x00\x01binary")  # crash_on_binary: the process dies at once, code 70
    await c.wait_closed(scaled(5))
    rid = await c.request("after the crash")
    await c.reply(rid, scaled(5))


def test_a_target_that_crashes_mid_case_fails_the_target_not_the_harness(tmp_path: Path):
    """The dropped connection and the exit nobody asked for are the target's; no 'scenario crashed'."""
    out = run_case_sync(case(crash_mid_case), reference_target(["crash_on_binary"]), seed=1, run_dir=tmp_path)
    v = by_check(out)["target.served"]
    assert v.status == "fail"
    assert "connection closed" in v.message and "target1 exited with code 70" in v.message
    assert "though nothing signalled it" in v.message
    assert out.error is None and "attribution.test.completed" not in by_check(out)
    assert (tmp_path / "attribution.test_x_" / "scenario-error.txt").is_file()


async def harness_bug(ctx) -> None:  # type: ignore[no-untyped-def]
    sup = await ctx.start_target()
    await ctx.client(sup)
    {}["no such key"]  # a bug in the scenario itself


def test_a_wschaos_error_is_unknown_with_its_traceback_saved(tmp_path: Path):
    """A bug of wschaos's own is never the target's: UNKNOWN, traceback in the case directory."""
    out = run_case_sync(case(harness_bug), reference_target(), seed=1, run_dir=tmp_path)
    v = by_check(out)["attribution.test.completed"]
    assert v.status == "unknown" and "a wschaos error" in v.message and "KeyError" in v.message
    assert "target.served" not in by_check(out)
    saved = tmp_path / "attribution.test_x_" / "scenario-error.txt"
    assert "KeyError" in saved.read_text() and out.error is not None


async def just_start(ctx) -> None:  # type: ignore[no-untyped-def]
    await ctx.start_target()


def test_a_target_that_cannot_start_fails_target_started_with_its_output(tmp_path: Path):
    """A target that dies before it is ready fails target.started, quoting its stderr."""
    target = Target(name="broken", argv=(sys.executable, "-c", "import sys; sys.exit('config file missing')"))
    out = run_case_sync(case(just_start), target, seed=1, run_dir=tmp_path)
    v = by_check(out)["target.started"]
    assert v.status == "fail" and "config file missing" in v.message
    assert out.error is None


async def connect(ctx) -> None:  # type: ignore[no-untyped-def]
    sup = await ctx.start_target()
    await ctx.client(sup)


def test_a_refused_connection_is_the_targets(tmp_path: Path):
    """A WebSocket the target refuses (404 at its declared path) fails target.served with the refusal."""
    target = replace(reference_target(), ws_path="/not-here")
    out = run_case_sync(case(connect), target, seed=1, run_dir=tmp_path)
    v = by_check(out)["target.served"]
    assert v.status == "fail" and "connect to ws://127.0.0.1:" in v.message and "/not-here" in v.message


async def refused_after_stop(ctx) -> None:  # type: ignore[no-untyped-def]
    sup = await ctx.start_target()
    await sup.stop()  # wschaos ends the target: the port closes
    await ctx.client(sup)


def test_a_refusal_after_wschaos_stopped_the_target_is_not_blamed_on_it(tmp_path: Path):
    """What wschaos did (its stop) is never reported as the target's behaviour."""
    out = run_case_sync(case(refused_after_stop), reference_target(), seed=1, run_dir=tmp_path)
    assert "target.served" not in by_check(out)
    v = by_check(out)["attribution.test.completed"]
    assert v.status == "unknown" and "after wschaos signalled or stopped target1" in v.message


def test_a_pass_that_holds_only_under_the_time_factor_is_flagged():
    """A 5.4 s exit 'within' a 3 s grace at factor 2 is flagged in its message and figures; a real pass is not."""
    from harness.core.verdict import passed
    from harness.engine.blame import flag_stretched

    stretched = passed("shutdown.exit_time", "exit took 5400 ms <= bound 6000 ms", exit_ms=5400.0, bound_ms=6000.0)
    v = flag_stretched(stretched, 2.0)
    assert v.status == "pass" and "passes only because WSCHAOS_TIME_FACTOR=2" in v.message
    assert "over the unscaled 3000 ms" in v.message and v.figures["stretched_by_time_factor"] == 2.0
    honest = passed("shutdown.exit_time", "exit took 900 ms <= bound 6000 ms", exit_ms=900.0, bound_ms=6000.0)
    assert flag_stretched(honest, 2.0) is honest
    assert flag_stretched(stretched, 1.0) is stretched
    p99 = passed("interrupts.ack_latency", "p99 300 ms <= 400", p99_ms=300.0, bound_ms=400.0)
    assert flag_stretched(p99, 2.0).figures["stretched_by_time_factor"] == 2.0  # p99 300 ms > unscaled 200 ms


BINDER = ("import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); "
          "print(f'LISTENING 127.0.0.1:{sys.argv[1]}', flush=True); time.sleep(30)")


def test_a_picked_port_taken_first_is_a_race_wschaos_retries_not_the_targets_failure(tmp_path: Path, monkeypatch):
    """The free port wschaos picked was taken before the target bound it: start again on another port."""
    import socket

    import harness.process.supervisor as supmod

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    real = supmod.free_port
    picks = iter([taken])
    monkeypatch.setattr(supmod, "free_port", lambda host: next(picks, None) or real(host))
    target = Target(name="binder", argv=(sys.executable, "-c", BINDER, "{port}"), stats_path=None, health_path=None)
    seen: dict[str, int] = {}

    async def start(ctx) -> None:  # type: ignore[no-untyped-def]
        sup = await ctx.start_target()
        seen["port"] = sup.port
        ctx.check(__import__("harness.checkers", fromlist=["x"]).process_alive(sup.is_running()))

    try:
        out = run_case_sync(case(start), target, seed=1, run_dir=tmp_path)
    finally:
        held.close()
    assert [v.status for v in out.verdicts] == ["pass"], out.verdicts
    assert seen["port"] != taken and "target.started" not in by_check(out)
