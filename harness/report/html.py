"""The release report: one self-contained HTML file from one :class:`RunResult`.

Inline CSS, inline SVG plots (matplotlib, drawn without pyplot so no global
backend is touched), no scripts, no external requests: the file can be
attached to a release ticket and opened years later, offline.

The first screen answers the sign-off question: PASS / FAIL / INCOMPLETE, the
counts, target, seed and date, and the checks needing attention with their
numbers and replay commands.  Against a baseline, the trend follows:
regressions first (both values, the bound, a small plot of base against new),
then verdict changes, then the cases that were not comparable.  Then the
plots, a timeline of every failing case (:mod:`harness.report.timeline`, drawn
from its ``history.jsonl``), and the full checks table.

Plot inputs, by convention (all optional; a plot without data is left out):

* ``exit_ms_samples`` (list) or ``exit_ms`` (number) in a case's or a
  verdict's figures: the exit-time distribution per shutdown case;
* ``ack_latencies_ms`` (list): the ACK-latency histogram;
* ``CaseResult.series``: ``{name: [[x, y], ...]}`` over churn cycles.  Names
  containing ``latency`` go to the latency plot; the rest (``tasks``,
  ``subscriptions``, ``fds``, ``rss_mb``, ...) to the resource plots.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.report.text import format_figures, is_problem, replay_of
from harness.report.timeline import load_records, timeline_svg
from harness.results.compare import Comparison, FigureChange, aggregate, compare, fmt_value
from harness.results.gate import decide, signoff
from harness.results.schema import CaseResult, RunResult, check_id

__all__ = ["plot_svgs", "timeline_cases", "to_html", "trend_plot", "write_html"]

_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCOMPLETE": "#9a6700"}
_BADGE = {"pass": "#1a7f37", "fail": "#cf222e", "unknown": "#9a6700", "known": "#8250df", "stale": "#cf222e"}
_RUN_C, _BASE_C = "#0969da", "#8c959f"

CSS = """
*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:20px 24px}
.verdict{display:flex;align-items:center;gap:24px;padding:18px 24px;border-radius:10px;color:#fff}
.verdict .word{font-size:46px;font-weight:800;letter-spacing:.04em}
.verdict .sub{font-size:15px;opacity:.95}.chips{margin-top:6px}
.chip{display:inline-block;padding:2px 10px;margin:2px 6px 2px 0;border-radius:999px;background:rgba(255,255,255,.22);font-weight:600}
dl.meta{display:grid;grid-template-columns:repeat(4,auto 1fr);gap:4px 12px;margin:14px 0;padding:12px 16px;background:#fff;border:1px solid #d0d7de;border-radius:8px}
dl.meta dt{color:#59636e;font-weight:600}dl.meta dd{margin:0;overflow-wrap:anywhere}
h2{font-size:20px;margin:22px 0 10px}
.problem{background:#fff;border:1px solid #d0d7de;border-left:6px solid var(--c);border-radius:6px;padding:8px 12px;margin:8px 0}
.problem .id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-weight:600}
.badge{display:inline-block;min-width:64px;text-align:center;padding:1px 8px;border-radius:4px;color:#fff;font-size:12px;font-weight:700;background:var(--c)}
.figs{color:#59636e;font-family:ui-monospace,monospace;font-size:13px}
pre.replay{margin:6px 0 0;padding:6px 10px;background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;overflow-x:auto;font-size:13px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:8px}
figure svg{width:100%;height:auto}figcaption{color:#59636e;font-size:13px;padding:2px 6px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eaeef2}
td.mono{font-family:ui-monospace,monospace}.ok{color:#1a7f37}.none{color:#59636e;font-style:italic}
tr.regressed td{background:#ffebe9}td.plot{padding:2px 4px;width:270px}td.plot svg{display:block}
.timeline-wrap{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:8px;margin:10px 0;overflow-x:auto}
.timeline-wrap h3{font-size:15px;margin:2px 4px 6px;font-family:ui-monospace,monospace}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


# -- data extraction ---------------------------------------------------------------


def _numbers(val: Any) -> list[float]:
    vals = val if isinstance(val, (list, tuple)) else [val]
    return [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _figure_pool(run: RunResult, names: Iterable[str]) -> dict[str, list[float]]:
    """Per case id, every number found under ``names`` in case and verdict figures (all repeats)."""
    wanted = tuple(names)
    out: dict[str, list[float]] = {}
    for case in run.cases:
        for figs in [case.figures, *(v.figures for v in case.verdicts)]:
            for name in wanted:
                if name in figs:
                    out.setdefault(case.case_id, []).extend(_numbers(figs[name]))
                    break  # exit_ms_samples already holds exit_ms: do not count it twice
    return {k: v for k, v in out.items() if v}


def _series(run: RunResult, latency: bool) -> dict[str, dict[str, list[list[float]]]]:
    """series name -> {case id: points}, the first repeat of each case."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    for case in run.cases:
        for name, pts in case.series.items():
            if ("latency" in name.lower()) == latency and pts:
                out.setdefault(name, {}).setdefault(case.case_id, pts)
    return out


# -- plots -------------------------------------------------------------------------


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    # Keep the <svg> element only: the XML prolog and DOCTYPE (which names a
    # w3.org DTD URL) have no place inside HTML, nor does the RDF metadata.
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure  # imported late: a console-only run never pays for it

    return Figure(figsize=(w, h), dpi=96)


def _rc() -> Any:
    import matplotlib

    # Text as <text>, not glyph paths: smaller files, selectable labels, no font files.
    return matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "wschaos", "font.size": 9})


def _horizontal() -> dict[str, Any]:
    # matplotlib 3.10 replaced vert=False by orientation=; 3.8 and 3.9 know only vert.
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _exit_plot(run: RunResult, base: RunResult | None) -> str | None:
    data = _figure_pool(run, ("exit_ms_samples", "exit_ms"))
    if not data:
        return None
    bdata = _figure_pool(base, ("exit_ms_samples", "exit_ms")) if base else {}
    cases = sorted(data)
    with _rc():
        fig = _figure(7, 0.5 + 0.45 * len(cases) * (2 if bdata else 1))
        ax = fig.add_subplot()
        rows: list[tuple[str, list[float], str]] = []  # label, values, colour; baseline above its run
        for cid in cases:
            if cid in bdata:
                rows.append((f"{cid} (baseline)", bdata[cid], _BASE_C))
            rows.append((cid, data[cid], _RUN_C))
        labels = [r[0] for r in rows]
        groups = [r[1] for r in rows]
        colours = [r[2] for r in rows]
        pos = list(range(len(rows)))
        bp = ax.boxplot(groups, positions=pos, widths=0.6, showfliers=False, patch_artist=True, **_horizontal())
        for patch, c in zip(bp["boxes"], colours, strict=True):
            patch.set(facecolor=c, alpha=0.25, edgecolor=c)
        for p, g, c in zip(pos, groups, colours, strict=True):
            jitter = [p + 0.18 * math.sin(i * 2.4) for i in range(len(g))]
            ax.scatter(g, jitter, s=10, color=c, zorder=3)
        ax.set_yticks(pos, labels)
        ax.set_xlabel("exit time after the signal (ms)")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        return _svg(fig)


def _ack_plot(run: RunResult, base: RunResult | None) -> str | None:
    vals = [x for xs in _figure_pool(run, ("ack_latencies_ms",)).values() for x in xs]
    if not vals:
        return None
    bvals = [x for xs in _figure_pool(base, ("ack_latencies_ms",)).values() for x in xs] if base else []
    with _rc():
        fig = _figure(7, 3)
        ax = fig.add_subplot()
        top = max(vals + bvals)
        bins = [top * i / 30 for i in range(31)] if top > 0 else 10
        ax.hist(vals, bins=bins, color=_RUN_C, alpha=0.75, label=f"this run (n={len(vals)})")
        if bvals:
            ax.hist(bvals, bins=bins, histtype="step", color=_BASE_C, linewidth=1.6, label=f"baseline (n={len(bvals)})")
        for q, ls in ((50, "--"), (99, ":")):
            ax.axvline(_pct(vals, q), color="#cf222e", linestyle=ls, linewidth=1, label=f"p{q} {_pct(vals, q):.1f} ms")
        ax.set_xlabel("INTERRUPT -> ACK latency (ms)")
        ax.set_ylabel("acks")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
        return _svg(fig)


def _pct(xs: list[float], q: float) -> float:
    from harness.results.compare import percentile

    return percentile(xs, q)


def _series_plot(run: RunResult, base: RunResult | None, latency: bool) -> str | None:
    data = _series(run, latency)
    if not data:
        return None
    bdata = _series(base, latency) if base else {}
    names = sorted(data)
    cols = min(2, len(names))
    rows = math.ceil(len(names) / cols)
    with _rc():
        fig = _figure(7 if cols == 1 else 9, 2.4 * rows)
        for i, name in enumerate(names, 1):
            ax = fig.add_subplot(rows, cols, i)
            for cid, pts in sorted(data[name].items()):
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.3, label=cid)
            for cid, pts in sorted(bdata.get(name, {}).items()):
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", color=_BASE_C, linewidth=1, label=f"{cid} (baseline)")
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("cycle")
            ax.grid(alpha=0.3)
            if len(data[name]) + len(bdata.get(name, {})) > 1:
                ax.legend(frameon=False, fontsize=7)
        fig.tight_layout()
        return _svg(fig)


def plot_svgs(run: RunResult, baseline: RunResult | None = None) -> list[tuple[str, str]]:
    """(caption, inline ``<svg>``) for every plot the run has data for."""
    out = []
    for caption, make in (
        ("Exit time per shutdown case (box: quartiles; dots: each exit)", lambda: _exit_plot(run, baseline)),
        ("ACK latency after INTERRUPT", lambda: _ack_plot(run, baseline)),
        ("Resources over churn cycles: should return to baseline, not climb", lambda: _series_plot(run, baseline, False)),
        ("Latency over churn cycles: should stay flat", lambda: _series_plot(run, baseline, True)),
    ):
        svg = make()
        if svg:
            out.append((caption + (" — grey: baseline" if baseline else ""), svg))
    return out


# -- page --------------------------------------------------------------------------


def _first_screen(run: RunResult) -> list[str]:
    word = signoff(run)
    code, reasons = decide(run)
    s = run.summary
    chips = "".join(
        f'<span class="chip">{s[k]} {k}</span>' for k in ("fail", "stale", "unknown", "known", "pass", "skipped", "errors") if s[k]
    )
    faults = f" (faults: {_e(', '.join(run.target.faults))})" if run.target.faults else ""
    out = [
        f'<section class="verdict" style="background:{_COLOURS[word]}" id="verdict">',
        f'<div class="word">{word}</div><div><div class="sub">wschaos release report · exit {int(code)} {code.name}'
        f" · {s['checks']} checks in {s['cases']} cases</div><div class=\"chips\">{chips}</div></div></section>",
        '<dl class="meta">',
        f"<dt>target</dt><dd>{_e(run.target.label)}{faults}</dd><dt>seed</dt><dd>{_e(run.seed)}</dd>",
        f"<dt>date</dt><dd>{_e(run.started_at)}</dd><dt>duration</dt><dd>{run.duration_s:.1f} s</dd>",
        f"<dt>profile</dt><dd>{_e(run.profile)}</dd><dt>time factor</dt><dd>{_e(run.time_factor)}</dd>",
        f"<dt>run</dt><dd>{_e(run.run_id)}</dd><dt>wschaos</dt><dd>{_e(run.wschaos_version)}</dd>",
        "</dl>",
        "<h2>Needs attention</h2>",
    ]
    problems = [(c, v) for c, v in run.checks() if is_problem(v)]
    for case, v in problems:
        colour = _BADGE[v.status]
        extra = f" — listed as known ({_e(v.known_reason)}); remove the entry" if v.status == "stale" else ""
        figs = format_figures(v.figures, limit=8)
        replay = replay_of(case, v)
        out.append(
            f'<div class="problem" style="--c:{colour}"><span class="badge">{v.status.upper()}</span> '
            f'<span class="id">{_e(check_id(case.case_id, v.check))}</span>'
            f"<div>{_e(v.message)}{extra}</div>"
            + (f'<div class="figs">{_e(figs)}</div>' if figs else "")
            + (f'<pre class="replay"><code>{_e(replay)}</code></pre>' if replay else "")
            + "</div>"
        )
    for c in run.cases:
        if c.error:
            last = c.error.strip().splitlines()[-1] if c.error.strip() else "crashed"
            out.append(f'<div class="problem" style="--c:#9a6700"><span class="badge">ERROR</span> '
                       f'<span class="id">{_e(c.case_id)}</span><div>{_e(last)}</div></div>')
    if not problems and not any(c.error for c in run.cases):
        note = reasons[0] if reasons else f"All {s['checks']} checks passed."
        out.append(f'<p class="{"ok" if word == "PASS" else "none"}">{_e(note)}</p>')
    return out


def trend_plot(f: FigureChange) -> str:
    """A small inline SVG: every baseline value (grey) and new value (blue, red when regressed)
    on one axis from 0, each side's median as a bar, and the bound as a dashed red line."""
    w, h, left, right = 260, 44, 36, 8
    top = max([*f.base, *f.new, f.bound or 0.0, 1e-12]) * 1.08
    def x(v: float) -> float:
        return round(left + max(v, 0.0) / top * (w - left - right), 1)
    colour = "#cf222e" if f.regressed else "#0969da"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trend-plot" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" font-family="ui-monospace,monospace" font-size="9">',
             f"<title>{_e(f.where)} {_e(f.figure)}: baseline {_e(fmt_value(f.base_value, f.unit))}, "
             f"this run {_e(fmt_value(f.new_value, f.unit))}</title>",
             f'<line x1="{left}" x2="{w - right}" y1="{h - 8}" y2="{h - 8}" stroke="#d0d7de"/>']
    for row, (label, vals, c, med) in enumerate((("base", f.base, _BASE_C, f.base_value),
                                                  ("new", f.new, colour, f.new_value))):
        y = 10 + row * 14
        parts.append(f'<text x="2" y="{y + 3}" fill="#59636e">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y - 3}" width="{max(x(med) - left, 1):.1f}" height="6" fill="{c}" '
                     f'fill-opacity="0.35"/>')
        parts += [f'<circle cx="{x(v)}" cy="{y}" r="2.6" fill="{c}"><title>{_e(fmt_value(v, f.unit))}</title>'
                  "</circle>" for v in vals]
    if f.bound:
        bx = x(f.bound)
        parts.append(f'<line x1="{bx}" x2="{bx}" y1="2" y2="{h - 6}" stroke="#cf222e" stroke-dasharray="3 2">'
                     f"<title>bound {_e(fmt_value(f.bound, f.unit))}</title></line>")
        parts.append(f'<text x="{min(bx, w - 40)}" y="{h - 0.5}" fill="#cf222e">bound</text>')
    parts.append(f'<text x="{left}" y="{h - 0.5}" fill="#59636e">0</text></svg>')
    return "".join(parts)


def _comparison_html(cmp: Comparison) -> list[str]:
    regs, word = cmp.regressions, cmp.verdict_word()
    colour = "#cf222e" if not cmp.ok else "#1a7f37" if cmp.comparable else "#9a6700"
    out = [f'<h2 id="trend">Against baseline {_e(cmp.base_id)}</h2>',
           f'<p style="color:{colour};font-weight:700">{_e(word)}</p>',
           f'<p class="none">{_e(cmp.rule.text())}.</p>']
    if regs:
        out.append("<h3>Regressions</h3><table><tr><th>check</th><th>figure</th><th>baseline</th><th>this run</th>"
                   "<th>bound</th><th>base vs new</th><th>how sure</th></tr>")
        for f in regs:
            bound = _e(fmt_value(f.bound, f.unit)) if f.bound is not None else "—"
            ch = f" ({f.change:+.0%})" if f.change is not None else ""
            out.append(f'<tr class="regressed"><td class=mono>{_e(f.where)}</td><td>{_e(f.figure)}</td>'
                       f"<td>{_e(fmt_value(f.base_value, f.unit))}</td><td><b>{_e(fmt_value(f.new_value, f.unit))}"
                       f"</b>{_e(ch)}</td><td>{bound}</td><td class=plot>{trend_plot(f)}</td><td>{_e(f.sure)}</td></tr>")
        out.append("</table>")
    if cmp.verdicts:
        out.append("<h3>Verdict changes</h3><table><tr><th>check</th><th>baseline</th><th>this run</th><th></th></tr>")
        for v in cmp.verdicts:
            cls = ' class="regressed"' if v.regressed else ""
            label = f"[{v.label}]" if v.label else ""
            out.append(f"<tr{cls}><td class=mono>{_e(v.case_id)}::{_e(v.check)}{_e(label)}</td><td>{_e(v.base)}</td>"
                       f"<td>{_e(v.new)}</td><td>{'REGRESSED' if v.regressed else 'changed'}</td></tr>")
        out.append("</table>")
    if cmp.not_comparable:
        out.append("<h3>Not comparable</h3><p class=none>Run differently in the two runs, so not judged:</p>"
                   "<table><tr><th>case</th><th>what differs (baseline → this run)</th></tr>")
        for nc in cmp.not_comparable:
            diffs = "; ".join(f"{n} {_show(b)} → {_show(v)}" for n, b, v in nc.differences)
            out.append(f"<tr><td class=mono>{_e(nc.case_id)}</td><td>{_e(diffs)}</td></tr>")
        out.append("</table>")
    if cmp.noise:
        out.append(f'<details><summary>{len(cmp.noise)} metric changes beyond {cmp.tolerance:.0%} within the '
                   "noise rule</summary><ul>" + "".join(f"<li class=mono>{_e(f.line())}</li>" for f in cmp.noise)
                   + "</ul></details>")
    if cmp.untyped:
        out.append(f"<p class=none>Untyped figures, not compared: {_e(', '.join(cmp.untyped))}</p>")
    return out


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def timeline_cases(run: RunResult, which: Sequence[str] = ("failing",)) -> list[CaseResult]:
    """The cases to draw a timeline for: ``failing`` (a check to act on, or a crash), ``all``,
    ``none``, or case-id globs; one per history file (repeats of a case share one)."""
    globs = [_glob(w) for w in which if w not in ("all", "failing", "none")]
    chosen: list[CaseResult] = []
    seen: set[str] = set()
    for case in run.cases:
        hist = case.artifacts.get("history")
        if not hist or hist in seen:
            continue
        failing = case.error is not None or any(is_problem(v) for v in case.verdicts)
        wanted = ("all" in which or ("failing" in which and failing)
                  or any(g.fullmatch(case.case_id) for g in globs))
        if wanted:
            seen.add(hist)
            chosen.append(case)
    return chosen


def _glob(pattern: str) -> re.Pattern[str]:
    """A case glob as ``--case`` reads it: ``*`` and ``?`` only, brackets literal (``interrupts.basic[one]``)."""
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern))


def _timelines_html(run: RunResult, run_dir: Path | None, which: Sequence[str]) -> list[str]:
    cases = timeline_cases(run, which)
    if not cases or run_dir is None:
        return []
    out = ['<h2 id="timelines">Timelines</h2>',
           '<p class="none">One lane per client, the target and the nemesis; hover a mark for its details.</p>']
    for case in cases:
        path = run_dir / case.artifacts["history"]
        repeats = sum(1 for c in run.cases if c.case_id == case.case_id)
        note = f" (history of the last of {repeats} repeats)" if repeats > 1 else ""
        out.append(f'<section class="timeline-wrap"><h3>{_e(case.case_id)}{_e(note)}</h3>')
        try:
            out.append(timeline_svg(load_records(path), title=case.case_id))
        except ValueError as exc:
            out.append(f'<p class="none">{_e(exc)}</p>')
        out.append("</section>")
    return out


def _aggregate_html(run: RunResult) -> list[str]:
    """Release profiles repeat cases: the sign-off quotes percentiles, not one lucky repeat."""
    repeats = 1 + max(c.repeat for c in run.cases)
    out = [f"<h2>Percentiles over {repeats} repeats</h2>",
           "<table><tr><th>case</th><th>check</th><th>figure</th><th>n</th><th>p50</th><th>p95</th><th>p99</th><th>min</th><th>max</th></tr>"]
    for st in aggregate(run).values():
        nums = "".join(f"<td>{x:.4g}</td>" for x in (st.p50, st.p95, st.p99, st.min, st.max))
        out.append(f"<tr><td class=mono>{_e(st.case_id)}</td><td class=mono>{_e(st.check)}</td><td>{_e(st.figure)}</td><td>{st.n}</td>{nums}</tr>")
    out.append("</table>")
    return out


def to_html(run: RunResult, *, baseline: RunResult | None = None, comparison: Comparison | None = None,
            tolerance: float = 0.2, plots: bool = True, run_dir: str | Path | None = None,
            timelines: Sequence[str] = ("failing",)) -> str:
    """The whole report as one HTML string (no external references).

    ``plots=False`` skips matplotlib (the slow part) for a quick text-only page.
    ``run_dir`` is where the run's artifacts are (each case's ``history.jsonl``,
    for the timelines); ``timelines`` chooses the cases (:func:`timeline_cases`).
    """
    run = run.redacted()
    if baseline is not None and comparison is None:
        comparison = compare(baseline, run, tolerance)
    word = signoff(run)
    body = _first_screen(run)
    if comparison is not None:
        body += _comparison_html(comparison)
    svgs = plot_svgs(run, baseline) if plots else []
    if svgs:
        body.append('<h2>Plots</h2><div class="plots">')
        body += [f"<figure>{svg}<figcaption>{_e(cap)}</figcaption></figure>" for cap, svg in svgs]
        body.append("</div>")
    body += _timelines_html(run, Path(run_dir) if run_dir is not None else None, timelines)
    if any(c.repeat > 0 for c in run.cases):
        body += _aggregate_html(run)
    body.append("<h2>All checks</h2><table><tr><th>case</th><th>rep</th><th>check</th><th>verdict</th><th>message</th><th>figures</th></tr>")
    for case, v in run.checks():
        body.append(
            f"<tr><td class=mono>{_e(case.case_id)}</td><td>{case.repeat}</td><td class=mono>{_e(v.check)}</td>"
            f'<td><span class="badge" style="--c:{_BADGE.get(v.status, "#59636e")}">{_e(v.status)}</span></td>'
            f"<td>{_e(v.message)}</td><td class=figs>{_e(format_figures(v.figures, limit=12))}</td></tr>"
        )
    body.append("</table>")
    body += [
        "<h2>Run</h2><dl class=meta>",
        f"<dt>argv</dt><dd class=figs>{_e(' '.join(run.target.argv))}</dd><dt>adapter</dt><dd>{_e(run.target.adapter)}</dd>",
        f"<dt>python</dt><dd>{_e(run.host.python)}</dd><dt>platform</dt><dd>{_e(run.host.platform)} · {_e(run.host.cpus)} cpus</dd>",
        "</dl>",
    ]
    title = f"wschaos {word}: {run.target.label} seed {run.seed} ({run.started_at})"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


def write_html(run: RunResult, path: str | Path, *, baseline: RunResult | None = None,
               comparison: Comparison | None = None, tolerance: float = 0.2, plots: bool = True,
               run_dir: str | Path | None = None, timelines: Sequence[str] = ("failing",)) -> Path:
    """``report.html``; the timelines read histories from ``run_dir`` (default: the file's directory)."""
    p = Path(path)
    p.write_text(to_html(run, baseline=baseline, comparison=comparison, tolerance=tolerance, plots=plots,
                         run_dir=run_dir if run_dir is not None else p.parent, timelines=timelines),
                 encoding="utf-8")
    return p
