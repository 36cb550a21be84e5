"""Reference server: the bad-input table; the connection always stays usable."""

from __future__ import annotations

import json

import pytest
from _refproc import WS, RefServer, run, wait_stats

CASES = [
    ("not json at all", "BAD_JSON", None),
    ("[1, 2, 3]", "BAD_JSON", None),
    ('"just a string"', "BAD_JSON", None),
    (json.dumps({"msg_type": "DANCE", "request_id": "d1", "payload": {}}), "UNKNOWN_TYPE", "d1"),
    (json.dumps({"request_id": "m1", "payload": {}}), "BAD_MESSAGE", "m1"),
    (json.dumps({"msg_type": 7, "payload": {}}), "BAD_MESSAGE", None),
    (json.dumps({"msg_type": "REQUEST", "request_id": "q1", "payload": {}}), "BAD_MESSAGE", "q1"),
    (json.dumps({"msg_type": "REQUEST", "request_id": "q2", "payload": {"text": 42}}), "BAD_MESSAGE", "q2"),
    (json.dumps({"msg_type": "REQUEST", "payload": {"text": "no id"}}), "BAD_MESSAGE", None),
    (json.dumps({"msg_type": "REQUEST", "request_id": "q3", "payload": "text"}), "BAD_MESSAGE", "q3"),
    (json.dumps({"msg_type": "INTERRUPT", "request_id": "i1", "payload": {"target_request_id": 5, "reason": "x"}}), "BAD_MESSAGE", "i1"),
    (json.dumps({"msg_type": "INTERRUPT", "request_id": "i2", "payload": {"reason": "x"}}), "BAD_MESSAGE", "i2"),
    (json.dumps({"msg_type": "SUBSCRIBE", "payload": {"topic": ["a"]}}), "BAD_MESSAGE", None),
    (json.dumps({"msg_type": "PUBLISH", "payload": {"topic": "t"}}), "BAD_MESSAGE", None),
]


@pytest.fixture(scope="module")
def srv():
    with RefServer() as s:
        yield s


def test_every_bad_input_gets_its_error_and_the_connection_stays_open(srv):
    """Each row of the table answers its ERROR code; a request then still works."""

    async def body():
        ws = await WS.open(srv.ws_url)
        other = await WS.open(srv.ws_url)
        await other.request("bg", chunks=200, chunk_delay_ms=5)
        for raw, code, rid in CASES:
            await ws.conn.send(raw)
            err = await ws.until(lambda f: f["msg_type"] == "ERROR")
            assert (err["payload"]["code"], err["request_id"]) == (code, rid), (raw, err)
            assert isinstance(err["payload"]["message"], str) and err["session_id"] == ws.session_id
        await ws.conn.send(b"\x00\x01binary")
        err = await ws.until(lambda f: f["msg_type"] == "ERROR")
        assert err["payload"]["code"] == "BAD_MESSAGE"
        await ws.request("ok", chunks=3, chunk_delay_ms=1)
        fin = await ws.final("ok")
        assert fin["payload"]["interrupted"] is False
        # The other session never noticed.
        await other.until(lambda f: f.get("request_id") == "bg" and f["payload"]["seq"] >= 5)
        assert not [f for f in other.frames if f["msg_type"] == "ERROR"]
        await ws.close()
        await other.close()
        await wait_stats(srv.http, lambda s: s["sessions"] == 0 and s["active_requests"] == 0)

    run(body())
