"""Generated programs: lifecycle races nobody scripted, found and shrunk by the explorer.

Every other case replays a known story. This one lets Hypothesis write the
stories: programs of connects, requests, interrupts (one, all, unknown,
foreign, again), frames sent in one write, heartbeats, publish/subscribe,
malformed frames, closes, resets and vanishing peers across several sessions,
each held to the same checkers as the scenarios and to a model of the state it
should have produced (:mod:`harness.explore`). A failure is shrunk to the
smallest program Hypothesis finds and reported with its steps, so the gate's
report shows it as it shows any failed check, with the command that replays it.
"""

from __future__ import annotations

from harness.core.verdict import fail, passed, unknown
from harness.engine.scenario import Context, scenario
from harness.explore.engine import Explorer
from harness.explore.host import describe_target
from harness.explore.program import ExploreConfig


@scenario(
    "explore.short",
    cases={"default": {"budget_s": 5.0, "shrink_s": 30.0, "confirm": 2}},
    profiles={"release": {"budget_s": 120.0, "shrink_s": 120.0, "confirm": 5}},
    timeout_s=300,
)
async def short(ctx: Context, budget_s: float, shrink_s: float, confirm: int) -> None:
    """1. Start the target once (again only if it dies).
    2. For the budget, generate seeded programs from what the target supports and run
    each: every step's answers recorded, then every session closed and /stats let settle.
    3. Hold each program to the scenarios' checkers and the model of what it should have
    produced.
    4. Result: no program breaks an invariant; the first that does is shrunk, replayed for
    its reproduction rate, saved, and reported with its numbered steps."""
    explorer = Explorer(ctx, config=ExploreConfig(), budget_s=budget_s, shrink_s=shrink_s, confirm=confirm,
                        target_desc=describe_target(ctx.target))
    result = await explorer.run()
    ctx.figure("programs", result.programs)
    ctx.figure("steps", result.steps)
    ctx.figure("programs_per_s", round(result.programs / result.duration_s, 2) if result.duration_s else None)
    ctx.figure("target_restarts", result.restarts)
    for i, f in enumerate(result.findings, 1):
        if f.path is not None:
            ctx.artifacts[f"finding-{i}"] = str(f.path)
        ctx.figure("found_after_s", round(f.found_after_s, 2))
        ctx.figure("shrunk_steps", len(f.steps))
        rate = f"reproduced {f.reproduced} of {f.replays} replays" if f.replays else "not replayed"
        if f.flaky:
            rate = "failed once, not again at once, so not shrunk; " + rate
        replay = f"python -m harness.explore replay {f.path} --times 10" if f.path is not None else ""
        ctx.check(fail(
            "explore.program",
            f"{f.key}: {f.message}. Shrunk from {len(f.original_steps)} to {len(f.steps)} steps ({rate}): "
            + " ".join(f.lines) + (f" Replay: {replay}" if replay else ""),
            finding=f.key, steps=f.steps, found_after_s=f.found_after_s, reproduced=f.reproduced,
            replays=f.replays,
        ))
    if result.found:
        return
    if result.harness_errors:
        ctx.check(unknown("explore.program", f"the explorer failed after {result.programs} programs: "
                                             f"{result.harness_errors[0]}"))
        return
    if result.programs == 0:
        ctx.check(unknown("explore.program", "no program ran within the budget"))
        return
    ctx.check(passed("explore.program", f"{result.programs} programs ({result.steps} steps) in "
                                        f"{result.duration_s:.1f} s: every invariant held",
                     programs=result.programs, steps=result.steps))
