"""Every figure a checker or scenario records has a type, so compare never guesses what a number is."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.results.figures import CASE_CHECK, TABLE, figure_type

ROOT = Path(__file__).resolve().parent.parent


def recorded_names() -> set[tuple[str, str]]:
    """(where, figure name) for every figure named in harness/checkers and scenarios/.

    Read from the source: keys of dict literals given to ``figs``/``figures``, keyword
    arguments of the verdict helpers (``passed``/``fail``/``unknown``), and the first
    argument of ``ctx.figure``.
    """
    found: set[tuple[str, str]] = set()
    helpers = {"passed", "fail", "unknown"}
    for path in [*(ROOT / "harness" / "checkers").glob("*.py"), *(ROOT / "scenarios").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("figs", "figures")
                                                    for t in node.targets) and isinstance(node.value, ast.Dict):
                found |= {(where, k.value) for k in node.value.keys if isinstance(k, ast.Constant)}
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if name in helpers or (name == "update" and isinstance(fn, ast.Attribute) and \
                    isinstance(fn.value, ast.Name) and fn.value.id in ("figs", "figures")):
                found |= {(where, kw.arg) for kw in node.keywords if kw.arg}
                for arg in node.args:
                    if isinstance(arg, ast.Dict):
                        found |= {(where, k.value) for k in arg.keys if isinstance(k, ast.Constant)}
            if name == "figure" and isinstance(fn, ast.Attribute) and node.args and \
                    isinstance(node.args[0], ast.Constant):
                found.add((f"{where} (case)", node.args[0].value))
    return found


def known_anywhere(name: str, case_level: bool) -> bool:
    if case_level:
        return figure_type(CASE_CHECK, name).role != "untyped"
    return name in TABLE or any(isinstance(k, tuple) and k[1] == name for k in TABLE) or \
        figure_type("any.check", name).role != "untyped"


def test_every_recorded_figure_is_typed():
    """No figure in harness/checkers or scenarios/ falls to "untyped": add new ones to harness/results/figures.py."""
    names = recorded_names()
    assert len(names) > 60, "the source reader found too few figures to be reading the checkers"
    missing = sorted((w, n) for w, n in names if not known_anywhere(n, w.endswith("(case)")))
    assert missing == [], f"untyped figures: {missing}"
