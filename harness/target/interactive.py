"""The interactive client's contract: how wschaos drives a terminal client it has never seen.

``[target.interactive]`` in a target file (``interactive_client = "cmd {url}"``
stays as the short form of the reference client's dialogue)::

    [target.interactive]
    cmd = "python client.py {url}"      # or argv = [...]; {url} optional
    cwd = "clients"                     # relative to the target file
    env = { AGENT_URL = "{url}" }       # {url} and {http_url} are filled in
    connected = 'connected, session \\w+'
    prompt = '> '
    setup = [ { expect = '\\[1\\] request', send = "" } ]   # optional dialogue first
    quit_keys = ["0", "q"]
    stream = { send = ["1"], expect = 'assistant: ' }     # or leave it out: that case is skipped
    encoding = "utf-8"

Patterns are Unicode regular expressions; ``send`` values are lines typed at
the prompt. Every error names the key.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE_DIALOGUE", "InteractiveError", "InteractiveSpec", "Step", "interactive_from_mapping"]


class InteractiveError(ValueError):
    """An ``[target.interactive]`` table is invalid; the message names the key."""


@dataclass(frozen=True)
class Step:
    """Wait for ``expect`` (a regex), then type ``send`` and Enter (nothing when None)."""

    expect: str
    send: str | None = None


@dataclass(frozen=True)
class InteractiveSpec:
    argv: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    connected: str = r"CONNECTED"
    prompt: str = r"> "
    setup: tuple[Step, ...] = ()
    quit_keys: tuple[str, ...] = ("0", "q")
    #: Lines that start a streamed reply, typed one per prompt, and the pattern its output starts with.
    stream_send: tuple[str, ...] | None = ("1",)
    stream_expect: str | None = r"<< "
    encoding: str = "utf-8"

    @property
    def can_stream(self) -> bool:
        return bool(self.stream_send) and self.stream_expect is not None

    def render(self, url: str, http_url: str) -> tuple[list[str], dict[str, str]]:
        """argv and env with ``{url}`` and ``{http_url}`` filled in."""
        def fill(text: str) -> str:
            return text.replace("{url}", url).replace("{http_url}", http_url)

        return [fill(a) for a in self.argv], {k: fill(v) for k, v in self.env.items()}


#: The reference client's dialogue: what ``interactive_client`` alone means.
REFERENCE_DIALOGUE = InteractiveSpec(argv=("client",))


def interactive_from_mapping(table: Mapping[str, Any], *, source: str, base_dir: Path | None) -> InteractiveSpec:
    """Validate ``[target.interactive]``; paths relative to the target file's directory."""
    where = f"{source}: interactive"
    known = {"cmd", "argv", "cwd", "env", "connected", "prompt", "setup", "quit_keys", "stream", "encoding"}
    if not isinstance(table, Mapping):
        raise InteractiveError(f"{where} must be a table")
    bad = sorted(set(table) - known)
    if bad:
        raise InteractiveError(f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    if ("cmd" in table) == ("argv" in table):
        raise InteractiveError(f"{where}: give cmd (a command line) or argv (a list), one of them")
    if "cmd" in table:
        if not isinstance(table["cmd"], str) or not table["cmd"].strip():
            raise InteractiveError(f"{where}.cmd must be a non-empty command line")
        argv = tuple(shlex.split(table["cmd"]))
    else:
        argv = table["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InteractiveError(f"{where}.argv must be a non-empty list of strings")
        argv = tuple(argv)
    kw: dict[str, Any] = {"argv": _resolve_program(argv, base_dir)}
    if "cwd" in table:
        cwd = _str(table, "cwd", where)
        kw["cwd"] = str((base_dir / cwd).resolve()) if base_dir is not None and not Path(cwd).is_absolute() else cwd
    elif base_dir is not None:
        kw["cwd"] = str(base_dir.resolve())
    if "env" in table:
        env = table["env"]
        if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
            raise InteractiveError(f"{where}.env must be a table of strings")
        kw["env"] = dict(env)
    for key in ("connected", "prompt"):
        if key in table:
            kw[key] = _pattern(table, key, where)
    if "setup" in table:
        steps = table["setup"]
        if not isinstance(steps, list):
            raise InteractiveError(f"{where}.setup must be a list of {{ expect = ..., send = ... }} steps")
        out = []
        for i, step in enumerate(steps):
            w = f"{where}.setup[{i}]"
            if not isinstance(step, Mapping) or "expect" not in step or set(step) - {"expect", "send"}:
                raise InteractiveError(f"{w} must be {{ expect = 'regex', send = 'line' }} (send optional)")
            send = step.get("send")
            if send is not None and not isinstance(send, str):
                raise InteractiveError(f"{w}.send must be a string")
            out.append(Step(expect=_pattern(step, "expect", w), send=send))
        kw["setup"] = tuple(out)
    if "quit_keys" in table:
        keys = table["quit_keys"]
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise InteractiveError(f"{where}.quit_keys must be a non-empty list of strings")
        kw["quit_keys"] = tuple(keys)
    if "stream" in table:
        st = table["stream"]
        if st is False:
            kw["stream_send"], kw["stream_expect"] = None, None
        else:
            if not isinstance(st, Mapping) or set(st) != {"send", "expect"}:
                raise InteractiveError(f"{where}.stream must be {{ send = [...], expect = 'regex' }} or false")
            send = st["send"]
            if isinstance(send, str):
                send = [send]
            if not isinstance(send, list) or not send or not all(isinstance(s, str) for s in send):
                raise InteractiveError(f"{where}.stream.send must be a line or a list of lines")
            kw["stream_send"] = tuple(send)
            kw["stream_expect"] = _pattern(st, "expect", f"{where}.stream")
    else:
        kw["stream_send"], kw["stream_expect"] = None, None
    if "encoding" in table:
        enc = _str(table, "encoding", where)
        try:
            "".encode(enc)
        except LookupError:
            raise InteractiveError(f"{where}.encoding: unknown encoding {enc!r}") from None
        kw["encoding"] = enc
    return InteractiveSpec(**kw)


def _resolve_program(argv: tuple[str, ...], base_dir: Path | None) -> tuple[str, ...]:
    """A relative script path among the arguments is taken relative to the target file."""
    if base_dir is None:
        return argv
    out = []
    for a in argv:
        p = base_dir / a
        out.append(str(p.resolve()) if ("/" in a or a.endswith(".py")) and not Path(a).is_absolute() and p.exists()
                   else a)
    return tuple(out)


def _str(table: Mapping[str, Any], key: str, where: str) -> str:
    v = table[key]
    if not isinstance(v, str):
        raise InteractiveError(f"{where}.{key} must be a string, not {v!r}")
    return v


def _pattern(table: Mapping[str, Any], key: str, where: str) -> str:
    v = _str(table, key, where)
    try:
        re.compile(v)
    except re.error as exc:
        raise InteractiveError(f"{where}.{key}: not a regular expression: {exc}") from None
    return v
