"""Comparing a run against its baseline: metrics only, noise that does not count, runs not comparable.

The runs here are built from data shaped like a real default gate run against
the reference server (the same check names, figure names, labels and
magnitudes), so the comparison logic is tested without running anything; the
one real slowdown is in ``tests/test_compare_slowdown.py``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.compare import Comparison, Rule, compare, rank_test_p
from harness.results.gate import ExitCode
from harness.results.schema import CaseResult, RunResult, TargetInfo, VerdictResult
from harness.results.store import save_run

BOUND_MS = 200.0
RSS_BOUND = 48 * 2**20


def ack_verdict(p99: float, p50: float | None = None) -> VerdictResult:
    p50 = p99 * 0.9 if p50 is None else p50
    return VerdictResult("interrupts.ack_latency", "pass", f"ACK p99 {p99:.1f} ms <= bound 200 ms", {
        "interrupts": 1, "answered": 1, "unanswered": 0, "bound_ms": BOUND_MS, "percentile": 99,
        "p99_ms": p99, "p50_ms": p50, "max_ms": p99 * 1.01})


def churn_case(*, cycles: int = 300, parallel: int = 10, per_1000: float = 3.0e6, tasks_after: int = 5,
               repeat: int = 0) -> CaseResult:
    def back(name: str, baseline: int, after: int, allowed: int) -> VerdictResult:
        return VerdictResult("resources.back_to_baseline", "pass", f"{name} {baseline} -> {after}", {
            "name": name, "baseline": baseline, "after": after, "allowed": allowed, "cycles": cycles,
            "delta": float(after - baseline)})
    return CaseResult("churn.cycles[mixed]", "churn.cycles", {"cycles": cycles, "parallel": parallel}, repeat, 9.0, [
        back("tasks", 4, tasks_after, 2), back("threads", 2, 2, 1), back("fds", 14, 15, 4),
        back("CLOSE_WAIT sockets", 0, 0, 0),
        VerdictResult("resources.growth_per_1000", "pass", "rss grows", {
            "name": "rss", "points": 30, "used": 27, "bound_per_1000": RSS_BOUND, "unit": "B",
            "per_1000": per_1000, "first": 4.1e7, "last": 4.2e7}),
        VerdictResult("resources.latency_drift", "pass", "drift", {
            "points": 30, "first_median_ms": 2.4, "last_median_ms": 2.6, "ratio": 1.08, "bound_ratio": 1.5}),
    ], figures={"cycles": cycles, "tasks_delta": tasks_after - 4})


def shutdown_case(*, exit_ms: float = 190.0, port: int = 46450, repeat: int = 0) -> CaseResult:
    what = "exit after ctrl_c (streams)"
    return CaseResult("shutdown.signal[ctrl_c-streams]", "shutdown.signal", {"how": "ctrl_c", "load": "streams"},
                      repeat, 2.0, [
        VerdictResult("shutdown.exit_time", "pass", f"{what} took {exit_ms} ms", {
            "what": what, "exit_ms": exit_ms, "bound_ms": 4000.0, "hung": False}),
        VerdictResult("shutdown.exit_code", "pass", "exit code 0", {"returncode": 0, "allowed": [0],
                                                                     "signal_killed": None}),
        VerdictResult("shutdown.port_free", "pass", f"port {port} free", {"free": True, "port": port}),
    ], figures={"exit_ms": exit_ms})


def interrupt_cases(acks: dict[str, float], repeat: int = 0) -> list[CaseResult]:
    return [CaseResult(f"interrupts.basic[{mode}]", "interrupts.basic", {"mode": mode}, repeat, 2.0,
                       [ack_verdict(p99), VerdictResult("interrupts.no_frames_after_ack", "pass", "none", {
                           "claims": 3, "requests_with_late_frames": 0, "late_frames": 0, "grace_ms": 0})],
                       figures={"ack_p99_ms": p99, "ack_latencies_ms": [p99 * 0.8, p99]})
            for mode, p99 in acks.items()]


GATE_ACKS = {"one": 0.471, "all": 0.7, "not_found": 0.52, "then_request": 0.61}


def gate_run(run_id: str, *, acks: dict[str, float] | None = None, per_1000: float = 3.0e6,
             port: int = 46450, exit_ms: float = 190.0, profile: str = "gate", cycles: int = 300,
             parallel: int = 10, repeats: int = 1, jitter: float = 0.0) -> RunResult:
    """A gate run's interrupts, churn and shutdown cases; ``repeats`` copies with ``jitter`` (relative) noise."""
    cases: list[CaseResult] = []
    for r in range(repeats):
        wobble = 1 + jitter * math.sin(3.7 * r + len(run_id))
        cases += interrupt_cases({k: v * wobble for k, v in (acks or GATE_ACKS).items()}, repeat=r)
        cases.append(churn_case(cycles=cycles, parallel=parallel, per_1000=per_1000 * wobble, repeat=r))
        cases.append(shutdown_case(exit_ms=exit_ms * wobble, port=port + r, repeat=r))
    return RunResult(run_id, "2026-01-01T00:00:00Z", TargetInfo("reference"), seed=1, profile=profile,
                     status="complete", cases=cases)


def regressed(cmp: Comparison) -> set[tuple[str, str, str]]:
    return {(f.case_id, f.check, f.figure) for f in cmp.regressions}


# -- noise ---------------------------------------------------------------------------------


def test_noise_level_differences_are_not_regressions():
    """The differences of two runs of a correct server (sub-ms ACKs +33 %, RSS slope +66 %, another port) are noise."""
    base = gate_run("base")
    new = gate_run("new", acks={"one": 0.627, "all": 0.95, "not_found": 0.66, "then_request": 0.85},
                   per_1000=4.981e6, port=34760, exit_ms=260.0)
    cmp = compare(base, new)
    assert cmp.regressions == [] and cmp.verdict_regressions == [] and cmp.ok
    assert cmp.comparable and cmp.not_comparable == []
    noise = {(f.case_id, f.figure) for f in cmp.noise}
    assert ("interrupts.basic[one]", "p99_ms") in noise
    assert ("churn.cycles[mixed]", "per_1000") in noise
    one = next(f for f in cmp.noise if f.case_id == "interrupts.basic[one]" and f.figure == "p99_ms")
    assert one.floor == pytest.approx(20.0) and one.bound == BOUND_MS  # a tenth of the 200 ms bound
    assert "0.471 ms → 0.627 ms" in one.line() and "bound 200 ms" in one.line()


def test_port_and_cycle_count_are_never_compared():
    """A port number and a cycle count never become a figure change, however far they move."""
    cmp = compare(gate_run("base", port=46450), gate_run("new", port=1024))
    assert cmp.ok and not any(f.figure in ("port", "cycles", "pid") for f in cmp.figures)
    assert not any("port" in line for line in cmp.lines())
    # A cycle count that differs makes the case not comparable instead: never a "+900 %".
    cmp = compare(gate_run("base"), gate_run("new", cycles=3000))
    assert not any(f.figure == "cycles" for f in cmp.figures)
    (nc,) = cmp.not_comparable
    assert nc.case_id == "churn.cycles[mixed]" and ("cycles", 300, 3000) in nc.differences
    assert cmp.ok


def test_untyped_figure_is_listed_not_compared():
    """A figure the table does not know is reported as untyped and never judged."""
    base, new = gate_run("base"), gate_run("new")
    base.cases[0].verdicts[0].figures["wobble_factor"] = 1.0
    new.cases[0].verdicts[0].figures["wobble_factor"] = 100.0
    cmp = compare(base, new)
    assert cmp.ok and "interrupts.basic[one]::interrupts.ack_latency wobble_factor" in cmp.untyped
    assert any("untyped" in line for _, line in cmp.report_lines())


# -- runs that are not comparable ------------------------------------------------------------


def test_gate_against_release_profile_is_not_comparable():
    """A gate run against a release run: every case not comparable, with the differing parameters; no regression."""
    base = gate_run("gate")
    new = gate_run("release", profile="release", cycles=3000, parallel=20, repeats=3, jitter=0.3,
                   acks={k: v * 3 for k, v in GATE_ACKS.items()})
    cmp = compare(base, new)
    assert cmp.regressions == [] and cmp.verdicts == [] and cmp.figures == []
    assert not cmp.comparable and cmp.ok
    by_case = {nc.case_id: nc.differences for nc in cmp.not_comparable}
    assert set(by_case) == {c.case_id for c in base.cases}
    assert ("profile", "gate", "release") in by_case["interrupts.basic[one]"]
    churn = by_case["churn.cycles[mixed]"]
    assert ("cycles", 300, 3000) in churn and ("parallel", 10, 20) in churn
    assert not any(name.endswith(" cycles") for name, _, _ in churn)  # listed once, as the case parameter
    assert "NOT COMPARABLE" in cmp.verdict_word()


def test_a_different_bound_makes_a_case_not_comparable():
    """A check held to another bound (a different time factor or target limit) is not judged against the old one."""
    base, new = gate_run("base"), gate_run("new", acks={k: v + 30 for k, v in GATE_ACKS.items()})
    for case in new.cases:
        for v in case.verdicts:
            if "bound_ms" in v.figures:
                v.figures["bound_ms"] = 400.0
    cmp = compare(base, new)
    assert cmp.regressions == []
    diffs = {nc.case_id: nc.differences for nc in cmp.not_comparable}
    assert ("interrupts.ack_latency bound_ms", 200.0, 400.0) in diffs["interrupts.basic[one]"]


# -- real regressions -------------------------------------------------------------------------


def test_seeded_slowdown_is_exactly_that_regression():
    """ACK latency 50 ms higher in every interrupts case (with the rest at noise level) is reported as just that."""
    base = gate_run("base")
    new = gate_run("new", acks={k: v + 50 for k, v in GATE_ACKS.items()}, per_1000=4.0e6, port=33333)
    cmp = compare(base, new)
    assert {(c, k) for c, k, _ in regressed(cmp)} == {(f"interrupts.basic[{m}]", "interrupts.ack_latency")
                                                      for m in GATE_ACKS}
    assert {fig for _, _, fig in regressed(cmp)} == {"p50_ms", "p99_ms"}
    one = next(f for f in cmp.regressions if f.case_id == "interrupts.basic[one]" and f.figure == "p99_ms")
    assert one.base_value == pytest.approx(0.471) and one.new_value == pytest.approx(50.471)
    assert "bound 200 ms" in one.line() and "one value a side" in one.line()
    assert not cmp.ok and "REGRESSED" in cmp.verdict_word()


def test_change_using_a_quarter_of_the_bound_counts_under_the_tolerance():
    """An exit time 1000 ms slower on a 3000 ms base (+33 %... and +11 % on 9 s) counts once it uses 25 % of its bound."""
    base, new = gate_run("base", exit_ms=3000.0), gate_run("new", exit_ms=3550.0)
    assert compare(base, new).ok  # +18 %, 550 ms of a 4000 ms bound: under both
    new = gate_run("new", exit_ms=4010.0)
    assert ("shutdown.signal[ctrl_c-streams]", "shutdown.exit_time", "exit_ms") in regressed(compare(base, new))
    big = compare(base, gate_run("new", exit_ms=4010.0), rule=Rule(tolerance=0.5))
    assert ("shutdown.signal[ctrl_c-streams]", "shutdown.exit_time", "exit_ms") in regressed(big)


def test_pass_to_fail_is_a_verdict_regression():
    """A check that passed in the baseline and fails now is a regression whatever its figures."""
    base, new = gate_run("base"), gate_run("new")
    new.cases[0].verdicts[1].status = "fail"
    cmp = compare(base, new)
    (v,) = cmp.verdict_regressions
    assert (v.case_id, v.check, v.base, v.new) == ("interrupts.basic[one]", "interrupts.no_frames_after_ack",
                                                   "pass", "fail")
    assert cmp.lines()[0] == "interrupts.basic[one]::interrupts.no_frames_after_ack: pass → fail"


def test_verdicts_of_one_check_are_told_apart_by_their_name():
    """resources.back_to_baseline for tasks and for fds are compared each with its own baseline."""
    base = gate_run("base")
    new = gate_run("new")
    churn = next(c for c in new.cases if c.case_id == "churn.cycles[mixed]")
    churn.verdicts[0].figures["delta"] = 4.0  # tasks 4 -> 8: worse by 3, over the floor of 1
    churn.verdicts[0].figures["after"] = 8
    (f,) = compare(base, new).regressions
    assert (f.check, f.label, f.figure, f.base_value, f.new_value) == ("resources.back_to_baseline", "tasks",
                                                                       "delta", 1.0, 4.0)
    assert f.where == "churn.cycles[mixed]::resources.back_to_baseline[tasks]"


# -- repeats: distributions, and how sure --------------------------------------------------


def test_repeats_compare_distributions_and_say_how_sure():
    """Three repeats a side: overlapping values are not a regression; +50 ms on every repeat is, at p = 0.05."""
    base = gate_run("base", repeats=3, jitter=0.4)
    noisy = gate_run("noisy", repeats=3, jitter=0.4, acks={k: v * 1.6 for k, v in GATE_ACKS.items()})
    assert compare(base, noisy).ok
    slow = gate_run("slow", repeats=3, jitter=0.4, acks={k: v + 50 for k, v in GATE_ACKS.items()})
    cmp = compare(base, slow)
    one = next(f for f in cmp.regressions if f.case_id == "interrupts.basic[one]" and f.figure == "p99_ms")
    assert len(one.base) == len(one.new) == 3 and one.p_value == pytest.approx(0.05)
    assert "rank test p = 0.05" in one.sure
    # One slow repeat in three moves the median little and the rank test not at all.
    one_off = gate_run("one_off", repeats=3, jitter=0.4)
    one_off.cases[0].verdicts[0].figures["p99_ms"] = 80.0
    assert not any(f.case_id == "interrupts.basic[one]" for f in compare(base, one_off).regressions)


def test_rank_test_exact_and_approximate():
    """p-values are the textbook Mann-Whitney U's, exact for small samples, approximate for large ones."""
    assert rank_test_p([1, 2, 3], [4, 5, 6]) == pytest.approx(1 / 20)
    assert rank_test_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(1 / 252)
    assert rank_test_p([4, 5, 6], [1, 2, 3]) == pytest.approx(1.0)
    assert rank_test_p([1, 1, 1], [1, 1, 1]) == pytest.approx(1.0)
    base = [float(x) for x in range(1, 31)]
    assert 0.0 < rank_test_p(base, [x + 6 for x in base]) < 0.05  # 30 a side: the normal approximation
    with pytest.raises(ValueError):
        rank_test_p([], [1.0])


# -- the comparison as data and on the command line -------------------------------------------


def test_comparison_round_trips_through_its_dict():
    """The comparison kept in results.json renders the same regressions, verdict changes and cases."""
    base = gate_run("base")
    new = gate_run("new", acks={k: v + 50 for k, v in GATE_ACKS.items()}, cycles=3000)
    new.cases[0].verdicts[1].status = "fail"
    cmp = compare(base, new)
    data = json.loads(json.dumps(cmp.to_dict()))
    back = Comparison.from_dict(data)
    assert back.lines() == cmp.lines() and back.verdict_word() == cmp.verdict_word()
    assert [nc.line() for nc in back.not_comparable] == [nc.line() for nc in cmp.not_comparable]
    assert data["regressions"][0]["bound"] == BOUND_MS and data["rule"]["tolerance"] == 0.2


def _save(run: RunResult, root: Path) -> str:
    d = root / run.run_id
    d.mkdir()
    save_run(run, d)
    return str(d)


def test_cli_compare_exit_codes(tmp_path, capsys):
    """compare exits 0 on noise, 1 on a regression, 5 when nothing was run the same way; --json parses."""
    base = _save(gate_run("base"), tmp_path)
    noise = _save(gate_run("noise", acks={"one": 0.627, "all": 0.95, "not_found": 0.66, "then_request": 0.85},
                           per_1000=4.981e6, port=34760), tmp_path)
    slow = _save(gate_run("slow", acks={k: v + 50 for k, v in GATE_ACKS.items()}), tmp_path)
    release = _save(gate_run("release", profile="release", cycles=3000, parallel=20, repeats=3), tmp_path)
    assert main(["compare", base, noise]) == ExitCode.OK
    err = capsys.readouterr().err
    assert "regressions: 0" in err and "OK: no regressions" in err and "port" not in err
    assert main(["compare", base, slow, "--markdown"]) == ExitCode.CHECKS_FAILED
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if "interrupts.basic[one]::interrupts.ack_latency` | p99_ms" in ln)
    assert "0.471 ms | 50.47 ms | 200 ms" in row
    assert main(["compare", base, release, "--json"]) == ExitCode.NO_CHECKS
    data = json.loads(capsys.readouterr().out)
    assert data["comparable"] is False and len(data["not_comparable"]) == 6
    assert main(["compare", base, noise, "--tolerance", "-1"]) == ExitCode.USAGE_ERROR


def test_noise_rule_copes_with_a_zero_base():
    """From a zero base only the absolute floor decides: 0 -> 0.4 ms is noise, 0 -> 60 ms a regression."""
    base = gate_run("base", acks={"one": 0.0})
    assert compare(base, gate_run("new", acks={"one": 0.4})).ok
    cmp = compare(base, gate_run("new", acks={"one": 60.0}))
    f = next(f for f in cmp.regressions if f.figure == "p99_ms")
    assert f.change is None and "from 0" in f.line()
    assert copy.deepcopy(cmp).ok is False


def test_run_with_a_bad_baseline_is_a_usage_error_before_it_starts(tmp_path, capsys):
    """``run --baseline`` naming no saved run is one line and exit 4, before any case runs."""
    code = main(["run", "--baseline", str(tmp_path / "nope"), "--report-dir", str(tmp_path / "reports")])
    assert code == ExitCode.USAGE_ERROR
    assert "no such results file" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
