"""Four agent back ends in real shapes, described to wschaos only by their target files.

``tests/fixtures/agents/*.toml`` describe ``path_sessions`` (sessions made over
HTTP, ids in the WebSocket path, replies correlated by order), ``stop_no_ack``
(a stop nobody acknowledges: the reply's own end answers it), ``voice_agent``
(binary audio with a frame number beside JSON control frames, an ACK and no end
for the cancelled utterance) and ``llm_proxy_agent`` (FastAPI relaying wschaos's
fake OpenAI-compatible upstream through ``LLM_BASE_URL``). The interrupt,
shutdown and churn cases run on each through ``run_case``, as the gate runs
them: each correct service passes every check they make of it, and each seeded
defect fails the check meant for it (``SHAPES.md``, "What each defect should
make wschaos report").

The cases of one kind run side by side (one target each, on loopback), so the
file stays within its time budget; the checks they lean on have margins far
beyond what that costs (ACKs in milliseconds against a 200 ms bound, exits in
a fraction of a second against 4 s).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.engine.capabilities import unmet
from harness.engine.scenario import REGISTRY, Case, CaseOutcome, load_scenarios, run_case
from harness.protocol.adapters import load_adapter
from harness.target.spec import Target, load_target

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "tests" / "fixtures" / "agents"
#: The terminal client's file: it describes path_sessions too, sessions and all.
MENU_CLIENT = ROOT / "tests" / "fixtures" / "clients" / "menu_client.toml"
SERVICES = ("path_sessions", "stop_no_ack", "voice_agent", "llm_proxy_agent")
SEED = 20240601
#: Replies short enough for churn's hundreds of sessions: these services take no
#: per-request options (llm_proxy_agent's replies are shaped through the fake upstream).
QUICK = {
    "path_sessions": ("--tokens", "3", "--token-delay-ms", "1"),
    "stop_no_ack": ("--tokens", "3", "--token-delay-ms", "1"),
    "voice_agent": ("--frames-per-word", "2", "--frame-ms", "1"),
    "llm_proxy_agent": (),
}
CHURN_CYCLES = 40

load_scenarios()


@pytest.fixture(scope="module", autouse=True)
def venv_python():
    """The target files start ``python``: the project's interpreter, with the fixtures' frameworks."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    yield
    mp.undo()


def agent(name: str, *args: str) -> Target:
    target = load_target(AGENTS / f"{name}.toml")
    return target.with_args(*args) if args else target


def case(case_id: str, **params: Any) -> Case:
    c = REGISTRY[case_id]
    return replace(c, params={**c.params, **params}) if params else c


def replay_args(name: str) -> str:
    return f"--target {shlex.quote(str((AGENTS / f'{name}.toml').relative_to(ROOT)))}"


def run_side_by_side(run_dir: Path, jobs: dict[str, tuple[Case, Target, str]]) -> dict[str, CaseOutcome]:
    """Run every (case, target) job at once, each in a run directory of its own; bounded.

    A target as its file describes it replays by that file on its own; one with arguments
    added is given its replay arguments.
    """
    async def all_jobs() -> list[CaseOutcome]:
        return await asyncio.gather(*(
            run_case(c, t, seed=SEED, run_dir=run_dir / key,
                     target_args="" if t.source_file else replay_args(name))
            for key, (c, t, name) in jobs.items()))

    bound = max(c.timeout_s for c, _, _ in jobs.values()) + 30
    outcomes = asyncio.run(asyncio.wait_for(all_jobs(), bound))
    return dict(zip(jobs, outcomes, strict=True))


def describe(out: CaseOutcome) -> str:
    lines = [f"{out.case_id}: skipped={out.skipped!r} error={(out.error or '')[-400:]!r}"]
    lines += [f"  {v.status} {v.check}: {v.message}" for v in out.verdicts]
    return "\n".join(lines)


def assert_passes(out: CaseOutcome) -> None:
    """Ran, made checks, and every one passed."""
    assert out.skipped is None and out.error is None, describe(out)
    assert out.verdicts, describe(out)
    bad = [v for v in out.verdicts if v.status != "pass"]
    assert not bad, describe(out)


def made(out: CaseOutcome) -> set[str]:
    return {v.check for v in out.verdicts}


def verdict(out: CaseOutcome, check: str) -> Any:
    found = [v for v in out.verdicts if v.check == check]
    assert found, f"{check} was not made\n{describe(out)}"
    return found[0]


def assert_caught(out: CaseOutcome, check: str, why: str = "") -> None:
    """The case ran and ``check`` failed, saying ``why``."""
    assert out.skipped is None and out.error is None, describe(out)
    v = verdict(out, check)
    assert v.status == "fail" and re.search(why, v.message), describe(out)


# -- the target files -------------------------------------------------------------------

@pytest.mark.parametrize("name", SERVICES)
def test_each_target_file_loads_and_says_what_its_protocol_has(name):
    """Each file gives a declarative adapter; its messages are what the service has, no more."""
    target = agent(name)
    adapter = load_adapter(target)
    want = {
        "path_sessions": {"request", "interrupt", "ack", "final"},
        "stop_no_ack": {"request", "interrupt", "interrupt_target", "final"},
        "voice_agent": {"request", "interrupt", "ack", "seq"},
        "llm_proxy_agent": {"request", "interrupt", "interrupt_target", "ack", "final"},
    }[name]
    assert adapter.messages == want
    assert target.base_dir == str(AGENTS)


def test_what_a_service_lacks_skips_with_the_reason():
    """A case needing an ACK, a final for a stopped reply, targeted interrupts or pub/sub says so."""
    assert unmet({"message:ack"}, agent("stop_no_ack")) == [
        "needs interrupts to be acknowledged (the target sends no ACK: interrupt.answer)"]
    assert unmet({"message:final"}, agent("voice_agent")) == [
        "needs a final frame for a stopped reply (the target sends none: interrupt.answer)"]
    assert unmet({"message:interrupt_target"}, agent("path_sessions")) == [
        "needs interrupts that name the request they stop (the target's interrupt names none, "
        "it stops whatever runs)"]
    assert unmet({"message:subscribe"}, agent("llm_proxy_agent")) == [
        "needs the SUBSCRIBE message (the target's protocol has none)"]
    assert unmet({"stats"}, agent("voice_agent")) == []  # its injected Python probe


def test_cases_that_interrupt_one_reply_of_several_need_interrupts_that_name_it(tmp_path):
    """basic[not_found] needs targeted, acknowledged interrupts; untargeted ones stream one reply per session."""
    from harness.engine.scenario import Context
    from scenarios.interrupts import _streams_per_session

    not_found = case("interrupts.basic[not_found]")
    assert {"message:interrupt_target", "message:ack"} <= not_found.requires
    assert "message:interrupt_target" not in case("interrupts.basic[one]").requires
    for name, why in (("path_sessions", "name the request they stop"), ("stop_no_ack", "to be acknowledged")):
        out = asyncio.run(run_case(not_found, agent(name), seed=SEED, run_dir=tmp_path / name))
        assert out.skipped is not None and why in out.skipped and not out.verdicts

    def streams(target: Target) -> int:
        return _streams_per_session(Context(case("interrupts.basic[one]"), target, seed=SEED, run_dir=tmp_path))

    # Side by side it could run three, but its interrupt would stop them all where one is meant.
    assert streams(agent("path_sessions").with_limits(max_concurrent_requests=8)) == 1
    assert streams(agent("stop_no_ack")) == 3


# -- interrupts ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def interrupt_runs(tmp_path_factory) -> dict[str, CaseOutcome]:
    """interrupts.basic[one] on every service (and path_sessions as menu_client.toml describes it),
    audio_after_cancel, and interrupts.upstream with and without its defect."""
    basic = case("interrupts.basic[one]")
    jobs = {name: (basic, agent(name), name) for name in SERVICES}
    jobs["voice_agent+audio_after_cancel"] = (basic, agent("voice_agent", "--defect", "audio_after_cancel"),
                                               "voice_agent")
    up = case("interrupts.upstream[default]")
    jobs["upstream"] = (up, agent("llm_proxy_agent"), "llm_proxy_agent")
    jobs["upstream+upstream_left_open"] = (up, agent("llm_proxy_agent", "--defect", "upstream_left_open"),
                                           "llm_proxy_agent")
    jobs["menu_client"] = (basic, load_target(MENU_CLIENT), "path_sessions")
    return run_side_by_side(tmp_path_factory.mktemp("interrupts"), jobs)


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_one_interrupt_is_answered_promptly_and_nothing_of_the_reply_follows(interrupt_runs, name):
    """interrupts.basic[one]: the answer (ACK, or the stopped reply's end) is prompt and final."""
    out = interrupt_runs[name]
    assert_passes(out)
    for check in ("interrupts.ack_status", "interrupts.ack_latency", "interrupts.no_frames_after_ack",
                  "interrupts.one_terminal", "interrupts.chunks_after_interrupt"):
        assert verdict(out, check).status == "pass"
    # Held only to what it says: a sequence where chunks are numbered, claims where ACKs name them.
    assert ("interrupts.seq_gap_free" in made(out)) == (name == "voice_agent"), describe(out)
    claims = {"interrupts.final_before_ack", "interrupts.no_double_claim"}
    assert (claims <= made(out)) == (name == "llm_proxy_agent") and (claims & made(out) in (set(), claims))
    # Replayed by its own target file, with no target arguments given to run_case.
    target_file = shlex.quote(str(AGENTS / f"{name}.toml"))
    assert out.replay == f"wschaos run --case 'interrupts.basic[one]' --seed {SEED} --target {target_file}"


@pytest.mark.slow
def test_wschaos_opens_path_sessions_as_the_menu_clients_file_describes_it(interrupt_runs):
    """menu_client.toml declares path_sessions' sessions: wschaos's own client connects and interrupts a reply."""
    out = interrupt_runs["menu_client"]
    assert_passes(out)
    made = out_history(out).operations("session_create")
    assert made and all(op.outcome == "ok" and op.data["status"] == 201 for op in made)


@pytest.mark.slow
def test_audio_after_cancel_is_frames_after_the_answer(interrupt_runs):
    """voice_agent --defect audio_after_cancel: the queued audio and its end come after "cancelled"."""
    out = interrupt_runs["voice_agent+audio_after_cancel"]
    assert_caught(out, "interrupts.no_frames_after_ack", r"frames after its ACK")
    assert_caught(out, "interrupts.one_terminal", r"2 final frames")
    assert verdict(out, "interrupts.ack_latency").status == "pass"  # it does answer at once


@pytest.mark.slow
def test_the_upstream_is_closed_by_an_interrupt_or_the_defect_is_named(interrupt_runs):
    """llm_proxy_agent: the fake upstream sees its stream closed at once; upstream_left_open keeps it open."""
    assert_passes(interrupt_runs["upstream"])
    assert verdict(interrupt_runs["upstream"], "interrupts.upstream_closed").status == "pass"
    out = interrupt_runs["upstream+upstream_left_open"]
    assert_caught(out, "interrupts.upstream_closed", r"still open")
    assert verdict(out, "interrupts.ack_latency").status == "pass"  # the ACK itself is fast


@pytest.fixture(scope="module")
def storm_runs(tmp_path_factory) -> dict[str, CaseOutcome]:
    """interrupts.storm[10x10] on every service, one at a time (each is 100 interrupts at once), and late_stop."""
    storm = case("interrupts.storm[10x10]")
    base = tmp_path_factory.mktemp("storms")
    out: dict[str, CaseOutcome] = {}
    for name in SERVICES:
        out.update(run_side_by_side(base, {name: (storm, agent(name), name)}))
    out.update(run_side_by_side(base, {"stop_no_ack+late_stop": (
        storm, agent("stop_no_ack", "--defect", "late_stop"), "stop_no_ack")}))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_a_storm_of_interrupts_gets_one_answer_each(storm_runs, name):
    """interrupts.storm[10x10]: 100 interrupts at once, each answered once, none claiming a reply twice."""
    out = storm_runs[name]
    assert_passes(out)
    assert out.figures["interrupts"] == 100
    assert verdict(out, "interrupts.one_ack_each").status == "pass"
    assert verdict(out, "interrupts.chunks_after_interrupt").status == "pass"  # in flight is not late


@pytest.mark.slow
def test_late_stop_is_a_late_answer_and_chunks_after_the_stop(storm_runs):
    """stop_no_ack --defect late_stop: replies run on up to 19 chunks after the stop, so their end is late."""
    out = storm_runs["stop_no_ack+late_stop"]
    assert_caught(out, "interrupts.ack_latency", r"> bound 200 ms")
    assert_caught(out, "interrupts.chunks_after_interrupt",
                  r"INTERRUPT \S+ of \S+: \d+ chunks of the replies it stopped more than 200 ms after it")
    assert verdict(out, "interrupts.one_ack_each").status == "pass"
    ops = [o for o in out_history(out).operations("interrupt") if o.data.get("answered_by") == "final"]
    assert ops and max(o.data["chunks_after"] for o in ops) >= 2  # chunks kept coming after the stop


def out_history(out: CaseOutcome) -> Any:
    from harness.core.history import History

    return History.from_jsonl(Path(out.artifacts["history"]))


# -- shutdown -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shutdown_runs(tmp_path_factory) -> dict[str, CaseOutcome]:
    """shutdown.signal[ctrl_c-streams] on every service, and on each with --defect exit_hang."""
    sd = case("shutdown.signal[ctrl_c-streams]")
    jobs = {name: (sd, agent(name), name) for name in SERVICES}
    jobs |= {f"{name}+exit_hang": (sd, agent(name, "--defect", "exit_hang"), name) for name in SERVICES}
    return run_side_by_side(tmp_path_factory.mktemp("shutdown"), jobs)


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_ctrl_c_while_streaming_exits_at_once_and_closes_every_socket(shutdown_runs, name):
    """shutdown.signal[ctrl_c-streams]: exit 0 within the grace, quiet, every client closed with its declared code."""
    out = shutdown_runs[name]
    assert_passes(out)
    assert verdict(out, "shutdown.close_codes").status == "pass"


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_exit_hang_is_an_exit_that_never_comes(shutdown_runs, name):
    """--defect exit_hang: the sockets close as they should, then the process never exits."""
    out = shutdown_runs[f"{name}+exit_hang"]
    assert_caught(out, "shutdown.exit_time", r"hung, still running at the bound")
    assert verdict(out, "shutdown.close_codes").status == "pass"  # the close frames do arrive


# -- churn --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def churn_runs(tmp_path_factory) -> dict[str, CaseOutcome]:
    """churn.cycles[mixed] with fewer cycles on every service, and on path_sessions with leak_sessions."""
    ch = case("churn.cycles[mixed]", cycles=CHURN_CYCLES)
    base = tmp_path_factory.mktemp("churn")
    jobs = {name: (ch, agent(name, *QUICK[name]), name) for name in SERVICES}
    jobs["path_sessions+leak_sessions"] = (
        ch, agent("path_sessions", *QUICK["path_sessions"], "--defect", "leak_sessions"), "path_sessions")
    # Two at a time, alike in pace: the latency drift they judge compares the first and the
    # last tenth of a run, which the load of a run starting or ending in between would skew.
    out: dict[str, CaseOutcome] = {}
    for pair in (("path_sessions", "path_sessions+leak_sessions"), ("stop_no_ack", "voice_agent"),
                 ("llm_proxy_agent",)):
        out.update(run_side_by_side(base, {key: jobs[key] for key in pair}))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_sessions_opened_and_closed_every_way_leave_nothing_behind(churn_runs, name):
    """churn.cycles[mixed]: counters, tasks, threads, fds and sockets back to their baseline."""
    out = churn_runs[name]
    assert_passes(out)
    assert out.figures["cycles"] == CHURN_CYCLES


@pytest.mark.slow
def test_churn_makes_and_removes_a_session_per_client(churn_runs):
    """path_sessions: every client's session is made over HTTP first and removed after it has gone."""
    h = out_history(churn_runs["path_sessions"])
    made = h.operations("session_create")
    removed = h.operations("session_delete")
    assert made and all(op.outcome == "ok" and op.data["status"] == 201 for op in made)
    assert {op.data["session_id"] for op in removed} == {op.data["session_id"] for op in made}
    # Dropped with its socket, as it should be: the DELETE finds it gone.
    assert all(op.data["status"] == 404 and op.data["removed"] for op in removed)


@pytest.mark.slow
def test_leak_sessions_is_a_session_count_that_never_comes_down(churn_runs):
    """path_sessions --defect leak_sessions: sessions stay counted after every client has gone."""
    out = churn_runs["path_sessions+leak_sessions"]
    assert_caught(out, "resources.counters_zero", r"not back to 0: sessions=\d+")
    assert verdict(out, "resources.latency_drift").status in ("pass", "fail")  # judged, not skipped
