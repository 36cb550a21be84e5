"""The versioned ``results.json`` schema: one run's data, for every reader.

The CI gate, the Markdown summary, the JUnit file, the console table and the
HTML release report are all renderings of one :class:`RunResult`; none of them
reaches back into the history or the target.  The schema is documented in
``docs/results-schema.md``.  Within ``schema_version`` 1 fields are only ever
added (readers ignore keys they do not know); renaming or removing one bumps
the version, and :func:`load_run` refuses versions it does not know rather
than misreading them.

Secrets never reach the disk: :func:`save_run` passes everything through
:func:`redact` first, because run directories get uploaded as CI artifacts.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import __version__

__all__ = [
    "CHECK_STATUSES",
    "RESULTS_FILE",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "CaseResult",
    "HostInfo",
    "ResultsError",
    "RunResult",
    "TargetInfo",
    "VerdictResult",
    "check_id",
    "load_run",
    "new_run_dir",
    "redact",
    "save_run",
    "utc_now_iso",
]

SCHEMA_VERSION = 1
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
        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
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


# -- redaction ---------------------------------------------------------------------

MASK = "***"
#: Words that make a key (or a --flag) secret, matched against its parts
#: ("access_token", "X-Api-Key", "clientSecret"), so "monkey" or "max_tokens" are left alone.
SECRET_WORDS = frozenset(
    {"authorization", "auth", "token", "secret", "password", "passwd", "pwd", "key", "apikey",
     "cookie", "credential", "credentials", "passphrase"}
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_QUERY_PARAM = re.compile(r"(?P<pre>[?&;])(?P<name>[^=&#\s]+)=(?P<val>[^&#\s]*)")
_AUTH_HEADER = re.compile(r"(?i)\b(?P<name>(?:proxy-)?authorization|cookie|x-api-key)(?P<sep>\s*[:=]\s*)(?P<val>.+)")
_FLAG = re.compile(r"^--?(?P<name>[A-Za-z][\w.-]*)(?:=(?P<val>.*))?$", re.S)
#: A secret flag inside a command line held as one string (a replay command, a --target-cmd).
_FLAG_IN_TEXT = re.compile(r"""(?<![\w-])(?P<flag>--?(?P<name>[A-Za-z][\w.-]*))(?P<sep>=|\s+)(?P<val>'[^']*'|"[^"]*"|[^\s'"]+)""")


def _is_secret_name(name: str, words: frozenset[str]) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    parts = [p.lower() for p in re.split(r"[^A-Za-z0-9]+", spaced) if p]
    joined = "".join(parts)
    return joined in words or any(p in words for p in parts)


def _redact_str(s: str, words: frozenset[str]) -> str:
    s = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", s)
    s = _QUERY_PARAM.sub(
        lambda m: f"{m['pre']}{m['name']}={MASK}" if _is_secret_name(m["name"], words) else m[0], s
    )
    s = _FLAG_IN_TEXT.sub(lambda m: _redact_flag(m, words), s)
    return _AUTH_HEADER.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", s)


def _redact_flag(m: re.Match[str], words: frozenset[str]) -> str:
    if _is_secret_name(m["name"], words):
        return f"{m['flag']}{m['sep']}{MASK}"
    val = m["val"]
    if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
        # A quoted command line (--target-cmd 'srv --token x') may hide secret flags of its own.
        val = val[0] + _redact_str(val[1:-1], words) + val[0]
    return f"{m['flag']}{m['sep']}{val}"


def redact(obj: Any, keys: Iterable[str] = SECRET_WORDS) -> Any:
    """A copy of ``obj`` with secrets masked.

    Masks values under secret-looking keys (Authorization, ``*token*``,
    ``*key``, ``*secret*``, ``*password*``...), the value after a secret
    ``--flag`` in argv-like lists (``--token abc``, ``--token=abc``), URL
    credentials (``ws://user:pass@host``), secret query parameters
    (``?token=...``) and ``Authorization: ...`` header text inside strings.
    """
    words = frozenset(k.lower() for k in keys)
    if isinstance(obj, dict):
        return {
            k: (MASK if v not in (None, "") and _is_secret_name(str(k), words) else redact(v, words))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        out: list[Any] = []
        mask_next = False
        for item in obj:
            if mask_next and isinstance(item, str):
                out.append(MASK)
                mask_next = False
                continue
            mask_next = False
            m = _FLAG.match(item) if isinstance(item, str) else None
            if m and _is_secret_name(m["name"], words):
                if m["val"] is None:
                    mask_next = True
                    out.append(item)
                else:
                    out.append(item.split("=", 1)[0] + "=" + MASK)
                continue
            out.append(redact(item, words))
        return out
    if isinstance(obj, str):
        return _redact_str(obj, words)
    return obj


# -- run directories ---------------------------------------------------------------


def new_run_dir(root: str | Path = "reports", run_id: str | None = None) -> Path:
    """Create ``root/<run_id>/`` and point ``root/latest`` at it.

    ``run_id`` defaults to ``<UTC timestamp>-<6 hex>`` (sortable, unique across
    parallel runs); a given one is used verbatim and must be one path component.
    The ``latest`` link is replaced atomically (a new link renamed over the
    old), so a reader never sees it missing.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if run_id is not None and (not run_id or "/" in run_id or os.sep in run_id or run_id in (".", "..", "latest")):
        raise ResultsError(f"run id {run_id!r} must be a single directory name other than 'latest'")
    for _ in range(10):
        rid = run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        path = root / rid
        try:
            path.mkdir()
            break
        except FileExistsError:
            if run_id is not None:
                raise ResultsError(f"{path}: run directory already exists") from None
    else:  # pragma: no cover - ten random collisions
        raise ResultsError(f"{root}: could not create a unique run directory")
    _point_latest(root, rid)
    return path


def _point_latest(root: Path, name: str) -> None:
    latest = root / "latest"
    if latest.exists() and not latest.is_symlink():
        return  # someone's real directory or file: never clobber it
    tmp = root / f".latest-{secrets.token_hex(4)}"
    try:
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError:
        # No symlinks (some Windows setups): leave a pointer file instead.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        (root / "latest.txt").write_text(name + "\n", encoding="utf-8")


def save_run(run: RunResult, run_dir: str | Path) -> Path:
    """Write ``run_dir/results.json`` (redacted) atomically; returns its path."""
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_name(f".{RESULTS_FILE}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(run.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_run(dir_or_file: str | Path) -> RunResult:
    """A run from a run directory (its ``results.json``), ``reports/latest``, or a results file."""
    p = Path(dir_or_file)
    path = p / RESULTS_FILE if p.is_dir() else p
    if not path.exists():
        what = "no results.json in this directory" if p.is_dir() else "no such results file"
        raise ResultsError(f"{path}: {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read: {exc}") from None
    return RunResult.from_json(text, source=str(path))

