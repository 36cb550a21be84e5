"""Every process wschaos starts gets the signals a user's shell would give it, whatever wschaos inherited.

Started as a background job of a non-interactive shell (``wschaos run &`` in a CI
script), wschaos itself runs with SIGINT and SIGQUIT ignored; an ignored signal
survives exec, so a correct target or client would no longer die on Ctrl+C and
the verdict would depend on how wschaos was started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.core.timing import scaled
from harness.process.supervisor import Supervisor
from harness.process.terminal import InteractiveSession
from harness.target.spec import Readiness, Target

CHECKED = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE)


@contextlib.contextmanager
def started_like_a_background_job() -> Iterator[None]:
    """SIGINT and SIGQUIT ignored, SIGTERM blocked, SIGPIPE ignored: what wschaos may inherit."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE)}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def masks(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in status) if k in ("SigIgn", "SigBlk")}


def assert_defaults(pid: int) -> None:
    """``sleep`` touches no disposition: what it has is what it was started with."""
    m = masks(pid)
    for sig in CHECKED:
        bit = 1 << (sig - 1)
        assert not m["SigIgn"] & bit, f"{sig.name} ignored in the child"
        assert not m["SigBlk"] & bit, f"{sig.name} blocked in the child"


SLEEPER = ("/bin/sh", "-c", "echo READY; exec sleep 30")


@pytest.mark.parametrize("pty", [False, True], ids=["pipes", "pty"])
def test_a_target_starts_with_default_signals(tmp_path: Path, pty: bool):
    """Plain or on a pty, the target's dispositions are the defaults though the harness ignored or blocked them."""
    target = Target(name="sleeper", argv=SLEEPER, stats_path=None, health_path=None,
                    readiness=Readiness(kind="line", pattern="READY"))

    async def main() -> None:
        sup = Supervisor(target, tmp_path, pty=pty)
        with started_like_a_background_job():
            await sup.start()
        try:
            assert_defaults(sup.pid)
        finally:
            await sup.stop()

    asyncio.run(asyncio.wait_for(main(), scaled(30)))


def test_an_interactive_client_starts_with_default_signals(tmp_path: Path):
    """The pty-driven client gets default dispositions too, so the pty's Ctrl+C reaches it."""
    session = InteractiveSession(name="client")
    try:
        with started_like_a_background_job():
            session.start(SLEEPER, ready="READY", timeout=scaled(10))
        assert_defaults(session.pid)
    finally:
        session.close()
