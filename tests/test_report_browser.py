"""The HTML release report as a browser shows it: headless Chromium, offline, bounded."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_report import sample_html

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium); the HTML is still checked in test_report.py"
)

#: Nothing here may reach the network: the report is meant to open offline.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One Chromium launch (the slow part) gives both the DOM after layout and a screenshot."""
    tmp = tmp_path_factory.mktemp("browser")
    report = tmp / "report.html"
    report.write_text(sample_html(), encoding="utf-8")
    shot = tmp / "first-screen.png"
    args = [
        CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}",
        f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", "--dump-dom", report.as_uri(),
    ]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)  # type: ignore[arg-type]
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed chromium by now
        pytest.fail(f"chromium did not finish within 30 s: {str(exc.stderr)[-1000:]}")
    return done, shot


def test_dom_has_verdict_and_plots(rendered):
    """Chromium parses the page: the verdict banner leads, and all four plots are live SVG elements."""
    done, _ = rendered
    dom = done.stdout
    assert done.returncode == 0 and "<main>" in dom, done.stderr[-2000:]
    assert 'id="verdict"' in dom and '<div class="word">FAIL</div>' in dom
    assert dom.count("<svg") == 4
    assert dom.index('id="verdict"') < dom.index("Needs attention") < dom.index("<svg")


def test_screenshot_is_a_real_picture(rendered):
    """The first screen renders to a full-size, non-trivial PNG."""
    done, shot = rendered
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 900)
    # A blank or error page compresses to a few KB; the report's banner, text and plots do not.
    assert len(data) > 30_000
