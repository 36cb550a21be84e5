"""The wschaos pytest plugin, seen from a project's own test suite (pytest's ``pytester``).

Settings come from, in order: a marker, the command-line option, the
environment, the ini file; a bad value names where it came from. The active
target, seed and profile are in the report header. The ``wschaos`` fixture
runs registered cases and ad-hoc async bodies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.core.timing import scaled

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

#: A test that reports the settings it sees, as a project's test would use the fixtures.
SHOW_SETTINGS = """
def test_show(wschaos, wschaos_seed):
    print(f"SEED={wschaos_seed} PROFILE={wschaos.settings.profile} TARGET={wschaos.target.name}")
"""

#: An ad-hoc body that records the seed and profile it ran with, without starting anything.
RECORD_BODY = """
import pytest
from harness.core.verdict import passed

def record(wschaos):
    def body(ctx):
        async def run():
            ctx.check(passed("adhoc.settings", f"seed={ctx.seed} profile={ctx.profile}"))
        return run()
    outcome = wschaos.run(body)
    print("RAN", outcome.verdicts[0].message)

def test_plain(wschaos):
    record(wschaos)

@pytest.mark.wschaos_seed(99)
@pytest.mark.wschaos_profile("release")
def test_marked(wschaos):
    record(wschaos)
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("WSCHAOS_SEED", "WSCHAOS_PROFILE", "WSCHAOS_TARGET", "WSCHAOS_TARGET_CMD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def ini(pytester: pytest.Pytester, **values: str) -> None:
    body = "".join(f"{k} = {v}\n" for k, v in values.items())
    pytester.makeini(f"[pytest]\n{body}")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-s", "-p", "no:cacheprovider", "--wschaos-run-dir", str(pytester.path / "run"), *args)


# -- settings: marker, option, environment, ini -------------------------------------


@pytest.mark.parametrize(
    ("env", "ini_seed", "args", "expected"),
    [
        (None, None, (), None),
        (None, "5", (), "SEED=5"),
        ("6", "5", (), "SEED=6"),
        ("6", "5", ("--wschaos-seed", "7"), "SEED=7"),
    ],
    ids=["random", "ini", "env-over-ini", "option-over-env"],
)
def test_seed_precedence(pytester: pytest.Pytester, clean_env, env, ini_seed, args, expected) -> None:
    """The option beats the environment, which beats the ini file; with none, a random seed."""
    if ini_seed:
        ini(pytester, wschaos_seed=ini_seed)
    if env:
        clean_env.setenv("WSCHAOS_SEED", env)
    pytester.makepyfile(SHOW_SETTINGS)
    result = run(pytester, *args)
    result.assert_outcomes(passed=1)
    if expected:
        result.stdout.fnmatch_lines([f"*{expected} PROFILE=gate TARGET=reference*"])
    else:
        result.stdout.fnmatch_lines(["*wschaos: target reference*, seed * (random), profile gate*"])


def test_profile_precedence(pytester: pytest.Pytester, clean_env) -> None:
    """Profile: the environment beats the ini file, the option beats both."""
    ini(pytester, wschaos_profile="gate")
    clean_env.setenv("WSCHAOS_PROFILE", "release")
    pytester.makepyfile(SHOW_SETTINGS)
    run(pytester).stdout.fnmatch_lines(["*PROFILE=release*"])
    run(pytester, "--wschaos-profile", "gate").stdout.fnmatch_lines(["*PROFILE=gate*"])


@pytest.mark.parametrize(
    ("where", "value", "names"),
    [
        ("env", "abc", "$WSCHAOS_SEED: seed 'abc' is not an integer"),
        ("option", "abc", "--wschaos-seed: seed 'abc' is not an integer"),
        ("ini", "abc", "ini wschaos_seed: seed 'abc' is not an integer"),
        ("profile-env", "nightly", "$WSCHAOS_PROFILE: profile 'nightly' is not one of gate, release"),
        ("profile-ini", "nightly", "ini wschaos_profile: profile 'nightly' is not one of gate, release"),
    ],
)
def test_bad_setting_names_its_source(pytester: pytest.Pytester, clean_env, where, value, names) -> None:
    """A bad seed or profile is a usage error naming the option, variable or ini key it came from."""
    args: tuple[str, ...] = ()
    if where == "env":
        clean_env.setenv("WSCHAOS_SEED", value)
    elif where == "option":
        args = ("--wschaos-seed", value)
    elif where == "ini":
        ini(pytester, wschaos_seed=value)
    elif where == "profile-env":
        clean_env.setenv("WSCHAOS_PROFILE", value)
    else:
        ini(pytester, wschaos_profile=value)
    pytester.makepyfile(SHOW_SETTINGS)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert names in result.stderr.str()


def test_bad_target_file_names_the_file(pytester: pytest.Pytester, clean_env) -> None:
    """A target file with a typo: a usage error naming the file and the key."""
    target = pytester.path / "t.toml"
    target.write_text('cmd = "python -m svc --port {port}"\nws_pth = "/ws"\n')
    pytester.makepyfile(SHOW_SETTINGS)
    result = run(pytester, "--wschaos-target", str(target))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{target}: unknown key(s) ws_pth" in result.stderr.str()


def test_header_names_target_seed_and_profile(pytester: pytest.Pytester, clean_env) -> None:
    """The report header says which target, seed and profile are in force, and where each came from."""
    pytester.makepyfile(SHOW_SETTINGS)
    result = run(pytester, "--wschaos-seed", "42", "--wschaos-profile", "release", "--wschaos-fault", "seq_gap")
    result.stdout.fnmatch_lines([
        "wschaos: target reference (embedded reference server, faults seq_gap), seed 42 (--wschaos-seed), "
        "profile release, time factor *",
    ])


def test_pyproject_target_is_picked_up(pytester: pytest.Pytester, clean_env) -> None:
    """A [tool.wschaos.target] table in the project's pyproject is the default target."""
    pytester.makepyprojecttoml(
        '[tool.wschaos.target]\nname = "chat"\ncmd = "python -m chat --port {port}"\n'
    )
    pytester.makepyfile(SHOW_SETTINGS)
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert "wschaos: target chat (pyproject [tool.wschaos.target]), seed " in result.stdout.str()
    result.stdout.fnmatch_lines(["*TARGET=chat*"])


# -- the fixture ------------------------------------------------------------------------


def test_markers_set_seed_and_profile_of_one_test(pytester: pytest.Pytester, clean_env) -> None:
    """@wschaos_seed and @wschaos_profile override the session's settings for that test only."""
    pytester.makepyfile(RECORD_BODY)
    result = run(pytester, "--wschaos-seed", "3", "--strict-markers")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*RAN seed=3 profile=gate*", "*RAN seed=99 profile=release*"])


def test_failing_adhoc_body_fails_the_test_with_a_rerun_line(pytester: pytest.Pytester, clean_env) -> None:
    """A body whose check fails fails the test with the verdict and the command that reruns it."""
    pytester.makepyfile("""
        from harness.core.verdict import fail

        def test_it(wschaos):
            async def body(ctx):
                ctx.check(fail("adhoc.broken", "3 frames after the ACK"))
            wschaos.run(body)
    """)
    result = run(pytester, "--wschaos-seed", "11")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FAIL adhoc.broken: 3 frames after the ACK*", "*rerun: wschaos run --case * --seed 11*"])


@pytest.mark.slow
def test_adhoc_body_drives_the_real_target(pytester: pytest.Pytester, clean_env) -> None:
    """An ad-hoc async body starts the reference server, talks to it, checks, and cleans up."""
    pytester.makepyfile("""
        from harness.core.verdict import fail, passed
        from harness.core.timing import scaled

        def test_heartbeat(wschaos):
            async def body(ctx):
                sup = await ctx.start_target()
                c = await ctx.client(sup)
                ack = await c.heartbeat(timeout=scaled(5))
                ok = ack.kind == "heartbeat_ack"
                ctx.check((passed if ok else fail)("adhoc.heartbeat", f"answered {ack.kind}"))
                print("PID", sup.pid)
            outcome = wschaos.run(body)
            assert outcome.verdicts[0].status == "pass"
            assert "target1.stdout" in outcome.artifacts
    """)
    result = pytester.runpytest_subprocess(
        "-s", "-p", "no:cacheprovider", "--wschaos-run-dir", str(pytester.path / "run"), timeout=scaled(60))
    result.assert_outcomes(passed=1)
    import psutil

    pid = int(re.search(r"PID (\d+)", result.stdout.str()).group(1))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "the target survived"


@pytest.mark.slow
def test_selected_gate_case_runs_under_plain_pytest(pytester: pytest.Pytester, clean_env) -> None:
    """``pytest --wschaos-case X scenarios/test_gate.py`` runs exactly that case, and can write results."""
    results = pytester.path / "outcomes.json"
    result = pytester.runpytest_subprocess(
        str(ROOT / "scenarios" / "test_gate.py"), "-v", "-p", "no:cacheprovider",
        "--wschaos-case", "interrupts.basic[one]", "--wschaos-seed", "5",
        "--wschaos-run-dir", str(pytester.path / "run"), "--wschaos-results", str(results),
        timeout=scaled(90),
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_gate.py::test_case?interrupts.basic?one?? PASSED*"])
    data = json.loads(results.read_text())
    (outcome,) = data["outcomes"]
    assert outcome["case_id"] == "interrupts.basic[one]" and outcome["seed"] == 5
    assert outcome["verdicts"] and all(v["status"] == "pass" for v in outcome["verdicts"])


def test_case_glob_matching_nothing_is_an_error(pytester: pytest.Pytester, clean_env) -> None:
    """A --wschaos-case that selects nothing does not pass silently: the session errors and says why."""
    result = pytester.runpytest_subprocess(
        str(ROOT / "scenarios" / "test_gate.py"), "-p", "no:cacheprovider", "--wschaos-case", "nothing.here",
        "--wschaos-run-dir", str(pytester.path / "run"), timeout=scaled(60),
    )
    assert result.ret != pytest.ExitCode.OK
    assert "--wschaos-case nothing.here: no scenario case matches" in result.stdout.str()
