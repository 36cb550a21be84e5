"""The fleet: a client program on several worker processes, one merged History that the
checkers judge exactly as they judge a single process's; workers ended with their trees."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness import checkers
from harness.core.history import History, Observation, Operation
from harness.core.timing import scaled
from harness.fleet import (
    FleetError,
    FleetRunError,
    Origin,
    WorkerContext,
    assign_sources,
    dask_engine,
    default_workers,
    fleet,
    merge,
    programs,
    run,
    source_addresses,
)
from harness.process.supervisor import Supervisor
from harness.target.spec import reference_target

CHURN = {"cycles": 30, "interrupt_every": 5, "loops": 3}


def ns(ms: float) -> int:
    return int(ms * 1_000_000)


def frame(t_ms: float, client: str, kind: str, rid: str) -> Observation:
    return Observation(id=0, source=client, kind="frame", t_ns=ns(t_ms), data={"kind": kind, "request_id": rid})


def request(t_ms: float, client: str, rid: str) -> Operation:
    return Operation(id=0, client=client, kind="request", started_ns=ns(t_ms), ended_ns=ns(t_ms + 5),
                     outcome="ok", data={"request_id": rid})


def verdicts(result: Any) -> dict[str, Any]:
    """The checkers' statuses on a churn history, with the counts that must not depend on the split."""
    h = result.history
    completed = [rid for v in result.values for rid in v["request_ids"]]
    out: dict[str, Any] = {}
    for v in (checkers.one_terminal_per_request(h), checkers.seq_gap_free(h), checkers.one_ack_each(h),
              checkers.final_before_ack(h), checkers.no_frames_after_ack(h), checkers.no_double_claim(h),
              checkers.untouched(h, completed)):
        out[v.check] = v.status
    terminal = checkers.one_terminal_per_request(h).figures
    out["requests"], out["requests without one terminal"] = terminal["requests"], terminal["bad"]
    out["completed"] = sum(v["completed"] for v in result.values)
    out["interrupted"] = sum(v["interrupted"] for v in result.values)
    return out


# -- the merge, on plain records ---------------------------------------------------------------
def test_merge_interleaves_one_hosts_workers_by_time_and_keeps_each_clients_frames_in_order():
    """Within a host records interleave by time; a worker's own order is never changed."""
    w0 = [request(0, "c1", "r1"), frame(3, "c1", "chunk", "r1"), frame(2.5, "c1", "final", "r1")]
    w1 = [request(1, "c1", "r1"), frame(2, "c1", "final", "r1")]
    h = merge([(Origin("a", 0, "w0."), w0), (Origin("a", 1, "w1."), w1)])
    order = [(r.data["worker"], r.kind, r.data.get("kind")) for r in h]
    # w0's chunk (3 ms) stays before its final (2.5 ms): the reader saw them in that order.
    assert order == [(0, "request", None), (1, "request", None), (1, "frame", "final"),
                     (0, "frame", "chunk"), (0, "frame", "final")]
    assert [r.id for r in h] == [1, 2, 3, 4, 5]
    assert {r.data["host"] for r in h} == {"a"}


def test_merge_keeps_hosts_apart_names_clients_by_worker_and_leaves_harness_sources_alone():
    """Hosts come in blocks (their clocks do not compare); client names get their worker's prefix."""
    a = [request(5, "c1", "r1"), Observation(0, "supervisor", "ready", ns(1), {})]
    b = [request(0, "c1", "r1"), Observation(0, "probe:stats", "sample", ns(2), {}), request(1, "w1.c2", "r2")]
    h = merge([(Origin("host-a", 0, "w0."), a), (Origin("host-b", 1, "w1."), b)])
    assert [r.data["host"] for r in h] == ["host-a", "host-a", "host-b", "host-b", "host-b"]
    names = [r.client if isinstance(r, Operation) else r.source for r in h]
    assert names == ["w0.c1", "supervisor", "w1.c1", "probe:stats", "w1.c2"]
    assert len({r.id for r in h}) == len(h)
    # The merged history is judged like any other: one request per (client, id), both unresolved finals.
    assert checkers.one_terminal_per_request(h).figures["requests"] == 3


def test_merge_refuses_two_workers_that_would_give_clients_the_same_names():
    """Two parts with one prefix would merge two clients into one: refused."""
    with pytest.raises(ValueError, match="share the client-name prefix"):
        merge([(Origin("a", 0, ""), [request(0, "c1", "r1")]), (Origin("b", 1, ""), [request(0, "c1", "r1")])])


def test_default_workers_leave_half_the_cores_to_a_local_target():
    """The rule: a local target keeps half the cores, a remote one none; never fewer than one worker."""
    assert default_workers(local_target=True, cores=2) == 1
    assert default_workers(local_target=True, cores=8) == 4
    assert default_workers(local_target=False, cores=2) == 2
    assert default_workers(local_target=True, cores=1) == 1


def test_source_addresses_are_loopback_and_dealt_to_workers():
    """N gives 127.0.0.1..N; anything outside loopback or repeated is refused with a clear error."""
    assert source_addresses(3) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert assign_sources(["127.0.0.1", "127.0.0.2", "127.0.0.3"], 2) == [["127.0.0.1", "127.0.0.3"], ["127.0.0.2"]]
    assert assign_sources(["127.0.0.1"], 2) == [["127.0.0.1"], ["127.0.0.1"]]
    for bad, why in (("10.0.0.1", "outside loopback"), ("nope", "not an IP"), (0, "between 1 and 254"),
                     (["127.0.0.2", "127.0.0.2"], "repeat")):
        with pytest.raises(FleetError, match=why):
            source_addresses(bad)  # type: ignore[arg-type]


def test_a_program_workers_cannot_import_is_refused_before_anything_starts():
    """A local async function cannot reach a worker process; a plain function is no program."""
    async def local(ctx: WorkerContext) -> None:
        return None

    with pytest.raises(FleetError, match="module-level async function"):
        fleet(local, "ws://127.0.0.1:1/ws", workers=2)
    with pytest.raises(FleetError, match="must be an async function"):
        fleet(print, "ws://127.0.0.1:1/ws", workers=1)  # type: ignore[arg-type]
    with pytest.raises(FleetError, match="at least 1"):
        fleet(programs.churn, "ws://127.0.0.1:1/ws", workers=0)


# -- against the reference server ----------------------------------------------------------------
async def _with_server(tmp_path: Path, faults: tuple[str, ...], body: Any) -> Any:
    sup = Supervisor(reference_target(faults), tmp_path / "server", name="reference")
    await sup.start()
    try:
        return await body(sup)
    finally:
        await sup.stop()


@pytest.mark.parametrize("faults", [(), ("double_final", "ack_before_final")], ids=["correct", "buggy"])
def test_two_workers_merged_give_the_verdicts_of_one_worker_on_the_same_seed(tmp_path, faults):
    """Churn on one worker (in-process) and on two (processes, two source addresses): same verdicts."""
    async def body(sup: Supervisor) -> tuple[Any, Any]:
        one = await run(programs.churn, sup.ws_url, workers=1, seed=11, params=CHURN)
        two = await run(programs.churn, sup.ws_url, workers=2, seed=11, params=CHURN, sources=2,
                        log_dir=tmp_path / "fleet")
        return one, two

    one, two = asyncio.run(_with_server(tmp_path, faults, body))
    assert verdicts(two) == verdicts(one)
    statuses = {k: v for k, v in verdicts(one).items() if "." in k}
    if faults:  # the bugs are seen, by the merged history as by the single one
        assert statuses["interrupts.one_terminal"] == statuses["interrupts.final_before_ack"] == "fail"
    else:
        assert set(statuses.values()) == {"pass"}
    # Merged from two processes, each its own source address; nothing shared but the clock.
    h = two.history
    assert {r.data["worker"] for r in h} == {0, 1}
    assert len({w.pid for w in two.workers} | {os.getpid()}) == 3
    assert [v["source_addresses"] for v in two.values] == [["127.0.0.1"], ["127.0.0.2"]]
    assert len({r.id for r in h}) == len(h)
    names = {op.client for op in h.operations("connect")}
    assert len(names) == CHURN["cycles"] and all(n.startswith(("w0.", "w1.")) for n in names)
    assert {op.client for op in one.history.operations("connect")} == {n.split(".", 1)[1] for n in names}
    assert all(not w.survivors and w.returncode == 0 for w in two.workers)


async def hold(ctx: WorkerContext) -> None:
    """A worker that starts a child of its own, says so, and then waits far beyond the test."""
    child = await asyncio.create_subprocess_exec("sleep", "120")
    await ctx.report("held", child=child.pid, pid=os.getpid())
    await ctx.wait_signal("never", 120)


async def fail_on_one(ctx: WorkerContext) -> int:
    """Worker 1 fails after recording something; worker 0 completes."""
    ctx.history.observe(ctx.prefix + "c0", "note")
    if ctx.worker == 1:
        raise RuntimeError("worker one gives up")
    return ctx.worker


def _gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.05)  # polling a condition with a bound
    return alive


def test_an_interrupted_parent_ends_every_worker_with_its_whole_tree(tmp_path):
    """The parent's task cancelled mid-run (as by Ctrl+C): workers and their children are gone."""
    held: list[dict[str, Any]] = []

    async def main() -> None:
        async def drive() -> None:
            async with fleet(hold, "ws://127.0.0.1:9/ws", workers=2, log_dir=tmp_path) as f:
                await f.go()
                held.extend(await f.reports("held", scaled(20)))
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.ensure_future(drive())
        while len(held) < 2 and not task.done():
            await asyncio.wait({task}, timeout=0.05)
        task.cancel()
        await asyncio.wait({task}, timeout=scaled(20))
        assert task.cancelled()

    asyncio.run(main())
    pids = [h["pid"] for h in held] + [h["child"] for h in held]
    assert len(pids) == 4
    assert _gone(pids, scaled(5)) == []


def test_a_failing_worker_is_named_with_its_error_and_the_rest_is_merged(tmp_path):
    """Worker 1 raising ends the run with its traceback; worker 0's records are still merged."""
    with pytest.raises(FleetRunError, match=r"(?s)worker 1: .*RuntimeError: worker one gives up") as err:
        asyncio.run(run(fail_on_one, "ws://127.0.0.1:9/ws", workers=2, log_dir=tmp_path))
    result = err.value.result
    assert result.values[0] == 0
    assert {o.source for o in result.history.observations("note")} == {"w0.c0", "w1.c0"}
    assert all(w.returncode == 0 for w in result.workers)


@pytest.mark.skipif(not dask_engine.available(), reason="Dask distributed is not installed (the fleet extra)")
def test_churn_over_dask_workers_merges_to_the_verdicts_of_one_process(tmp_path):
    """A scheduler and two Dask workers as local processes: the churn spread over them, same verdicts."""
    async def body(sup: Supervisor) -> tuple[Any, Any]:
        one = await run(programs.churn, sup.ws_url, workers=1, seed=5, params=CHURN)
        async with dask_engine.local_cluster(2, tmp_path / "dask") as address:
            spread = await dask_engine.run_on_dask(programs.churn, sup.ws_url, scheduler=address, seed=5,
                                                   params=CHURN, timeout=scaled(30))
        return one, spread

    one, spread = asyncio.run(_with_server(tmp_path, (), body))
    assert verdicts(spread) == verdicts(one)
    assert spread.engine == "dask" and len(spread.workers) == 2
    assert os.getpid() not in {w.pid for w in spread.workers}
    assert {r.data["host"] for r in spread.history} == {spread.workers[0].host}


def test_a_history_built_by_hand_merges_like_a_workers():
    """A History's records (as a worker sends them) merge with ids renumbered past nothing."""
    h = History()
    op = h.begin("c1", "request", request_id="r1")
    h.end(op, "ok")
    merged = merge([(Origin("a", 0, ""), list(h))])
    assert [r.id for r in merged] == [1] and merged.operations()[0].data["worker"] == 0
