"""Reference server: HEARTBEAT, SUBSCRIBE / UNSUBSCRIBE / PUBLISH."""

from __future__ import annotations

import asyncio

import pytest
from _refproc import WS, RefServer, run, wait_stats


@pytest.fixture(scope="module")
def srv():
    with RefServer() as s:
        yield s


def test_heartbeat_is_answered_with_server_time(srv):
    """HEARTBEAT -> HEARTBEAT_ACK with payload.server_time, echoing the request_id."""

    async def body():
        ws = await WS.open(srv.ws_url)
        await ws.send("HEARTBEAT", "hb1")
        ack = await ws.until(lambda f: f["msg_type"] == "HEARTBEAT_ACK")
        assert ack["request_id"] == "hb1" and isinstance(ack["payload"]["server_time"], (int, float))
        assert ack["session_id"] == ws.session_id
        await ws.close()

    run(body())


def test_publish_reaches_every_subscriber_exactly_once(srv):
    """Subscribing twice is idempotent; the publisher gets its own event if subscribed."""

    async def body():
        pub, a, b, outsider = await asyncio.gather(*(WS.open(srv.ws_url) for _ in range(4)))
        for ws in (pub, a, a, b, b, b):
            await ws.send("SUBSCRIBE", topic="news")
        await outsider.send("SUBSCRIBE", topic="other")
        await wait_stats(srv.http, lambda s: s["subscriptions"] == 4)
        await pub.send("PUBLISH", topic="news", data={"n": 1})
        await pub.send("PUBLISH", topic="news", data={"n": 2})
        for ws in (pub, a, b):
            await ws.until(lambda f: f["msg_type"] == "EVENT" and f["payload"]["data"] == {"n": 2})
        # One more round trip each, so a duplicate would have arrived by now.
        for ws in (pub, a, b, outsider):
            await ws.send("HEARTBEAT", "sync")
            await ws.until(lambda f: f["msg_type"] == "HEARTBEAT_ACK")
            events = [f["payload"] for f in ws.frames if f["msg_type"] == "EVENT"]
            expected = [] if ws is outsider else [{"topic": "news", "data": {"n": 1}}, {"topic": "news", "data": {"n": 2}}]
            assert events == expected
        await a.send("UNSUBSCRIBE", topic="news")
        await a.send("UNSUBSCRIBE", topic="news")
        await wait_stats(srv.http, lambda s: s["subscriptions"] == 3)
        await pub.send("PUBLISH", topic="news", data=3)
        await b.until(lambda f: f["msg_type"] == "EVENT" and f["payload"]["data"] == 3)
        await a.send("HEARTBEAT", "sync2")
        await a.until(lambda f: f["request_id"] == "sync2")
        assert sum(1 for f in a.frames if f["msg_type"] == "EVENT") == 2
        for ws in (pub, a, b, outsider):
            await ws.close()
        await wait_stats(srv.http, lambda s: s["subscriptions"] == 0 and s["sessions"] == 0)

    run(body())
