"""The architecture contracts in .importlinter hold, and break when a role reaches the wrong way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT), "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def tree_copy(tmp_path: Path) -> Path:
    for part in ("harness", "scenarios", "reference_server"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_tree_keeps_every_contract():
    """lint-imports passes on the tree as it is: layers, independence, purity, no cycles."""
    res = lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_foundation_reaching_up_and_a_cycle_inside_a_role_are_refused(tmp_path):
    """core importing the engine breaks the layers; correlate importing the connection is a cycle."""
    root = tree_copy(tmp_path)
    with (root / "harness/core/timing.py").open("a") as f:
        f.write("\nfrom harness.engine import scenario as _up  # noqa: E402,F401\n")
    with (root / "harness/client/correlate.py").open("a") as f:
        f.write("\nfrom harness.client import connection as _cycle  # noqa: E402,F401\n")
    res = lint(root)
    assert res.returncode != 0
    assert "harness.core is not allowed to import harness.engine" in res.stdout
    assert "No cycles are allowed in harness.client" in res.stdout


def test_a_scenario_opening_its_own_socket_is_refused(tmp_path):
    """A scenario module that imports socket or websockets itself breaks its contract."""
    root = tree_copy(tmp_path)
    with (root / "scenarios/churn.py").open("a") as f:
        f.write("\nimport websockets  # noqa: E402,F401\n")
    res = lint(root)
    assert res.returncode != 0
    assert "scenarios is not allowed to import websockets" in res.stdout
