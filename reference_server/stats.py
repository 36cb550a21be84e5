"""The /stats snapshot: every figure read from the live tables at call time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from .agents import agent_thread_count
from .state import ServerState

__all__ = ["snapshot"]


def snapshot(st: ServerState[Any, Any]) -> dict[str, Any]:
    uptime = round(time.monotonic() - st.started, 3)
    if st.faults.stats_lie:
        # The bug: idle figures whatever the truth.
        return {
            "pid": st.pid, "uptime_s": uptime, "shutting_down": False,
            "connections": 0, "sessions": 0, "active_requests": 0, "subscriptions": 0,
            "tasks": st.idle_tasks, "threads": st.idle_threads, "agent_threads": 0,
            "per_session_state": 0,
        }
    return {
        "pid": st.pid,
        "uptime_s": uptime,
        "shutting_down": st.shutting_down,
        "connections": st.connections,
        "sessions": len(st.sessions),
        "active_requests": len(st.live_requests),
        "subscriptions": st.subscription_count(),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "agent_threads": agent_thread_count(),
        "per_session_state": st.per_session_state(),
    }
