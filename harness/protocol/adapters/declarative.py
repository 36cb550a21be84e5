"""An adapter described by data: the target file's ``adapter_config`` table.

Simple JSON protocols differ from the reference one in names and places: a
REGISTER frame instead of SESSION_READY, the sequence number at
``payload.text_stream_seq``, a final frame marked by ``-1``. Agent back ends
differ in shape too, and say so here: no ids (``correlation = "order"``), an
interrupt answered otherwise (``interrupt.answer``), binary frames classified
by prefix and size (``binary``), a session made over HTTP before the WebSocket
(``session``). This module turns such a description (documented with full
examples in ``docs/adapters.md``) into an
:class:`~harness.protocol.adapters.base.Adapter`. All validation happens once,
when the adapter is built, and every error names the offending key, so a bad
target file gives one clear line rather than a traceback mid-run.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from harness.protocol.adapters.base import (
    ANSWERS,
    CORRELATIONS,
    Adapter,
    AdapterError,
    HandshakeError,
    Recv,
    Send,
    Unsupported,
)
from harness.protocol.frames import KINDS, Frame, invalid
from harness.protocol.session import SESSION_PLACEHOLDERS, SessionCreate, SessionDelete, SessionSpec

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
             "handshake", "fields", "match", "status_values", "correlation", "session", "binary",
             *_MESSAGES}
_HANDSHAKE_KEYS = {"send", "ready", "session_id_path", "wait"}
_MATCH_KINDS = tuple(k for k in KINDS if k != "invalid")
#: What a binary frame may be (a handshake is text).
_BINARY_KINDS = tuple(k for k in _MATCH_KINDS if k not in ("ready", "unknown"))
#: ``binary = "..."``: every binary frame is of one kind.
_BINARY_SHORTHAND = {"chunk of the active request": "chunk"}
_BINARY_KEYS = {"kind", "prefix", "prefix_hex", "size", "min_size", "max_size", "seq"}
_SESSION_CREATE_KEYS = {"method", "path", "url", "body", "id_path", "status", "ws", "send"}
_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


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


@dataclass(frozen=True)
class _BinaryRule:
    """One ``[[adapter_config.binary]]`` rule: prefix and length decide, ``seq`` numbers the frame."""

    kind: str
    prefix: bytes = b""
    min_size: int = 0
    max_size: int | None = None
    seq_offset: int | None = None
    seq_format: str | None = None

    def matches(self, data: bytes) -> bool:
        n = len(data)
        return (data.startswith(self.prefix) and n >= self.min_size
                and (self.max_size is None or n <= self.max_size))

    def seq(self, data: bytes) -> int | None:
        if self.seq_format is None or self.seq_offset is None:
            return None
        try:
            value = struct.unpack_from(self.seq_format, data, self.seq_offset)[0]
        except struct.error:
            return None
        return value if isinstance(value, int) else None


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
            self._load_message(config, section, allowed, required=section == "request")
        self.correlation = config.get("correlation", "id")
        if self.correlation not in CORRELATIONS:
            self._fail("correlation", f"must be one of {', '.join(CORRELATIONS)}, not {self.correlation!r}")
        # An interrupt frame without {target} names no request: it stops whatever runs.
        self.interrupt_targets = "target" in _placeholders(self.templates.get("interrupt"))
        self.session = self._load_session(config["session"]) if "session" in config else None
        self.binary_rules = self._load_binary(config["binary"]) if "binary" in config else ()
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
        if not any(m.kind == "final" for m in matchers) and not any(r.kind == "final" for r in self.binary_rules):
            # Without it no reply ever ends: every request would time out.
            self._fail("match", "needs a rule of kind 'final' (and usually 'chunk', 'ack', 'error')")
        if self.handshake_wait and not any(m.kind == "ready" for m in matchers):
            self._fail("handshake.ready", "is required (or a match with kind = 'ready', or handshake.wait = false)")
        self.matchers = matchers
        fields = dict(self._table(config, "fields", {}))
        self._check_keys(fields, set(_FIELDS), "fields.")
        #: How a final frame says it was interrupted: a path (its value's truth), a
        #: (path, condition) pair, or None for a service that does not say.
        #: Without the key: the reference name in the payload (Frame's own fallback).
        self.interrupted_rule: tuple[str, Any] | None = None
        self.interrupted_said = True
        if "interrupted" in fields:
            self.interrupted_rule = self._interrupted_rule(fields.pop("interrupted"))
            self.interrupted_said = self.interrupted_rule is not None
        for k, v in fields.items():
            if not isinstance(v, str):
                self._fail(f"fields.{k}", f"must be a field path string, not {v!r}")
        self.fields = fields
        self.status_values = self._table(config, "status_values", {})

    # -- validation helpers --------------------------------------------------
    def _fail(self, key: str, why: str) -> NoReturn:
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
        known = {"template", "options_path"} if section == "request" else \
            {"template", "answer"} if section == "interrupt" else {"template"}
        self._check_keys(table, known, section + ".")
        if section == "interrupt":
            self.interrupt_answer = table.get("answer", "final_then_ack")
            if self.interrupt_answer not in ANSWERS:
                self._fail("interrupt.answer", f"must be one of {', '.join(ANSWERS)}, not {self.interrupt_answer!r}")
        template = table.get("template")
        if not isinstance(template, dict):
            self._fail(f"{section}.template", "is required and must be a table")
        self._check_placeholders(template, allowed, f"{section}.template")
        self.templates[section] = template
        if section == "request" and "options_path" in table:
            self.options_path = self._str(table, "options_path", "", "request.")

    def _interrupted_rule(self, spec: Any) -> tuple[str, Any] | None:
        """``fields.interrupted``: a path, ``{ path, equals }``, or false (the service does not say)."""
        if spec is False:
            return None
        if isinstance(spec, str):
            return (spec, None)
        if isinstance(spec, dict):
            bad = sorted(set(spec) - {"path", "equals"})
            if bad or not isinstance(spec.get("path"), str) or "equals" not in spec:
                self._fail("fields.interrupted", "as a table must be { path = \"...\", equals = <value> }")
            if isinstance(spec["equals"], dict):
                self._fail("fields.interrupted.equals", "must be a value or a list of values")
            return (spec["path"], spec["equals"])
        self._fail("fields.interrupted", f"must be a field path, {{ path, equals }} or false, not {spec!r}")

    def _load_binary(self, spec: Any) -> tuple[_BinaryRule, ...]:
        """``binary``: a shorthand string, or an array of rules tried in order."""
        if isinstance(spec, str):
            kind = _BINARY_SHORTHAND.get(spec, spec)
            if kind not in _BINARY_KINDS:
                self._fail("binary", f"must be an array of rules, {' or '.join(map(repr, _BINARY_SHORTHAND))} "
                                     f"or a kind ({', '.join(_BINARY_KINDS)}), not {spec!r}")
            return (_BinaryRule(kind),)
        if not isinstance(spec, list) or not spec:
            self._fail("binary", "must be a non-empty array of tables ([[adapter_config.binary]])")
        rules = []
        for i, r in enumerate(spec):
            where = f"binary[{i}]"
            if not isinstance(r, dict):
                self._fail(where, "must be a table with kind and prefix/size")
            self._check_keys(r, _BINARY_KEYS, where + ".")
            rule_kind = r.get("kind")
            if rule_kind not in _BINARY_KINDS:
                self._fail(where + ".kind", f"must be one of {', '.join(_BINARY_KINDS)}, not {rule_kind!r}")
            if "prefix" in r and "prefix_hex" in r:
                self._fail(where, "give prefix (text) or prefix_hex, not both")
            prefix = b""
            if "prefix" in r:
                if not isinstance(r["prefix"], str) or not r["prefix"]:
                    self._fail(where + ".prefix", "must be a non-empty string (its UTF-8 bytes)")
                prefix = r["prefix"].encode("utf-8")
            elif "prefix_hex" in r:
                try:
                    prefix = bytes.fromhex(str(r["prefix_hex"]))
                except ValueError:
                    self._fail(where + ".prefix_hex", f"is not hex digits: {r['prefix_hex']!r}")
            sizes = {k: r[k] for k in ("size", "min_size", "max_size") if k in r}
            for k, v in sizes.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    self._fail(f"{where}.{k}", f"must be a whole number of bytes, not {v!r}")
            if "size" in sizes and len(sizes) > 1:
                self._fail(where, "give size, or min_size/max_size, not both")
            lo = sizes.get("size", sizes.get("min_size", 0))
            hi = sizes.get("size", sizes.get("max_size"))
            if hi is not None and hi < lo:
                self._fail(where, f"max_size {hi} is below min_size {lo}")
            offset = fmt = None
            if "seq" in r:
                seq = r["seq"]
                if not isinstance(seq, dict) or set(seq) - {"offset", "format"} or "format" not in seq:
                    self._fail(where + ".seq", "must be { offset = <bytes>, format = \"<I\" } (a struct format)")
                offset, fmt = seq.get("offset", 0), seq["format"]
                if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                    self._fail(where + ".seq.offset", f"must be a whole number of bytes, not {offset!r}")
                try:
                    width = struct.calcsize(fmt)
                    if len(struct.unpack(fmt, bytes(width))) != 1:
                        raise struct.error("one value")
                except (struct.error, TypeError):
                    self._fail(where + ".seq.format", f"must be a struct format of one integer (\"<I\", \">H\"), not {fmt!r}")
            if not prefix and not sizes and rule_kind not in ("chunk", "meta"):
                self._fail(where, "needs a prefix or a size to tell its frames apart")
            rules.append(_BinaryRule(str(rule_kind), prefix, lo, hi, offset, fmt))
        return tuple(rules)

    def _load_session(self, spec: Any) -> SessionSpec:
        """``session = { create = {...}, delete = {...} }``: a session per client, before its WebSocket."""
        if not isinstance(spec, dict):
            self._fail("session", "must be a table with create (and optionally delete)")
        self._check_keys(spec, {"create", "delete"}, "session.")
        create = spec.get("create")
        if not isinstance(create, dict):
            self._fail("session.create", "is required: { method, path (or url, or ws), id_path }")
        self._check_keys(create, _SESSION_CREATE_KEYS, "session.create.")
        where = [k for k in ("path", "url", "ws") if k in create]
        if len(where) != 1:
            self._fail("session.create", "needs exactly one of path (on the service), url (absolute) or ws "
                                         "(a WebSocket path whose answer carries the id)")
        for k in ("path", "url", "ws", "id_path"):
            if k in create and (not isinstance(create[k], str) or not create[k]):
                self._fail(f"session.create.{k}", "must be a non-empty string")
        if "id_path" not in create:
            self._fail("session.create.id_path", "is required: where the answer carries the session id")
        for k in ("path", "ws"):
            if k in create and not create[k].startswith("/"):
                self._fail(f"session.create.{k}", f"must start with '/', not {create[k]!r}")
        if "url" in create and not create["url"].startswith(("http://", "https://", "{")):
            self._fail("session.create.url", f"must be an http:// or https:// URL, not {create['url']!r}")
        method = create.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
            self._fail("session.create.method", f"must be one of {', '.join(_HTTP_METHODS)}, not {method!r}")
        if "ws" in create and ("method" in create or "body" in create or "status" in create):
            self._fail("session.create", "over ws takes send (the frame) and id_path, not method, body or status")
        if "send" in create and "ws" not in create:
            self._fail("session.create.send", "is for a creation over ws; over HTTP give body")
        if "send" in create and not isinstance(create["send"], dict):
            self._fail("session.create.send", "must be a table (the frame to send)")
        status = create.get("status", [])
        status = [status] if isinstance(status, int) and not isinstance(status, bool) else status
        if not isinstance(status, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in status):
            self._fail("session.create.status", f"must be an HTTP status or a list of them, not {create.get('status')!r}")
        for k in ("path", "url", "ws", "body", "send"):
            if k in create:
                self._check_placeholders(create[k], set(SESSION_PLACEHOLDERS), f"session.create.{k}")
        delete = None
        if "delete" in spec:
            d = spec["delete"]
            if not isinstance(d, dict):
                self._fail("session.delete", "must be a table: { method, path (or url) }")
            self._check_keys(d, {"method", "path", "url"}, "session.delete.")
            if ("path" in d) == ("url" in d):
                self._fail("session.delete", "needs exactly one of path (on the service) or url (absolute)")
            target = d.get("path", d.get("url"))
            if not isinstance(target, str) or not target:
                self._fail("session.delete", "path/url must be a non-empty string")
            self._check_placeholders(target, {"session_id", *SESSION_PLACEHOLDERS}, "session.delete")
            dm = d.get("method", "DELETE")
            if not isinstance(dm, str) or dm.upper() not in _HTTP_METHODS:
                self._fail("session.delete.method", f"must be one of {', '.join(_HTTP_METHODS)}, not {dm!r}")
            delete = SessionDelete(method=dm.upper(), path=d.get("path"), url=d.get("url"))
        return SessionSpec(
            SessionCreate(id_path=create["id_path"], method=method.upper(), path=create.get("path"),
                          url=create.get("url"), body=create.get("body"), status=tuple(status),
                          ws=create.get("ws"), send=create.get("send")),
            delete,
        )

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
            if self.binary_rules:
                return self._classify_binary(bytes(raw), t_ns)
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
        if kind == "final" and (self.interrupted_rule is not None or not self.interrupted_said):
            rule = self.interrupted_rule
            if rule is None:
                fields["interrupted"] = None  # the service does not say
            elif rule[1] is not None:
                fields["interrupted"] = _cond_ok(get_path(obj, rule[0], _MISSING), rule[1])
            else:
                v = get_path(obj, rule[0], _MISSING)
                if v is not _MISSING:
                    fields["interrupted"] = v
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

    def _classify_binary(self, data: bytes, t_ns: int) -> Frame:
        """A binary frame by the first ``binary`` rule its prefix and length match; else invalid."""
        for rule in self.binary_rules:
            if rule.matches(data):
                seq = rule.seq(data)
                fields: dict[str, Any] = {"size": len(data)}
                if seq is not None:
                    fields["seq"] = seq
                return Frame(rule.kind, "binary", None, None, _EMPTY, data, t_ns, fields)
        head = data[:8].hex()
        return invalid(data, t_ns, f"binary frame of {len(data)} bytes (starting {head or 'empty'}) "
                                   "matches no adapter_config.binary rule")

    @property
    def messages(self) -> frozenset[str]:
        """The messages the target file gave a template for, and what the service answers with.

        ``interrupt_target``, ``ack``, ``final`` as ``interrupt`` says (none without an
        interrupt); ``seq`` when chunks carry a sequence number (``fields.seq`` or a
        binary rule's ``seq``).
        """
        out = set(self.templates)
        if "interrupt" in out:
            out |= self.answer_messages()
        if "seq" in self.fields or any(r.seq_format for r in self.binary_rules):
            out.add("seq")
        return frozenset(out)

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
