"""Checkers for keepalive (PROTOCOL.md "Keepalive"): a peer that stops answering pings is dropped."""

from __future__ import annotations

from typing import Any

from harness.checkers.bounds import duration_within
from harness.checkers.registry import checker
from harness.core.verdict import Verdict

__all__ = ["dropped_within"]


@checker
def dropped_within(dropped_ms: float | None, bound_ms: float | None, *, what: str = "drop of a silent peer",
                   stacks: Any = ()) -> Verdict:
    """The server dropped a silent peer within ``bound_ms`` of it going silent; None (never dropped) fails."""
    return duration_within("keepalive.dropped_within", dropped_ms, bound_ms, what=what, stacks=stacks)
