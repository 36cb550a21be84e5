"""The default gate: every registered scenario case, as one pytest item each.

``pytest scenarios/`` (with the wschaos plugin, which the package registers)
runs it; so does ``wschaos run``. The plugin parametrizes ``case`` with the
cases selected by ``--wschaos-case`` (all by default).
"""

from __future__ import annotations

from harness.engine.scenario import Case
from harness.plugin import WschaosSession


def test_case(case: Case, wschaos: WschaosSession) -> None:
    wschaos.run_case(case)
