"""Console, Markdown and JUnit renderings of one :class:`RunResult`.

Each reader gets the same data cut differently: the developer at a terminal a
table and one line per failing check with its replay command; the pull
request a Markdown summary whose first lines say what broke; CI test tabs a
JUnit file with one test case per check.  Nothing here runs anything: a saved
``results.json`` renders the same as a live run.  The HTML release report is
in :mod:`harness.report.html`.
"""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.results.gate import ExitCode, decide, signoff
from harness.results.schema import CaseResult, RunResult, VerdictResult, check_id

__all__ = [
    "failure_lines",
    "format_figures",
    "is_problem",
    "make_console",
    "print_failures",
    "render_console",
    "replay_of",
    "to_junit",
    "to_markdown",
]

#: Statuses a reader must act on; "known" is reported but excused.
PROBLEMS = ("fail", "stale", "unknown")
_STYLE = {"pass": "green", "fail": "bold red", "unknown": "bold yellow", "known": "magenta", "stale": "bold red"}
_ICON = {"pass": "✅", "fail": "❌", "unknown": "❓", "known": "🟣", "stale": "⚠️"}


def is_problem(v: VerdictResult) -> bool:
    return v.status in PROBLEMS


def replay_of(case: CaseResult, v: VerdictResult) -> str | None:
    return v.replay or case.replay


def _fmt_num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def format_figures(figures: dict[str, Any], limit: int = 4) -> str:
    """``p99_ms=412 bound_ms=200``: scalars first, then small mappings inline, lists by size.

    Empty lists and mappings say nothing and are left out ("missing=[0]" read as a value).
    """
    parts = []
    for name, val in figures.items():
        if not isinstance(val, (list, tuple, dict)):
            parts.append(f"{name}={_fmt_num(val)}")
    for name, val in figures.items():
        if isinstance(val, dict) and val and len(val) <= 5 and not any(isinstance(v, (dict, list)) for v in val.values()):
            parts.append(f"{name}={{" + ", ".join(f"{k}={_fmt_num(v)}" for k, v in val.items()) + "}")
    for name, val in figures.items():
        if isinstance(val, (list, tuple)) and val:
            parts.append(f"{name}: {len(val)} items")
    more = len(parts) - limit
    return " ".join(parts[:limit]) + (f" (+{more})" if more > 0 else "")


def _header_facts(run: RunResult) -> str:
    s = run.summary
    counts = ", ".join(f"{s[k]} {k}" for k in ("fail", "stale", "unknown", "known", "pass") if s[k])
    if s["errors"]:
        counts += f", {s['errors']} crashed"
    if s["skipped"]:
        counts += f", {s['skipped']} skipped"
    faults = f" (faults: {', '.join(run.target.faults)})" if run.target.faults else ""
    return (
        f"{counts or 'no checks'} · {s['cases']} cases · seed {run.seed} · "
        f"target {run.target.label}{faults} · profile {run.profile}"
    )


# -- console -----------------------------------------------------------------------


def make_console(file: IO[str] | None = None, *, width: int | None = None) -> Console:
    """A stderr console: colour only on a terminal and never under ``NO_COLOR``.

    Rich already reads ``NO_COLOR``; it is passed explicitly so a console made
    before the variable is set (tests, embedding) behaves the same.
    """
    stream = file if file is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        tty = False
    if width is None and not tty and not os.environ.get("COLUMNS"):
        # Rich falls back to 80 columns off a terminal, which folds every case id and
        # check name in the table; CI logs and captured output are read wider.
        width = 120
    return Console(file=stream, no_color="NO_COLOR" in os.environ or None, highlight=False, width=width)


def render_console(run: RunResult, console: Console, *, problems_only: bool = False) -> None:
    """A summary table: case, check, verdict, key figures or message; then the gate's word."""
    run = run.redacted()
    code, _ = decide(run)
    word = signoff(run)
    style = {"PASS": "bold green", "FAIL": "bold red", "INCOMPLETE": "bold yellow"}[word]
    plain = not console.is_terminal
    table = Table(
        title=Text(f"wschaos run {run.run_id}"),
        box=box.ASCII if plain else box.SIMPLE_HEAD,
        show_lines=False,
        expand=False,
    )
    table.add_column("case", overflow="fold")
    table.add_column("check", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("figures / message", overflow="fold")
    for case in run.cases:
        # Every cell a Text: "[10x10]" in a case id would otherwise be read as Rich markup.
        if case.skipped and not case.verdicts:
            table.add_row(Text(case.case_id), Text("-"), Text("skipped", style="dim"), Text(case.skipped))
        for v in case.verdicts:
            if problems_only and not is_problem(v):
                continue
            detail = format_figures(v.figures) if v.status == "pass" else v.message
            if v.status == "known" and v.known_reason:
                detail = f"known: {v.known_reason} — {v.message}"
            table.add_row(Text(case.case_id), Text(v.check), Text(v.status.upper(), style=_STYLE.get(v.status, "")), Text(detail))
    console.print(table)
    console.print(Text(f"{word}", style=style), Text(f" (exit {int(code)} {code.name}) · {_header_facts(run)}"))


def failure_lines(run: RunResult) -> list[str]:
    """One line per check needing attention, with its figures and replay command."""
    run = run.redacted()
    lines = []
    for case, v in run.checks():
        if not is_problem(v):
            continue
        figs = format_figures(v.figures)
        line = f"{v.status.upper()} {check_id(case.case_id, v.check)}: {v.message}"
        if figs:
            line += f" [{figs}]"
        if v.status == "stale":
            line += f" (listed as known: {v.known_reason})"
        replay = replay_of(case, v)
        if replay:
            line += f"\n    replay: {replay}"
        lines.append(line)
    for c in run.cases:
        if c.error:
            last = c.error.strip().splitlines()[-1] if c.error.strip() else "crashed"
            lines.append(f"ERROR {c.case_id}: {last}" + (f"\n    replay: {c.replay}" if c.replay else ""))
    return lines


def print_failures(run: RunResult, console: Console) -> None:
    for line in failure_lines(run):
        # Text() so brackets in case ids are not read as Rich markup.
        console.print(Text(line), soft_wrap=True)


# -- markdown ----------------------------------------------------------------------


def _md(s: str) -> str:
    """Table-cell safe: no pipes or newlines breaking the row."""
    return s.replace("|", "\\|").replace("\n", " ").strip()


def _code(s: str) -> str:
    fence = "``" if "`" in s else "`"
    return f"{fence}{s}{fence}" if fence == "`" else f"{fence} {s} {fence}"


def to_markdown(run: RunResult, *, comparison: Any = None, max_lines: int = 50) -> str:
    """A summary for ``$GITHUB_STEP_SUMMARY`` or a PR comment.

    ``comparison``: an optional :class:`harness.results.compare.Comparison` against a
    baseline, rendered after the failures.
    """
    run = run.redacted()
    code, reasons = decide(run)
    word = signoff(run)
    icon = {"PASS": "✅", "FAIL": "❌", "INCOMPLETE": "⚠️"}[word]
    out = [
        f"## {icon} wschaos: {word}",
        "",
        f"**{_header_facts(run)}** · exit {int(code)} `{code.name}` · {run.started_at} · {run.duration_s:.1f} s",
        "",
    ]
    problems = [(c, v) for c, v in run.checks() if is_problem(v)]
    if problems:
        out.append("### Needs attention")
        out.append("")
        for case, v in problems[:max_lines]:
            figs = format_figures(v.figures, limit=6)
            line = f"- {_ICON[v.status]} **{v.status.upper()}** `{check_id(case.case_id, v.check)}`: {_md(v.message)}"
            if figs:
                line += f" ({figs})"
            if v.status == "stale":
                line += f" — listed as known ({_md(v.known_reason or '')}); remove the entry"
            replay = replay_of(case, v)
            if replay:
                line += f"<br>replay: {_code(replay)}"
            out.append(line)
        if len(problems) > max_lines:
            out.append(f"- … and {len(problems) - max_lines} more (see results.json)")
        out.append("")
    crashed = [c for c in run.cases if c.error]
    if crashed:
        out += ["### Crashed cases", ""]
        for c in crashed:
            last = c.error.strip().splitlines()[-1] if c.error and c.error.strip() else "crashed"
            out.append(f"- `{c.case_id}`: {_md(last)}")
        out.append("")
    kf = run.known_failures or {}
    if kf.get("excused") or kf.get("expired"):
        out.append(f"Known failures excused: {len(kf.get('excused', []))}; expired: {len(kf.get('expired', []))}.")
        out.append("")
    if code == ExitCode.NO_CHECKS:
        out += [f"> {reasons[0]}", ""]
    if comparison is not None:
        out += [comparison.to_markdown(), ""]
    out += ["<details><summary>All checks</summary>", "", "| case | check | verdict | figures |", "| --- | --- | --- | --- |"]
    for case, v in run.checks():
        out.append(
            f"| `{_md(case.case_id)}` | `{_md(v.check)}` | {_ICON.get(v.status, '')} {v.status} | {_md(format_figures(v.figures, limit=6))} |"
        )
    out += ["", "</details>", ""]
    return "\n".join(out)


# -- junit -------------------------------------------------------------------------

# XML 1.0 forbids most control characters; ANSI escapes in messages would make
# the whole file unparseable for the CI.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(s: Any) -> str:
    return _XML_BAD.sub("", str(s))


def to_junit(run: RunResult) -> str:
    """JUnit XML: one ``testcase`` per check, classname = case id.

    fail and stale -> ``<failure>``; unknown and crashed cases -> ``<error>``
    (the harness could not judge); known failures and skipped cases ->
    ``<skipped>``.  Seed, target and profile are suite properties.
    """
    run = run.redacted()
    suite = ET.Element("testsuite", name=f"wschaos.{_x(run.profile)}", timestamp=_x(run.started_at))
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("seed", run.seed), ("target", run.target.label), ("faults", ",".join(run.target.faults)),
        ("profile", run.profile), ("run_id", run.run_id), ("wschaos_version", run.wschaos_version),
        ("time_factor", run.time_factor),
    ):
        ET.SubElement(props, "property", name=name, value=_x(value))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for case in run.cases:
        n = max(1, len(case.verdicts))
        each = f"{case.duration_s / n:.3f}"
        for v in case.verdicts:
            tc = ET.SubElement(suite, "testcase", classname=_x(case.case_id), name=_x(v.check), time=each)
            counts["tests"] += 1
            body = _x(v.message + ("\n" + format_figures(v.figures, limit=20) if v.figures else ""))
            replay = replay_of(case, v)
            if replay:
                body += _x(f"\nreplay: {replay}")
            if v.status in ("fail", "stale"):
                msg = v.message if v.status == "fail" else f"stale known failure: {v.known_reason}"
                el = ET.SubElement(tc, "failure", message=_x(msg), type=v.status)
                el.text = body
                counts["failures"] += 1
            elif v.status == "unknown":
                el = ET.SubElement(tc, "error", message=_x(v.message), type="unknown")
                el.text = body
                counts["errors"] += 1
            elif v.status == "known":
                ET.SubElement(tc, "skipped", message=_x(f"known failure: {v.known_reason}: {v.message}"))
                counts["skipped"] += 1
        if case.error:
            tc = ET.SubElement(suite, "testcase", classname=_x(case.case_id), name="(case crashed)", time="0")
            el = ET.SubElement(tc, "error", message="the case crashed", type="internal")
            el.text = _x(case.error)
            counts["tests"] += 1
            counts["errors"] += 1
        elif case.skipped and not case.verdicts:
            tc = ET.SubElement(suite, "testcase", classname=_x(case.case_id), name="(case)", time="0")
            ET.SubElement(tc, "skipped", message=_x(case.skipped))
            counts["tests"] += 1
            counts["skipped"] += 1
    totals = {k: str(n) for k, n in counts.items()}
    totals["time"] = f"{run.duration_s:.3f}"
    for k, val in totals.items():
        suite.set(k, val)
    root = ET.Element("testsuites", {"name": "wschaos", **totals})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
