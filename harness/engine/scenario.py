"""Scenario registry, the per-case :class:`Context`, and :func:`run_case`.

A scenario module says *what* to do and *what must hold*::

    @scenario("interrupts.storm", cases={"10x10": {"sessions": 10}})
    async def storm(ctx: Context, sessions: int) -> None:
        sup = await ctx.start_target()
        ...
        ctx.check(checkers.ack_latency(ctx.history, bound_ms=...))

Processes, sockets and cleanup stay here and in the modules this one calls.
``run_case`` is the one way a case runs: the pytest plugin, the CLI and the
project's own tests all go through it, so a check proven in ``tests/`` is the
check the gate makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import pkgutil
import random
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.checkers import target as target_checks
from harness.core import timing
from harness.core.history import History
from harness.core.timing import scaled
from harness.core.verdict import Verdict, unknown
from harness.engine.blame import (
    TRACEBACK_MARKS,
    NotApplicable,
    ScenarioError,
    blames_target,
    flag_stretched,
    quote,
)
from harness.engine.capabilities import unmet
from harness.nemesis.nemesis import Nemesis
from harness.probes.observe import Observer
from harness.target.spec import Limits, Target

if TYPE_CHECKING:  # imported lazily at run time: a checker test needs none of this
    from harness.client.connection import Client
    from harness.process.supervisor import Supervisor
    from harness.upstream.fake import FakeUpstream

__all__ = [
    "REGISTRY",
    "Case",
    "CaseOutcome",
    "Context",
    "NotApplicable",
    "ScenarioError",
    "load_scenarios",
    "run_case",
    "run_case_sync",
    "scenario",
    "select_cases",
]

ScenarioFn = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Case:
    scenario: str
    name: str
    fn: ScenarioFn = field(repr=False, compare=False)
    params: Mapping[str, Any] = field(default_factory=dict)
    #: What the case needs of its target (see :mod:`harness.engine.capabilities`).
    requires: frozenset[str] = frozenset()
    timeout_s: float = 60.0
    #: Parameter overrides per profile, e.g. {"release": {"cycles": 3000}}.
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    doc: str = ""

    @property
    def id(self) -> str:
        return f"{self.scenario}[{self.name}]"

    def params_for(self, profile: str) -> dict[str, Any]:
        return {**self.params, **self.profiles.get(profile, {})}


REGISTRY: dict[str, Case] = {}


def scenario(
    name: str,
    *,
    cases: Mapping[str, Mapping[str, Any]] | None = None,
    requires: Iterable[str] | Callable[[Mapping[str, Any]], Iterable[str]] = (),
    timeout_s: float = 60.0,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register ``fn`` as a scenario with one case per entry of ``cases``.

    ``requires`` names what the cases need of the target, or computes it from a
    case's parameters (``lambda p: {"agent:blocking"} if p["load"] == "blocking" else ()``).
    """

    def register(fn: ScenarioFn) -> ScenarioFn:
        for case_name, params in (cases or {"default": {}}).items():
            case = Case(
                scenario=name,
                name=case_name,
                fn=fn,
                params=dict(params),
                requires=frozenset(requires(params) if callable(requires) else requires),
                timeout_s=timeout_s,
                profiles=dict(profiles or {}),
                doc=(fn.__doc__ or "").strip(),
            )
            if case.id in REGISTRY and REGISTRY[case.id].fn is not fn:
                raise ValueError(f"scenario case {case.id} registered twice")
            REGISTRY[case.id] = case
        return fn

    return register


def load_scenarios(package: str = "scenarios") -> list[Case]:
    """Import every module of the scenarios package; return the registered cases in order."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith(("_", "test_")):
            importlib.import_module(f"{package}.{info.name}")
    return list(REGISTRY.values())


def _glob(pattern: str) -> re.Pattern[str]:
    # Only * and ? are wildcards: fnmatch would read "[10x10]" in a case id as a character class.
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern))


def select_cases(cases: Iterable[Case], patterns: Iterable[str]) -> list[Case]:
    """Cases whose id or scenario matches any glob; all when no pattern is given."""
    globs = [_glob(p) for p in patterns]
    if not globs:
        return list(cases)
    return [c for c in cases if any(g.fullmatch(c.id) or g.fullmatch(c.scenario) for g in globs)]


@dataclass
class CaseOutcome:
    case_id: str
    scenario: str
    params: dict[str, Any]
    seed: int
    verdicts: list[Verdict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    skipped: str | None = None
    replay: str = ""

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status != "pass"]


class Context:
    """What a scenario sees: the target, the seed, the history, and helpers that clean up after themselves."""

    def __init__(
        self,
        case: Case,
        target: Target,
        *,
        seed: int,
        run_dir: Path,
        profile: str = "gate",
        history: History | None = None,
    ) -> None:
        self.case = case
        self.target = target
        self.seed = seed
        self.profile = profile
        self.rng = random.Random(f"{seed}:{case.id}")
        self.run_dir = run_dir
        self.history = history if history is not None else History()
        self.params = case.params_for(profile)
        self.verdicts: list[Verdict] = []
        self.figures: dict[str, Any] = {}
        self.series: dict[str, list[list[float]]] = {}
        self.artifacts: dict[str, str] = {}
        self._supervisors: list[Supervisor] = []
        self._clients: list[Client] = []
        self._upstreams: list[FakeUpstream] = []
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        #: Processes of wschaos's own (peers), not the target's: never blamed on it.
        self._helpers: set[str] = set()
        self._names = 0
        self._progress: Callable[[str, int, int, str], None] | None = None
        #: Every question about the target's state goes to the probes.
        self.probes = Observer(self.history, stats_path=target.stats_path, python_probe=target.python_probe,
                               stats_keys=target.stats_keys)
        #: Every fault goes through the nemesis, which records it in the history.
        self.nemesis = Nemesis(self.history)

    @property
    def limits(self) -> Limits:
        return self.target.limits

    @functools.cached_property
    def messages(self) -> frozenset[str]:
        """The client messages the target's protocol has (its adapter's)."""
        from harness.protocol.adapters import load_adapter

        return load_adapter(self.target).messages

    # -- verdicts and figures --------------------------------------------------
    def check(self, verdict: Verdict) -> Verdict:
        """Record a verdict; scenarios go on after a failure so one run shows every broken check."""
        self.verdicts.append(verdict)
        return verdict

    def figure(self, name: str, value: Any) -> None:
        self.figures[name] = value

    def add_series(self, name: str, points: Iterable[tuple[float, float]]) -> None:
        self.series[name] = [[float(x), float(y)] for x, y in points]

    def progress(self, done: int, total: int, unit: str = "cycles") -> None:
        """Report how far a long case is (shown live by `wschaos run`); never raises."""
        if self._progress is not None:
            with contextlib.suppress(Exception):
                self._progress(self.case.id, done, total, unit)

    def require(self, *capabilities: str) -> None:
        """Skip (not pass) when the target lacks a capability (see :mod:`harness.engine.capabilities`)."""
        reasons = unmet(capabilities, self.target)
        if reasons:
            raise NotApplicable("; ".join(reasons))

    async def require_stats(self, sup: Supervisor) -> None:
        """Skip (not pass) unless /stats answers or the injected probe is on.

        A target given by command line alone has /stats "if it answers": a 404 or
        a non-JSON page means the resource checks have nothing to read.
        """
        if await self.probes.stats(sup) is None:
            raise NotApplicable(
                "needs /stats or the injected Python probe (--python-probe): "
                f"{self.target.stats_path or '/stats'} did not answer with JSON"
            )

    def name(self, prefix: str = "c") -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    # -- parts that clean up after themselves ---------------------------------
    async def start_target(
        self,
        *,
        pty: bool = False,
        target: Target | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Supervisor:
        from harness.process.supervisor import Supervisor

        tgt = target or self.target
        extra_env = dict(env or {})
        if tgt.upstream is not None:
            extra_env.update(await self._upstream_env(tgt))
        from harness.process.supervisor import PortTakenError

        name = name or f"target{len(self._supervisors) + 1}"
        for attempt in range(PORT_RACE_TRIES):
            # The supervisor injects the Python probe where the target asks for it.
            sup = Supervisor(tgt, self.run_dir, pty=pty, history=self.history, name=name, extra_env=extra_env)
            self._supervisors.append(sup)
            try:
                await sup.start()
            except PortTakenError as exc:
                # Another process took the free port first: start again on another, and
                # forget this attempt, which is no part of the target's conduct.
                self._supervisors.remove(sup)
                self.history.observe("supervisor", "port_taken", name=name, port=sup.port, attempt=attempt + 1)
                if attempt + 1 == PORT_RACE_TRIES:
                    raise exc
                continue
            return sup
        raise AssertionError("unreachable")

    async def _upstream_env(self, tgt: Target) -> dict[str, str]:
        """Point the target's declared LLM upstream at the case's fake (started on first use)."""
        assert tgt.upstream is not None
        up = self._upstreams[0] if self._upstreams else await self.fake_upstream()
        if tgt.upstream.config_path and tgt.upstream.config_template:
            self.artifacts["upstream_config"] = _write_config(
                tgt.upstream.config_path, tgt.upstream.config_template.replace("{base_url}", up.base_url))
        return {var: up.base_url for var in tgt.upstream.env}

    async def start_peer(self, sup: Supervisor, *, mode: str = "idle") -> Supervisor:
        """A client in a process of its own, connected to ``sup``, for the nemesis to freeze."""
        from harness.nemesis.peer import peer_target

        # The peer speaks the target's protocol: its adapter and adapter config.
        peer = await self.start_target(
            target=peer_target(sup.ws_url, mode, allow_remote=self.target.allow_remote,
                               adapter=self.target.adapter, adapter_config=self.target.adapter_config),
            name=self.name("peer"))
        self._helpers.add(peer.name)
        return peer

    async def client(self, sup: Supervisor | str, *, name: str | None = None, connect: bool = True) -> Client:
        from harness.client.connection import Client
        from harness.protocol.adapters import load_adapter

        url = sup if isinstance(sup, str) else sup.ws_url
        c = Client(
            url,
            adapter=load_adapter(self.target),
            history=self.history,
            name=name or self.name(),
            allow_remote=self.target.allow_remote,
            shape_upstream=self.target.upstream is not None,
        )
        self._clients.append(c)
        if connect:
            await c.connect()
        return c

    async def clients(self, sup: Supervisor | str, n: int, *, prefix: str = "c") -> list[Client]:
        made = [await self.client(sup, name=self.name(prefix), connect=False) for _ in range(n)]
        await asyncio.gather(*(c.connect() for c in made))
        return made

    async def fake_upstream(self, **kwargs: Any) -> FakeUpstream:
        from harness.upstream.fake import FakeUpstream

        up = FakeUpstream(**kwargs)
        await up.__aenter__()
        self._upstreams.append(up)
        return up

    def on_cleanup(self, closer: Callable[[], Awaitable[Any]]) -> None:
        self._closers.append(closer)

    def enter(self, cm: contextlib.AbstractContextManager[Any]) -> Any:
        """Enter a (fault) context manager now; it is exited at cleanup, before targets stop."""
        value = cm.__enter__()

        async def leave() -> None:
            cm.__exit__(None, None, None)

        self._closers.append(leave)
        return value

    async def aclose(self) -> None:
        """Close clients, stop every target (whole tree) and upstream; bounded, never raises."""
        for c in self._clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.abort(), scaled(2))
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer(), scaled(5))
        for sup in self._supervisors:
            try:
                await sup.stop()
            except Exception as exc:  # recorded, not raised: cleanup must reach every part
                self.history.observe("supervisor", "stop_error", error=repr(exc))
            for stream in ("stdout", "stderr"):
                log = getattr(sup, f"{stream}_path", None)
                if log is not None:
                    self.artifacts[f"{sup.name}.{stream}"] = str(log)
        for up in self._upstreams:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(up.__aexit__(None, None, None), scaled(5))

    def target_problems(self) -> list[str]:
        """What the target did wrong on its own while the case ran, quoted from it.

        A target that exited while nothing signalled it crashed; a traceback in the
        output of a target nothing signalled is its own. Once a case has signalled a
        target, its exit and output are the shutdown checks' to judge.
        """
        problems: list[str] = []
        for sup in self._supervisors:
            if sup.name in self._helpers or self._disturbed(sup):
                continue
            report = sup.exit_report
            if report is not None and not sup.is_running():
                tail = quote(report.stderr_tail or report.stdout_tail)
                problems.append(f"{sup.name} exited with code {report.returncode} while the case ran, "
                                f"though nothing signalled it" + (f"; its output ends: {tail}" if tail else ""))
            marks = [ln.strip() for stream in ("stderr", "stdout") for ln in sup.output(stream).splitlines()
                     if any(m in ln for m in TRACEBACK_MARKS)]
            if marks:
                more = f" (and {len(marks) - 1} more)" if len(marks) > 1 else ""
                problems.append(f"{sup.name} printed {marks[0]!r}{more}; stderr ends: {quote(sup.output('stderr'))}")
        return problems

    async def settle_exits(self, timeout: float) -> None:
        """Wait (bounded, together) for targets that are exiting to be reaped, so their exit is on record."""
        # Not reaped yet, zombies included (is_running already says those are gone).
        running = [s for s in self._supervisors if s.name not in self._helpers and s.pid and s.exit_report is None]
        if running:
            await asyncio.gather(*(s.wait_exit(timeout) for s in running), return_exceptions=True)

    def _disturbed(self, sup: Supervisor) -> bool:
        """True when wschaos signalled or stopped the target: what followed is partly its doing."""
        signalled = {o.data.get("name") for o in self.history.observations("signal", source="supervisor")}
        return sup.name in signalled or sup.stopped_by_harness

    def disturbed_targets(self) -> list[str]:
        return [sup.name for sup in self._supervisors if sup.name not in self._helpers and self._disturbed(sup)]

    async def hang_forensics(self, reason: str) -> list[str]:
        """Stacks of every target still running, before cleanup kills it."""
        lines: list[str] = []
        for sup in self._supervisors:
            if sup.is_running():
                try:
                    forensic = await asyncio.wait_for(sup.forensics(reason), scaled(20))
                    lines += forensic.key_lines()
                    if forensic.path is not None:
                        self.artifacts[f"{sup.name}.forensics"] = str(forensic.path)
                except Exception as exc:
                    lines.append(f"forensics of {sup.name} failed: {exc!r}")
        return lines


def _write_config(path: str, text: str) -> str:
    """A small config file the target reads at start (written before it starts)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return str(p)


#: How often a target is started again when the free port wschaos picked was taken first.
PORT_RACE_TRIES = 3

def replay_command(case: Case, seed: int, target_args: str = "", target: Target | None = None) -> str:
    """The command line that runs ``case`` again: ``target_args``, or else the file ``target`` came from."""
    import shlex

    if not target_args and target is not None and target.source_file:
        target_args = f"--target {shlex.quote(target.source_file)}"
    extra = f" {target_args}" if target_args else ""
    return f"wschaos run --case '{case.id}' --seed {seed}{extra}"


async def run_case(
    case: Case,
    target: Target,
    *,
    seed: int,
    run_dir: Path,
    profile: str = "gate",
    target_args: str = "",
    progress: Callable[[str, int, int, str], None] | None = None,
) -> CaseOutcome:
    """Run one case under its time bound; crashes and timeouts become *unknown*, never pass."""
    case_dir = run_dir / _safe(case.id)
    case_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(case, target, seed=seed, run_dir=case_dir, profile=profile)
    ctx._progress = progress
    outcome = CaseOutcome(
        case_id=case.id,
        scenario=case.scenario,
        params=ctx.params,
        seed=seed,
        replay=replay_command(case, seed, target_args, target),
    )
    started = time.monotonic()
    reasons = unmet(case.requires, target)
    if reasons:
        outcome.skipped = "; ".join(reasons)
        return outcome
    try:
        # The case runs as its own task so that its bound is told apart from a timeout
        # raised inside it (a client's wait, which is a TimeoutError too).
        task = asyncio.ensure_future(case.fn(ctx, **ctx.params))
        try:
            done, _ = await asyncio.wait({task}, timeout=scaled(case.timeout_s))
        except asyncio.CancelledError:
            # The harness itself is interrupted: end the case's task and let cleanup run.
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, scaled(5))
            raise
        if not done:
            stacks = await ctx.hang_forensics(f"{case.id} exceeded {scaled(case.timeout_s):.0f}s")
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, scaled(5))
            last = "; ".join(_op_line(r) for r in ctx.history.tail(5))
            ctx.check(unknown(
                f"{case.scenario}.completed",
                f"the scenario did not finish within {scaled(case.timeout_s):.0f} s; "
                f"last operations: {last or 'none'}" + ("; stacks: " + " | ".join(stacks[:8]) if stacks else ""),
            ))
        else:
            try:
                task.result()
            except NotApplicable as exc:
                outcome.skipped = str(exc)
            except Exception as exc:
                await _judge_exception(ctx, case, case_dir, exc, outcome)
            else:
                problems = ctx.target_problems()
                if problems:
                    ctx.check(target_checks.served(problems))
    finally:
        await ctx.aclose()
    outcome.duration_s = time.monotonic() - started
    outcome.verdicts = [flag_stretched(v, timing.FACTOR) for v in ctx.verdicts]
    outcome.figures = ctx.figures
    outcome.series = ctx.series
    outcome.artifacts = ctx.artifacts
    if not outcome.verdicts and outcome.skipped is None:
        outcome.verdicts.append(unknown(f"{case.scenario}.completed", "the scenario made no checks"))
    with contextlib.suppress(OSError):
        ctx.history.to_jsonl(case_dir / "history.jsonl")
        outcome.artifacts["history"] = str(case_dir / "history.jsonl")
    return outcome


async def _judge_exception(ctx: Context, case: Case, case_dir: Path, exc: Exception, outcome: CaseOutcome) -> None:
    """Blame honestly: the target's refusals, drops and crashes fail the target; the rest is wschaos's."""
    from harness.process.supervisor import PortTakenError, TargetStartError

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    saved = case_dir / "scenario-error.txt"
    with contextlib.suppress(OSError):
        saved.write_text(tb, encoding="utf-8")
        ctx.artifacts["scenario_error"] = str(saved)
    if isinstance(exc, PortTakenError):
        outcome.error = tb
        ctx.check(unknown(f"{case.scenario}.completed", f"wschaos could not give the target a free port: {exc}"))
        return
    if isinstance(exc, TargetStartError):
        ctx.check(target_checks.started(str(exc)))
        return
    said = blames_target(exc)
    if said is not None:
        await ctx.settle_exits(scaled(0.5))  # a target that dropped us may be dying: let its exit land
    problems = ctx.target_problems()
    disturbed = ctx.disturbed_targets()
    if said is not None and disturbed and not problems:
        # The target was signalled or stopped: a refused or dropped connection after
        # that may be wschaos's own doing, so it is not blamed on the target.
        ctx.check(unknown(f"{case.scenario}.completed",
                          f"the case ended on a client error after wschaos signalled or stopped "
                          f"{', '.join(disturbed)}: {said} (traceback in {saved})"))
        return
    if said is not None or problems:
        ctx.check(target_checks.served(([said] if said else []) + problems))
        return
    outcome.error = tb
    ctx.check(unknown(f"{case.scenario}.completed",
                      f"the scenario crashed (a wschaos error, traceback in {saved}): {type(exc).__name__}: {exc}"))


def run_case_sync(case: Case, target: Target, **kwargs: Any) -> CaseOutcome:
    return asyncio.run(run_case(case, target, **kwargs))


def _safe(case_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)


def _op_line(rec: Any) -> str:
    kind = getattr(rec, "kind", "?")
    who = getattr(rec, "client", None) or getattr(rec, "source", "?")
    outcome = getattr(rec, "outcome", "")
    return f"{who} {kind} {outcome}".strip()
