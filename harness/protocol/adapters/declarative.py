"""An adapter described by data: the target file's ``adapter_config`` table.

Simple JSON protocols differ from the reference one in names and places, not
in shape: a REGISTER frame instead of SESSION_READY, the sequence number at
``payload.text_stream_seq``, a final frame marked by ``-1``. This module turns
such a description (documented with a full example in ``docs/adapters.md``)
into an :class:`~harness.protocol.adapters.base.Adapter`. All validation happens once,
when the adapter is built, and every error names the offending key, so a bad
target file gives one clear line rather than a traceback mid-run.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from harness.protocol.adapters.base import (
    Adapter,
    AdapterError,
    HandshakeError,
    Recv,
    Send,
    Unsupported,
)
from harness.protocol.frames import KINDS, Frame, invalid

__all__ = ["DeclarativeAdapter", "get_path"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
_MISSING = object()
_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: Message sections, with the placeholders each template may use.
_MESSAGES = {
    "request": {"request_id", "text", "session_id", "timestamp"},
    "interrupt": {"interrupt_id", "target", "reason", "session_id", "timestamp"},
    "heartbeat": {"request_id", "session_id", "timestamp"},
    "subscribe": {"topic", "request_id", "session_id", "timestamp"},
    "unsubscribe": {"topic", "request_id", "session_id", "timestamp"},
    "publish": {"topic", "data", "request_id", "session_id", "timestamp"},
}
_FIELDS = ("seq", "delta", "interrupted", "reason", "status", "interrupted_ids",
           "interrupted_count", "code", "message", "topic", "data")
_TOP_KEYS = {"msg_type_path", "request_id_path", "session_id_path", "payload_path",
             "handshake", "fields", "match", "status_values", *_MESSAGES}
_HANDSHAKE_KEYS = {"send", "ready", "session_id_path", "wait"}
_MATCH_KINDS = tuple(k for k in KINDS if k != "invalid")


def get_path(obj: Any, path: str, default: Any = None) -> Any:
    """``obj`` at a dotted path (``payload.session.id``; digits index lists)."""
    if path == "":
        return obj
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part, _MISSING)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
        if cur is _MISSING:
            return default
    return cur


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = obj.get(part)
        if not isinstance(nxt, dict):
            nxt = obj[part] = {}
        obj = nxt
    obj[parts[-1]] = value


def _render(template: Any, values: Mapping[str, Any]) -> Any:
    """Fill placeholders; a string that is exactly ``{name}`` keeps the value's type."""
    if isinstance(template, str):
        m = _PLACEHOLDER.fullmatch(template)
        if m:
            return values.get(m.group(1))
        if "{" not in template:
            return template
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "")), template)
    if isinstance(template, dict):
        return {k: _render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, values) for v in template]
    return template


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(_placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template)) if template else set()
    return set()


def _cond_ok(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict):  # {exists = true|false}, checked at load
        return (value is not _MISSING) == cond["exists"]
    if isinstance(cond, list):
        return any(_cond_ok(value, c) for c in cond)
    if value is _MISSING:
        return False
    # bool and int must not match each other (True == 1 in Python).
    return (type(value) is type(cond) and value == cond) or (
        isinstance(cond, (int, float)) and not isinstance(cond, bool)
        and isinstance(value, (int, float)) and not isinstance(value, bool) and value == cond
    )


def _flatten(when: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Unquoted dotted TOML keys arrive as nested tables: read them as paths."""
    out: dict[str, Any] = {}
    for key, cond in when.items():
        path = prefix + key
        if isinstance(cond, dict) and cond and "exists" not in cond:
            out.update(_flatten(cond, path + "."))
        else:
            out[path] = cond
    return out


class _Matcher:
    __slots__ = ("conds", "deferred", "kind")

    def __init__(self, kind: str, when: Mapping[str, Any]) -> None:
        self.kind = kind
        # Conditions naming {handshake_id} only hold for one connection's
        # handshake; classify() skips them, handshake() checks them.
        self.conds = [(p, c) for p, c in when.items() if not (isinstance(c, str) and _PLACEHOLDER.fullmatch(c))]
        self.deferred = [(p, c) for p, c in when.items() if isinstance(c, str) and _PLACEHOLDER.fullmatch(c)]

    def matches(self, obj: Any) -> bool:
        return all(_cond_ok(get_path(obj, p, _MISSING), c) for p, c in self.conds)


class DeclarativeAdapter(Adapter):
    name = "declarative"

    def __init__(self, config: Mapping[str, Any], *, source: str = "adapter_config") -> None:
        self.source = source
        self.config = config
        self._check_keys(config, _TOP_KEYS, "")
        self.msg_type_path = self._str(config, "msg_type_path", "msg_type")
        self.request_id_path = self._str(config, "request_id_path", "request_id")
        self.session_id_path = self._str(config, "session_id_path", "session_id")
        self.payload_path = self._str(config, "payload_path", "payload")
        self.templates: dict[str, Any] = {}
        self.options_path: str | None = None
        for section, allowed in _MESSAGES.items():
            self._load_message(config, section, allowed, required=section in ("request", "interrupt"))
        hs = self._table(config, "handshake", {})
        self._check_keys(hs, _HANDSHAKE_KEYS, "handshake.")
        self.handshake_wait = hs.get("wait", True)
        if not isinstance(self.handshake_wait, bool):
            self._fail("handshake.wait", "must be true or false")
        self.handshake_send = hs.get("send")
        if self.handshake_send is not None:
            if not isinstance(self.handshake_send, dict):
                self._fail("handshake.send", "must be a table (the frame to send)")
            self._check_placeholders(self.handshake_send, {"handshake_id", "timestamp"}, "handshake.send")
        self.ready_session_path = self._str(hs, "session_id_path", self.session_id_path, "handshake.")
        matchers: list[_Matcher] = []
        if "ready" in hs:
            matchers.append(self._matcher("ready", hs["ready"], "handshake.ready"))
        raw_matches = config.get("match", [])
        if not isinstance(raw_matches, list):
            self._fail("match", "must be an array of tables ([[...match]])")
        for i, m in enumerate(raw_matches):
            where = f"match[{i}]"
            if not isinstance(m, dict):
                self._fail(where, "must be a table with kind and when")
            self._check_keys(m, {"kind", "when"}, where + ".")
            kind = m.get("kind")
            if kind not in _MATCH_KINDS:
                self._fail(where + ".kind", f"must be one of {', '.join(_MATCH_KINDS)}, not {kind!r}")
            if "when" not in m:
                self._fail(where + ".when", "is required (field path = expected value)")
            matchers.append(self._matcher(kind, m["when"], where + ".when"))
        if not any(m.kind == "final" for m in matchers):
            # Without it no reply ever ends: every request would time out.
            self._fail("match", "needs a rule of kind 'final' (and usually 'chunk', 'ack', 'error')")
        if self.handshake_wait and not any(m.kind == "ready" for m in matchers):
            self._fail("handshake.ready", "is required (or a match with kind = 'ready', or handshake.wait = false)")
        self.matchers = matchers
        self.fields = self._table(config, "fields", {})
        self._check_keys(self.fields, set(_FIELDS), "fields.")
        for k, v in self.fields.items():
            if not isinstance(v, str):
                self._fail(f"fields.{k}", f"must be a field path string, not {v!r}")
        self.status_values = self._table(config, "status_values", {})

    # -- validation helpers --------------------------------------------------
    def _fail(self, key: str, why: str) -> None:
        raise AdapterError(f"{self.source}: adapter_config.{key} {why}")

    def _check_keys(self, table: Mapping[str, Any], known: set[str], prefix: str) -> None:
        bad = sorted(set(table) - known)
        if bad:
            raise AdapterError(
                f"{self.source}: unknown key(s) {', '.join('adapter_config.' + prefix + b for b in bad)}; "
                f"known: {', '.join(sorted(known))}"
            )

    def _str(self, table: Mapping[str, Any], key: str, default: str, prefix: str = "") -> str:
        v = table.get(key, default)
        if not isinstance(v, str):
            self._fail(prefix + key, f"must be a field path string, not {v!r}")
        return v

    def _table(self, table: Mapping[str, Any], key: str, default: Any) -> Any:
        v = table.get(key, default)
        if not isinstance(v, dict):
            self._fail(key, f"must be a table, not {type(v).__name__}")
        return v

    def _check_placeholders(self, template: Any, allowed: set[str], where: str) -> None:
        bad = sorted(_placeholders(template) - allowed)
        if bad:
            self._fail(where, f"uses unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}; "
                              f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}")

    def _load_message(self, config: Mapping[str, Any], section: str, allowed: set[str], required: bool) -> None:
        if section not in config:
            if required:
                self._fail(f"{section}.template", "is required (the frame to send, with placeholders)")
            return
        table = self._table(config, section, {})
        self._check_keys(table, {"template", "options_path"} if section == "request" else {"template"}, section + ".")
        template = table.get("template")
        if not isinstance(template, dict):
            self._fail(f"{section}.template", "is required and must be a table")
        self._check_placeholders(template, allowed, f"{section}.template")
        self.templates[section] = template
        if section == "request" and "options_path" in table:
            self.options_path = self._str(table, "options_path", "", "request.")

    def _matcher(self, kind: str, when: Any, where: str) -> _Matcher:
        if not isinstance(when, dict) or not when:
            self._fail(where, "must be a non-empty table of field path = expected value")
        when = _flatten(when)
        for path, cond in when.items():
            if isinstance(cond, dict) and (set(cond) != {"exists"} or not isinstance(cond["exists"], bool)):
                self._fail(f"{where}.{path}", "as a table must be {exists = true} or {exists = false}")
            if isinstance(cond, str) and _PLACEHOLDER.fullmatch(cond) and cond != "{handshake_id}":
                self._fail(f"{where}.{path}", f"may only use the placeholder {{handshake_id}}, not {cond}")
        return _Matcher(kind, when)

    # -- classify ------------------------------------------------------------
    def classify(self, raw: str | bytes, t_ns: int = 0) -> Frame:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                return invalid(bytes(raw), t_ns, "binary frame, not UTF-8")
        else:
            text = raw
        try:
            obj = json.loads(text)
        except ValueError:
            return invalid(raw, t_ns, "not JSON")
        if not isinstance(obj, dict):
            return invalid(raw, t_ns, f"JSON {type(obj).__name__}, not an object")
        kind = "unknown"
        for m in self.matchers:
            if m.matches(obj):
                kind = m.kind
                break
        payload = get_path(obj, self.payload_path)
        if not isinstance(payload, dict):
            payload = {}
        fields: dict[str, Any] = {}
        for name, path in self.fields.items():
            v = get_path(obj, path, _MISSING)
            if v is not _MISSING:
                fields[name] = v
        if "status" in fields and self.status_values:
            fields["status"] = self.status_values.get(str(fields["status"]), fields["status"])
        sid_path = self.ready_session_path if kind == "ready" else self.session_id_path
        sid = get_path(obj, sid_path)
        rid = get_path(obj, self.request_id_path)
        msg_type = get_path(obj, self.msg_type_path)
        return Frame(
            kind,
            None if msg_type is None else str(msg_type),
            None if rid is None else str(rid),
            None if sid is None else str(sid),
            payload, raw, t_ns, fields or None,
        )

    @property
    def messages(self) -> frozenset[str]:
        """The messages the target file gave a template for."""
        return frozenset(self.templates)

    # -- encoders ------------------------------------------------------------
    def _encode(self, section: str, **values: Any) -> str:
        template = self.templates.get(section)
        if template is None:
            raise Unsupported(f"{self.source}: no adapter_config.{section}.template")
        values["timestamp"] = time.time()
        return json.dumps(_render(template, values), separators=(",", ":"))

    def encode_request(self, request_id: str, text: str, options: Mapping[str, Any],
                       session_id: str | None = None) -> str:
        if not options or self.options_path is None:
            # Without options_path the service has nowhere to take options:
            # they are dropped, as docs/adapters.md says.
            return self._encode("request", request_id=request_id, text=text, session_id=session_id)
        obj = _render(self.templates["request"], {"request_id": request_id, "text": text,
                                                  "session_id": session_id, "timestamp": time.time()})
        _set_path(obj, self.options_path, dict(options))
        return json.dumps(obj, separators=(",", ":"))

    def encode_interrupt(self, interrupt_id: str, target: str | None, reason: str,
                         session_id: str | None = None) -> str:
        return self._encode("interrupt", interrupt_id=interrupt_id, target=target, reason=reason,
                            session_id=session_id)

    def encode_heartbeat(self, request_id: str, session_id: str | None = None) -> str:
        return self._encode("heartbeat", request_id=request_id, session_id=session_id)

    def encode_subscribe(self, topic: str, request_id: str, session_id: str | None = None) -> str:
        return self._encode("subscribe", topic=topic, request_id=request_id, session_id=session_id)

    def encode_unsubscribe(self, topic: str, request_id: str, session_id: str | None = None) -> str:
        return self._encode("unsubscribe", topic=topic, request_id=request_id, session_id=session_id)

    def encode_publish(self, topic: str, data: Any, request_id: str,
                       session_id: str | None = None) -> str:
        return self._encode("publish", topic=topic, data=data, request_id=request_id, session_id=session_id)

    # -- handshake -----------------------------------------------------------
    async def handshake(self, send: Send, recv: Recv) -> Frame:
        if not self.handshake_wait:
            return Frame("ready", None, None, None, {}, "", 0)
        handshake_id = f"hs-{uuid.uuid4().hex[:12]}"
        if self.handshake_send is not None:
            await send(json.dumps(_render(self.handshake_send, {"handshake_id": handshake_id,
                                                                "timestamp": time.time()}),
                                  separators=(",", ":")))
        while True:
            frame = await recv()
            if frame.kind == "ready":
                m = next(m for m in self.matchers if m.kind == "ready")
                if not m.deferred:
                    return frame
                obj = json.loads(frame.raw)
                if all(get_path(obj, p) == handshake_id for p, _ in m.deferred):
                    return frame
            elif frame.kind == "error":
                raise HandshakeError(f"error frame during the handshake: code {frame.code}", frame)
