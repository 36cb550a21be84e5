"""Shared test setup: the same environment whether the suite runs serially or over pytest-xdist workers."""

from __future__ import annotations

import os

# pytest-xdist's workers run with COLUMNS=80 and LINES=24 set; a plain run has neither, and
# wschaos's console then renders 120 columns off a terminal. Tests read what a user's CI log shows.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("COLUMNS", "LINES"):
        os.environ.pop(var, None)
