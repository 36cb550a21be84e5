"""``python -m harness.checkers``: every registered check, from the registry (Markdown table)."""

from __future__ import annotations

import sys

from harness import checkers


def catalogue() -> str:
    """One row per check: its name, how a scenario calls it, what it holds, its earlier names."""
    flat = {id(getattr(checkers, n)): n for n in checkers.__all__ if callable(getattr(checkers, n))}
    rows = ["| check | call | holds | earlier names |", "| --- | --- | --- | --- |"]
    for c in checkers.REGISTRY:
        call = f"`checkers.{c.name}`"
        if id(c.function) in flat:
            call += f" (`checkers.{flat[id(c.function)]}`)"
        rows.append(f"| `{c.name}` | {call} | {c.summary.replace('|', '/')} | "
                    f"{', '.join(f'`{a}`' for a in c.aliases)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(catalogue() + "\n")
