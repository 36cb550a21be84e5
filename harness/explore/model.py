"""The protocol state a program should have produced, and what it lets us expect.

The executor tells the model every frame it sends, in order, per session; the
model answers what the protocol then requires: whether a REQUEST must be
refused (BUSY, DUPLICATE_REQUEST) or accepted, which requests an INTERRUPT
must claim and which it may, which must be answered NOT_FOUND, which sessions
must receive an EVENT and how many times.

A request's state is three-valued, because a short reply can end at any
moment the model cannot see: ``active`` (the server certainly holds it: a
reply far longer than any program, sent on this connection before the frame
now being judged), ``maybe`` (a short reply, or a refusal the model could not
predict), ``gone`` (refused, finished as the client saw, claimed by an earlier
INTERRUPT of its session, or its connection ended). An expectation is exact
only where every request it depends on is ``active`` or ``gone``; elsewhere
the model gives a range (claimed ids between the sure set and the sure plus
maybe set) and the comparison holds the server to the range, never to a guess.

No I/O: the executor feeds it and reads it; :mod:`harness.explore.invariants`
turns its records into verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DeliveryRecord", "InterruptRecord", "Model", "RequestRecord"]

State = Literal["active", "maybe", "gone"]


@dataclass
class RequestRecord:
    client: str
    request_id: str
    index: int
    long: bool
    agent: str | None
    #: None: must be accepted; "BUSY" / "DUPLICATE_REQUEST": must be refused so; "?": either.
    expect_error: str | None
    state: State
    op: Any = None  # the client's "request" Operation, once sent
    reused: bool = False
    #: Sent while an earlier request with its id may still be live on the server: the two share
    #: the id, so the client cannot tell whose answer is whose and this one's stays ``maybe``.
    ambiguous: bool = False
    sent_ns: int | None = None
    text: str = ""
    #: The INTERRUPT that ended it, if one did (as far as the model knows).
    claimed_by: InterruptRecord | None = None


@dataclass
class InterruptRecord:
    client: str
    target: str | None  # the target_request_id sent (None: every request of the session)
    how: str            # all, own, again, unknown, foreign
    sure: set[str]      # ids it must claim
    maybe: set[str]     # ids it may claim
    interrupt_id: str | None = None
    result: Any = None  # the client's InterruptResult
    sent_ns: int | None = None

    @property
    def must_not_find(self) -> bool:
        return not self.sure and not self.maybe


@dataclass
class DeliveryRecord:
    publisher: str
    topic: str
    sure: set[str]
    maybe: set[str]


@dataclass
class _Session:
    name: str
    open: bool = True
    max_concurrent: int = 8
    requests: list[RequestRecord] = field(default_factory=list)
    #: topic -> "sub" (confirmed by a later round trip), "sub?" or "unsub?" (not yet confirmed)
    topics: dict[str, str] = field(default_factory=dict)
    last_target: tuple[str, str | None] | None = None  # (how, target) of the last INTERRUPT
    ids: int = 0
    #: Frames sent so far, and the count when each topic's state last changed.
    sent: int = 0
    topic_at: dict[str, int] = field(default_factory=dict)


class Model:
    """Per-session requests, subscriptions and expectations, fed in send order."""

    def __init__(self, default_max_concurrent: int = 8, *, replaces_active: bool = False) -> None:
        self.default_max_concurrent = default_max_concurrent
        #: The target declared that a new REQUEST replaces the active one instead of running beside it.
        self.replaces_active = replaces_active
        self.sessions: dict[str, _Session] = {}
        self.requests: list[RequestRecord] = []
        self.interrupts: list[InterruptRecord] = []
        self.deliveries: list[DeliveryRecord] = []
        #: (client, topic) pairs whose delivery counts can no longer be held exactly.
        self.unsure_delivery: set[tuple[str, str]] = set()
        self._unknown = 0

    # -- sessions -------------------------------------------------------------
    def connected(self, name: str, declared_max: int | None = None) -> None:
        self.sessions[name] = _Session(name, max_concurrent=declared_max or self.default_max_concurrent)

    def ended(self, name: str) -> None:
        """The connection ended (close, reset, vanish, or the server closed it)."""
        s = self.sessions.get(name)
        if s is None or not s.open:
            return
        s.open = False
        for r in s.requests:
            r.state = "gone"
        # Events in flight to it when it ended may be lost: only an upper bound holds.
        for t in {d.topic for d in self.deliveries}:
            self.unsure_delivery.add((name, t))
        s.topics.clear()

    def is_open(self, name: str) -> bool:
        s = self.sessions.get(name)
        return s is not None and s.open

    def open_sessions(self) -> list[str]:
        return [n for n, s in self.sessions.items() if s.open]

    # -- requests ---------------------------------------------------------------
    def refresh(self) -> None:
        """Requests whose answer the client has seen are over on the server too."""
        for r in self.requests:
            if r.state != "gone" and not r.ambiguous and r.op is not None and r.op.outcome != "pending":
                r.state = "gone"

    def new_request_id(self, name: str) -> str:
        s = self.sessions[name]
        s.ids += 1
        return f"{name}-r{s.ids}"

    def pick_own(self, name: str, k: int, *, live_short: bool = False) -> RequestRecord | None:
        reqs = self.sessions[name].requests
        if live_short:
            reqs = [r for r in reqs if not r.long and r.state != "gone" and r.expect_error is None]
        return reqs[k % len(reqs)] if reqs else None

    def pick_foreign(self, name: str, k: int) -> str | None:
        others = [r.request_id for r in self.requests if r.client != name]
        return others[k % len(others)] if others else None

    def unknown_id(self, name: str) -> str:
        self._unknown += 1
        return f"{name}-unknown{self._unknown}"

    def request(self, name: str, rid: str, *, long: bool, agent: str | None, reused: bool) -> RequestRecord:
        """A REQUEST with ``rid`` is about to be sent on ``name``: what the protocol requires of its answer."""
        s = self.sessions[name]
        if self.replaces_active:
            # Whatever was active is replaced (and may end interrupted): nothing is held for sure.
            for r in s.requests:
                if r.state == "active":
                    r.state = "maybe"
        live = [r for r in s.requests if r.state != "gone" and r.expect_error in (None, "?")]
        same = [r for r in live if r.request_id == rid]
        # Claimed by an INTERRUPT whose ACK has not come back (sent in the same write, or the ACK
        # never came): the server may not have freed the id yet when it reads this REQUEST.
        freeing = [r for r in s.requests if r.request_id == rid and r.claimed_by is not None
                   and r.expect_error in (None, "?")
                   and (r.claimed_by.result is None or r.claimed_by.result.ack is None)]
        sure = sum(1 for r in live if r.state == "active")
        maybe = sum(1 for r in live if r.state == "maybe")
        expect: str | None
        if any(r.state == "active" for r in same):
            expect = "DUPLICATE_REQUEST"
        elif same or freeing:
            expect = "?"
        elif sure >= s.max_concurrent:
            expect = "BUSY"
        elif sure + maybe < s.max_concurrent:
            expect = None
        else:
            expect = "?"
        if expect is None:
            state: State = "active" if long else "maybe"
        elif expect == "?":
            state = "maybe"
        else:
            state = "gone"
        rec = RequestRecord(name, rid, len(s.requests), long, agent, expect, state, reused=reused,
                            ambiguous=bool(same or freeing))
        s.requests.append(rec)
        self.requests.append(rec)
        return rec

    # -- interrupts -------------------------------------------------------------
    def interrupt(self, name: str, how: str, target: str | None) -> InterruptRecord:
        """An INTERRUPT of ``target`` (None: all) is about to be sent on ``name``."""
        s = self.sessions[name]
        if target is None:
            candidates = [r for r in s.requests if r.state != "gone"]
        else:
            candidates = [r for r in s.requests if r.request_id == target and r.state != "gone"]
        sure = {r.request_id for r in candidates if r.state == "active"}
        maybe = {r.request_id for r in candidates if r.state == "maybe"} - sure
        rec = InterruptRecord(name, target, how, sure, maybe)
        # Whatever the ACK says, none of these is active once the server has read the frame.
        for r in candidates:
            r.state = "gone"
            r.claimed_by = rec
        s.last_target = (how, target)
        self.interrupts.append(rec)
        return rec

    def last_target(self, name: str) -> tuple[str, str | None] | None:
        return self.sessions[name].last_target

    # -- publish / subscribe ------------------------------------------------------
    def mark(self, name: str) -> int:
        """A frame is about to be sent on ``name``; its place in the session's order."""
        s = self.sessions[name]
        s.sent += 1
        return s.sent

    def subscribe(self, name: str, topic: str) -> None:
        """SUBSCRIBE sent; it counts for sure once a later round trip on ``name`` comes back."""
        s = self.sessions[name]
        s.topics[topic] = "sub?"
        s.topic_at[topic] = self.mark(name)

    def unsubscribe(self, name: str, topic: str) -> None:
        s = self.sessions[name]
        if topic in s.topics:
            s.topics[topic] = "unsub?"  # may still be subscribed when the next PUBLISH lands
            s.topic_at[topic] = self.mark(name)

    def confirm(self, name: str, mark: int) -> None:
        """The answer to the frame sent at ``mark`` came back: every SUBSCRIBE / UNSUBSCRIBE before it took effect."""
        s = self.sessions.get(name)
        if s is None or not s.open:
            return
        for t, st in list(s.topics.items()):
            if s.topic_at.get(t, 0) < mark:
                if st == "unsub?":
                    del s.topics[t]
                else:
                    s.topics[t] = "sub"

    def publish(self, name: str, topic: str) -> DeliveryRecord:
        """A PUBLISH on ``topic`` from ``name``: who must get its EVENT, and who may."""
        sure: set[str] = set()
        maybe: set[str] = set()
        for s in self.sessions.values():
            st = s.topics.get(topic) if s.open else None
            if st == "sub":
                sure.add(s.name)
            elif st is not None:
                maybe.add(s.name)
        rec = DeliveryRecord(name, topic, sure, maybe)
        self.deliveries.append(rec)
        return rec

    def expected_events(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(client, topic) -> (at least, at most) EVENTs it must have received, for every
        client and every topic published on; (0, 0) for a client that was never subscribed."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for d in self.deliveries:
            for n in self.sessions:
                lo, hi = out.get((n, d.topic), (0, 0))
                if n in d.sure:
                    lo, hi = lo + 1, hi + 1
                elif n in d.maybe:
                    hi += 1
                out[(n, d.topic)] = (lo, hi)
        return {key: (0 if key in self.unsure_delivery else lo, hi) for key, (lo, hi) in out.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "requests": len(self.requests),
            "interrupts": len(self.interrupts),
            "publishes": len(self.deliveries),
        }
