"""``python -m reference_server``: serve until a signal, then shut down cleanly."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import traceback

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from . import faults as faultmod
from .config import Config, parse_args
from .server import build_app
from .session import State
from .shutdown import ShutdownController, drain
from .state import ServerState

__all__ = ["main"]


async def serve(cfg: Config, ctl: ShutdownController) -> int:
    loop = asyncio.get_running_loop()
    ctl.attach(loop)
    st: State = ServerState(cfg)
    st.http = ClientSession(
        connector=TCPConnector(limit=256),
        timeout=ClientTimeout(total=None, sock_connect=10, sock_read=60),
    )
    # The WebSocket drain has its own bound (the grace period); what is left for the
    # runner is plain HTTP (/health, /stats) that answers in microseconds, so a
    # request caught in the first moments of shutdown need not hold the exit 0.5 s.
    runner = web.AppRunner(build_app(st), access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    try:
        await site.start()
    except OSError as exc:
        sys.stderr.write(f"reference_server: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}\n")
        await st.http.close()
        await runner.cleanup()
        return 2
    server = site._server  # the asyncio Server: the bound port, and the fd for orphan_child
    assert server is not None and server.sockets
    sock = server.sockets[0]
    port = sock.getsockname()[1]
    st.idle_tasks = len(asyncio.all_tasks()) + 1  # + the /stats request's own task
    st.idle_threads = threading.active_count()
    if cfg.faults.nondaemon_thread:
        faultmod.start_nondaemon_thread()
    if cfg.faults.orphan_child:
        faultmod.spawn_orphan_child(sock.fileno())
    print(f"LISTENING {cfg.host}:{port}", flush=True)

    await ctl.wait()
    await drain(st, cfg.grace, cfg.drain_delay_ms, cfg.stuck_drain)
    await st.http.close()
    await runner.cleanup()
    return 1 if cfg.faults.bad_exit_code else 0


def _noisy_exit() -> None:
    """noisy_shutdown: what a careless shutdown leaves on stderr."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        traceback.print_exc()
    loop = asyncio.new_event_loop()
    task = loop.create_task(asyncio.Event().wait())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del task
    gc.collect()  # the pending task is destroyed here, and asyncio says so


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    ctl = ShutdownController(cfg.hard_limit, cfg.grace, cfg.faults)
    # Installed before asyncio.run, which then leaves SIGINT to us.
    ctl.install()
    code = asyncio.run(serve(cfg, ctl))
    if cfg.faults.noisy_shutdown:
        _noisy_exit()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
