"""Everything the server holds, in one place, so /stats can count it.

Per-session tables: ``sessions`` (the session objects, with their requests,
subscriptions and outbox) and ``heartbeats`` (the last time each session was
heard from). ``topics`` maps a topic to its subscribers; ``live_requests`` is
every request whose task may still send. All of them return to empty when
the clients leave, however they leave.

This module owns the tables and nothing else: what goes in them, and every
edit a session makes to them and to itself, is written in ``session.py``
(which names the concrete types: ``session.State``). So the registry needs
nothing of a session but that it can be kept in a set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

import aiohttp

from .config import Config

__all__ = ["SERVER_NAME", "SERVER_VERSION", "ServerState"]

SERVER_NAME = "wschaos-reference"
SERVER_VERSION = "1.0"

SessionT = TypeVar("SessionT", bound=Hashable)
RequestT = TypeVar("RequestT", bound=Hashable)


class ServerState(Generic[SessionT, RequestT]):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.faults = cfg.faults
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.shutting_down = False
        self.connections = 0
        self.sessions: dict[str, SessionT] = {}
        self.heartbeats: dict[str, float] = {}
        # A list per topic only under dup_events (a set would make it idempotent).
        self.topics: dict[str, set[SessionT] | list[SessionT]] = {}
        self.live_requests: set[RequestT] = set()
        # Only the global_request_ids fault looks requests up here.
        self.global_requests: dict[str, RequestT] = {}
        self.http: aiohttp.ClientSession | None = None
        self.idle_tasks = 0
        self.idle_threads = 0

    # --- subscriptions -------------------------------------------------------

    def add_subscriber(self, topic: str, session: SessionT) -> None:
        if self.faults.dup_events:
            subs = self.topics.setdefault(topic, [])
            assert isinstance(subs, list)
            subs.append(session)
        else:
            subs_set = self.topics.setdefault(topic, set())
            assert isinstance(subs_set, set)
            subs_set.add(session)

    def remove_subscriber(self, topic: str, session: SessionT) -> None:
        subs = self.topics.get(topic)
        if subs is not None:
            while session in subs:
                subs.remove(session)
            if not subs:
                del self.topics[topic]

    def subscribers(self, topic: str) -> list[SessionT]:
        return list(self.topics.get(topic, ()))

    def subscription_count(self) -> int:
        return sum(len(subs) for subs in self.topics.values())

    def per_session_state(self) -> int:
        return len(self.sessions) + len(self.heartbeats)
