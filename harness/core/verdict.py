"""Three-valued verdicts: what every checker returns.

``pass`` and ``fail`` are judgements; ``unknown`` means the checker lacked the
data or crashed, and the gate reports it as an error, never as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Status", "Verdict", "fail", "passed", "unknown", "worst"]

Status = Literal["pass", "fail", "unknown"]


@dataclass(frozen=True)
class Verdict:
    check: str
    status: Status
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def labelled(self, label: str) -> Verdict:
        """The same verdict about one item of several, e.g. one row of a table: ``check@label``."""
        return Verdict(f"{self.check}@{label}", self.status, f"{label}: {self.message}", self.figures)

    def __str__(self) -> str:
        return f"{self.status.upper()} {self.check}: {self.message}"


def passed(check: str, message: str, **figures: Any) -> Verdict:
    return Verdict(check, "pass", message, figures)


def fail(check: str, message: str, **figures: Any) -> Verdict:
    return Verdict(check, "fail", message, figures)


def unknown(check: str, message: str, **figures: Any) -> Verdict:
    return Verdict(check, "unknown", message, figures)


def worst(verdicts: list[Verdict]) -> Status:
    """fail beats unknown beats pass; no verdicts at all is unknown."""
    if not verdicts:
        return "unknown"
    statuses = {v.status for v in verdicts}
    return "fail" if "fail" in statuses else "unknown" if "unknown" in statuses else "pass"
