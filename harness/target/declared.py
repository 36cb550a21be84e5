"""What a target was told or declared, beyond the bounds in :class:`~harness.target.spec.Limits`.

wschaos holds a service only to what the protocol requires and what the
service declared. Every convention a check holds is a key here whose default
is PROTOCOL.md's value, so a service with other habits says so in its target
file instead of failing for them:

``[target.conventions]``
    ``close_codes`` (``[1001]``): the close codes a shutdown may use (uvicorn: 1012);
    ``shutdown_finals`` (true): active requests end with a final frame, reason
    ``shutdown``; ``stderr_max_lines`` (none): a stderr line limit on a clean
    shutdown, only when the target asks for one; ``interrupt_order``
    (``final_then_ack``, or ``ack_then_final`` / ``either``); ``replaces_active``
    (false): a new REQUEST replaces the active one instead of running beside
    it; ``after_ack_grace_ms`` (0): frames for an interrupted request still
    accepted that long after its ACK.

``[target.capabilities]``
    ``agents`` (the protocol's three for a PROTOCOL.md target, ``["async"]``
    for another protocol); ``hooks``: how a test condition is made, as extra
    arguments (``stuck_drain = ["--stuck-drain"]``, ``drain_delay =
    ["--drain-delay-ms", "{ms}"]``).

Which of PROTOCOL.md's "Running a server" flags the target takes is said by
placeholders in its command (``{grace}``, ``{hard_limit}``,
``{heartbeat_interval}``, ``{max_size}``) or by ``protocol_flags = true``; a
bound it cannot be told is never changed behind its back
(:meth:`Target.with_server_flags`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "AGENTS",
    "FLAG_PLACEHOLDERS",
    "HOOKS",
    "INTERRUPT_ORDERS",
    "Capabilities",
    "Conventions",
    "DeclarationError",
    "Upstream",
    "capabilities_from_mapping",
    "conventions_from_mapping",
    "upstream_from_mapping",
]

#: PROTOCOL.md's agents.
AGENTS = ("async", "upstream", "blocking")
INTERRUPT_ORDERS = ("final_then_ack", "ack_then_final", "either")
#: Test conditions a target can declare a way to make.
HOOKS = ("stuck_drain", "drain_delay")
#: A limit, its placeholder in a command, and the protocol flag the reference server takes.
FLAG_PLACEHOLDERS: dict[str, tuple[str, str]] = {
    "grace_s": ("{grace}", "--grace"),
    "hard_limit_s": ("{hard_limit}", "--hard-limit"),
    "heartbeat_interval_s": ("{heartbeat_interval}", "--heartbeat-interval"),
    "max_size": ("{max_size}", "--max-size"),
}

InterruptOrder = Literal["final_then_ack", "ack_then_final", "either"]


@dataclass(frozen=True)
class Upstream:
    """The target's LLM upstream, which wschaos replaces with its fake for every case.

    ``env``: the variables that receive the fake's base URL (the part before
    ``/chat/completions``); ``config``: a file written before the target starts,
    from a template with ``{base_url}``, for a service that reads a config file.
    Each reply is shaped from the request the scenario made (length, pace, a
    stall standing in for a blocked call), carried to the fake inside the
    request's text, so a service that forwards the user's message forwards it.
    """

    env: tuple[str, ...] = ("OPENAI_BASE_URL",)
    config_path: str | None = None
    config_template: str | None = None


class DeclarationError(ValueError):
    """A conventions or capabilities table is invalid; the message names the key."""


@dataclass(frozen=True)
class Conventions:
    """Habits the checks hold a target to; each default is PROTOCOL.md's value."""

    close_codes: tuple[int, ...] = (1001,)
    shutdown_finals: bool = True
    stderr_max_lines: int | None = None
    interrupt_order: InterruptOrder = "final_then_ack"
    replaces_active: bool = False
    after_ack_grace_ms: float = 0.0
    #: /health turns 503 while draining (PROTOCOL.md); false for a service whose health never drains.
    health_draining: bool = True


@dataclass(frozen=True)
class Capabilities:
    """What the target has that some cases need: its agents and its test hooks."""

    agents: tuple[str, ...] = AGENTS
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def hook_args(self, hook: str, **values: Any) -> tuple[str, ...] | None:
        """The extra arguments that make ``hook`` happen, placeholders filled; None when undeclared."""
        args = self.hooks.get(hook)
        if args is None:
            return None
        out = []
        for a in args:
            for k, v in values.items():
                a = a.replace("{" + k + "}", _num(v))
            out.append(a)
        return tuple(out)


def _num(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def conventions_from_mapping(table: Mapping[str, Any], *, source: str) -> Conventions:
    """Validate ``[target.conventions]``; every error names ``source`` and the key."""
    where = f"{source}: conventions"
    known = {f.name for f in fields(Conventions)}
    _no_unknown(table, known, where)
    kw: dict[str, Any] = {}
    if "close_codes" in table:
        codes = table["close_codes"]
        if not isinstance(codes, list) or not codes or not all(
                isinstance(c, int) and not isinstance(c, bool) and 1000 <= c <= 4999 for c in codes):
            raise DeclarationError(f"{where}.close_codes must be a non-empty list of close codes (1000-4999), not {codes!r}")
        kw["close_codes"] = tuple(codes)
    for key in ("shutdown_finals", "replaces_active", "health_draining"):
        if key in table:
            kw[key] = _bool(table, key, where)
    if "stderr_max_lines" in table:
        n = table["stderr_max_lines"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DeclarationError(f"{where}.stderr_max_lines must be a whole number >= 0, not {n!r}")
        kw["stderr_max_lines"] = n
    if "interrupt_order" in table:
        order = table["interrupt_order"]
        if order not in INTERRUPT_ORDERS:
            raise DeclarationError(f"{where}.interrupt_order must be one of {', '.join(INTERRUPT_ORDERS)}, not {order!r}")
        kw["interrupt_order"] = order
    if "after_ack_grace_ms" in table:
        g = table["after_ack_grace_ms"]
        if isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0:
            raise DeclarationError(f"{where}.after_ack_grace_ms must be a number >= 0, not {g!r}")
        kw["after_ack_grace_ms"] = float(g)
    return Conventions(**kw)


def capabilities_from_mapping(table: Mapping[str, Any], *, source: str, default_agents: tuple[str, ...]) -> Capabilities:
    """Validate ``[target.capabilities]``; every error names ``source`` and the key."""
    where = f"{source}: capabilities"
    _no_unknown(table, {"agents", "hooks"}, where)
    agents = default_agents
    if "agents" in table:
        raw = table["agents"]
        if not isinstance(raw, list) or not all(a in AGENTS for a in raw):
            raise DeclarationError(f"{where}.agents must be a list drawn from {', '.join(AGENTS)}, not {raw!r}")
        agents = tuple(raw)
    hooks: dict[str, tuple[str, ...]] = {}
    if "hooks" in table:
        raw_hooks = table["hooks"]
        if not isinstance(raw_hooks, Mapping):
            raise DeclarationError(f"{where}.hooks must be a table of hook = [arguments]")
        _no_unknown(raw_hooks, set(HOOKS), f"{where}.hooks")
        for name, args in raw_hooks.items():
            if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
                raise DeclarationError(f"{where}.hooks.{name} must be a non-empty list of argument strings")
            hooks[name] = tuple(args)
    return Capabilities(agents=agents, hooks=hooks)


def upstream_from_mapping(table: Mapping[str, Any], *, source: str, base_dir: Any = None) -> Upstream:
    """Validate ``[target.upstream]``: ``env`` (a name or a list), optional ``config = { path, template }``."""
    where = f"{source}: upstream"
    _no_unknown(table, {"env", "config"}, where)
    env = table.get("env", ["OPENAI_BASE_URL"])
    if isinstance(env, str):
        env = [env]
    if not isinstance(env, list) or not all(isinstance(e, str) and e.isidentifier() for e in env):
        raise DeclarationError(f"{where}.env must be a variable name or a list of them, not {env!r}")
    path = template = None
    if "config" in table:
        cfg = table["config"]
        _no_unknown(cfg, {"path", "template"}, f"{where}.config")
        path, template = cfg.get("path"), cfg.get("template")
        if not isinstance(path, str) or not isinstance(template, str) or "{base_url}" not in template:
            raise DeclarationError(f"{where}.config needs path (a string) and template (a string with {{base_url}})")
        if base_dir is not None and not path.startswith("/"):
            path = str(base_dir / path)
    if not env and path is None:
        raise DeclarationError(f"{where}: give env or config, or the target cannot be told where its upstream is")
    return Upstream(env=tuple(env), config_path=path, config_template=template)


def _no_unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    if not isinstance(table, Mapping):
        raise DeclarationError(f"{where} must be a table")
    bad = sorted(set(table) - known)
    if bad:
        raise DeclarationError(f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool:
    v = table[key]
    if not isinstance(v, bool):
        raise DeclarationError(f"{where}.{key} must be true or false, not {v!r}")
    return v
