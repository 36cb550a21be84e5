"""Programs as data: validation, the numbered steps a person reads, and program files.

A program is a list of steps (JSON-ready dicts, see
:mod:`harness.explore.strategies`). A program file holds one program with
everything needed to run it again exactly: the seed it was found with, the
target it ran against, the explorer's settings (bounds, allowances) and the
verdicts that failed::

    {"wschaos_explore": 1, "seed": 7, "target": {...}, "config": {...},
     "steps": [...], "finding": {...}}

``replay`` reads such a file (:func:`load_program_file`) and runs the steps
as they are; every error in the file names the file and the offending step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.explore.strategies import INTERRUPT_TARGETS, BadFrame

__all__ = [
    "FORMAT",
    "ExploreConfig",
    "ProgramError",
    "ProgramFile",
    "describe_step",
    "load_program_file",
    "render_program",
    "validate_steps",
]

FORMAT = 1


class ProgramError(ValueError):
    """A program or program file is not valid; the message names where."""


@dataclass(frozen=True)
class ExploreConfig:
    """The explorer's knobs, in seconds before scaling. Saved with every program file."""

    sessions: int = 3
    max_steps: int = 8
    #: Bound for the connections (and agent threads) to go once every session is closed.
    settle_s: float = 1.0
    #: Then, the rest of the books (requests, subscriptions, tables, tasks) must follow within this.
    release_grace_s: float = 0.25
    #: Bound for an answer: INTERRUPT_ACK, HEARTBEAT_ACK, the ERROR for a bad frame, a 1009 close.
    answer_s: float = 1.0
    #: Bound for a ``wait`` step (a short reply's final frame).
    reply_s: float = 2.0
    close_s: float = 0.5
    #: Tasks and threads above the pre-program baseline that still count as back.
    tasks_allowance: int = 2
    threads_allowance: int = 1
    #: Open fds above the baseline that still count as back (the probe's own HTTP socket closing).
    fds_allowance: int = 2
    #: Start a fake OpenAI-compatible upstream so the "upstream" agent can be asked for.
    upstream: bool = True
    #: Offer proxy steps (connections through a TCP proxy the nemesis can delay or reset).
    proxy: bool = True
    #: The target is restarted before a program when its idle figures drifted this far.
    dirty_restart: int = 24

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> ExploreConfig:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ProgramError(f"{source}: config must be an object")
        known = {f.name: f for f in fields(cls)}
        bad = sorted(set(data) - set(known))
        if bad:
            raise ProgramError(f"{source}: unknown config key(s) {', '.join(bad)}")
        kw: dict[str, Any] = {}
        for k, v in data.items():
            default = getattr(cls(), k)
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ProgramError(f"{source}: config.{k} must be true or false")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ProgramError(f"{source}: config.{k} must be a number >= 0, not {v!r}")
            kw[k] = v
        return cls(**kw)


_SESSION_STEPS = {"connect", "request", "interrupt", "burst", "wait", "heartbeat", "subscribe",
                  "unsubscribe", "publish", "bad", "oversize", "close", "abort", "vanish",
                  "stop_reading", "resume_reading"}
_BURST_MEMBERS = {"request", "interrupt", "heartbeat", "subscribe", "unsubscribe", "publish", "bad"}
_OTHER_STEPS = {"pause", "lag", "cut"}


def _check_step(st: Any, where: str, *, member: bool = False) -> None:
    if not isinstance(st, Mapping):
        raise ProgramError(f"{where}: a step must be an object, not {type(st).__name__}")
    do = st.get("do")
    allowed = _BURST_MEMBERS if member else _SESSION_STEPS | _OTHER_STEPS
    if do not in allowed:
        raise ProgramError(f"{where}: unknown step {do!r}; known: {', '.join(sorted(allowed))}")
    if not member and do in _SESSION_STEPS:
        s = st.get("s")
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 64:
            raise ProgramError(f"{where}: {do} needs a session index s (0..63)")
    for key in ("pick", "reuse", "chunks", "delay_ms", "block_ms", "ms", "times"):
        if key in st and (isinstance(st[key], bool) or not isinstance(st[key], int) or st[key] < 0):
            raise ProgramError(f"{where}: {key} must be a whole number >= 0")
    if "until" in st and st["until"] != "chunk":
        raise ProgramError(f"{where}: until must be \"chunk\"")
    if do == "interrupt" and st.get("target") not in INTERRUPT_TARGETS:
        raise ProgramError(f"{where}: interrupt target must be one of {', '.join(INTERRUPT_TARGETS)}")
    if do in ("subscribe", "unsubscribe", "publish") and not isinstance(st.get("topic"), str):
        raise ProgramError(f"{where}: {do} needs a topic string")
    if do == "bad":
        try:
            BadFrame.from_json(st["frame"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgramError(f"{where}: bad needs a frame {{raw, codes, label}}: {exc}") from None
    if do == "burst":
        frames = st.get("frames")
        if not isinstance(frames, list) or not frames:
            raise ProgramError(f"{where}: burst needs a non-empty list of frames")
        for j, f in enumerate(frames):
            _check_step(f, f"{where} frame {j + 1}", member=True)


def validate_steps(steps: Any, *, source: str = "program") -> list[dict[str, Any]]:
    """The steps, checked; :class:`ProgramError` names the first bad one."""
    if not isinstance(steps, list):
        raise ProgramError(f"{source}: steps must be a list")
    for i, st in enumerate(steps):
        _check_step(st, f"{source}: step {i + 1}")
    return [dict(st) for st in steps]


# -- words -----------------------------------------------------------------------

def _request_words(st: Mapping[str, Any]) -> str:
    parts = []
    if "agent" in st:
        parts.append(f"{st['agent']} agent")
    if "chunks" in st:
        chunks, delay = st["chunks"], st.get("delay_ms", 0)
        long = chunks * max(delay, 1) >= 10_000
        parts.append(f"{'long' if long else 'short'}: {chunks} chunks, {delay} ms apart")
    if st.get("block_ms"):
        parts.append(f"blocks {st['block_ms']} ms first")
    if st.get("agent") == "upstream":
        parts.append("long: streamed from the fake upstream")
    what = f"REQUEST ({'; '.join(parts)})" if parts else "REQUEST"
    if "reuse" in st:
        what += f" reusing the id of its request #{st['reuse']}"
    if st.get("until") == "chunk":
        what += " and waits for its first chunk"
    return what


def _interrupt_words(st: Mapping[str, Any]) -> str:
    target = st.get("target")
    return {
        "all": "INTERRUPT with target_request_id null (every request of the session)",
        "own": f"INTERRUPT its request #{st.get('pick', 0)}",
        "again": "INTERRUPT the same target as its previous INTERRUPT",
        "unknown": "INTERRUPT an id never sent",
        "foreign": f"INTERRUPT a request id of another session (#{st.get('pick', 0)})",
    }.get(str(target), f"INTERRUPT {target}")


def _frame_words(st: Mapping[str, Any]) -> str:
    do = st.get("do")
    if do == "request":
        return _request_words(st)
    if do == "interrupt":
        return _interrupt_words(st)
    if do == "heartbeat":
        return "HEARTBEAT"
    if do in ("subscribe", "unsubscribe", "publish"):
        twice = " twice" if st.get("times", 1) > 1 else ""
        return f"{str(do).upper()} topic {st.get('topic')!r}{twice}"
    if do == "bad":
        frame = BadFrame.from_json(st["frame"])
        shown = frame.raw if isinstance(frame.raw, str) else f"<{len(frame.raw)} binary bytes>"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"a malformed frame ({frame.label}: {shown!r}), expecting ERROR {' or '.join(frame.codes)}"
    return str(do)


def describe_step(st: Mapping[str, Any]) -> str:
    """One step in words."""
    do = st.get("do")
    who = f"s{st['s']}" if "s" in st else ""
    if do == "connect":
        return f"{who} connects" + (" through the TCP proxy" if st.get("via") == "proxy" else "")
    if do == "burst":
        members = " + ".join(_frame_words(f) for f in st.get("frames", []))
        return f"{who} sends in one write, nothing awaited between: {members}"
    if do in _BURST_MEMBERS:
        extra = {
            "interrupt": " and waits for the ACK",
            "heartbeat": " and waits for the HEARTBEAT_ACK",
            "subscribe": " (then a HEARTBEAT round trip)",
            "unsubscribe": " (then a HEARTBEAT round trip)",
            "publish": " (then a HEARTBEAT round trip)",
            "bad": " and waits for the ERROR",
        }.get(str(do), "")
        return f"{who} sends {_frame_words(st)}{extra}"
    return {
        "wait": f"{who} waits for the final frame of its short request #{st.get('pick', 0)}",
        "oversize": f"{who} sends a frame over the size limit (expects close 1009)",
        "close": f"{who} closes (close frame 1000)",
        "abort": f"{who} resets its connection (TCP RST, no close frame)",
        "vanish": f"{who} vanishes (FIN, no close frame)",
        "stop_reading": f"{who} stops reading its socket",
        "resume_reading": f"{who} reads again",
        "pause": f"everyone waits {st.get('ms')} ms",
        "lag": (f"the proxy delays every chunk {st.get('ms')} ms" if st.get("ms")
                else "the proxy stops delaying"),
        "cut": "the proxy resets every connection through it",
    }.get(str(do), str(do))


def render_program(steps: Sequence[Mapping[str, Any]], *, final: bool = True) -> list[str]:
    """Numbered lines: what a person reads, and pastes into a bug report."""
    lines = [f"{i}. {describe_step(st)}" for i, st in enumerate(steps, 1)]
    if final:
        lines.append("then: every session still open closes; /stats must settle back to its "
                     "baseline and every invariant hold")
    return lines


# -- files -----------------------------------------------------------------------

@dataclass
class ProgramFile:
    steps: list[dict[str, Any]]
    seed: int
    target: dict[str, Any]
    config: ExploreConfig = field(default_factory=ExploreConfig)
    capabilities: dict[str, Any] = field(default_factory=dict)
    finding: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "wschaos_explore": FORMAT,
            "seed": self.seed,
            "target": self.target,
            "config": self.config.as_json(),
            "capabilities": self.capabilities,
            "steps": self.steps,
            "program": render_program(self.steps),
            "finding": self.finding,
            **self.extra,
        }

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.as_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def load_program_file(path: str | Path) -> ProgramFile:
    """Read a program file; every problem is one :class:`ProgramError` naming the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProgramError(f"{p}: no such program file") from None
    except IsADirectoryError:
        raise ProgramError(f"{p}: is a directory, not a program file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramError(f"{p}: cannot read: {exc}") from None
    except ValueError as exc:
        raise ProgramError(f"{p}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("wschaos_explore") != FORMAT:
        raise ProgramError(f"{p}: not a wschaos explore program file (no \"wschaos_explore\": {FORMAT})")
    seed = data.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ProgramError(f"{p}: seed must be an integer")
    target = data.get("target")
    if not isinstance(target, dict):
        raise ProgramError(f"{p}: target must be an object")
    steps = validate_steps(data.get("steps"), source=str(p))
    config = ExploreConfig.from_json(data.get("config"), source=str(p))
    caps = data.get("capabilities") or {}
    if not isinstance(caps, dict):
        raise ProgramError(f"{p}: capabilities must be an object")
    finding = data.get("finding") or {}
    return ProgramFile(steps=steps, seed=seed, target=target, config=config, capabilities=caps,
                       finding=finding if isinstance(finding, dict) else {})
