"""A frozen description of the service under test.

A :class:`Target` says how to start the service (argv with ``{port}`` and
``{host}`` placeholders, env, cwd), how to know it is ready, where its
WebSocket endpoint and its optional ``/stats`` live, which protocol adapter
speaks to it, and the limits the scenarios hold it to. It is built from a
command line (:func:`target_from_cmd`), a TOML file (:func:`load_target`), the
``[tool.wschaos]`` table of a pyproject (:func:`load_pyproject_target`), or for
the embedded reference server (:func:`reference_target`).

Nothing here does I/O beyond reading the TOML file.
"""

from __future__ import annotations

import ipaddress
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from harness.target.declared import (
    AGENTS,
    FLAG_PLACEHOLDERS,
    Capabilities,
    Conventions,
    DeclarationError,
    Upstream,
    capabilities_from_mapping,
    conventions_from_mapping,
    upstream_from_mapping,
)
from harness.target.interactive import (
    REFERENCE_DIALOGUE,
    InteractiveError,
    InteractiveSpec,
    interactive_from_mapping,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "LISTENING_PATTERN",
    "Limits",
    "Readiness",
    "RemoteAddressError",
    "Target",
    "TargetError",
    "check_loopback",
    "load_pyproject_target",
    "load_target",
    "reference_target",
    "target_from_cmd",
]

#: The readiness line of the reference protocol: ``LISTENING <host>:<port>``.
LISTENING_PATTERN = r"LISTENING (?P<host>\[?[0-9A-Za-z.:]+\]?):(?P<port>\d+)"

DEFAULT_NOISE = (
    "Traceback",
    "KeyboardInterrupt",
    "Task was destroyed but it is pending",
    "Exception ignored",
    "was never awaited",
    "Exception in thread",
    "concurrent.futures.thread",  # executor join at interpreter exit
)


class TargetError(ValueError):
    """A target description is invalid; the message names where the bad value came from."""


class RemoteAddressError(TargetError):
    """An address outside loopback was given without ``allow_remote``."""


@dataclass(frozen=True)
class Limits:
    """The bounds the scenarios hold the target to, in seconds (before scaling)."""

    grace_s: float = 3.0
    hard_limit_s: float = 10.0
    heartbeat_interval_s: float = 10.0
    ack_bound_s: float = 0.2
    upstream_close_s: float = 0.2
    second_sigint_s: float = 0.5
    exit_margin_s: float = 1.0
    ready_timeout_s: float = 20.0
    client_exit_s: float = 1.0
    exit_codes: tuple[int, ...] = (0,)
    forced_exit_codes: tuple[int, ...] = (130,)
    watchdog_exit_codes: tuple[int, ...] = (1,)
    max_concurrent_requests: int = 8
    max_size: int = 1048576
    #: Chunks of a stopped reply that may still arrive once the target has had its ACK
    #: bound to act on the interrupt (1: one chunk in flight in the service itself).
    chunks_after_interrupt: int = 0


@dataclass(frozen=True)
class Readiness:
    """How the supervisor knows the target accepts connections.

    ``kind="line"``: a line of ``stream`` (stdout by default; uvicorn prints its
    startup line on stderr) matches ``pattern`` (its ``port`` group, when
    present, gives the port actually bound); ``"port"``: the TCP port accepts;
    ``"http"``: ``url`` answers 2xx.
    """

    kind: Literal["line", "port", "http"] = "line"
    pattern: str = LISTENING_PATTERN
    url: str | None = None
    stream: Literal["stdout", "stderr", "any"] = "stdout"


@dataclass(frozen=True)
class Target:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    host: str = "127.0.0.1"
    #: 0: the port comes from the readiness line, or the harness picks a free
    #: one and substitutes it for ``{port}`` in argv.
    port: int = 0
    ws_path: str = "/ws"
    readiness: Readiness = Readiness()
    stats_path: str | None = "/stats"
    health_path: str | None = "/health"
    #: "reference", "declarative" (with ``adapter_config``), or "module:Class".
    adapter: str = "reference"
    adapter_config: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = Limits()
    #: Inject the zero-code Python probe (sitecustomize on PYTHONPATH).
    python_probe: bool = False
    noise_patterns: tuple[str, ...] = DEFAULT_NOISE
    allow_remote: bool = False
    #: Reference-server fault switches, recorded so reports can name them.
    faults: tuple[str, ...] = ()
    #: An interactive client to drive through a pty, with a ``{url}`` placeholder.
    interactive_client: tuple[str, ...] = ()
    #: Takes every "Running a server" flag of PROTOCOL.md, as the reference server does.
    protocol_flags: bool = False
    #: Habits the checks hold it to (each default is the protocol's value).
    conventions: Conventions = field(default_factory=Conventions)
    #: Its agents and the test hooks it declares.
    capabilities: Capabilities = field(default_factory=Capabilities)
    #: The interactive client's dialogue (``[target.interactive]``); ``interactive_client`` is the short form.
    interactive: InteractiveSpec | None = None
    #: Its LLM upstream: wschaos starts its fake for every case and shapes each reply.
    upstream: Upstream | None = None
    #: Counters of PROTOCOL.md's /stats under the target's own names (``{"active_requests": "turns"}``).
    stats_keys: Mapping[str, str] = field(default_factory=dict)
    #: The directory of the file that described it: a ``module:Class`` adapter is imported from there.
    base_dir: str | None = None
    #: The target file it was loaded from (``load_target`` only), for replay lines; a target
    #: changed afterwards (other arguments, faults, limits) is no longer what the file says.
    source_file: str | None = None

    def interactive_spec(self) -> InteractiveSpec | None:
        """The client to drive: the declared dialogue, or the reference one for ``interactive_client``."""
        if self.interactive is not None:
            return self.interactive
        if self.interactive_client:
            return replace(REFERENCE_DIALOGUE, argv=self.interactive_client)
        return None

    def __post_init__(self) -> None:
        if not self.argv:
            raise TargetError(f"target {self.name!r}: argv is empty")
        if not self.allow_remote:
            check_loopback(self.host, where=f"target {self.name!r} host")

    def ws_url(self, port: int, host: str | None = None) -> str:
        return f"ws://{_netloc(host or self.host, port)}{self.ws_path}"

    def http_url(self, port: int, path: str, host: str | None = None) -> str:
        return f"http://{_netloc(host or self.host, port)}{path}"

    def render_argv(self, port: int) -> list[str]:
        """argv with ``{port}``, ``{host}`` and the limit placeholders (``{grace}``, ...) filled in."""
        values = {"{port}": str(port), "{host}": self.host}
        for key, (placeholder, _flag) in FLAG_PLACEHOLDERS.items():
            values[placeholder] = _num(getattr(self.limits, key))
        out = []
        for a in self.argv:
            for placeholder, value in values.items():
                a = a.replace(placeholder, value)
            out.append(a)
        return out

    def takes_flag(self, limit: str) -> bool:
        """True when the target can be told ``limit`` (e.g. ``heartbeat_interval_s``) on its command line."""
        placeholder, _flag = FLAG_PLACEHOLDERS[limit]
        return self.protocol_flags or any(placeholder in a for a in self.argv)

    def with_faults(self, *faults: str) -> Target:
        """The same target with reference-server ``--fault`` switches appended."""
        extra: list[str] = []
        for f in faults:
            extra += ["--fault", f]
        return replace(self, argv=(*self.argv, *extra), faults=(*self.faults, *faults), source_file=None)

    def with_server_flags(self, **limit_changes: Any) -> Target:
        """Tell the target shorter (or longer) limits, where it can be told them.

        A limit changes only when the target takes its flag: a placeholder in
        its command (filled from the limits at start) or ``protocol_flags``
        (the flag is set on its command line). A limit the target cannot be told
        keeps its declared value, so no case holds a service to a bound it never
        heard of; callers read ``target.limits`` afterwards and work from it.
        """
        told = {k: v for k, v in limit_changes.items() if self.takes_flag(k)}
        target = self.with_limits(**told)
        if not self.protocol_flags:
            return target  # placeholders are filled from the new limits by render_argv
        argv = list(target.argv)
        for key, value in told.items():
            placeholder, flag = FLAG_PLACEHOLDERS[key]
            if any(placeholder in a for a in argv):
                continue
            if flag in argv:
                argv[argv.index(flag) + 1] = _num(value)
            else:
                argv += [flag, _num(value)]
        return replace(target, argv=tuple(argv))

    def has_agent(self, agent: str) -> bool:
        """A declared agent; a declared LLM upstream is the upstream agent of every request."""
        return agent in self.capabilities.agents or (agent == "upstream" and self.upstream is not None)

    def with_args(self, *args: str) -> Target:
        return replace(self, argv=(*self.argv, *args), source_file=None if args else self.source_file)

    def with_limits(self, **changes: Any) -> Target:
        return replace(self, limits=replace(self.limits, **changes),
                       source_file=None if changes else self.source_file)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def check_loopback(host_or_url: str, *, where: str = "address", allow_remote: bool = False) -> None:
    """Refuse anything that is not 127.0.0.0/8, ::1 or ``localhost``."""
    if allow_remote:
        return
    host = host_or_url
    if "://" in host_or_url:
        host = urlsplit(host_or_url).hostname or ""
    host = host.strip("[]")
    if host == "localhost":
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise RemoteAddressError(
            f"{where}: {host_or_url!r} is not a loopback address; wschaos only sends "
            "traffic to 127.0.0.0/8 and ::1 unless --allow-remote is given"
        ) from None
    if not ip.is_loopback:
        raise RemoteAddressError(
            f"{where}: {host_or_url!r} is outside loopback; pass --allow-remote to target it"
        )


def reference_target(
    faults: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    *,
    python_probe: bool = False,
    env: Mapping[str, str] | None = None,
    **limit_changes: Any,
) -> Target:
    """The embedded reference server, on a free port, with optional fault switches."""
    limits = Limits(**limit_changes)
    argv = [
        sys.executable, "-m", "reference_server",
        "--port", "0",
        "--grace", _num(limits.grace_s),
        "--hard-limit", _num(limits.hard_limit_s),
        "--heartbeat-interval", _num(limits.heartbeat_interval_s),
    ]
    argv += list(extra_args)
    target = Target(
        name="reference",
        argv=tuple(argv),
        env=dict(env or {}),
        limits=limits,
        python_probe=python_probe,
        protocol_flags=True,
        # PROTOCOL.md: "nothing is written to stderr but one line saying it is shutting down".
        conventions=Conventions(stderr_max_lines=1),
        capabilities=Capabilities(agents=AGENTS, hooks={
            "stuck_drain": ("--stuck-drain",), "drain_delay": ("--drain-delay-ms", "{ms}")}),
        # Replies long enough (500 chunks x 20 ms) that a Ctrl+C lands while one streams.
        interactive_client=(sys.executable, "-m", "reference_server.client", "--url", "{url}",
                            "--chunks", "500", "--chunk-delay-ms", "20"),
    )
    return target.with_faults(*faults) if faults else target


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def target_from_cmd(cmd: str, **overrides: Any) -> Target:
    """A target from one shell-quoted command line: reference protocol, LISTENING readiness."""
    try:
        argv = tuple(shlex.split(cmd))
    except ValueError as exc:
        raise TargetError(f"--target-cmd: cannot split {cmd!r}: {exc}") from None
    return Target(name=overrides.pop("name", argv[0] if argv else "target"), argv=argv, **overrides)


def load_target(path: str | Path, *, allow_remote: bool = False) -> Target:
    """A target from a TOML file (the ``[target]`` table, or the top level)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"{p}: no such target file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{p}: not valid TOML: {exc}") from None
    table = data.get("target", data)
    target = target_from_mapping(table, source=str(p), base_dir=p.parent, allow_remote=allow_remote)
    return replace(target, source_file=str(p))


def load_pyproject_target(path: str | Path = "pyproject.toml", *, allow_remote: bool = False) -> Target | None:
    """The ``[tool.wschaos.target]`` table of a pyproject, or None when there is none."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{p}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("wschaos", {}).get("target")
    if table is None:
        return None
    return target_from_mapping(
        table, source=f"{p} [tool.wschaos.target]", base_dir=p.parent, allow_remote=allow_remote
    )


# faults name reference-server switches (--fault); a target file cannot set them, nor where it lies.
_TARGET_KEYS = ({f.name for f in fields(Target)} | {"cmd"}) - {"faults", "base_dir", "source_file"}
_LIMIT_KEYS = {f.name for f in fields(Limits)}
#: Limits that are counts, where 0 means "none allowed".
_COUNT_LIMITS = {"chunks_after_interrupt"}


def target_from_mapping(
    table: Mapping[str, Any], *, source: str, base_dir: Path | None = None, allow_remote: bool = False
) -> Target:
    """Validate a target table; every error names ``source`` and the key."""
    if not isinstance(table, Mapping):
        raise TargetError(f"{source}: the target must be a table")
    unknown = sorted(set(table) - _TARGET_KEYS)
    if unknown:
        raise TargetError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TARGET_KEYS))}")
    kw: dict[str, Any] = {}
    if "cmd" in table and "argv" in table:
        raise TargetError(f"{source}: give either cmd or argv, not both")
    if "cmd" in table:
        kw["argv"] = tuple(shlex.split(_expect(table, "cmd", str, source)))
    elif "argv" in table:
        argv = _expect(table, "argv", list, source)
        if not all(isinstance(a, str) for a in argv):
            raise TargetError(f"{source}: argv must be a list of strings")
        kw["argv"] = tuple(argv)
    else:
        raise TargetError(f"{source}: the target needs cmd (a command line) or argv (a list)")
    kw["name"] = _expect(table, "name", str, source, default=kw["argv"][0] if kw["argv"] else "target")
    if base_dir is not None:
        kw["base_dir"] = str(Path(base_dir).resolve())
    for key, typ in (("host", str), ("ws_path", str), ("adapter", str), ("cwd", str)):
        if key in table:
            kw[key] = _expect(table, key, typ, source)
    if "cwd" in kw and base_dir is not None and not Path(kw["cwd"]).is_absolute():
        kw["cwd"] = str((base_dir / kw["cwd"]).resolve())
    if "port" in table:
        kw["port"] = _expect(table, "port", int, source)
    for key in ("stats_path", "health_path"):
        if key in table:
            val = table[key]
            if val is not False and not isinstance(val, str):
                raise TargetError(f"{source}: {key} must be a path string or false")
            kw[key] = val or None
    if "interactive_client" in table:
        if "interactive" in table:
            raise TargetError(f"{source}: give interactive_client (the short form) or [target.interactive], not both")
        kw["interactive_client"] = tuple(shlex.split(_expect(table, "interactive_client", str, source)))
    if "stats_keys" in table:
        keys = _expect(table, "stats_keys", dict, source)
        if not all(isinstance(v, str) for v in keys.values()):
            raise TargetError(f"{source}: stats_keys values must be the target's key names (strings)")
        kw["stats_keys"] = dict(keys)
    for key in ("python_probe", "allow_remote", "protocol_flags"):
        if key in table:
            kw[key] = _expect(table, key, bool, source)
    kw["allow_remote"] = kw.get("allow_remote", False) or allow_remote
    if "env" in table:
        env = _expect(table, "env", dict, source)
        if not all(isinstance(v, str) for v in env.values()):
            raise TargetError(f"{source}: env values must be strings")
        kw["env"] = dict(env)
    if "noise_patterns" in table:
        kw["noise_patterns"] = tuple(_expect(table, "noise_patterns", list, source))
    if "adapter_config" in table:
        kw["adapter_config"] = _expect(table, "adapter_config", dict, source)
    if "readiness" in table:
        r = _expect(table, "readiness", dict, source)
        kind = r.get("kind", "line")
        if kind not in ("line", "port", "http"):
            raise TargetError(f"{source}: readiness.kind must be line, port or http, not {kind!r}")
        if kind == "http" and not isinstance(r.get("url"), str):
            raise TargetError(f"{source}: readiness.kind = 'http' needs readiness.url")
        bad_r = sorted(set(r) - {"kind", "pattern", "url", "stream"})
        if bad_r:
            raise TargetError(f"{source}: unknown readiness key(s) {', '.join(bad_r)}; known: kind, pattern, stream, url")
        stream = r.get("stream", "stdout")
        if stream not in ("stdout", "stderr", "any"):
            raise TargetError(f"{source}: readiness.stream must be stdout, stderr or any, not {stream!r}")
        kw["readiness"] = Readiness(kind=kind, pattern=r.get("pattern", LISTENING_PATTERN), url=r.get("url"),
                                    stream=stream)
    try:
        if "conventions" in table:
            kw["conventions"] = conventions_from_mapping(_expect(table, "conventions", dict, source), source=source)
        default_agents = AGENTS if kw.get("adapter", "reference") == "reference" else ("async",)
        kw["capabilities"] = capabilities_from_mapping(
            _expect(table, "capabilities", dict, source, default={}), source=source, default_agents=default_agents)
        if "upstream" in table:
            kw["upstream"] = upstream_from_mapping(_expect(table, "upstream", dict, source), source=source,
                                                   base_dir=base_dir)
        if "interactive" in table:
            kw["interactive"] = interactive_from_mapping(_expect(table, "interactive", dict, source),
                                                         source=source, base_dir=base_dir)
    except (DeclarationError, InteractiveError) as exc:
        raise TargetError(str(exc)) from None
    if "limits" in table:
        lim = _expect(table, "limits", dict, source)
        bad = sorted(set(lim) - _LIMIT_KEYS)
        if bad:
            raise TargetError(f"{source}: unknown limit(s) {', '.join(bad)}; known: {', '.join(sorted(_LIMIT_KEYS))}")
        conv: dict[str, Any] = {}
        for k, v in lim.items():
            if k.endswith("_codes"):
                if not isinstance(v, list) or not all(isinstance(i, int) for i in v):
                    raise TargetError(f"{source}: limits.{k} must be a list of integers")
                conv[k] = tuple(v)
            elif k in _COUNT_LIMITS:
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise TargetError(f"{source}: limits.{k} must be a whole number >= 0, not {v!r}")
                conv[k] = v
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise TargetError(f"{source}: limits.{k} must be a positive number, not {v!r}")
            else:
                conv[k] = v
        kw["limits"] = Limits(**conv)
    try:
        return Target(**kw)
    except TargetError as exc:  # keep the subclass: callers tell a remote refusal apart
        raise type(exc)(f"{source}: {exc}") from None


def _expect(table: Mapping[str, Any], key: str, typ: type, source: str, default: Any = None) -> Any:
    if key not in table:
        return default
    val = table[key]
    if (typ is int and isinstance(val, bool)) or not isinstance(val, typ):
        raise TargetError(f"{source}: {key} must be a {typ.__name__}, not {type(val).__name__} {val!r}")
    return val
