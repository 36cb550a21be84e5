"""One unit of time for the whole harness, scaled for slow machines.

Every bound the harness waits on goes through :func:`scaled`, so a single
environment variable, ``WSCHAOS_TIME_FACTOR`` (default 1), stretches them all
on a loaded machine. Deadlines come from ``time.monotonic()``, never the wall
clock.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["FACTOR", "Deadline", "TimeFactorError", "now_ns", "scaled", "time_factor"]


class TimeFactorError(ValueError):
    """WSCHAOS_TIME_FACTOR is not a positive number."""


def time_factor(environ: dict[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    raw = env.get("WSCHAOS_TIME_FACTOR", "1")
    try:
        value = float(raw)
    except ValueError:
        raise TimeFactorError(f"WSCHAOS_TIME_FACTOR={raw!r} is not a number") from None
    if not value > 0:
        raise TimeFactorError(f"WSCHAOS_TIME_FACTOR={raw!r} must be greater than 0")
    return value


try:
    FACTOR = time_factor()
except TimeFactorError:  # reported properly by the CLI and the plugin; fall back here
    FACTOR = 1.0


def scaled(seconds: float) -> float:
    """A bound in seconds, stretched by the environment's time factor."""
    return seconds * FACTOR


def now_ns() -> int:
    """Monotonic nanoseconds: the one clock of every history record."""
    return time.monotonic_ns()


@dataclass
class Deadline:
    """A point on the monotonic clock; ``remaining()`` never goes below zero."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at
