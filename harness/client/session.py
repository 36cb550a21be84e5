"""Making and removing a client's session before and after its WebSocket (the I/O).

A target whose adapter has a :class:`~harness.protocol.session.SessionSpec`
gets one session per client: made over HTTP (or by a frame on another
WebSocket) before the WebSocket opens, its id put in the WebSocket path
(``{session_id}``), and removed after the client has gone. Every request is
bounded and goes to loopback only, unless the run allows remote targets.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import connect

from harness.protocol.adapters.declarative import get_path
from harness.protocol.session import SessionCreate, SessionDelete, fill
from harness.target.spec import check_loopback

__all__ = ["SessionError", "create_session", "delete_session", "session_url"]

#: How much of an unexpected answer goes into the error message.
_EXCERPT = 200


class SessionError(RuntimeError):
    """The service did not make the session: refused, no id in its answer, unreachable."""


def _http(timeout: float) -> Any:
    """One bounded HTTP session, no proxy from the environment, no kept connections.

    aiohttp is imported here, on first use: most targets make no sessions over HTTP, and
    the import is a good part of a fleet worker's start."""
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False,
                                 connector=aiohttp.TCPConnector(force_close=True))


def _values(ws_url: str, client: str) -> dict[str, Any]:
    parts = urlsplit(ws_url)
    return {"client": client, "timestamp": time.time(), "host": parts.hostname or "", "port": parts.port or ""}


def _http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def _where(path: str | None, url: str | None, ws_url: str, values: dict[str, Any],
           allow_remote: bool, what: str) -> str:
    target = str(fill(url, values)) if url else _http_base(ws_url) + str(fill(path or "/", values))
    check_loopback(target, where=what, allow_remote=allow_remote)
    return target


def session_url(ws_url: str, session_id: str) -> str:
    """The WebSocket URL with the session's id in place of ``{session_id}``."""
    return ws_url.replace("{session_id}", quote(session_id, safe=""))


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else "")


async def create_session(spec: SessionCreate, ws_url: str, *, client: str, timeout: float,
                         allow_remote: bool = False) -> tuple[str, dict[str, Any]]:
    """Make one session; returns its id and what to record (``url``, ``status``)."""
    values = _values(ws_url, client)
    if spec.over_websocket:
        return await _create_over_websocket(spec, ws_url, values, timeout, allow_remote)
    url = _where(spec.path, spec.url, ws_url, values, allow_remote, f"client {client} session create")
    body = fill(spec.body, values) if spec.body is not None else None
    async with _http(timeout) as http, http.request(spec.method, url, json=body) as resp:
        status, text = resp.status, await resp.text(errors="replace")
    info: dict[str, Any] = {"url": url, "status": status}
    ok = status in spec.status if spec.status else 200 <= status < 300
    if not ok:
        want = " or ".join(map(str, spec.status)) if spec.status else "2xx"
        raise SessionError(f"{spec.method} {url} answered {status}, expected {want}: {_excerpt(text)}")
    return _session_id(spec, text, f"{spec.method} {url} answered {status}"), info


async def _create_over_websocket(spec: SessionCreate, ws_url: str, values: dict[str, Any], timeout: float,
                                 allow_remote: bool) -> tuple[str, dict[str, Any]]:
    parts = urlsplit(ws_url)
    url = f"{parts.scheme}://{parts.netloc}{fill(spec.ws or '/', values)}"
    check_loopback(url, where=f"client {values['client']} session create", allow_remote=allow_remote)
    deadline = time.monotonic() + timeout
    async with connect(url, open_timeout=timeout, close_timeout=min(1.0, timeout), proxy=None,
                       compression=None) as ws:
        if spec.send is not None:
            await ws.send(json.dumps(fill(spec.send, values), separators=(",", ":")))
        seen = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionError(f"{url}: no frame with a session id at {spec.id_path!r} within {timeout:g} s "
                                   f"({seen} frames seen)")
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            seen += 1
            try:
                sid = _session_id(spec, raw if isinstance(raw, str) else raw.decode("utf-8", "replace"), url)
            except SessionError:
                continue
            return sid, {"url": url, "status": None}


def _session_id(spec: SessionCreate, text: str, what: str) -> str:
    try:
        obj = json.loads(text)
    except ValueError:
        raise SessionError(f"{what}, not JSON: {_excerpt(text)}") from None
    sid = get_path(obj, spec.id_path)
    if isinstance(sid, bool) or not isinstance(sid, (str, int)) or sid == "":
        raise SessionError(f"{what} without a session id at {spec.id_path!r}: {_excerpt(text)}")
    return str(sid)


async def delete_session(spec: SessionDelete, ws_url: str, session_id: str, *, client: str, timeout: float,
                         allow_remote: bool = False) -> dict[str, Any]:
    """Remove one session; what to record. 2xx, and 404 (already gone), count as removed."""
    values = {**_values(ws_url, client), "session_id": quote(session_id, safe="")}
    url = _where(spec.path, spec.url, ws_url, values, allow_remote, f"client {client} session delete")
    async with _http(timeout) as http, http.request(spec.method, url) as resp:
        status = resp.status
        await resp.read()
    return {"url": url, "status": status, "removed": 200 <= status < 300 or status == 404}
