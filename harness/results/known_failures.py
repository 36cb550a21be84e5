"""Known failures: checks a team has agreed to live with, for now.

A TOML file lists them::

    [[known_failure]]
    check = "churn.cycles[mixed]::churn.latency_drift"   # an exact id...
    reason = "handler list growth, tracked in #42"
    until = 2025-09-30                                   # optional: excuse ends after this date

    [[known_failure]]
    check = "keepalive.*::*.dropped_within"              # ...or a glob
    reason = "no keepalive yet"

``check`` is ``<case id>::<check>``, or only ``<check>`` to match that check
in every case.  Only ``*`` and ``?`` are wildcards: the ``[...]`` of case ids
is literal, so an exact id can be pasted from a report as it is.

Applying the file to a run (:func:`apply_known`):

* a failing check an entry matches becomes ``known``: reported, but it does
  not fail the gate;
* an entry whose matched checks all pass is **stale**: those checks become
  ``stale``, which fails the gate, so the list cannot silently outlive the bug;
* ``unknown`` is never excused: a checker that could not judge says nothing
  about whether the known bug is still there;
* an entry past its ``until`` date no longer excuses anything.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results.schema import RunResult, check_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["KnownFailure", "KnownFailures", "KnownFailuresError", "apply_known", "load_known"]

_TABLE = "known_failure"
_KEYS = {"check", "reason", "until"}


class KnownFailuresError(ValueError):
    """A known-failures file is unreadable or invalid; the message names the file, line and key."""


@dataclass(frozen=True)
class KnownFailure:
    check: str
    reason: str
    until: dt.date | None = None
    #: Where the entry was written, for messages: "known-failures.toml:12".
    where: str = ""

    def matches(self, case_id: str, check: str) -> bool:
        target = check_id(case_id, check) if "::" in self.check else check
        return self.check == target or _glob(self.check).fullmatch(target) is not None

    def expired(self, today: dt.date) -> bool:
        return self.until is not None and today > self.until


@dataclass(frozen=True)
class KnownFailures:
    entries: tuple[KnownFailure, ...] = ()
    source: str = ""


def _glob(pattern: str) -> re.Pattern[str]:
    # fnmatch would read "[10x10]" as a character class; case ids are full of brackets.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def load_known(path: str | Path) -> KnownFailures:
    """Parse a known-failures file; every error names the file, the entry's line and the key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KnownFailuresError(f"{p}: no such known-failures file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KnownFailuresError(f"{p}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnownFailuresError(f"{p}: not valid TOML: {exc}") from None
    extra = sorted(set(data) - {_TABLE})
    if extra:
        raise KnownFailuresError(f"{p}: unknown top-level key(s) {', '.join(extra)}; entries go in [[{_TABLE}]] tables")
    raw = data.get(_TABLE, [])
    if not isinstance(raw, list):
        raise KnownFailuresError(f"{p}: {_TABLE} must be an array of tables: write [[{_TABLE}]]")
    lines = _entry_lines(text)
    entries = []
    for i, item in enumerate(raw):
        line = lines[i] if i < len(lines) else None
        where = f"{p}:{line}" if line else f"{p}"
        entries.append(_entry(item, where=f"{where} ({_TABLE} #{i + 1})"))
    return KnownFailures(tuple(entries), str(p))


def _entry_lines(text: str) -> list[int]:
    """Line numbers of each [[known_failure]] header, so errors point into the file."""
    header = re.compile(rf"^\s*\[\[\s*{_TABLE}\s*\]\]")
    return [n for n, line in enumerate(text.splitlines(), 1) if header.match(line)]


def _entry(item: Any, *, where: str) -> KnownFailure:
    if not isinstance(item, dict):
        raise KnownFailuresError(f"{where}: an entry must be a table")
    bad = sorted(set(item) - _KEYS)
    if bad:
        raise KnownFailuresError(f"{where}: unknown key(s) {', '.join(bad)}; known: check, reason, until")
    check = item.get("check")
    if not isinstance(check, str) or not check.strip():
        raise KnownFailuresError(f"{where}: check must be a non-empty string like 'case[params]::check.name'")
    if check.count("::") > 1:
        raise KnownFailuresError(f"{where}: check {check!r} has more than one '::'")
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        # A known failure without a reason is a failure nobody will come back to.
        raise KnownFailuresError(f"{where}: reason is required (why is {check!r} allowed to fail?)")
    until = item.get("until")
    if isinstance(until, dt.datetime):
        until = until.date()
    elif isinstance(until, str):
        try:
            until = dt.date.fromisoformat(until)
        except ValueError:
            raise KnownFailuresError(f"{where}: until {until!r} is not a date like 2025-09-30") from None
    elif until is not None and not isinstance(until, dt.date):
        raise KnownFailuresError(f"{where}: until must be a date like 2025-09-30, not {until!r}")
    return KnownFailure(check.strip(), reason.strip(), until, where)


def apply_known(
    run: RunResult, known: KnownFailures | Sequence[KnownFailure], *, today: dt.date | None = None
) -> RunResult:
    """A copy of ``run`` with known failures marked ``known`` and stale entries' checks ``stale``.

    Idempotent: statuses a previous application set are undone first, so a
    saved run can be re-judged against an edited file.
    """
    entries = tuple(known.entries if isinstance(known, KnownFailures) else known)
    source = known.source if isinstance(known, KnownFailures) else ""
    today = today or dt.date.today()
    out = copy.deepcopy(run)
    for _, v in out.checks():
        if v.status in ("known", "stale"):
            v.status = "fail" if v.status == "known" else "pass"
            v.known_reason = None

    excused: list[str] = []
    stale: list[dict[str, str]] = []
    expired: list[dict[str, str]] = []
    unused: list[dict[str, str]] = []
    for entry in entries:
        matched = [(c, v) for c, v in out.checks() if entry.matches(c.case_id, v.check)]
        info = {"check": entry.check, "reason": entry.reason, "where": entry.where}
        if not matched:
            unused.append(info)  # the case did not run (a filter, a smaller profile): not an error
            continue
        if all(v.status == "pass" for _, v in matched):
            stale.append(info)
            for _, v in matched:
                v.status, v.known_reason = "stale", entry.reason
            continue
        if entry.expired(today):
            expired.append({**info, "until": entry.until.isoformat() if entry.until else ""})
            continue
        for c, v in matched:
            if v.status == "fail":  # unknown stays unknown: never excused
                v.status, v.known_reason = "known", entry.reason
                excused.append(check_id(c.case_id, v.check))
    out.known_failures = {
        "source": source, "excused": excused, "stale": stale, "expired": expired, "unused": unused,
    }
    return out
