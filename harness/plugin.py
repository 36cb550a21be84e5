"""The wschaos pytest plugin (registered through the ``pytest11`` entry point).

Settings are read in a fixed order — marker, command-line option, environment,
ini — and a bad value names where it came from. Markers are registered in
``pytest_configure``; the active target, seed and profile go in the report
header; per-session state lives in ``config.stash``.

A team can use the fixtures in its own tests::

    def test_my_server_drains(wschaos):
        async def body(ctx):
            sup = await ctx.start_target()
            ...
            ctx.check(checkers.exit_time(...))
        wschaos.run(body)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.core.timing import FACTOR
from harness.core.verdict import unknown
from harness.engine.scenario import Case, CaseOutcome, Context, _safe, replay_command, run_case
from harness.target.spec import (
    Target,
    TargetError,
    load_pyproject_target,
    load_target,
    reference_target,
    target_from_cmd,
)

__all__ = ["WschaosSession", "WschaosSettings"]

# Shared between addoption and addini, as pytest-timeout does.
TARGET_HELP = "a target TOML file describing the service under test (default: the embedded reference server)"
TARGET_CMD_HELP = "the command that starts the service, with {port} (reference protocol, LISTENING readiness)"
FAULT_HELP = "reference-server fault switch to turn on (repeatable); for demonstrations and self-tests"
SEED_HELP = "seed for every random choice the scenarios make (default: random, printed in the report)"
PROFILE_HELP = "parameter profile: gate (default, fast) or release (more cycles and repeats)"
RUN_DIR_HELP = "directory for this run's data (default: a new reports/<run-id>/)"
ALLOW_REMOTE_HELP = "allow a target outside 127.0.0.0/8 and ::1"
PROBE_HELP = "inject the zero-code Python probe into a Python target"

SETTINGS_KEY = pytest.StashKey["WschaosSettings"]()
OUTCOMES_KEY = pytest.StashKey["list[CaseOutcome]"]()

PROFILES = ("gate", "release")


class SettingError(pytest.UsageError):  # type: ignore[misc]  # final for typing only; pytest reports subclasses as usage errors
    """A wschaos setting is invalid; the message names its source."""


@dataclass
class WschaosSettings:
    target: Target
    target_source: str
    seed: int
    seed_source: str
    profile: str
    run_dir: Path
    target_args: str = ""
    results_path: Path | None = None
    outcomes: list[CaseOutcome] = field(default_factory=list)
    #: Called as progress(case_id, done, total, unit) by long cases (set by `wschaos run`).
    progress: Callable[[str, int, int, str], None] | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wschaos", "wschaos chaos harness")
    group.addoption("--wschaos-target", dest="wschaos_target", metavar="FILE", help=TARGET_HELP)
    group.addoption("--wschaos-target-cmd", dest="wschaos_target_cmd", metavar="CMD", help=TARGET_CMD_HELP)
    group.addoption("--wschaos-fault", dest="wschaos_fault", action="append", default=[], metavar="NAME", help=FAULT_HELP)
    group.addoption("--wschaos-seed", dest="wschaos_seed", metavar="N", help=SEED_HELP)
    group.addoption("--wschaos-profile", dest="wschaos_profile", metavar="NAME", help=PROFILE_HELP)
    group.addoption("--wschaos-run-dir", dest="wschaos_run_dir", metavar="DIR", help=RUN_DIR_HELP)
    group.addoption("--wschaos-allow-remote", dest="wschaos_allow_remote", action="store_true", help=ALLOW_REMOTE_HELP)
    group.addoption("--wschaos-client-cmd", dest="wschaos_client_cmd", metavar="CMD",
                    help="the interactive client to drive on a pty, with {url} (default: the reference client)")
    group.addoption("--wschaos-python-probe", dest="wschaos_python_probe", action="store_true", help=PROBE_HELP)
    group.addoption("--wschaos-case", dest="wschaos_case", action="append", default=[], metavar="GLOB",
                    help="run only the scenario cases whose id or scenario matches (repeatable)")
    group.addoption("--wschaos-results", dest="wschaos_results", metavar="FILE",
                    help="write every case's outcome as JSON to FILE (used by `wschaos run`)")
    parser.addini("wschaos_target", TARGET_HELP)
    parser.addini("wschaos_target_cmd", TARGET_CMD_HELP)
    parser.addini("wschaos_seed", SEED_HELP)
    parser.addini("wschaos_profile", PROFILE_HELP)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "wschaos_seed(n): run this test's scenario with seed n")
    config.addinivalue_line("markers", "wschaos_profile(name): parameter profile for this test")


def _first(config: pytest.Config, option: str, env: str, ini: str) -> tuple[str | None, str]:
    """The value and the name of where it came from: option, environment, ini."""
    val = config.getoption(option)
    if val:
        return str(val), f"--{option.replace('_', '-')}"
    if os.environ.get(env):
        return os.environ[env], f"${env}"
    ini_val = config.getini(ini)
    if ini_val:
        return str(ini_val), f"ini {ini}"
    return None, "default"


def load_settings(config: pytest.Config) -> WschaosSettings:
    if SETTINGS_KEY in config.stash:
        return config.stash[SETTINGS_KEY]
    allow_remote = bool(config.getoption("wschaos_allow_remote"))
    faults = list(config.getoption("wschaos_fault") or [])
    target_file, file_src = _first(config, "wschaos_target", "WSCHAOS_TARGET", "wschaos_target")
    target_cmd, cmd_src = _first(config, "wschaos_target_cmd", "WSCHAOS_TARGET_CMD", "wschaos_target_cmd")
    try:
        if target_file:
            target, source = load_target(target_file, allow_remote=allow_remote), f"{file_src}={target_file}"
            target_args = f"--target {shlex.quote(target_file)}"
        elif target_cmd:
            target = target_from_cmd(target_cmd, allow_remote=allow_remote)
            source, target_args = cmd_src, f"--target-cmd {shlex.quote(target_cmd)}"
        else:
            found = load_pyproject_target(Path(config.rootpath) / "pyproject.toml", allow_remote=allow_remote)
            if found is not None:
                target, source, target_args = found, "pyproject [tool.wschaos.target]", ""
            else:
                target, source, target_args = reference_target(), "embedded reference server", ""
    except TargetError as exc:
        raise SettingError(str(exc)) from None
    if faults:
        if target.name != "reference":
            raise SettingError("--wschaos-fault applies to the reference server only")
        target = target.with_faults(*faults)
        target_args += "".join(f" --fault {f}" for f in faults)
    client_cmd = config.getoption("wschaos_client_cmd")
    if client_cmd:
        from dataclasses import replace as _replace

        try:
            client_argv = tuple(shlex.split(client_cmd))
        except ValueError as exc:
            raise SettingError(f"--wschaos-client-cmd: cannot split {client_cmd!r}: {exc}") from None
        if not client_argv:
            raise SettingError("--wschaos-client-cmd is empty")
        target = _replace(target, interactive_client=client_argv)
        target_args += f" --client-cmd {shlex.quote(client_cmd)}"
    if config.getoption("wschaos_python_probe"):
        from dataclasses import replace

        target = replace(target, python_probe=True)
        target_args += " --python-probe"

    seed_raw, seed_src = _first(config, "wschaos_seed", "WSCHAOS_SEED", "wschaos_seed")
    if seed_raw is None:
        seed, seed_src = random.SystemRandom().randrange(1, 2**31), "random"
    else:
        try:
            seed = int(seed_raw)
        except ValueError:
            raise SettingError(f"{seed_src}: seed {seed_raw!r} is not an integer") from None
    profile_raw, profile_src = _first(config, "wschaos_profile", "WSCHAOS_PROFILE", "wschaos_profile")
    profile = profile_raw or "gate"
    if profile not in PROFILES:
        raise SettingError(f"{profile_src}: profile {profile!r} is not one of {', '.join(PROFILES)}")
    run_dir_raw = config.getoption("wschaos_run_dir")
    if run_dir_raw:
        run_dir = Path(run_dir_raw)
    else:
        run_dir = Path(config.rootpath) / "reports" / f"pytest-{os.getpid()}"
    results = config.getoption("wschaos_results")
    settings = WschaosSettings(
        target=target,
        target_source=source,
        seed=seed,
        seed_source=seed_src,
        profile=profile,
        run_dir=run_dir,
        target_args=target_args.strip(),
        results_path=Path(results) if results else None,
    )
    config.stash[SETTINGS_KEY] = settings
    return settings


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a ``case`` argument with the selected scenario cases."""
    if "case" not in metafunc.fixturenames:
        return
    from harness.engine.scenario import load_scenarios, select_cases

    patterns = metafunc.config.getoption("wschaos_case") or []
    cases = select_cases(load_scenarios(), patterns)
    if patterns and not cases:
        raise SettingError(f"--wschaos-case {' '.join(patterns)}: no scenario case matches")
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = load_settings(config)
    faults = f", faults {','.join(s.target.faults)}" if s.target.faults else ""
    return [
        f"wschaos: target {s.target.name} ({s.target_source}{faults}), seed {s.seed} ({s.seed_source}), "
        f"profile {s.profile}, time factor {FACTOR:g}"
    ]


class WschaosSession:
    """The ``wschaos`` fixture: runs scenario cases or ad-hoc async bodies against the target."""

    def __init__(self, settings: WschaosSettings, request: pytest.FixtureRequest) -> None:
        self.settings = settings
        self.request = request

    @property
    def target(self) -> Target:
        return self.settings.target

    def _seed(self) -> int:
        marker = self.request.node.get_closest_marker("wschaos_seed")
        return int(marker.args[0]) if marker else self.settings.seed

    def _profile(self) -> str:
        marker = self.request.node.get_closest_marker("wschaos_profile")
        return str(marker.args[0]) if marker else self.settings.profile

    def run_case(self, case: Case) -> CaseOutcome:
        """Run a registered case; fail the test with every non-passing verdict and the replay line."""
        seed, profile = self._seed(), self._profile()
        started = time.monotonic()
        try:
            outcome = asyncio.run(
                run_case(
                    case,
                    self.settings.target,
                    seed=seed,
                    run_dir=self.settings.run_dir,
                    profile=profile,
                    target_args=self.settings.target_args,
                    progress=self.settings.progress,
                )
            )
        except KeyboardInterrupt:
            # The case's logs are on disk; keep it in the results so an interrupted run
            # still says which case was running and where its target logs are.
            self.settings.outcomes.append(self._interrupted(case, seed, profile, time.monotonic() - started))
            raise
        self.settings.outcomes.append(outcome)
        if outcome.skipped:
            pytest.skip(f"{case.id}: {outcome.skipped}")
        if outcome.failed:
            lines = [str(v) for v in outcome.failed]
            lines.append(f"rerun: {outcome.replay}")
            pytest.fail("\n".join(lines), pytrace=False)
        return outcome

    def _interrupted(self, case: Case, seed: int, profile: str, duration_s: float) -> CaseOutcome:
        case_dir = self.settings.run_dir / _safe(case.id)
        artifacts = {}
        if case_dir.is_dir():
            artifacts = {f.name.removesuffix(".log").removesuffix(".jsonl"): str(f)
                         for f in sorted(case_dir.iterdir()) if f.is_file()}
        return CaseOutcome(
            case_id=case.id,
            scenario=case.scenario,
            params=case.params_for(profile),
            seed=seed,
            verdicts=[unknown(f"{case.scenario}.completed", "the run was interrupted while this case ran")],
            artifacts=artifacts,
            duration_s=duration_s,
            replay=replay_command(case, seed, self.settings.target_args),
        )

    def run(self, body: Callable[[Context], Awaitable[None]], *, name: str | None = None) -> CaseOutcome:
        """Run an ad-hoc async body with a Context, as a one-off case."""
        case = Case(scenario=name or self.request.node.name, name="adhoc", fn=lambda ctx: body(ctx))
        return self.run_case(case)


@pytest.fixture
def wschaos(request: pytest.FixtureRequest) -> WschaosSession:
    """Run wschaos scenarios (or an async body with a Context) against the configured target."""
    return WschaosSession(load_settings(request.config), request)


@pytest.fixture
def wschaos_target(request: pytest.FixtureRequest) -> Target:
    """The configured target description."""
    return load_settings(request.config).target


@pytest.fixture
def wschaos_seed(request: pytest.FixtureRequest) -> int:
    """The run's seed."""
    return load_settings(request.config).seed


@pytest.fixture
def fake_upstream() -> Any:
    """A fake OpenAI-compatible upstream on loopback, running in a thread for sync tests."""
    from harness.upstream.fake import FakeUpstream

    up = FakeUpstream()
    up.start_in_thread()
    try:
        yield up
    finally:
        up.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    settings = session.config.stash.get(SETTINGS_KEY, None)
    if settings is None or settings.results_path is None:
        return
    from harness.core.verdict import Verdict

    def verdict_dict(v: Verdict) -> dict[str, Any]:
        return {"check": v.check, "status": v.status, "message": v.message, "figures": v.figures}

    data = {
        "seed": settings.seed,
        "profile": settings.profile,
        "target": {"name": settings.target.name, "argv": list(settings.target.argv), "faults": list(settings.target.faults)},
        "target_args": settings.target_args,
        "outcomes": [
            {
                "case_id": o.case_id, "scenario": o.scenario, "params": o.params, "seed": o.seed,
                "verdicts": [verdict_dict(v) for v in o.verdicts], "figures": o.figures, "series": o.series,
                "artifacts": o.artifacts, "duration_s": o.duration_s, "error": o.error, "skipped": o.skipped,
                "replay": o.replay,
            }
            for o in settings.outcomes
        ],
    }
    settings.results_path.parent.mkdir(parents=True, exist_ok=True)
    settings.results_path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
