"""The versioned ``results.json`` schema: one run's data, for every reader.

The CI gate, the Markdown summary, the JUnit file, the console table and the
HTML release report are all renderings of one :class:`RunResult`; none of them
reaches back into the history or the target.  The schema is documented in
``docs/results-schema.md``.  Within ``schema_version`` 1 fields are only ever
added (readers ignore keys they do not know); renaming or removing one bumps
the version, and :func:`load_run` refuses versions it does not know rather
than misreading them; ``schema_minor`` counts the additive changes within a
version, so a reader can tell which optional fields to expect.

Secrets never reach the disk: :meth:`RunResult.to_json` passes everything
through :func:`harness.results.redact.redact`.  Run directories and
``results.json`` on disk are :mod:`harness.results.store`'s.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import __version__
from harness.results.redact import redact

__all__ = [
    "CHECK_STATUSES",
    "RESULTS_FILE",
    "RUN_STATUSES",
    "SCHEMA_MINOR",
    "SCHEMA_VERSION",
    "CaseResult",
    "HostInfo",
    "ResultsError",
    "RunResult",
    "TargetInfo",
    "VerdictResult",
    "check_id",
    "utc_now_iso",
]

SCHEMA_VERSION = 1
#: Additive changes within SCHEMA_VERSION: 1 added ``comparison`` (a run against its baseline).
#: Files written before the field existed read as minor 0.
SCHEMA_MINOR = 1
RESULTS_FILE = "results.json"
#: pass/fail/unknown come from checkers; known and stale are set by
#: harness.results.known_failures (a listed failure, and a listed check that now passes).
CHECK_STATUSES = ("pass", "fail", "unknown", "known", "stale")
#: "running" is what a run directory holds until the run ends: a file still
#: saying so was left by a harness that died.
RUN_STATUSES = ("running", "complete", "interrupted", "error")


class ResultsError(ValueError):
    """A results file is missing, corrupt, or of a schema version this wschaos does not read."""


def check_id(case_id: str, check: str) -> str:
    """The stable id of one check of one case, as known-failures files name it."""
    return f"{case_id}::{check}"


def utc_now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- the records -------------------------------------------------------------------


@dataclass
class VerdictResult:
    check: str
    status: str  # one of CHECK_STATUSES
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    #: One shell command that reruns exactly this case (same seed, same target).
    replay: str | None = None
    #: Why a known-failures entry excused (known) or lists (stale) this check.
    known_reason: str | None = None

    @classmethod
    def from_verdict(cls, verdict: Any, replay: str | None = None) -> VerdictResult:
        """From a :class:`harness.core.verdict.Verdict` (duck-typed to keep this module import-light)."""
        return cls(verdict.check, verdict.status, verdict.message, dict(verdict.figures), replay)


@dataclass
class CaseResult:
    case_id: str  # "interrupts.storm[10x10]"
    scenario: str  # "interrupts.storm"
    params: dict[str, Any] = field(default_factory=dict)
    repeat: int = 0
    duration_s: float = 0.0
    verdicts: list[VerdictResult] = field(default_factory=list)
    #: name -> path relative to the run directory ("history": "cases/x/history.jsonl").
    artifacts: dict[str, str] = field(default_factory=dict)
    #: The internal error text when the case itself crashed (not a failed check).
    error: str | None = None
    #: Plot series: name -> [[x, y], ...], e.g. "tasks" or "latency_ms" per churn cycle.
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    #: Case-level figures (``Context.figure``), e.g. ``exit_ms_samples``, ``ack_latencies_ms``.
    figures: dict[str, Any] = field(default_factory=dict)
    #: Why the case did not apply to this target (no verdicts, not a failure).
    skipped: str | None = None
    #: The case's replay command; verdicts without their own replay use it.
    replay: str | None = None

    @classmethod
    def from_outcome(cls, outcome: Any, *, repeat: int = 0, run_dir: str | Path | None = None) -> CaseResult:
        """From a :class:`harness.engine.scenario.CaseOutcome`; artifact paths made relative to ``run_dir``."""
        arts = {}
        base = Path(run_dir).resolve() if run_dir is not None else None
        for name, path in (outcome.artifacts or {}).items():
            p = Path(path)
            if base is not None:
                try:
                    p = p.resolve().relative_to(base)
                except ValueError:
                    pass  # outside the run directory: keep it as given rather than lie
            arts[name] = p.as_posix()
        replay = outcome.replay or None
        return cls(
            case_id=outcome.case_id,
            scenario=outcome.scenario,
            params=dict(outcome.params),
            repeat=repeat,
            duration_s=outcome.duration_s,
            verdicts=[VerdictResult.from_verdict(v, replay) for v in outcome.verdicts],
            artifacts=arts,
            error=outcome.error,
            series={k: [list(pt) for pt in v] for k, v in (outcome.series or {}).items()},
            figures=dict(outcome.figures or {}),
            skipped=outcome.skipped,
            replay=replay,
        )


@dataclass
class TargetInfo:
    name: str
    argv: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    adapter: str = "reference"

    @property
    def label(self) -> str:
        """How outputs name the target: its name and, for anything but the reference server, its command."""
        if self.name == "reference" or not self.argv:
            return self.name or "target"
        argv = [Path(self.argv[0]).name, *self.argv[1:]]
        cmd = shlex.join(argv)
        cmd = cmd if len(cmd) <= 100 else cmd[:97] + "..."
        named = self.name and self.name not in (self.argv[0], argv[0])
        return f"{self.name} ({cmd})" if named else cmd

    @classmethod
    def from_target(cls, target: Any) -> TargetInfo:
        """From a :class:`harness.target.spec.Target`; argv is redacted when the run is saved."""
        return cls(target.name, list(target.argv), list(target.faults), target.adapter)


@dataclass
class HostInfo:
    python: str
    platform: str
    cpus: int | None

    @classmethod
    def current(cls) -> HostInfo:
        return cls(platform.python_version(), platform.platform(), os.cpu_count())


@dataclass
class RunResult:
    run_id: str
    started_at: str  # ISO 8601 UTC, wall clock, for humans only
    target: TargetInfo
    duration_s: float = 0.0
    wschaos_version: str = __version__
    seed: int | None = None
    profile: str = "default"
    time_factor: float = 1.0
    host: HostInfo = field(default_factory=HostInfo.current)
    cases: list[CaseResult] = field(default_factory=list)
    status: str = "running"  # one of RUN_STATUSES
    exit_code: int | None = None
    #: Set by harness.results.known_failures.apply_known: source file, excused, stale, expired, unused.
    known_failures: dict[str, Any] | None = None
    #: Set by ``wschaos run --baseline``: this run against its baseline, as
    #: :meth:`harness.results.compare.Comparison.to_dict` writes it (schema minor 1).
    comparison: dict[str, Any] | None = None

    # -- reading -------------------------------------------------------------
    def checks(self) -> Iterator[tuple[CaseResult, VerdictResult]]:
        for case in self.cases:
            for v in case.verdicts:
                yield case, v

    @property
    def summary(self) -> dict[str, int]:
        """Counts by check status, plus cases, checks, crashed cases (errors) and skipped cases."""
        counts = Counter(v.status for _, v in self.checks())
        out = {s: counts.get(s, 0) for s in CHECK_STATUSES}
        out["checks"] = sum(counts.values())
        out["cases"] = len(self.cases)
        out["errors"] = sum(1 for c in self.cases if c.error)
        out["skipped"] = sum(1 for c in self.cases if c.skipped)
        return out

    # -- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "schema_minor": SCHEMA_MINOR}
        d.update(asdict(self))
        d["summary"] = self.summary
        return d

    def redacted(self) -> RunResult:
        """A copy with secrets masked: what every report renders, so none leaks a token."""
        return RunResult.from_dict(redact(self.to_dict()))

    def to_json(self, *, redact_secrets: bool = True) -> str:
        d = self.to_dict()
        if redact_secrets:
            d = redact(d)
        return json.dumps(_finite(d), indent=2, allow_nan=False, default=str) + "\n"

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "results") -> RunResult:
        if not isinstance(d, dict):
            raise ResultsError(f"{source}: expected a JSON object at the top level")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            hint = "a newer wschaos wrote it" if isinstance(version, int) and version > SCHEMA_VERSION else "not a wschaos results file?"
            raise ResultsError(f"{source}: schema_version {version!r}, this wschaos reads {SCHEMA_VERSION} ({hint})")
        try:
            kw = _pick(cls, d, source)
            kw["target"] = TargetInfo(**_pick(TargetInfo, d["target"], f"{source}: target"))
            if "host" in d:
                kw["host"] = HostInfo(**_pick(HostInfo, d["host"], f"{source}: host"))
            kw["cases"] = [_case_from(c, f"{source}: cases[{i}]") for i, c in enumerate(d.get("cases", []))]
            if kw.get("status", "running") not in RUN_STATUSES:
                raise ResultsError(f"{source}: status {kw['status']!r} is not one of {', '.join(RUN_STATUSES)}")
            return cls(**kw)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ResultsError(f"{source}: malformed results ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "results") -> RunResult:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        return cls.from_dict(data, source=source)


def _case_from(d: Any, source: str) -> CaseResult:
    kw = _pick(CaseResult, d, source)
    kw["verdicts"] = []
    for j, v in enumerate(d.get("verdicts", [])):
        vr = VerdictResult(**_pick(VerdictResult, v, f"{source}.verdicts[{j}]"))
        if vr.status not in CHECK_STATUSES:
            raise ResultsError(f"{source}.verdicts[{j}]: status {vr.status!r} is not one of {', '.join(CHECK_STATUSES)}")
        kw["verdicts"].append(vr)
    return CaseResult(**kw)


_NESTED = {"target", "host", "cases", "verdicts"}


def _pick(cls: Any, d: Any, source: str) -> dict[str, Any]:
    """The known fields of ``cls`` from ``d``; unknown keys are ignored (additive schema changes)."""
    if not isinstance(d, dict):
        raise ResultsError(f"{source}: expected an object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(n for n in required if n not in d)
    if missing:
        raise ResultsError(f"{source}: missing field(s) {', '.join(missing)}")
    return {k: v for k, v in d.items() if k in names and k not in _NESTED}


def _finite(obj: Any) -> Any:
    """NaN and infinities are not JSON: written as null so jq and browsers can read the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
