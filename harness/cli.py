"""``wschaos``: run the gate, reproduce a failure, serve the reference server, compare runs.

``main(argv=None) -> int`` returns an :class:`harness.results.gate.ExitCode`. Progress
and errors go to stderr through Rich (plain when not a terminal, no colour
under ``NO_COLOR``); ``--json`` puts a machine-readable summary on stdout.
Bad input gets one clear line and the usage exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console

    from harness.runner import GateOptions

from harness import __version__
from harness.client.wire import WIRE_HELP, WIRES, use_wire
from harness.results.gate import ExitCode
from harness.target.options import add_target_options, target_options_problem

__all__ = ["main"]


class UsageError(Exception):
    """Bad command-line input: one line for the user, exit code USAGE_ERROR."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _target_args(p: argparse.ArgumentParser) -> None:
    add_target_options(p, client_cmd=True)
    p.add_argument("--wire", choices=WIRES, help=WIRE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wschaos", description="Chaos and regression tests for WebSocket services.")
    parser.add_argument("--version", action="version", version=f"wschaos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the scenarios against a target and write a report")
    _target_args(run)
    run.add_argument("--seed", type=int, help="seed for every random choice (default: random, printed)")
    run.add_argument("--profile", choices=("gate", "release"), default="gate",
                     help="gate: fast defaults; release: more cycles, 3 repeats, percentiles")
    run.add_argument("--case", action="append", default=[], metavar="GLOB",
                     help="run only matching cases, e.g. 'interrupts.*' (repeatable)")
    run.add_argument("--repeat", type=int, metavar="N", help="run the selection N times (release default 3)")
    run.add_argument("--known-failures", metavar="FILE",
                     help="checks that may fail without failing the gate (default: wschaos-known-failures.toml if present)")
    run.add_argument("--baseline", metavar="RUN", help="a previous run (directory or results.json) to compare against")
    run.add_argument("--report-dir", default="reports", metavar="DIR", help="where run directories go (default: reports)")
    run.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")

    repro = sub.add_parser("repro", help="rerun one case with the same seed until it fails or N runs pass")
    repro.add_argument("what", help="a replay line (as printed by a failure), or a case id")
    repro.add_argument("--times", type=int, default=5, metavar="N", help="passing runs before giving up (default 5)")
    repro.add_argument("--seed", type=int, help="seed, when WHAT is a bare case id")
    repro.add_argument("--report-dir", default="reports", metavar="DIR")

    serve = sub.add_parser("serve", help="run the reference server in the foreground (Ctrl+C to stop)")
    serve.add_argument("server_args", nargs=argparse.REMAINDER,
                       help="reference server flags, e.g. --port 8765 --fault leak_tasks")

    cmp_ = sub.add_parser(
        "compare", help="compare two runs and flag regressions",
        description="Compare the metrics of two runs (never ports, pids or parameters). Exit 0: no regression; "
                    "1: a regression; 5: nothing comparable (every case was run differently). "
                    "The rule is in docs/ci.md.")
    cmp_.add_argument("base", help="the baseline run (directory or results.json)")
    cmp_.add_argument("new", help="the new run (directory or results.json)")
    cmp_.add_argument("--tolerance", type=float, default=0.2, help="relative change that counts (default 0.2)")
    out = cmp_.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="print Markdown on stdout")
    out.add_argument("--json", action="store_true", help="print the comparison as JSON on stdout")

    rep = sub.add_parser("report", help="render a saved run again (Markdown, JUnit, HTML)")
    rep.add_argument("run", help="a run directory or results.json")
    rep.add_argument("--baseline", metavar="RUN", help="a baseline run to compare against (kept in results.json)")
    rep.add_argument("--timeline", action="append", metavar="WHICH",
                     help="cases to draw a timeline for in report.html: 'failing' (the default), 'all', 'none', "
                          "or a case glob such as 'interrupts.*' (repeatable)")

    sub.add_parser("list", help="list the scenario cases")
    from harness.explore.command import add_parsers as add_explore_parsers

    add_explore_parsers(sub)  # explore, replay
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from harness.report.text import make_console

    console = make_console()
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return int(ExitCode.USAGE_ERROR)
        if args.command in ("explore", "replay"):
            from harness.explore.command import handle

            return int(handle(args, console))
        why = use_wire(getattr(args, "wire", None))
        if why is not None:
            raise UsageError(f"wschaos {args.command}: {why}")
        handler = {"run": cmd_run, "repro": cmd_repro, "serve": cmd_serve, "compare": cmd_compare,
                   "report": cmd_report, "list": cmd_list}[args.command]
        return int(handler(args, console))
    # soft_wrap: an error is one line however long (a list of fault names), so it
    # can be grepped and read whole in a CI log.
    except UsageError as exc:
        console.print(Text(str(exc), style="red"), soft_wrap=True)
        return int(ExitCode.USAGE_ERROR)
    except KeyboardInterrupt:
        console.print(Text("wschaos: interrupted", style="yellow"))
        return int(ExitCode.INTERRUPTED)
    except ValueError as exc:  # TargetError, ResultsError, KnownFailuresError: all name their source
        console.print(Text(f"wschaos: {exc}", style="red"), soft_wrap=True)
        return int(ExitCode.USAGE_ERROR)


def _gate_options(args: argparse.Namespace) -> GateOptions:
    from harness.core.timing import time_factor
    from harness.results.known_failures import load_known
    from harness.runner import GateOptions
    from harness.target.spec import load_target, target_from_cmd

    time_factor()  # a bad WSCHAOS_TIME_FACTOR is a usage error before anything starts
    problem = target_options_problem(args)
    if problem is not None:
        raise UsageError(f"wschaos run: {problem}")
    # Validate the target here so a bad file is one clear line, not a failed pytest session.
    if args.target:
        load_target(args.target, allow_remote=args.allow_remote)
    if args.target_cmd:
        target_from_cmd(args.target_cmd, allow_remote=args.allow_remote)
    if args.case:
        from harness.engine.scenario import load_scenarios, select_cases

        # Checked here: inside pytest an empty selection is a collection error with a traceback.
        if not select_cases(load_scenarios(), args.case):
            raise UsageError(f"wschaos run: --case {' '.join(args.case)}: no scenario case matches "
                             "(wschaos list shows them)")
    if args.baseline:
        from harness.results.store import load_run

        load_run(args.baseline)  # a bad baseline is one clear line now, not after the whole run
    known_path = args.known_failures or ("wschaos-known-failures.toml" if Path("wschaos-known-failures.toml").is_file() else None)
    repeat = args.repeat if args.repeat is not None else (3 if args.profile == "release" else 1)
    if repeat < 1:
        raise UsageError("wschaos run: --repeat must be at least 1")
    return GateOptions(
        target_file=args.target, target_cmd=args.target_cmd, faults=list(args.fault),
        python_probe=args.python_probe, allow_remote=args.allow_remote, seed=args.seed,
        client_cmd=getattr(args, "client_cmd", None),
        profile=args.profile, cases=list(args.case), repeat=repeat, report_root=Path(args.report_dir),
        known=load_known(known_path) if known_path else None,
        baseline=Path(args.baseline) if args.baseline else None,
    )


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.runner import print_summary, run_gate

    opts = _gate_options(args)
    result = run_gate(opts, console)
    print_summary(result, console)
    if args.json:
        summary = {"run_dir": str(result.run_dir), "exit_code": int(result.decision.code),
                   "status": result.decision.code.name, "seed": result.run.seed, **result.run.summary,
                   "reasons": result.decision.reasons}
        print(json.dumps(summary, indent=1))
    return result.decision.code


def _parse_replay(what: str, seed: int | None) -> list[str]:
    """``wschaos run --case X --seed N ...`` (or a bare case id) as run arguments."""
    try:
        words = shlex.split(what)
    except ValueError as exc:
        raise UsageError(f"wschaos repro: cannot read {what!r}: {exc}") from None
    if words[:2] == ["wschaos", "run"]:
        words = words[2:]
    elif words[:1] == ["run"]:
        words = words[1:]
    elif len(words) == 1:
        case = words[0].split("::", 1)[0]  # a check id names its case before "::"
        words = ["--case", case] + (["--seed", str(seed)] if seed is not None else [])
    else:
        raise UsageError("wschaos repro: give a replay line ('wschaos run --case ... --seed ...') or a case id")
    if "--seed" not in words:
        raise UsageError("wschaos repro: the case needs a seed to rerun exactly: add --seed N")
    return words


def cmd_repro(args: argparse.Namespace, console: Console) -> int:
    from harness.runner import print_summary, run_gate

    words = _parse_replay(args.what, args.seed)
    if args.times < 1:
        raise UsageError("wschaos repro: --times must be at least 1")
    run_args = build_parser().parse_args(["run", *words, "--report-dir", args.report_dir])
    opts = _gate_options(run_args)
    for attempt in range(1, args.times + 1):
        result = run_gate(opts, console)
        if result.decision.code != ExitCode.OK:
            print_summary(result, console)
            console.print(Text(f"reproduced on run {attempt} of {args.times}: {result.decision.code.name}", style="bold red"))
            return result.decision.code
        console.print(Text(f"run {attempt} of {args.times} passed ({result.run_dir})"))
    console.print(Text(f"did not reproduce: {args.times} runs passed with seed {opts.seed}", style="green"))
    return ExitCode.OK


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    argv = [a for a in args.server_args if a != "--"]
    # exec: Ctrl+C and SIGTERM reach the server itself, as they would in production.
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "reference_server", *argv])
    return ExitCode.INTERNAL_ERROR  # pragma: no cover - exec does not return


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from harness.results.compare import compare
    from harness.results.store import load_run

    if not args.tolerance >= 0:
        raise UsageError(f"wschaos compare: --tolerance must be >= 0, not {args.tolerance}")
    comparison = compare(load_run(args.base), load_run(args.new), tolerance=args.tolerance)
    if args.markdown:
        print(comparison.to_markdown())
    elif args.json:
        print(json.dumps(comparison.to_dict(), indent=1, default=str))
    else:
        comparison.render_console(console)
    if not comparison.ok:
        return ExitCode.CHECKS_FAILED
    return ExitCode.OK if comparison.comparable else ExitCode.NO_CHECKS


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from harness.report.text import render_console
    from harness.results.store import load_run
    from harness.runner import write_outputs

    run = load_run(args.run)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    timelines = args.timeline or ["failing"]
    write_outputs(run, run_dir, baseline=Path(args.baseline) if args.baseline else None, timelines=timelines)
    render_console(run, console)
    console.print(Text(f"wrote {run_dir / 'summary.md'}, {run_dir / 'junit.xml'}, {run_dir / 'report.html'}"))
    return ExitCode.OK


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from harness.engine.scenario import load_scenarios

    for case in load_scenarios():
        first = case.doc.splitlines()[0] if case.doc else ""
        print(f"{case.id}\t{first}")
    return ExitCode.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
