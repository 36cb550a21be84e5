"""Command-line flags of the reference server."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from .faults import FAULT_NAMES, Faults

__all__ = ["AGENTS", "Config", "ConfigError", "parse_args"]

AGENTS = ("async", "upstream", "blocking")


class ConfigError(ValueError):
    """A flag value the server refuses; the message says which and why."""


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    grace: float = 3.0
    hard_limit: float = 10.0
    heartbeat_interval: float = 10.0
    max_size: int = 1048576
    agent: str = "async"
    max_concurrent_requests: int = 8
    drain_delay_ms: int = 0
    stuck_drain: bool = False
    allow_remote: bool = False
    faults: Faults = field(default_factory=Faults)


def _positive(kind: type):  # type: ignore[no-untyped-def]
    def conv(raw: str):  # type: ignore[no-untyped-def]
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{raw!r} must be greater than 0")
        return value

    return conv


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an int") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must be 0 or more")
    return value


def _fault(raw: str) -> str:
    if raw not in FAULT_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown fault {raw!r}; known faults: {', '.join(FAULT_NAMES)}"
        )
    return raw


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reference_server",
        description="The wschaos reference server: the conversation protocol, version 1.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only unless --allow-remote)")
    p.add_argument("--port", type=_non_negative_int, default=8765, help="0 picks a free port")
    p.add_argument("--grace", type=_positive(float), default=3.0, help="seconds a graceful shutdown may take")
    p.add_argument("--hard-limit", type=_positive(float), default=10.0,
                   help="seconds after the first signal when the watchdog ends the process")
    p.add_argument("--heartbeat-interval", type=_positive(float), default=10.0,
                   help="seconds between keepalive pings, and the pong deadline")
    p.add_argument("--max-size", type=_positive(int), default=1048576, help="largest frame accepted, bytes")
    p.add_argument("--agent", choices=AGENTS, default="async", help="default agent for requests naming none")
    p.add_argument("--max-concurrent-requests", type=_positive(int), default=8,
                   help="active requests per session before BUSY")
    p.add_argument("--drain-delay-ms", type=_non_negative_int, default=0,
                   help="test condition: a cooperative shutdown step that takes N ms")
    p.add_argument("--stuck-drain", action="store_true",
                   help="test condition: a shutdown step that never completes")
    p.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    p.add_argument("--fault", action="append", type=_fault, default=[], metavar="NAME",
                   help="re-introduce a lifecycle bug (repeatable); see docs/ARCHITECTURE.md")
    return p


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Parse flags; argparse exits with code 2 and a one-line message on bad values."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.allow_remote and not _is_loopback(ns.host):
        parser.error(f"--host {ns.host!r} is not a loopback address; pass --allow-remote to bind it")
    return Config(
        host=ns.host,
        port=ns.port,
        grace=ns.grace,
        hard_limit=ns.hard_limit,
        heartbeat_interval=ns.heartbeat_interval,
        max_size=ns.max_size,
        agent=ns.agent,
        max_concurrent_requests=ns.max_concurrent_requests,
        drain_delay_ms=ns.drain_delay_ms,
        stuck_drain=ns.stuck_drain,
        allow_remote=ns.allow_remote,
        faults=Faults(ns.fault),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
