"""How a session is made before its WebSocket opens, as data (sans I/O).

Many agent back ends make a session over HTTP first (``POST /api/sessions``
answering ``{"session": {"id": ...}}``) and put its id in the WebSocket path
(``/ws/session/{session_id}``); some make it with a frame on another
WebSocket. :class:`SessionSpec` says how, and how the session is removed after
the client has gone. The client does the I/O (``harness.client.session``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SESSION_PLACEHOLDERS", "SessionCreate", "SessionDelete", "SessionSpec", "fill"]

#: Placeholders a creation's path, URL, body or frame may use.
SESSION_PLACEHOLDERS = frozenset({"client", "timestamp", "host", "port"})


@dataclass(frozen=True)
class SessionCreate:
    """One request that makes a session; the id is read from its JSON answer at ``id_path``.

    Over HTTP: ``method`` on ``path`` (the service's own host and port) or on an absolute
    ``url``, with an optional JSON ``body`` template; ``status``: the codes that mean
    success (empty: any 2xx). Over a WebSocket: ``ws`` is the path, ``send`` the frame
    sent there (a template); the first frame that has a value at ``id_path`` answers.
    """

    id_path: str
    method: str = "POST"
    path: str | None = None
    url: str | None = None
    body: Any = None
    status: tuple[int, ...] = ()
    ws: str | None = None
    send: Mapping[str, Any] | None = None

    @property
    def over_websocket(self) -> bool:
        return self.ws is not None


@dataclass(frozen=True)
class SessionDelete:
    """The request that removes a session after its client has gone (``{session_id}`` in path/url)."""

    method: str = "DELETE"
    path: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class SessionSpec:
    """Each client gets its own session: made before the WebSocket opens, removed after it closes."""

    create: SessionCreate
    delete: SessionDelete | None = None


_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")


def fill(template: Any, values: Mapping[str, Any]) -> Any:
    """A template with its placeholders filled; a string that is exactly ``{name}`` keeps the value's type."""
    if isinstance(template, str):
        m = _PLACEHOLDER.fullmatch(template)
        if m and m.group(1) in values:
            return values[m.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)
    if isinstance(template, Mapping):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    return template
