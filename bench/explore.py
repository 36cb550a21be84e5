"""Figure: the explorer's pace, programs and steps per second, and where the time goes.

The explorer runs its default configuration against the correct reference
server for a fixed budget (nothing to find, so every second is searching) and
its own clock splits the time: getting a live target and its baseline, the
programs' steps, the end of each program (closing every session, letting
``/stats`` settle back to the baseline), judging the history, and the rest:
Hypothesis drawing programs and the hand-off between its thread and the event
loop. Drawing alone is timed separately, with no I/O, for the same strategy.

Without ``--quick`` it also times a real finding: how long the explorer takes
to meet ``--fault cancel_before_start_leak`` from scratch and how far and how
fast it shrinks it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, Figure, driver_main

__all__ = ["figure", "main"]

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


async def _explore(faults: list[str], budget: float, shrink: float, seed: int) -> Any:
    from harness.engine.scenario import Case, Context
    from harness.explore.engine import Explorer
    from harness.target.spec import reference_target

    async def _unused(ctx: Context) -> None:
        return None

    with tempfile.TemporaryDirectory(prefix="wschaos-bench-explore-") as tmp:
        ctx = Context(Case("explore", "bench", _unused), reference_target(faults=faults), seed=seed, run_dir=Path(tmp))
        try:
            return await Explorer(ctx, budget_s=budget, shrink_s=shrink, confirm=0).run()
        finally:
            await ctx.aclose()


def _draw_ms(n: int) -> float:
    """Milliseconds Hypothesis takes to draw one program, with no I/O at all."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from harness.explore.strategies import Capabilities, programs

    caps = Capabilities(agents=("async", "blocking", "upstream"), options=True)

    @hseed(1)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(programs(caps))
    def draw(steps: list[dict[str, Any]]) -> None:
        return None

    from harness.explore.strategies import hypothesis_home

    t0 = time.perf_counter()
    with hypothesis_home(None):
        draw()
    return (time.perf_counter() - t0) * 1000 / n


async def figure(quick: bool, workers: int | None = None) -> Figure:
    """Explorer: programs and steps per second against the correct server, and where the time goes."""
    fig = Figure("explore", "explorer: generated programs against the reference server")
    budget = 5.0 if quick else 30.0
    t0 = time.monotonic()
    res = await _explore([], budget, 10.0, seed=1)
    fig.add("budget", budget, "s")
    fig.add("programs", res.programs)
    fig.add("steps", res.steps)
    pps = res.programs / res.duration_s if res.duration_s else None
    fig.add("programs_per_s", round(pps, 2) if pps else None, "/s")
    fig.add("steps_per_s", round(res.steps / res.duration_s, 1) if res.duration_s else None, "/s")
    parts = dict(res.timing)
    parts["hypothesis+handoff"] = max(0.0, res.duration_s - sum(parts.values()))
    total = sum(parts.values()) or 1.0
    fig.add("time_share", {k: f"{100 * v / total:.0f}%" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])})
    per = {k: round(1000 * v / max(res.programs, 1), 1) for k, v in parts.items()}
    fig.add("ms_per_program", per)
    fig.add("draw_ms_per_program", round(_draw_ms(50 if quick else 200), 2), "ms")
    fig.goal("nothing found on the correct server", not res.found,
             res.findings[0].summary() if res.found else "clean")
    fig.goal(">= 5 programs/s", pps is not None and pps >= 5, f"{pps:.1f}/s" if pps else "-")
    if not quick:
        leak = await _explore(["cancel_before_start_leak"], 30.0, 30.0, seed=3)
        if leak.found:
            f = leak.findings[0]
            fig.add("leak_found_after", round(f.found_after_s, 1), "s")
            fig.add("leak_shrunk_steps", f"{len(f.original_steps)} -> {len(f.steps)}")
            fig.add("leak_shrink", round(f.shrink_s, 1), "s")
            fig.add("leak_shrunk_program_after", round(f.best_after_s, 1), "s")
            fig.goal("leak found and shrunk to <= 3 steps within 60 s",
                     len(f.steps) <= 3 and f.found_after_s + f.best_after_s <= 60,
                     f"{f.found_after_s + f.best_after_s:.1f} s, {len(f.steps)} steps")
        else:
            fig.goal("leak found and shrunk to <= 3 steps within 60 s", False, "not found in 30 s")
    fig.notes.append("teardown+settle: closing every session and waiting (bounded) for /stats to return to the "
                     "baseline; a failing program waits the whole release grace, a clean one a few ms")
    fig.seconds = time.monotonic() - t0
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.explore [--quick]``: this figure alone."""
    return driver_main("explore", figure, argv)


if __name__ == "__main__":
    sys.exit(main())
