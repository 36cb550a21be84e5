"""Every check a scenario makes can fail: each runs against a server with that bug.

For every assertion in ``scenarios/``, this module runs the scenario case
against the reference server with the matching ``--fault`` switch and shows
that the intended check fails with a message naming the bug's numbers; and
runs every case against the correct server and shows that it passes.
Scenarios go through :func:`harness.engine.scenario.run_case`, the very path the
gate takes, so what is proven here is what the gate checks.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from harness.engine.scenario import REGISTRY, CaseOutcome, load_scenarios, run_case
from harness.target.spec import Target, reference_target

pytestmark = pytest.mark.slow

load_scenarios()


@dataclass(frozen=True)
class Proof:
    case: str
    faults: tuple[str, ...]
    check: str
    #: A regex the failing message must match: the bug's own numbers or words.
    message: str
    client_faults: tuple[str, ...] = ()
    python_probe: bool = False
    #: "fail", or "unknown" where the bug leaves the harness unable to judge.
    status: str = "fail"

    @property
    def id(self) -> str:
        faults = "+".join(self.faults + self.client_faults)
        return f"{faults}->{self.check}"


PROOFS = [
    # -- shutdown -------------------------------------------------------------
    Proof("shutdown.signal[ctrl_c-blocking]", ("to_thread_blocking",), "shutdown.exit_time", r"hung, still running at the bound \d+"),
    Proof("shutdown.signal[ctrl_c-idle]", ("nondaemon_thread",), "shutdown.exit_time", r"hung, still running at the bound \d+"),
    Proof("shutdown.signal[ctrl_c-streams]", ("noisy_shutdown",), "shutdown.output_noise", r"Traceback|KeyboardInterrupt|Task was destroyed"),
    Proof("shutdown.signal[sigterm-idle]", ("bad_exit_code",), "shutdown.exit_code", r"\b1\b"),
    Proof("shutdown.signal[ctrl_c-drain]", ("health_ok_during_drain",), "shutdown.health_503", r"\b200\b"),
    Proof("shutdown.signal[ctrl_c-drain]", ("accept_during_drain",), "shutdown.refuses_connections", r"\d+"),
    Proof("shutdown.signal[ctrl_c-streams]", ("shutdown_no_final",), "shutdown.finals", r"\d+"),
    Proof("shutdown.signal[sigterm-streams]", ("shutdown_abrupt",), "shutdown.close_codes", r"1006|None|no close"),
    Proof("shutdown.signal[ctrl_c-idle]", ("orphan_child",), "shutdown.no_survivors", r"pid \d+|\d+ process"),
    Proof("shutdown.signal[ctrl_c-idle]", ("orphan_child",), "shutdown.port_free", r"\d+"),
    Proof("shutdown.second_ctrl_c[default]", ("ignore_second_sigint",), "shutdown.forced_exit", r"\d+(\.\d+)? ms > bound \d+ ms"),
    # A hung target's exit code, output, survivors and port are wschaos's kill, not its own: not judged.
    Proof("shutdown.signal[ctrl_c-blocking]", ("to_thread_blocking",), "shutdown.exit_code", r"not judged: the target hung", status="unknown"),
    Proof("shutdown.signal[ctrl_c-blocking]", ("to_thread_blocking",), "shutdown.output_noise", r"not judged: the target hung", status="unknown"),
    Proof("shutdown.signal[ctrl_c-blocking]", ("to_thread_blocking",), "shutdown.no_survivors", r"not judged", status="unknown"),
    Proof("shutdown.watchdog[default]", ("no_watchdog",), "shutdown.exit_time", r"hung, still running at the bound \d+"),
    Proof("shutdown.watchdog[default]", ("no_watchdog",), "shutdown.watchdog_dump", r"stack|thread"),
    # -- interrupts -----------------------------------------------------------
    Proof("interrupts.storm[10x10]", ("interrupt_inline",), "interrupts.ack_latency", r"none of \d+ INTERRUPTs got an ACK|\d+ ms > bound"),
    Proof("interrupts.storm[10x10]", ("interrupt_inline",), "interrupts.one_ack_each", r"\d+"),
    Proof("interrupts.basic[one]", ("ack_without_cancel",), "interrupts.no_frames_after_ack", r"\d+ frames? after"),
    Proof("interrupts.basic[one]", ("late_chunks",), "interrupts.no_frames_after_ack", r"\d+ frames? after"),
    Proof("interrupts.basic[one]", ("ack_before_final",), "interrupts.final_before_ack", r"\d+"),
    Proof("interrupts.storm[10x10]", ("double_claim",), "interrupts.no_double_claim", r"\d+"),
    Proof("interrupts.basic[not_found]", ("global_request_ids",), "interrupts.not_found", r"SUCCESS|\d+"),
    Proof("interrupts.basic[not_found]", ("global_request_ids",), "interrupts.untouched", r"interrupted"),
    Proof("interrupts.basic[then_request]", ("sticky_interrupt",), "interrupts.request_completes", r"interrupted"),
    Proof("interrupts.upstream[default]", ("upstream_left_open",), "interrupts.upstream_closed", r"still open|\d+"),
    Proof("interrupts.blocking[default]", ("blocking_output_leak",), "interrupts.no_frames_after_ack", r"\d+ frames? after"),
    Proof("interrupts.blocking[default]", ("blocking_serializes",), "interrupts.not_delayed", r"\d+(\.\d+)? ms"),
    # -- churn and leaks --------------------------------------------------------
    Proof("churn.cycles[mixed]", ("leak_tasks",), "resources.counters_zero", r"active_requests=\d+"),
    Proof("churn.cycles[mixed]", ("leak_tasks",), "resources.back_to_baseline", r"tasks \d+ -> \d+ after 300 cycles"),
    Proof("churn.cycles[mixed]", ("leak_tasks", "stats_lie"), "resources.back_to_baseline", r"tasks \(injected probe\) \d+ -> \d+", python_probe=True),
    Proof("churn.cycles[mixed]", ("leak_tasks", "stats_lie"), "resources.probe_agrees", r"\d+", python_probe=True),
    Proof("churn.cycles[mixed]", ("leak_sockets",), "resources.back_to_baseline", r"fds \d+ -> \d+ after 300 cycles"),
    Proof("churn.cycles[mixed]", ("leak_sockets",), "resources.back_to_baseline", r"CLOSE_WAIT sockets 0 -> \d+"),
    Proof("churn.cycles[mixed]", ("leak_subscriptions",), "resources.counters_zero", r"subscriptions=\d+"),
    Proof("churn.cycles[mixed]", ("leak_session_table",), "resources.counters_zero", r"per_session_state=\d+"),
    Proof("churn.cycles[mixed]", ("leak_memory",), "resources.growth_per_1000", r"[\d.]+ MiB per 1000 cycles"),
    Proof("churn.cycles[mixed]", ("handler_growth",), "resources.latency_drift", r"x\d+(\.\d+)? > x1.5"),
    Proof("churn.cycles[mixed]", ("dup_events",), "delivery.exactly_once", r"got 2 EVENTs"),
    # -- keepalive, slow consumers, bad input -----------------------------------
    Proof("keepalive.silent_peer[stopped_reader]", ("no_keepalive",), "keepalive.dropped_within", r"within \d+"),
    Proof("keepalive.silent_peer[frozen_process]", ("no_keepalive",), "keepalive.dropped_within", r"within \d+"),
    Proof("slow_consumer.never_reads[20_streams]", ("unbounded_buffer",), "resources.memory_bounded", r"MiB"),
    Proof("slow_consumer.never_reads[20_streams]", ("global_send_lock",), "resources.latency_within", r"p99 [\d.]+ ms > bound|timed out|\d+ of \d+"),
    Proof("bad_input.table[default]", ("bad_json_closes",), "input.connection_usable@not json", r"closed with"),
    Proof("bad_input.table[default]", ("type_error_closes",), "input.connection_usable@request text wrong type", r"closed with 1011"),
    Proof("bad_input.generated[2000]", ("type_error_closes",), "input.errors_for_all", r"\d+ ERROR frames for 2000"),
    Proof("bad_input.generated[2000]", ("type_error_closes",), "resources.stats_unchanged", r"connections \d+ -> \d+"),
    Proof("bad_input.generated[2000]", ("no_max_size",), "input.closed_with@oversize frame sender", r"still open|expected 1009"),
    Proof("interrupts.basic[one]", ("seq_gap",), "interrupts.seq_gap_free", r"seq \d+"),
    Proof("interrupts.basic[then_request]", ("double_final",), "interrupts.one_terminal", r"\d+ final"),
    Proof("interrupts.basic[one]", ("wrong_ack_status",), "interrupts.ack_status", r"NOT_FOUND"),
    Proof("bad_input.generated[2000]", ("crash_on_binary",), "process.alive", r"died"),
    Proof("bad_input.table[default]", ("wrong_error_code",), "input.error_code@not json", r"BAD_MESSAGE.*BAD_JSON"),
    # -- interactive clients ----------------------------------------------------
    Proof("interactive.exit[quit-0]", (), "client.exit_time", r"did not happen within \d+", client_faults=("loop_thread_leak",)),
    Proof("interactive.exit[ctrl_c-idle]", (), "shutdown.output_noise", r"KeyboardInterrupt|Traceback", client_faults=("loop_thread_leak",)),
    Proof("interactive.exit[ctrl_c-streaming]", (), "client.terminal_usable", r"echo", client_faults=("tty_not_restored",)),
    Proof("interactive.exit[quit-q]", (), "client.closed_cleanly", r"no close frame", client_faults=("no_close_frame",)),
]


#: Checks no reference-server fault breaks, proven against another service with the bug:
#: check -> the test (``path::name``) that shows it failing there and passing on the correct one.
PROVEN_ELSEWHERE = {
    # Every reference fault that streams on does so after the ACK (late_chunks, ack_without_cancel):
    # stop_no_ack's late_stop keeps streaming between the stop and the reply's end.
    "interrupts.chunks_after_interrupt":
        "tests/test_agents.py::test_late_stop_is_a_late_answer_and_chunks_after_the_stop",
}


def _target(faults: tuple[str, ...], client_faults: tuple[str, ...] = (), python_probe: bool = False) -> Target:
    target = reference_target(faults, python_probe=python_probe)
    if client_faults:
        extra: list[str] = []
        for f in client_faults:
            extra += ["--fault", f]
        target = replace(target, interactive_client=(*target.interactive_client, *extra))
    return target


def _run(case_id: str, target: Target, tmp_path: Path, seed: int = 7) -> CaseOutcome:
    args = " ".join(f"--fault {f}" for f in target.faults)
    return asyncio.run(run_case(REGISTRY[case_id], target, seed=seed, run_dir=tmp_path, target_args=args))


def _describe(outcome: CaseOutcome) -> str:
    return "\n".join(str(v) for v in outcome.verdicts) + (f"\n{outcome.error}" if outcome.error else "")


#: One run per (case, faults): several proofs judge different checks of the same run.
_OUTCOMES: dict[tuple[object, ...], CaseOutcome] = {}


@pytest.mark.parametrize("proof", PROOFS, ids=[p.id for p in PROOFS])
def test_the_check_fails_on_its_bug(proof: Proof, tmp_path: Path) -> None:
    """The scenario run against a server with the bug fails the intended check, with numbers."""
    key = (proof.case, proof.faults, proof.client_faults, proof.python_probe)
    if key not in _OUTCOMES:
        _OUTCOMES[key] = _run(proof.case, _target(proof.faults, proof.client_faults, proof.python_probe), tmp_path)
    outcome = _OUTCOMES[key]
    matching = [v for v in outcome.verdicts if v.check == proof.check]
    assert matching, f"{proof.case} made no {proof.check} check:\n{_describe(outcome)}"
    failing = [v for v in matching if v.status == proof.status]
    assert failing, f"{proof.check} did not {proof.status} with {proof.faults + proof.client_faults}:\n{_describe(outcome)}"
    assert any(re.search(proof.message, v.message) for v in failing), (
        f"{proof.check} failed without naming the bug ({proof.message!r}):\n{_describe(outcome)}"
    )
    if proof.faults:
        assert all(f"--fault {f}" in outcome.replay for f in proof.faults), outcome.replay


CLEAN_CASES = sorted(REGISTRY)


@pytest.mark.parametrize("case_id", CLEAN_CASES)
def test_every_check_passes_on_the_correct_server(case_id: str, tmp_path: Path) -> None:
    """The same case against the correct server passes every check it makes."""
    outcome = _run(case_id, _target(()), tmp_path)
    assert outcome.skipped is None, outcome.skipped
    assert outcome.verdicts and all(v.status == "pass" for v in outcome.verdicts), _describe(outcome)


def test_every_scenario_check_has_a_proof() -> None:
    """No check a scenario makes goes unproven: each check it calls appears in a proof above (or elsewhere)."""
    proven = {p.check.split("@")[0] for p in PROOFS} | set(PROVEN_ELSEWHERE)
    made = _checks_scenarios_make()
    assert len(made) >= 30, f"the scan found too few checks to be reading the scenarios: {sorted(made)}"
    missing = sorted(made - proven)
    assert not missing, f"checks with no proof: {missing}"


def test_a_proof_made_elsewhere_names_a_test_that_exists() -> None:
    """Each check proven outside this module names a test function that is there, and no proof here."""
    root = Path(__file__).resolve().parent.parent
    for check, where in PROVEN_ELSEWHERE.items():
        path, _, fn = where.partition("::")
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert fn in names, f"{check}: {where} is not a test"
        assert check not in {p.check.split("@")[0] for p in PROOFS}, f"{check} is proven here too"


def test_every_proof_names_a_registered_check() -> None:
    """A proof names a check by its current registered name, so a renamed check cannot leave it behind."""
    from harness import checkers

    stale = sorted({p.check for p in PROOFS if p.check.split("@")[0] not in checkers.CHECKS}
                   | {c for c in PROVEN_ELSEWHERE if c not in checkers.CHECKS})
    assert not stale, f"proofs of checks no checker registers: {stale}"


def _checks_scenarios_make() -> set[str]:
    """Every registered check a scenario's source calls, however it reaches the checker.

    Each call is looked up in its module's namespace (``checkers.x``,
    ``checkers.area.rule``, or a checker imported by name) and identified by the
    registry; ``within_bound(check=...)`` makes the check it names.
    """
    from harness import checkers

    made: set[str] = set()
    for module in _scenario_modules():
        tree = ast.parse(Path(module.__file__).read_text(), filename=module.__file__)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            entry = checkers.REGISTRY.entry_for(_lookup(node.func, vars(module)))
            if entry is None:
                continue
            named = [kw.value for kw in node.keywords if kw.arg == "check"]
            if entry.name == "bounds.within" and named:
                where = f"{module.__name__}:{node.lineno}"
                assert isinstance(named[0], ast.Constant), f"{where}: check= must be a literal name"
                made.add(checkers.resolve(named[0].value).name)
            else:
                made.add(entry.name)
    return made


def _lookup(expr: ast.expr, namespace: dict[str, object]) -> object:
    """The object a dotted name (``a.b.c``) stands for in a module, or None."""
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id)
    if isinstance(expr, ast.Attribute):
        return getattr(_lookup(expr.value, namespace), expr.attr, None)
    return None


def _scenario_modules() -> list:
    return [m for name, m in sys.modules.items() if name.startswith("scenarios.") and not name.endswith("test_gate")]
