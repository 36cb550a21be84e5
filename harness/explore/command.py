"""``explore`` and ``replay``: the command line of the explorer.

::

    python -m harness.explore explore [--target FILE | --target-cmd CMD | --fault NAME] --budget S --seed N
    python -m harness.explore replay FILE [--times N]

``main(argv=None) -> int``; :func:`add_parsers` adds both commands to another
parser's subcommands (``wschaos explore`` / ``wschaos replay``) and
:func:`handle` runs a parsed one. Exit codes: 0 the budget ran out with
nothing found (or a replay that never reproduced), 1 something was found (or
reproduced), 2 bad input (one line on stderr, never a traceback), 3 the
harness itself failed, 130 interrupted. Progress goes to stderr: live through
Rich on a terminal, plain lines otherwise; the shrunk program and the replay
rate are printed in plain words either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import time
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from harness.client.wire import WIRE_HELP, WIRES, use_wire
from harness.target.options import add_target_options, target_options_problem

if TYPE_CHECKING:
    from rich.console import Console

    from harness.explore.engine import ExploreResult
    from harness.target.spec import Target

__all__ = ["ExitCode", "add_parsers", "handle", "main"]


class ExitCode(IntEnum):
    """wschaos's exit codes (harness.results.gate.ExitCode), in explore's words."""

    CLEAN = 0
    FOUND = 1
    INTERRUPTED = 2
    INTERNAL = 3
    USAGE = 4


class UsageError(Exception):
    """Bad command-line input: one line for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def _target_args(p: argparse.ArgumentParser) -> None:
    add_target_options(p)
    p.add_argument("--wire", choices=WIRES, help=WIRE_HELP)


def add_parsers(subparsers: Any) -> None:
    """Add ``explore`` and ``replay`` to ``subparsers`` (an ``add_subparsers()`` result)."""
    ex = subparsers.add_parser("explore", help="generate programs that look for lifecycle races; shrink what fails",
                               description="Generate programs of operations across several sessions, run them "
                                           "against one target, and shrink the first one that breaks an "
                                           "invariant to a replayable minimum.")
    _target_args(ex)
    ex.add_argument("--budget", type=_positive(float), default=30.0, metavar="SECONDS",
                    help="seconds of searching (default 30); shrinking has its own budget")
    ex.add_argument("--seed", type=int, default=None, help="seed of the search (default: random, printed)")
    ex.add_argument("--shrink-budget", type=_positive(float), default=60.0, metavar="SECONDS",
                    help="seconds for shrinking a finding (default 60)")
    ex.add_argument("--confirm", type=int, default=3, metavar="N",
                    help="replays of the shrunk program, for its reproduction rate (default 3)")
    ex.add_argument("--sessions", type=_positive(int), default=3, metavar="N", help="sessions per program (default 3)")
    ex.add_argument("--max-steps", type=_positive(int), default=8, metavar="N", help="steps per program at most (default 8)")
    ex.add_argument("--report-dir", default="reports", metavar="DIR",
                    help="run directories go under DIR/explore (default: reports)")
    ex.set_defaults(explore_command="explore")

    rp = subparsers.add_parser("replay", help="rerun a saved program N times and say how often it fails",
                               description="Rerun exactly the program of a file written by explore, against the "
                                           "target it names (or the one given), and report the reproduction rate.")
    rp.add_argument("file", help="a program file (finding-N.json in an explore run directory)")
    rp.add_argument("--times", type=_positive(int), default=10, metavar="N", help="how many runs (default 10)")
    _target_args(rp)
    rp.add_argument("--no-faults", action="store_true",
                    help="against the embedded reference server without the file's fault switches (a fix, checked)")
    rp.add_argument("--report-dir", default="reports", metavar="DIR")
    rp.set_defaults(explore_command="replay")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m harness.explore",
                     description="wschaos explore: generated programs that find lifecycle races.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from harness.report.text import make_console

    console = make_console()
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "explore_command", None) is None:
            build_parser().print_usage(sys.stderr)
            return int(ExitCode.USAGE)
        return handle(args, console)
    except UsageError as exc:
        _error(console, str(exc))
        return int(ExitCode.USAGE)


def handle(args: argparse.Namespace, console: Console | None = None) -> int:
    """Run a parsed ``explore`` or ``replay``; every bad input is one line and exit 4 (USAGE)."""
    from harness.explore.program import ProgramError
    from harness.process.supervisor import TargetStartError
    from harness.report.text import make_console
    from harness.target.spec import TargetError

    console = console or make_console()
    name = "explore" if args.explore_command == "explore" else "replay"
    try:
        why = use_wire(args.wire)
        if why is not None:
            raise UsageError(why)
        if args.explore_command == "explore":
            return cmd_explore(args, console)
        return cmd_replay(args, console)
    except UsageError as exc:
        _error(console, f"{name}: {exc}")
        return int(ExitCode.USAGE)
    except (TargetError, ProgramError) as exc:
        _error(console, f"{name}: {exc}")
        return int(ExitCode.USAGE)
    except TargetStartError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _error(console, f"{name}: the target did not start: {first}")
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        console.print(Text(f"{name}: interrupted", style="yellow"))
        return int(ExitCode.INTERRUPTED)


def _error(console: Console, message: str) -> None:
    console.print(Text(" ".join(message.split()) if "\n" in message else message, style="red"), soft_wrap=True)


# -- targets ------------------------------------------------------------------------

def _target(args: argparse.Namespace, *, where: str) -> tuple[Target, dict[str, Any]]:
    """The target the options name, and its description for a program file."""
    from harness.core.timing import time_factor
    from harness.explore.host import describe_target
    from harness.target.spec import load_target, reference_target, target_from_cmd

    try:
        time_factor()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    problem = target_options_problem(args)
    if problem is not None:
        raise UsageError(problem)
    source: dict[str, Any] | None = None
    if args.target:
        path = Path(args.target).resolve()
        target = load_target(path, allow_remote=args.allow_remote)
        source = {"kind": "file", "path": str(path)}
    elif args.target_cmd:
        target = target_from_cmd(args.target_cmd, allow_remote=args.allow_remote)
        source = {"kind": "cmd", "cmd": args.target_cmd}
    else:
        target = reference_target(faults=list(args.fault))
    if args.python_probe:
        from dataclasses import replace

        target = replace(target, python_probe=True)
    return target, describe_target(target, source=source)


def _target_from_desc(desc: dict[str, Any], source: str) -> Target:
    """The target a program file names: the reference server and its faults, or a target table."""
    from harness.target.spec import target_from_mapping

    kind = desc.get("kind")
    ns = argparse.Namespace(target=None, target_cmd=None, fault=[], python_probe=bool(desc.get("python_probe")),
                            allow_remote=bool(desc.get("allow_remote")))
    if kind == "reference":
        faults = desc.get("faults") or []
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            raise UsageError(f"{source}: target.faults must be a list of names")
        ns.fault = faults
    elif kind == "file" and isinstance(desc.get("path"), str):
        ns.target = desc["path"]
    elif kind == "cmd" and isinstance(desc.get("cmd"), str):
        ns.target_cmd = desc["cmd"]
    elif kind == "spec" and isinstance(desc.get("spec"), dict):
        return target_from_mapping(dict(desc["spec"]), source=f"{source} target.spec",
                                   allow_remote=ns.allow_remote)
    else:
        raise UsageError(f"{source}: target must say kind 'reference' (faults), 'file' (path), 'cmd' (cmd) "
                         "or 'spec' (a target table)")
    return _target(ns, where=source)[0]


def _context(target: Target, run_dir: Path, seed: int, what: str) -> Any:
    from harness.engine.scenario import Case, Context

    async def _unused(ctx: Context) -> None:  # the explorer is not a registered scenario
        return None

    case = Case(scenario=f"explore.{what}", name="cli", fn=_unused)
    return Context(case, target, seed=seed, run_dir=run_dir)


def _run_dir(root: str, prefix: str) -> Path:
    from harness.results.store import new_run_dir

    try:
        return new_run_dir(Path(root) / "explore")
    except (OSError, ValueError) as exc:
        raise UsageError(f"--report-dir {root}: {exc}") from None


async def _with_context(ctx: Any, coro: Any) -> Any:
    """Run ``coro``; stop everything ``ctx`` started, whatever happened."""
    try:
        return await coro
    finally:
        await ctx.aclose()


# -- explore ------------------------------------------------------------------------

class _Progress:
    """Programs run, steps, findings: live on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, console: Console, budget: float) -> None:
        self.console = console
        self.live = console.is_terminal
        self.budget = budget
        self.last = 0.0
        self.phase = "search"
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(),
                                 TextColumn("{task.fields[programs]} programs, {task.fields[steps]} steps, "
                                            "{task.fields[findings]} findings"),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("explore", total=self.budget, phase="search", programs=0,
                                            steps=0, findings=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def __call__(self, e: dict[str, Any]) -> None:
        phase = str(e.get("phase"))
        if self._bar is not None:
            done = min(e.get("elapsed_s", 0.0), self.budget) if phase == "search" else self.budget
            self._bar.update(self._task, completed=done, phase=phase, programs=e["programs"], steps=e["steps"],
                             findings=e["findings"])
            return
        now = time.monotonic()
        if phase != self.phase or now - self.last >= 5:
            self.last, self.phase = now, phase
            extra = f" ({e['finding']})" if e.get("finding") else ""
            self.console.print(f"explore: {phase}{extra}: {e['programs']} programs, {e['steps']} steps, "
                               f"{e['findings']} findings, {e.get('elapsed_s', 0):.1f} s", soft_wrap=True)


def cmd_explore(args: argparse.Namespace, console: Console) -> int:
    from harness.explore.engine import Explorer
    from harness.explore.program import ExploreConfig

    if args.confirm < 0:
        raise UsageError("--confirm must be 0 or more")
    target, desc = _target(args, where="explore")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    config = ExploreConfig(sessions=args.sessions, max_steps=args.max_steps)
    run_dir = _run_dir(args.report_dir, "explore")
    ctx = _context(target, run_dir, seed, "explore")
    console.print(f"explore: seed {seed}, target {target.name}"
                  + (f" --fault {' --fault '.join(args.fault)}" if args.fault else "")
                  + f", budget {args.budget:g} s, run directory {run_dir}", soft_wrap=True)
    with _Progress(console, args.budget) as progress:
        explorer = Explorer(ctx, config=config, budget_s=args.budget, shrink_s=args.shrink_budget,
                            confirm=args.confirm, target_desc=desc, progress=progress)
        result = asyncio.run(_with_context(ctx, explorer.run()))
    print_result(result, console, replay_hint=True)
    if result.harness_errors and not result.found:
        return int(ExitCode.INTERNAL)
    return int(ExitCode.FOUND if result.found else ExitCode.CLEAN)


def print_result(result: ExploreResult, console: Console, *, replay_hint: bool = False) -> None:
    rate = result.programs / result.duration_s if result.duration_s else 0.0
    console.print(f"explore: {result.programs} programs, {result.steps} steps in {result.duration_s:.1f} s "
                  f"({rate:.1f} programs/s); stopped: {result.stopped}"
                  + (f"; target restarted {result.restarts}x" if result.restarts else ""), soft_wrap=True)
    for err in result.harness_errors[:3]:
        console.print(Text(f"explore: harness error (not the target's): {err}", style="yellow"), soft_wrap=True)
    if not result.found:
        console.print(Text("explore: nothing found within the budget", style="green"))
        return
    for f in result.findings:
        console.print(Text(f"FOUND {f.key} after {f.found_after_s:.1f} s ({f.programs_before + 1} programs)",
                           style="bold red"), soft_wrap=True)
        console.print(f"  {f.message}", soft_wrap=True)
        if f.flaky:
            console.print("  it failed once and passed when run again at once, so it was not shrunk "
                          "(Hypothesis shrinks only what fails again):", soft_wrap=True)
        else:
            console.print(f"  shrunk from {len(f.original_steps)} to {len(f.steps)} steps in {f.shrink_s:.1f} s "
                          f"({f.shrink_runs} runs; this program first ran {f.best_after_s:.1f} s in):",
                          soft_wrap=True)
        for line in f.lines:
            console.print(f"    {line}", soft_wrap=True)
        if f.replays:
            console.print(f"  reproduced {f.reproduced} of {f.replays} replays "
                          f"({100 * f.reproduced / f.replays:.0f}%)", soft_wrap=True)
        if f.path is not None and replay_hint:
            console.print(f"  saved {f.path}", soft_wrap=True)
            console.print(f"  replay: wschaos replay {shlex.quote(str(f.path))} --times 10",
                          soft_wrap=True)


# -- replay -------------------------------------------------------------------------

def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from harness.explore.engine import replay_program
    from harness.explore.program import load_program_file, render_program

    pf = load_program_file(args.file)
    if args.no_faults and (args.target or args.target_cmd or args.fault):
        raise UsageError("--no-faults replays against the embedded reference server: give no other target")
    if args.target or args.target_cmd or args.fault or args.python_probe or args.no_faults:
        target, _ = _target(args, where="replay")
    else:
        target = _target_from_desc(pf.target, args.file)
    run_dir = _run_dir(args.report_dir, "replay")
    ctx = _context(target, run_dir, pf.seed, "replay")
    console.print(f"replay: {args.file} ({len(pf.steps)} steps, seed {pf.seed}) against {target.name}, "
                  f"{args.times} times", soft_wrap=True)
    for line in render_program(pf.steps):
        console.print(f"  {line}", soft_wrap=True)
    want = pf.finding.get("key")

    def progress(i: int, n: int, hit: bool) -> None:
        if not console.is_terminal:
            console.print(f"replay: run {i} of {n}: {'reproduced' if hit else 'passed'}")

    out = asyncio.run(_with_context(ctx, replay_program(ctx, pf, args.times, progress)))
    pct = 100 * out.reproduced / out.runs if out.runs else 0.0
    what = want or "any invariant"
    console.print(Text(f"replay: reproduced {out.reproduced} of {out.runs} runs ({pct:.0f}%): {what}",
                       style="bold red" if out.reproduced else "green"), soft_wrap=True)
    if out.keys:
        console.print("replay: failed checks seen: " + ", ".join(f"{k} x{n}" for k, n in out.keys.most_common()),
                      soft_wrap=True)
    with contextlib.suppress(OSError):
        if out.last is not None:
            out.last.history.to_jsonl(run_dir / "last-history.jsonl")
    return int(ExitCode.FOUND if out.reproduced else ExitCode.CLEAN)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
