"""The command-line options that name a target, shared by ``wschaos run`` and ``wschaos explore|replay``."""

from __future__ import annotations

import argparse

__all__ = ["add_target_options", "target_options_problem"]


def add_target_options(p: argparse.ArgumentParser, *, client_cmd: bool = False) -> None:
    """``--target``, ``--target-cmd``, ``--fault``, ``--python-probe``, ``--allow-remote``
    (and ``--client-cmd`` where an interactive client is driven), in one group."""
    g = p.add_argument_group("target (default: the embedded reference server)")
    g.add_argument("--target", metavar="FILE", help="a target TOML file")
    g.add_argument("--target-cmd", metavar="CMD", help="the command that starts the service, with {port}")
    g.add_argument("--fault", action="append", default=[], metavar="NAME",
                   help="turn on a reference-server fault switch (repeatable)")
    if client_cmd:
        g.add_argument("--client-cmd", metavar="CMD",
                       help="the interactive client to drive on a pty, with {url} (default: the reference client)")
    g.add_argument("--python-probe", action="store_true", help="inject the zero-code probe into a Python target")
    g.add_argument("--allow-remote", action="store_true", help="allow a target outside loopback")


def target_options_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with how the options combine (one line), or None."""
    if args.target and args.target_cmd:
        return "give --target or --target-cmd, not both"
    if args.fault and (args.target or args.target_cmd):
        return "--fault applies to the embedded reference server only"
    if args.fault:
        from reference_server.faults import FAULT_NAMES

        bad = [f for f in args.fault if f not in FAULT_NAMES]
        if bad:
            return f"unknown fault {', '.join(bad)}; known: {', '.join(sorted(FAULT_NAMES))}"
    return None
