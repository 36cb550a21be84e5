"""The explorer: Hypothesis generates programs, runs each against the live target, shrinks a failure.

How Hypothesis is driven, and why:

* **Programs as data, ``@given``, not a ``RuleBasedStateMachine``.** A
  program is a list of JSON-ready steps (:func:`~harness.explore.strategies.programs`)
  run whole by one coroutine, so a shrunk program is a file that replays
  exactly without Hypothesis. Stateful testing has no async rules (its rules,
  invariants and teardown are plain calls; async support is an open Hypothesis
  issue), and a program needs one event loop across all its steps.
* **One event loop, Hypothesis in a thread.** Hypothesis is synchronous; the
  target, its clients and the probes live on the caller's loop. The test
  function runs in a worker thread and hands each program to that loop with
  ``run_coroutine_threadsafe``; the loop stays free for the target's I/O.
* **Slow, real examples.** ``deadline=None`` (an example is real I/O taking
  tens to hundreds of ms, never a fixed deadline) and every health check
  suppressed (``too_slow`` and friends are about in-memory data generation).
  The ``explain`` phase, which reruns a failure with variations, is left out.
* **A time budget Hypothesis does not have.** Hypothesis stops after
  ``max_examples`` or when shrinking passes 500 shrinks / five minutes. The
  test function checks the budget before each example and, once it is spent,
  raises :class:`unittest.SkipTest`, which Hypothesis re-raises at once
  without shrinking (it treats skips as control flow). Searching gets
  ``budget_s``; once a program fails, shrinking gets ``shrink_s`` of its own.
* **The shrinker is Hypothesis's.** Each failing program raises an exception
  whose type names its first failed check, so Hypothesis shrinks towards a
  smaller program failing *that* check, not any check. The explorer only
  remembers the smallest failing program Hypothesis ran for it (real I/O is
  not perfectly repeatable, so Hypothesis's own final replay may not fail
  again: a ``Flaky`` error then, which is not a reason to lose the program).
* **Then the steps are trimmed, by Hypothesis again.** Most of the main shrink's
  runs go into each step's details; with the last 30% of the shrink budget a
  second, small search over *which steps to keep* (sorted step indices, shrunk
  towards fewer) cuts the program down to the steps the failure needs; a
  subset that does not fail is run up to three times first, since a race
  reproduces only sometimes.
* **The example database** lives in the run directory (``hypothesis/``), and so
  does everything else Hypothesis writes (:func:`~harness.explore.strategies.hypothesis_home`),
  never a ``.hypothesis`` in the current directory.

The shrunk program is then replayed ``confirm`` times outside Hypothesis and
saved as a program file with its reproduction rate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import unittest
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.timing import scaled
from harness.core.verdict import Verdict
from harness.explore.execute import ProgramRun, run_program
from harness.explore.host import TargetHost
from harness.explore.invariants import failures, judge
from harness.explore.program import ExploreConfig, ProgramFile, render_program
from harness.explore.strategies import hypothesis_home, programs

if TYPE_CHECKING:
    from harness.engine.scenario import Context

__all__ = ["ExploreResult", "Explorer", "Finding", "finding_key", "replay_program"]


def finding_key(v: Verdict) -> str:
    """What makes two failures the same finding: the check, and for a figure, which figure."""
    if v.check.startswith("resources.back_to_baseline@"):
        return v.check
    return v.check.split("@", 1)[0]


class ExplorationFailure(AssertionError):
    """A program broke an invariant (one subclass per finding key, so Hypothesis keeps them apart)."""


_FAILURE_TYPES: dict[str, type[ExplorationFailure]] = {}


def _failure_type(key: str) -> type[ExplorationFailure]:
    if key not in _FAILURE_TYPES:
        _FAILURE_TYPES[key] = type(f"Broke[{key}]", (ExplorationFailure,), {"key": key})
    return _FAILURE_TYPES[key]


@dataclass
class Finding:
    key: str
    message: str
    steps: list[dict[str, Any]]
    verdicts: list[Verdict]
    found_after_s: float
    programs_before: int
    original_steps: list[dict[str, Any]]
    shrink_runs: int = 0
    shrink_s: float = 0.0
    #: Seconds from the first failure until the program reported was first run.
    best_after_s: float = 0.0
    reproduced: int = 0
    replays: int = 0
    path: Path | None = None
    #: It failed once and not when run again at once: never handed to Hypothesis to shrink.
    flaky: bool = False

    @property
    def lines(self) -> list[str]:
        return render_program(self.steps)

    def summary(self) -> str:
        rate = f"; reproduced {self.reproduced} of {self.replays} replays" if self.replays else ""
        how = ("failed once, not shrunk" if self.flaky
               else f"shrunk from {len(self.original_steps)} to {len(self.steps)} steps")
        return f"{self.key}: {self.message} -- {how}{rate}"


@dataclass
class ExploreResult:
    programs: int = 0
    steps: int = 0
    findings: list[Finding] = field(default_factory=list)
    duration_s: float = 0.0
    search_s: float = 0.0
    stopped: str = ""
    restarts: int = 0
    unknown: Counter[str] = field(default_factory=Counter)
    harness_errors: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.findings)


@dataclass
class _Seen:
    steps: list[dict[str, Any]]
    verdicts: list[Verdict]
    at: float
    index: int


def _size(steps: list[dict[str, Any]]) -> tuple[int, int, int]:
    frames = sum(len(st.get("frames", ())) for st in steps)
    return len(steps), frames, len(json.dumps(steps, sort_keys=True))


Progress = Callable[[dict[str, Any]], None]
#: The share of the shrink budget for Hypothesis's own shrink of the whole draw; the rest
#: goes to trimming the steps (:meth:`Explorer._trim`).
_MAIN_SHRINK = 0.7
#: Runs of a smaller program while trimming before it counts as not failing.
_TRIM_TRIES = 3


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Explorer:
    """Search for a failing program within a budget; shrink, confirm and save the first one found."""

    def __init__(self, ctx: Context, *, config: ExploreConfig | None = None, budget_s: float = 30.0,
                 shrink_s: float = 60.0, confirm: int = 3, target_desc: dict[str, Any] | None = None,
                 progress: Progress | None = None) -> None:
        self.ctx = ctx
        self.config = config or ExploreConfig()
        self.budget_s = budget_s
        self.shrink_s = shrink_s
        self.confirm = confirm
        self.seed = ctx.seed
        self.run_dir = ctx.run_dir
        self.target_desc = target_desc or {"name": ctx.target.name}
        self.host = TargetHost(ctx, self.config)
        self.progress = progress
        self.result = ExploreResult()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: concurrent.futures.Future[Any] | None = None
        self._seen: dict[str, list[_Seen]] = {}
        #: Failures that did not fail again when run at once a second time.
        self._flaky: dict[str, list[_Seen]] = {}
        self._first: tuple[str, float] | None = None
        self._started = 0.0
        self._t: dict[str, float] = {}

    # -- the driver (worker thread) ----------------------------------------------------
    def _deadline_passed(self) -> str | None:
        now = time.monotonic()
        if self._stop.is_set():
            return "stopped"
        if self._first is None and now - self._started > self.budget_s:
            return "budget"
        if self._first is not None and now - self._first[1] > self.shrink_s * _MAIN_SHRINK:
            return "shrink budget"
        return None

    def _run(self, steps: list[dict[str, Any]]) -> list[Verdict] | None:
        """One program on the loop, from the worker thread; None when it could not be judged."""
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self._example(steps), self._loop)
        self._current = fut
        try:
            return fut.result(timeout=scaled(90))
        except concurrent.futures.TimeoutError:
            fut.cancel()
            self.result.harness_errors.append("a program did not finish within 90 s")
            return None
        except concurrent.futures.CancelledError:
            raise unittest.SkipTest("stopped") from None
        finally:
            self._current = None

    def _test(self, steps: list[dict[str, Any]]) -> None:
        why = self._deadline_passed()
        if why is not None:
            raise unittest.SkipTest(why)
        verdicts = self._run(steps)
        bad = failures(verdicts or [])
        if not bad:
            return
        key = finding_key(bad[0])
        index = self.result.programs
        seen = _Seen(list(steps), bad, time.monotonic(), index)
        if self._first is None:
            # Hypothesis begins shrinking by running the failing program again and gives
            # up at once ("flaky") when it passes. So a first failure is run once more
            # here: only one that fails twice is handed over; another is kept as a
            # candidate and the search goes on.
            again = failures(self._run(steps) or [])
            if not any(finding_key(v) == key for v in again):
                self._flaky.setdefault(key, []).append(seen)
                return
        self._seen.setdefault(key, []).append(seen)
        if self._first is None:
            self._first = (key, time.monotonic())
            self.result.search_s = time.monotonic() - self._started
            self._report(phase="shrinking", finding=key)
        raise _failure_type(key)(f"{bad[0].check}: {bad[0].message}")

    def _drive(self) -> None:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hseed
        from hypothesis.database import DirectoryBasedExampleDatabase

        db = DirectoryBasedExampleDatabase(str(self.run_dir / "hypothesis"))

        @hseed(self.seed)
        @settings(max_examples=10**6, deadline=None, database=db, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                  report_multiple_bugs=False, verbosity=Verbosity.quiet, print_blob=False)
        @given(programs(self.host.caps))
        def explore(steps: list[dict[str, Any]]) -> None:
            self._test(steps)

        try:
            with hypothesis_home(self.run_dir / "hypothesis"):
                try:
                    explore()
                finally:
                    if self._first is not None and not self._stop.is_set():
                        self._trim(*self._first)
            self.result.stopped = self.result.stopped or "Hypothesis ran out of programs"
        except unittest.SkipTest as stop:
            self.result.stopped = str(stop) or "stopped"
        except ExplorationFailure:
            self.result.stopped = "shrunk"
        except BaseException as exc:  # Flaky and friends: the programs already seen still stand
            from hypothesis.errors import Flaky

            if isinstance(exc, Flaky):
                self.result.stopped = "shrunk (the last replay did not fail again)"
            elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            else:
                self.result.stopped = "error"
                self.result.harness_errors.append(f"{type(exc).__name__}: {exc}")

    def _trim(self, key: str, first_at: float) -> None:
        """Shrink the smallest failing program further by the steps it keeps, with Hypothesis again.

        The main shrink works on the whole draw and spends most runs on each step's
        details; this one searches only which steps to keep (a sorted list of step
        indices, which Hypothesis shrinks towards fewer and earlier ones), so a program
        whose failure needs two of its steps gets there in a few runs. Any subset of a
        program is a program: sessions connect as steps name them, references resolve
        at run time.
        """
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hseed
        from hypothesis import strategies as st

        steps = min(self._seen[key], key=lambda s: _size(s.steps)).steps
        if len(steps) <= 1:
            return
        deadline = first_at + self.shrink_s

        @hseed(self.seed)
        @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate, Phase.shrink], report_multiple_bugs=False, verbosity=Verbosity.quiet,
                  print_blob=False)
        @given(st.lists(st.integers(0, len(steps) - 1), min_size=1, max_size=len(steps) - 1, unique=True))
        def trim(keep: list[int]) -> None:
            if self._stop.is_set() or time.monotonic() > deadline:
                raise unittest.SkipTest("shrink budget")
            sub = [steps[i] for i in sorted(keep)]
            # A race reproduces only sometimes, the more so on a loaded machine: a smaller
            # program gets up to three runs before it counts as not failing, so a miss of
            # the race does not leave the finding at a larger local minimum.
            for _ in range(_TRIM_TRIES):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                bad = failures(self._run(sub) or [])
                same = [v for v in bad if finding_key(v) == key]
                if same:
                    self._seen[key].append(_Seen(sub, same, time.monotonic(), self.result.programs))
                    raise _failure_type(key)("still fails")

        self._report(phase="trimming", finding=key)
        with contextlib.suppress(Exception, unittest.SkipTest):
            trim()

    # -- one program (the loop) ----------------------------------------------------------
    async def _example(self, steps: list[dict[str, Any]]) -> list[Verdict]:
        t0 = time.monotonic()
        env, base = await self.host.env()
        t1 = time.monotonic()

        def on_step(_i: int) -> None:
            self.result.steps += 1

        run = await run_program(env, steps, baseline=base, on_step=on_step)
        t2 = time.monotonic()
        verdicts = judge(run, target=self.host.target, config=self.config)
        t3 = time.monotonic()
        steps_s = sum(tr.ms for tr in run.traces) / 1000
        for part, secs in (("target", t1 - t0), ("steps", steps_s), ("teardown+settle", run.duration_s - steps_s),
                           ("judge", t3 - t2)):
            self._t[part] = self._t.get(part, 0.0) + secs
        self.result.programs += 1
        if run.harness_error:
            self.result.harness_errors.append(run.harness_error)
        for v in verdicts:
            if v.status == "unknown":
                self.result.unknown[finding_key(v)] += 1
        self._report()
        return verdicts

    def _report(self, **extra: Any) -> None:
        if self.progress is None:
            return
        with contextlib.suppress(Exception):
            self.progress({"programs": self.result.programs, "steps": self.result.steps,
                           "findings": len(self._seen), "elapsed_s": time.monotonic() - self._started,
                           "budget_s": self.budget_s, "phase": "search" if self._first is None else "shrink",
                           **extra})

    # -- the whole run -------------------------------------------------------------------
    async def run(self) -> ExploreResult:
        """Explore until the budget is spent or a finding is shrunk; always stops what it started."""
        self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        await self.host.start()
        self._started = time.monotonic()  # the budget is for programs, not for the target's start
        done: asyncio.Future[None] = self._loop.create_future()

        def drive() -> None:
            try:
                self._drive()
            finally:
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_resolve, done)

        thread = threading.Thread(target=drive, name="wschaos-explore", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self._stop.set()
            cur = self._current
            if cur is not None:
                cur.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(done), scaled(10))
            raise
        self.result.restarts = self.host.restarts
        if self._first is not None:
            await self._finish(self._first[0], self._first[1], self._seen[self._first[0]])
        elif self._flaky and not self._stop.is_set():
            # Nothing failed twice in a row; the earliest failure that happened once is still
            # reported, with the rate its replays show.
            key, seen = min(self._flaky.items(), key=lambda kv: kv[1][0].index)
            self.result.search_s = self.result.search_s or (seen[0].at - self._started)
            await self._finish(key, seen[0].at, seen, flaky=True)
        self.result.duration_s = time.monotonic() - self._started
        if not self.result.search_s:
            self.result.search_s = self.result.duration_s
        self.result.timing = dict(self._t)
        return self.result

    async def _finish(self, key: str, first_at: float, seen: list[_Seen], *, flaky: bool = False) -> None:
        original = seen[0]
        # The smallest failing programs Hypothesis ran, smallest first. The first that
        # fails again on replay is reported; a shrink can land on a program that only
        # fails now and then, and a larger one beside it may fail every time.
        candidates = sorted(seen, key=lambda s: _size(s.steps))[:3]
        self._report(phase="confirming", finding=key)
        chosen, reproduced, replays, evidence = candidates[0], -1, 0, None
        for cand in candidates:
            hits, runs, first_hit = await self._replays(cand.steps, key)
            if hits > reproduced:  # the best rate wins; the smaller program on a tie
                chosen, reproduced, replays, evidence = cand, hits, runs, first_hit
            if not self.confirm or hits == runs:
                break
        reproduced = max(reproduced, 0)
        finding = Finding(
            key=key, message=chosen.verdicts[0].message, steps=chosen.steps, verdicts=chosen.verdicts,
            found_after_s=original.at - self._started, programs_before=original.index,
            original_steps=original.steps, shrink_runs=max(0, self.result.programs - original.index - 1),
            shrink_s=time.monotonic() - first_at, best_after_s=max(0.0, chosen.at - first_at),
            reproduced=reproduced, replays=replays, flaky=flaky,
        )
        finding.path = self.save(finding)
        if evidence is not None:
            # The history of a replay that failed again: every frame and operation, for the timeline.
            with contextlib.suppress(OSError):
                evidence.history.to_jsonl(finding.path.with_suffix(".history.jsonl"))
        self.result.findings.append(finding)

    async def _replays(self, steps: list[dict[str, Any]], key: str) -> tuple[int, int, ProgramRun | None]:
        """Run ``steps`` ``confirm`` times; (how often it failed ``key``, runs, the first failing run)."""
        hits, runs, first = 0, 0, None
        for _ in range(self.confirm):
            if self._stop.is_set():
                break
            env, base = await self.host.env()
            run = await run_program(env, steps, baseline=base)
            verdicts = judge(run, target=self.host.target, config=self.config)
            runs += 1
            if any(finding_key(v) == key for v in failures(verdicts)):
                hits += 1
                first = first or run
        return hits, runs, first

    def save(self, finding: Finding) -> Path:
        n = len(self.result.findings) + 1
        pf = ProgramFile(
            steps=finding.steps, seed=self.seed, target=self.target_desc, config=self.config,
            capabilities=self.host.caps.as_json(),
            finding={
                "key": finding.key, "message": finding.message,
                "verdicts": [{"check": v.check, "status": v.status, "message": v.message} for v in finding.verdicts],
                "found_after_s": round(finding.found_after_s, 3), "programs_before": finding.programs_before,
                "original_steps": finding.original_steps, "shrink_runs": finding.shrink_runs,
                "shrink_s": round(finding.shrink_s, 3), "best_after_s": round(finding.best_after_s, 3),
                "reproduced": finding.reproduced,
                "replays": finding.replays, "flaky": finding.flaky,
            },
        )
        return pf.save(self.run_dir / f"finding-{n}.json")


@dataclass
class Replay:
    runs: int = 0
    reproduced: int = 0
    keys: Counter[str] = field(default_factory=Counter)
    last: ProgramRun | None = None
    last_verdicts: list[Verdict] = field(default_factory=list)


async def replay_program(ctx: Context, pf: ProgramFile, times: int,
                         progress: Callable[[int, int, bool], None] | None = None) -> Replay:
    """Run the program of ``pf`` ``times`` times on one target; how often it fails its finding's check.

    Without a recorded finding, any failed invariant counts as reproducing.
    """
    host = TargetHost(ctx, pf.config)
    await host.start()
    want = pf.finding.get("key")
    out = Replay()
    for i in range(times):
        env, base = await host.env()
        run = await run_program(env, pf.steps, baseline=base)
        verdicts = judge(run, target=host.target, config=pf.config)
        bad = failures(verdicts)
        keys = {finding_key(v) for v in bad}
        out.keys.update(keys)
        hit = bool(bad) if not want else want in keys
        out.runs += 1
        out.reproduced += int(hit)
        out.last, out.last_verdicts = run, verdicts
        if progress is not None:
            progress(i + 1, times, hit)
    return out
