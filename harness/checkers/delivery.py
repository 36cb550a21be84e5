"""Checkers for publish/subscribe delivery (PROTOCOL.md PUBLISH/EVENT)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from harness.checkers._core import frames, summarize
from harness.checkers.registry import checker
from harness.core.history import History
from harness.core.verdict import Verdict, fail, passed, unknown

__all__ = ["exactly_once"]


@checker
def exactly_once(history: History, topic: str, subscribers: Collection[str],
                 others: Collection[str] = ()) -> Verdict:
    """Each subscriber got one EVENT on ``topic`` per PUBLISH on it; every other client none."""
    name = "delivery.exactly_once"
    pubs = [op for op in history.operations("publish")
            if op.data.get("topic") == topic and op.outcome == "ok"]
    if not pubs:
        return unknown(name, f"no successful PUBLISH on topic {topic!r} recorded")
    if not subscribers and not others:
        return unknown(name, "no subscribers or other clients named")
    want = len(pubs)
    got = Counter(f.client for f in frames(history)
                  if f.get("kind") == "event" and f.get("topic") == topic)
    bad = [f"{c} got {got.get(c, 0)} EVENTs on {topic!r} (expected {want})"
           for c in subscribers if got.get(c, 0) != want]
    bad += [f"{c} (not subscribed) got {got[c]} EVENTs on {topic!r}" for c in others if got.get(c, 0)]
    figs = {"topic": topic, "publishes": want, "subscribers": len(subscribers), "others": len(others),
            "received": {c: got.get(c, 0) for c in [*subscribers, *others]}, "bad": len(bad)}
    if bad:
        return fail(name, f"{len(bad)} clients with wrong delivery: {summarize(bad)}", **figs)
    return passed(name, f"{len(subscribers)} subscribers got {want} EVENT(s) each on {topic!r}, "
                        f"{len(others)} others none", **figs)
