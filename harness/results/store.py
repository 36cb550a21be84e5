"""Run directories: ``reports/<run-id>/`` with a ``latest`` link, and ``results.json`` in and out.

:func:`save_run` writes the run redacted and atomically; :func:`load_run`
reads a run directory, ``reports/latest`` or a results file, and refuses a
schema version it does not know (:class:`harness.results.schema.ResultsError`).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from harness.results.schema import RESULTS_FILE, ResultsError, RunResult

__all__ = ["load_run", "new_run_dir", "save_run"]


def new_run_dir(root: str | Path = "reports", run_id: str | None = None) -> Path:
    """Create ``root/<run_id>/`` and point ``root/latest`` at it.

    ``run_id`` defaults to ``<UTC timestamp>-<6 hex>`` (sortable, unique across
    parallel runs); a given one is used verbatim and must be one path component.
    The ``latest`` link is replaced atomically (a new link renamed over the
    old), so a reader never sees it missing.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if run_id is not None and (not run_id or "/" in run_id or os.sep in run_id or run_id in (".", "..", "latest")):
        raise ResultsError(f"run id {run_id!r} must be a single directory name other than 'latest'")
    for _ in range(10):
        rid = run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        path = root / rid
        try:
            path.mkdir()
            break
        except FileExistsError:
            if run_id is not None:
                raise ResultsError(f"{path}: run directory already exists") from None
    else:  # pragma: no cover - ten random collisions
        raise ResultsError(f"{root}: could not create a unique run directory")
    _point_latest(root, rid)
    return path


def _point_latest(root: Path, name: str) -> None:
    latest = root / "latest"
    if latest.exists() and not latest.is_symlink():
        return  # someone's real directory or file: never clobber it
    tmp = root / f".latest-{secrets.token_hex(4)}"
    try:
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError:
        # No symlinks (some Windows setups): leave a pointer file instead.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        (root / "latest.txt").write_text(name + "\n", encoding="utf-8")


def save_run(run: RunResult, run_dir: str | Path) -> Path:
    """Write ``run_dir/results.json`` (redacted) atomically; returns its path."""
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_name(f".{RESULTS_FILE}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(run.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_run(dir_or_file: str | Path) -> RunResult:
    """A run from a run directory (its ``results.json``), ``reports/latest``, or a results file."""
    p = Path(dir_or_file)
    path = p / RESULTS_FILE if p.is_dir() else p
    if not path.exists():
        what = "no results.json in this directory" if p.is_dir() else "no such results file"
        raise ResultsError(f"{path}: {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read: {exc}") from None
    return RunResult.from_json(text, source=str(path))

