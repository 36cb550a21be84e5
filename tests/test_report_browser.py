"""The HTML release report as a browser shows it: headless Chromium, offline, bounded."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_report import synthetic_run
from test_timeline import FAILING, write_run

from harness.report.html import write_html
from harness.results.compare import compare
from harness.results.store import load_run

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


def failing_report(tmp: Path) -> tuple[Path, int]:
    """A failing run beside a clean baseline: the four plots, regressions with their small plots, and the
    timeline of the failing case drawn from its history.jsonl.  Returns the report and the regressions."""
    run_dir = write_run(tmp)
    run = load_run(run_dir)
    run.cases += synthetic_run().cases
    base = synthetic_run(run_id="base", broken=False)
    cmp = compare(base, run)
    report = write_html(run, run_dir / "report.html", baseline=base, comparison=cmp, run_dir=run_dir)
    return report, len(cmp.regressions)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path, int]:
    """One Chromium launch (the slow part) gives both the DOM after layout and a screenshot."""
    tmp = tmp_path_factory.mktemp("browser")
    report, regressions = failing_report(tmp)
    shot = tmp / "first-screen.png"
    args = [
        CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}",
        f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", "--dump-dom", report.as_uri(),
    ]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)  # type: ignore[arg-type]
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed chromium by now
        pytest.fail(f"chromium did not finish within 30 s: {str(exc.stderr)[-1000:]}")
    return done, shot, regressions


def test_dom_has_verdict_trend_plots_and_timeline(rendered):
    """Chromium parses the page: the verdict leads, then the regressions with their plots, the four plots,
    and the failing case's timeline with its lanes, all live SVG elements."""
    done, _, regressions = rendered
    dom = done.stdout
    assert done.returncode == 0 and "<main>" in dom, done.stderr[-2000:]
    assert 'id="verdict"' in dom and '<div class="word">FAIL</div>' in dom
    assert regressions > 0 and dom.count('class="trend-plot"') == regressions
    assert dom.count("<figure>") == 4 and dom.count("<figure><svg") == 4
    assert dom.count('class="timeline"') == 1 and f'data-case="{FAILING}"' in dom
    for lane in ("nemesis", "target1", "c1", "c2"):
        assert f'data-lane="{lane}"' in dom
    assert dom.count('class="late"') == 2
    assert (dom.index('id="verdict"') < dom.index("Needs attention") < dom.index('id="trend"')
            < dom.index("<figure>") < dom.index('id="timelines"'))


def test_screenshot_is_a_real_picture(rendered):
    """The first screen renders to a full-size, non-trivial PNG."""
    done, shot, _ = rendered
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 900)
    # A blank or error page compresses to a few KB; the report's banner, text and plots do not.
    assert len(data) > 30_000
