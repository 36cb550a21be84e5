"""Secrets masked before anything is written: run directories get uploaded as CI artifacts.

:func:`redact` walks a JSON-like value and masks values under secret-looking
keys, the value after a secret ``--flag`` in argv-like lists, URL credentials,
secret query parameters and ``Authorization: ...`` header text inside strings.
``results.json`` is written through it (:func:`harness.results.store.save_run`),
and every report renders a redacted copy of the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "SECRET_WORDS", "redact"]

MASK = "***"
#: Words that make a key (or a --flag) secret, matched against its parts
#: ("access_token", "X-Api-Key", "clientSecret"), so "monkey" or "max_tokens" are left alone.
SECRET_WORDS = frozenset(
    {"authorization", "auth", "token", "secret", "password", "passwd", "pwd", "key", "apikey",
     "cookie", "credential", "credentials", "passphrase"}
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_QUERY_PARAM = re.compile(r"(?P<pre>[?&;])(?P<name>[^=&#\s]+)=(?P<val>[^&#\s]*)")
_AUTH_HEADER = re.compile(r"(?i)\b(?P<name>(?:proxy-)?authorization|cookie|x-api-key)(?P<sep>\s*[:=]\s*)(?P<val>.+)")
_FLAG = re.compile(r"^--?(?P<name>[A-Za-z][\w.-]*)(?:=(?P<val>.*))?$", re.S)
#: A secret flag inside a command line held as one string (a replay command, a --target-cmd).
_FLAG_IN_TEXT = re.compile(r"""(?<![\w-])(?P<flag>--?(?P<name>[A-Za-z][\w.-]*))(?P<sep>=|\s+)(?P<val>'[^']*'|"[^"]*"|[^\s'"]+)""")


def _is_secret_name(name: str, words: frozenset[str]) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    parts = [p.lower() for p in re.split(r"[^A-Za-z0-9]+", spaced) if p]
    joined = "".join(parts)
    return joined in words or any(p in words for p in parts)


def _redact_str(s: str, words: frozenset[str]) -> str:
    s = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", s)
    s = _QUERY_PARAM.sub(
        lambda m: f"{m['pre']}{m['name']}={MASK}" if _is_secret_name(m["name"], words) else m[0], s
    )
    s = _FLAG_IN_TEXT.sub(lambda m: _redact_flag(m, words), s)
    return _AUTH_HEADER.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", s)


def _redact_flag(m: re.Match[str], words: frozenset[str]) -> str:
    if _is_secret_name(m["name"], words):
        return f"{m['flag']}{m['sep']}{MASK}"
    val = m["val"]
    if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
        # A quoted command line (--target-cmd 'srv --token x') may hide secret flags of its own.
        val = val[0] + _redact_str(val[1:-1], words) + val[0]
    return f"{m['flag']}{m['sep']}{val}"


def redact(obj: Any, keys: Iterable[str] = SECRET_WORDS) -> Any:
    """A copy of ``obj`` with secrets masked.

    Masks values under secret-looking keys (Authorization, ``*token*``,
    ``*key``, ``*secret*``, ``*password*``...), the value after a secret
    ``--flag`` in argv-like lists (``--token abc``, ``--token=abc``), URL
    credentials (``ws://user:pass@host``), secret query parameters
    (``?token=...``) and ``Authorization: ...`` header text inside strings.
    """
    words = frozenset(k.lower() for k in keys)
    if isinstance(obj, dict):
        return {
            k: (MASK if v not in (None, "") and _is_secret_name(str(k), words) else redact(v, words))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        out: list[Any] = []
        mask_next = False
        for item in obj:
            if mask_next and isinstance(item, str):
                out.append(MASK)
                mask_next = False
                continue
            mask_next = False
            m = _FLAG.match(item) if isinstance(item, str) else None
            if m and _is_secret_name(m["name"], words):
                if m["val"] is None:
                    mask_next = True
                    out.append(item)
                else:
                    out.append(item.split("=", 1)[0] + "=" + MASK)
                continue
            out.append(redact(item, words))
        return out
    if isinstance(obj, str):
        return _redact_str(obj, words)
    return obj


