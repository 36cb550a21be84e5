"""A case's history drawn as a timeline: one lane per client, the target and the nemesis.

Drawn by hand as inline SVG from the records of ``history.jsonl``
(docs/ARCHITECTURE.md "History conventions"): connects and closes, requests
as spans from send to final, interrupts and their ACKs, frames that arrived
for a request after the ACK that claimed it (red), the supervisor's signals
(a dashed line across every lane) and the target's exit, and the nemesis's
faults as spans (every operation whose client is ``"nemesis"``).  Every mark
carries a ``<title>``, so a browser shows its details on hover; there are no
scripts and nothing external.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.history import History, Observation, Operation

__all__ = ["NEMESIS", "Lane", "late_frames", "load_records", "timeline_svg"]

NEMESIS = "nemesis"
#: Lanes for clients beyond this are left out (those on which something went wrong are kept first).
MAX_CLIENTS = 30

_W, _LABEL, _LANE, _TOP, _RIGHT = 1100, 150, 22, 30, 12
_C = {
    "request": "#0969da", "interrupted": "#bf8700", "fail": "#cf222e", "unknown": "#8c959f",
    "interrupt": "#8250df", "late": "#cf222e", "connect": "#57606a", "close": "#1f2328",
    "target": "#dafbe1", "signal": "#fb8500", "fault": "#ff8182", "other": "#afb8c1",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def load_records(path: str | Path) -> list[Operation | Observation]:
    """The records of one ``history.jsonl``; ``ValueError`` naming the file when it cannot be read."""
    try:
        return list(History.from_jsonl(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read the history: {type(exc).__name__}: {exc}") from None


@dataclass
class Lane:
    name: str
    kind: str  # "nemesis", "target", "client"
    marks: list[str] = field(default_factory=list)
    #: How much went wrong on it: 3 frames after an ACK, 2 a failed operation or exit, 1 an unsure one.
    problem: int = 0


def late_frames(records: Sequence[Operation | Observation]) -> list[tuple[Observation, Observation]]:
    """(frame, the ACK it came after) for every frame of a request received after an ACK claimed it.

    The same reading as the ``interrupts.no_frames_after_ack`` check: per client,
    record order; a later REQUEST reusing the id starts it afresh.
    """
    claims: dict[tuple[str, Any], tuple[int, Observation]] = {}
    reuse: dict[tuple[str, Any], list[int]] = defaultdict(list)
    for rec in records:
        if isinstance(rec, Operation) and rec.kind == "request":
            reuse[(rec.client, rec.data.get("request_id"))].append(rec.started_ns)
    out = []
    for pos, rec in enumerate(records):
        if not isinstance(rec, Observation) or rec.kind != "frame":
            continue
        d = rec.data or {}
        if d.get("kind") == "ack":
            for rid in d.get("interrupted_ids") or []:
                claims[(rec.source, rid)] = (pos, rec)
            continue
        key = (rec.source, d.get("request_id"))
        if key in claims:
            apos, ack = claims[key]
            restarted = any(ack.t_ns < s <= rec.t_ns for s in reuse.get(key, []))
            if pos > apos and not restarted:
                out.append((rec, ack))
    return out


def _request_slots(recs: Sequence[Operation | Observation], t_end: int) -> tuple[dict[int, int], dict[str, int]]:
    """Concurrent requests of one client get rows of their own within its lane (at most 4, then shared)."""
    slots: dict[int, int] = {}
    ends: dict[str, list[int]] = defaultdict(list)
    for rec in recs:
        if not (isinstance(rec, Operation) and rec.kind == "request" and rec.client != NEMESIS):
            continue
        rows = ends[rec.client]
        free = next((i for i, end in enumerate(rows) if end <= rec.started_ns), None)
        if free is None:
            free = len(rows) if len(rows) < 4 else min(range(len(rows)), key=lambda i: rows[i])
            if free == len(rows):
                rows.append(0)
        rows[free] = rec.ended_ns if rec.ended_ns is not None else t_end
        slots[rec.id] = free
    return slots, {c: len(rows) for c, rows in ends.items()}


class _Scale:
    def __init__(self, t0: int, t1: int) -> None:
        self.t0, self.span = t0, max(t1 - t0, 1)

    def x(self, t: int) -> float:
        """Where ``t`` is drawn; anything before the axis starts (the target's start) at its left edge."""
        return round(_LABEL + max(t - self.t0, 0) / self.span * (_W - _LABEL - _RIGHT), 1)

    def ms(self, t: int) -> float:
        return (t - self.t0) / 1e6


def _rect(x0: float, x1: float, y: float, h: float, fill: str, title: str, *, dashed: bool = False,
          opacity: float = 1.0, cls: str = "") -> str:
    w = max(x1 - x0, 1.5)
    dash = ' stroke="#57606a" stroke-dasharray="3 2"' if dashed else ""
    c = f' class="{cls}"' if cls else ""
    return (f'<rect{c} x="{x0}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" fill-opacity="{opacity}"'
            f'{dash}><title>{_e(title)}</title></rect>')


def _tick(x: float, y: float, h: float, colour: str, title: str, width: float = 1.5, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<line{c} x1="{x}" x2="{x}" y1="{y:.1f}" y2="{y + h:.1f}" stroke="{colour}" stroke-width="{width}">'
            f"<title>{_e(title)}</title></line>")


def _dot(x: float, y: float, r: float, colour: str, title: str, *, shape: str = "circle") -> str:
    if shape == "diamond":
        pts = f"{x},{y - r} {x + r},{y} {x},{y + r} {x - r},{y}"
        return f'<polygon points="{pts}" fill="{colour}"><title>{_e(title)}</title></polygon>'
    if shape == "square":
        return (f'<rect x="{x - r}" y="{y - r}" width="{2 * r}" height="{2 * r}" fill="{colour}">'
                f"<title>{_e(title)}</title></rect>")
    if shape == "cross":
        return (f'<path d="M{x - r},{y - r}L{x + r},{y + r}M{x - r},{y + r}L{x + r},{y - r}" stroke="{colour}" '
                f'stroke-width="2"><title>{_e(title)}</title></path>')
    return f'<circle cx="{x}" cy="{y}" r="{r}" fill="{colour}"><title>{_e(title)}</title></circle>'


def _ms(op: Operation) -> str:
    return f"{op.duration_ms:.1f} ms" if op.duration_ms is not None else "no end"


def _nice_step(span_ms: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000):
        if span_ms / step <= 10:
            return step
    return 120000


def timeline_svg(records: Iterable[Operation | Observation], *, title: str = "",
                 max_clients: int = MAX_CLIENTS) -> str:
    """One ``<svg class="timeline">``: the nemesis lane, one lane per target, one per client."""
    recs = list(records)
    times = [t for r in recs for t in ((r.started_ns, r.ended_ns) if isinstance(r, Operation) else (r.t_ns,))
             if t is not None]
    if not times:
        return f'<p class="none">{_e(title)}: the history is empty.</p>'
    # The axis starts when the story does (the target ready, or the first client or fault
    # operation): a target's start-up would otherwise take most of the width.
    starts = [r.t_ns for r in recs if isinstance(r, Observation) and r.source == "supervisor" and r.kind == "ready"]
    starts += [r.started_ns for r in recs if isinstance(r, Operation)]
    t_end = max(times)
    t0 = min(starts) if starts else min(times)
    t0 -= max((t_end - t0) // 50, 1)
    sc = _Scale(t0, t_end)
    late = late_frames(recs)
    late_by_client: dict[str, list[tuple[Observation, Observation]]] = defaultdict(list)
    for frame, ack in late:
        late_by_client[frame.source].append((frame, ack))

    nemesis = Lane(NEMESIS, "nemesis")
    targets: dict[str, Lane] = {}
    clients: dict[str, Lane] = {}
    signals: list[Observation] = []

    def client(name: str) -> Lane:
        if name not in clients:
            clients[name] = Lane(name, "client")
        return clients[name]

    def target(name: str) -> Lane:
        if name not in targets:
            targets[name] = Lane(name, "target")
        return targets[name]

    # Lane-relative y: marks are drawn at y=0..LANE and translated into their lane later.
    mid = _LANE / 2
    slots, depth = _request_slots(recs, t_end)
    alive: dict[str, int] = {}
    for rec in recs:
        if isinstance(rec, Operation):
            end = rec.ended_ns if rec.ended_ns is not None else t_end
            x0, x1 = sc.x(rec.started_ns), sc.x(end)
            at = f"at +{sc.ms(rec.started_ns):.1f} ms"
            if rec.client == NEMESIS:
                state = "" if rec.ended_ns is not None else " (still on at the end)"
                detail = ", ".join(f"{k}={v}" for k, v in rec.data.items() if v is not None)
                nemesis.marks.append(_rect(x0, x1, 3, _LANE - 6, _C["fault"], f"fault {rec.kind} {at}, {_ms(rec)}"
                                           f"{state}{': ' + detail if detail else ''}", cls="fault"))
                if x1 - x0 > 8 * len(rec.kind):
                    nemesis.marks.append(f'<text x="{x0 + 3}" y="{mid + 4}" class="lbl">{_e(rec.kind)}</text>')
                continue
            lane = client(rec.client)
            if rec.outcome in ("fail", "unknown", "pending"):
                lane.problem = max(lane.problem, 2 if rec.outcome == "fail" else 1)
            if rec.kind == "request":
                d = rec.data
                colour = (_C["fail"] if rec.outcome == "fail" else _C["unknown"] if rec.outcome != "ok"
                          else _C["interrupted"] if d.get("interrupted") else _C["request"])
                how = ("interrupted" + (f" ({d.get('reason')})" if d.get("reason") else "")) if d.get("interrupted") \
                    else {"ok": "completed", "fail": f"failed {d.get('error_code') or ''}".strip(),
                          "unknown": "outcome unknown", "pending": "no final frame"}.get(rec.outcome, rec.outcome)
                rows = depth.get(rec.client, 1)
                h = (_LANE - 8) / rows
                lane.marks.append(_rect(x0, x1, 4 + slots.get(rec.id, 0) * h, max(h - 1, 2), colour,
                                        f"request {d.get('request_id')} {at}: {how}, {d.get('chunks')} chunks, "
                                        f"{_ms(rec)}", dashed=rec.outcome != "ok", cls="request"))
            elif rec.kind == "interrupt":
                d = rec.data
                lane.marks.append(_dot(x0, mid, 4, _C["interrupt"],
                                       f"INTERRUPT {d.get('interrupt_id')} for {d.get('target')} {at}",
                                       shape="diamond"))
                if rec.outcome == "ok":
                    lane.marks.append(f'<line x1="{x0}" x2="{x1}" y1="{mid}" y2="{mid}" stroke="{_C["interrupt"]}" '
                                      'stroke-width="1"/>')
                    lane.marks.append(_dot(x1, mid, 3.5, _C["interrupt"],
                                           f"ACK {d.get('status')} for {d.get('interrupt_id')}: interrupted "
                                           f"{d.get('interrupted')} after {_ms(rec)}"))
                else:
                    lane.marks.append(_dot(x1, mid, 4, _C["fail"], f"no ACK for {d.get('interrupt_id')} "
                                                                   f"({rec.outcome})", shape="cross"))
            elif rec.kind == "connect":
                lane.marks.append(_rect(x0, x1, mid - 2, 4, _C["connect"],
                                        f"connect {at}: {rec.outcome}, {_ms(rec)}"))
                alive.setdefault(rec.client, rec.started_ns)
            elif rec.kind in ("close", "abort", "vanish"):
                lane.marks.append(_tick(x0, 2, _LANE - 4, _C["close"], f"{rec.kind} {at} ({rec.outcome})", 2))
            else:
                lane.marks.append(_dot(x0, mid, 1.8, _C["other"], f"{rec.kind} {at}: {rec.outcome}"))
            continue
        # observations
        if rec.source == "supervisor":
            name = str((rec.data or {}).get("name") or "target")
            lane = target(name)
            at = f"+{sc.ms(rec.t_ns):.1f} ms"
            if rec.kind == "signal":
                signals.append(rec)
                lane.marks.append(_dot(sc.x(rec.t_ns), mid, 4.5, _C["signal"],
                                       f"{rec.data.get('signal')} via {rec.data.get('via')} at {at}", shape="diamond"))
            elif rec.kind == "exit":
                rc = rec.data.get("returncode")
                lane.marks.append(_dot(sc.x(rec.t_ns), mid, 4.5, "#1f2328", f"exit {rc} at {at}", shape="square"))
                if rc not in (0, None):
                    lane.problem = 2
            elif rec.kind in ("start", "ready", "stopped"):
                if rec.kind == "ready":
                    alive[f"\0{name}"] = rec.t_ns
                extra = ""
                if rec.kind == "stopped":
                    extra = f" (survivors {len(rec.data.get('survivors') or [])}, port free {rec.data.get('port_free')})"
                lane.marks.append(_tick(sc.x(rec.t_ns), 4, _LANE - 8, "#1a7f37", f"{rec.kind} at {at}{extra}"))
            continue
        if rec.source.startswith("probe:"):
            continue
        if rec.kind == "closed":
            lane = client(rec.source)
            code = (rec.data or {}).get("code")
            bad = code not in (1000, 1001)
            lane.marks.append(_dot(sc.x(rec.t_ns), mid, 3.5, _C["fail"] if bad else _C["close"],
                                   f"closed {code if code is not None else '1006 (no close frame)'} at "
                                   f"+{sc.ms(rec.t_ns):.1f} ms", shape="cross"))
        elif rec.kind == "frame":
            client(rec.source)

    for name, pairs in late_by_client.items():
        lane = client(name)
        lane.problem = 3
        for frame, ack in pairs:
            d = frame.data or {}
            lane.marks.append(_tick(sc.x(frame.t_ns), 1, _LANE - 2, _C["late"],
                                    f"{d.get('kind')} seq {d.get('seq')} for {d.get('request_id')} "
                                    f"+{(frame.t_ns - ack.t_ns) / 1e6:.1f} ms after its ACK", 2, cls="late"))

    # Each target's life, ready to exit, under its marks.
    exits = {str(r.data.get("name") or "target"): r.t_ns for r in recs
             if isinstance(r, Observation) and r.source == "supervisor" and r.kind == "exit"}
    for name, lane in targets.items():
        start = alive.get(f"\0{name}")
        if start is not None:
            lane.marks.insert(0, _rect(sc.x(start), sc.x(exits.get(name, t_end)), 5, _LANE - 10, _C["target"],
                                       f"{name} running"))

    shown = list(clients.values())
    hidden = 0
    if len(shown) > max_clients:
        order = {id(ln): i for i, ln in enumerate(shown)}
        keep = sorted(shown, key=lambda ln: (-ln.problem, order[id(ln)]))[:max_clients]
        hidden = len(shown) - len(keep)
        shown = sorted(keep, key=lambda ln: order[id(ln)])
    lanes = [nemesis, *targets.values(), *shown]
    height = _TOP + _LANE * len(lanes) + (34 if hidden else 22)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" data-case="{_e(title)}" role="img" '
           f'aria-label="timeline of {_e(title)}" viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" '
           'font-family="ui-monospace,monospace" font-size="11">',
           "<style>.lbl{fill:#1f2328}.ax{fill:#59636e;font-size:10px}</style>"]
    # axis
    span_ms = sc.span / 1e6
    step = _nice_step(span_ms)
    k = 0
    while k * step <= span_ms + 1e-9:
        x = round(_LABEL + k * step / span_ms * (_W - _LABEL - _RIGHT), 1)
        label = f"{k * step / 1000:g} s" if step >= 1000 else f"{k * step:g} ms"
        out.append(f'<line x1="{x}" x2="{x}" y1="{_TOP - 6}" y2="{_TOP + _LANE * len(lanes)}" stroke="#eaeef2"/>'
                   f'<text x="{x}" y="{_TOP - 10}" class="ax" text-anchor="middle">{label}</text>')
        k += 1
    for i, lane in enumerate(lanes):
        y = _TOP + i * _LANE
        bg = "#f6f8fa" if i % 2 else "#ffffff"
        colour = _C["fail"] if lane.problem >= 2 else "#1f2328"
        label = lane.name if len(lane.name) <= 20 else lane.name[:19] + "…"
        kind = "target" if lane.kind == "target" and lane.name != "target" else ""
        out.append(f'<g class="lane lane-{lane.kind}" data-lane="{_e(lane.name)}" transform="translate(0,{y})">'
                   f'<rect x="0" y="0" width="{_W}" height="{_LANE}" fill="{bg}"/>'
                   f'<text x="6" y="{mid + 4}" fill="{colour}">{_e(label)}'
                   + (f'<tspan class="ax"> {kind}</tspan>' if kind else "") + "</text>"
                   + (f'<text x="{_LABEL + 4}" y="{mid + 4}" class="ax">no faults injected</text>'
                      if lane.kind == "nemesis" and not lane.marks else "")
                   + "".join(lane.marks) + "</g>")
    bottom = _TOP + _LANE * len(lanes)
    for s in signals:
        x = sc.x(s.t_ns)
        out.append(f'<line class="signal" x1="{x}" x2="{x}" y1="{_TOP}" y2="{bottom}" stroke="{_C["signal"]}" '
                   f'stroke-dasharray="4 3" stroke-width="1.5"><title>{_e(s.data.get("signal"))} sent</title></line>')
    legend = [("request", _C["request"]), ("interrupted", _C["interrupted"]), ("failed", _C["fail"]),
              ("INTERRUPT → ACK", _C["interrupt"]), ("frame after ACK", _C["late"]), ("signal", _C["signal"]),
              ("fault", _C["fault"])]
    x = _LABEL
    for name, colour in legend:
        out.append(f'<rect x="{x}" y="{bottom + 8}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="{bottom + 17}" class="ax">{_e(name)}</text>')
        x += 24 + 7 * len(name)
    if hidden:
        out.append(f'<text x="6" y="{bottom + 31}" class="ax">{hidden} more clients not drawn '
                   "(those where the most went wrong are shown)</text>")
    out.append("</svg>")
    return "".join(out)
