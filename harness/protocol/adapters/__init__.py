"""Protocol adapters: how the harness speaks to a target.

``load_adapter(target)`` picks one from ``target.adapter``:

* ``"reference"`` (default): the reference protocol of PROTOCOL.md;
* ``"declarative"``: described by the target file's ``adapter_config`` table
  (``docs/adapters.md``);
* ``"package.module:ClassName"``: a Python class, built with the
  ``adapter_config`` table as its one argument when the table is not empty.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from harness.protocol.adapters.base import (
    Adapter,
    AdapterError,
    HandshakeError,
    Recv,
    Send,
    Unsupported,
)
from harness.protocol.adapters.declarative import DeclarativeAdapter
from harness.protocol.adapters.reference import ReferenceAdapter

__all__ = [
    "Adapter",
    "AdapterError",
    "DeclarativeAdapter",
    "HandshakeError",
    "Recv",
    "ReferenceAdapter",
    "Send",
    "Unsupported",
    "load_adapter",
]

_REQUIRED = ("classify", "encode_request", "encode_interrupt", "handshake")


def load_adapter(target: Any = None, *, config: Mapping[str, Any] | None = None,
                 source: str | None = None) -> Adapter:
    """The adapter for a :class:`~harness.target.spec.Target`, or for a spec string.

    Raises :class:`AdapterError` with a one-line message naming the bad key or
    import path; never an import traceback.
    """
    if target is None or isinstance(target, str):
        spec = target or "reference"
        cfg: Mapping[str, Any] = config or {}
        where = source or "adapter"
    else:
        spec = getattr(target, "adapter", "reference") or "reference"
        cfg = config if config is not None else getattr(target, "adapter_config", {}) or {}
        where = source or f"target {getattr(target, 'name', '?')!r}"
    if spec == "reference":
        return ReferenceAdapter()
    if spec == "declarative":
        if not cfg:
            raise AdapterError(f"{where}: adapter = 'declarative' needs an [adapter_config] table")
        return DeclarativeAdapter(cfg, source=where)
    if ":" not in spec:
        raise AdapterError(
            f"{where}: adapter {spec!r} is not 'reference', 'declarative' or 'package.module:ClassName'"
        )
    return _import_adapter(spec, cfg, where)


def _import_adapter(spec: str, cfg: Mapping[str, Any], where: str) -> Adapter:
    mod_name, _, cls_name = spec.partition(":")
    if not mod_name or not cls_name:
        raise AdapterError(f"{where}: adapter {spec!r} must be 'package.module:ClassName'")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # any import failure is a configuration error here
        raise AdapterError(f"{where}: adapter {spec!r}: cannot import {mod_name!r}: "
                           f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise AdapterError(f"{where}: adapter {spec!r}: module {mod_name!r} has no {cls_name!r}")
    missing = [m for m in _REQUIRED if not callable(getattr(cls, m, None))]
    if missing:
        raise AdapterError(f"{where}: adapter {spec!r} is not an adapter: it lacks {', '.join(missing)}")
    try:
        adapter = cls(dict(cfg)) if cfg else cls()
    except AdapterError:
        raise
    except Exception as exc:
        raise AdapterError(f"{where}: adapter {spec!r} could not be built: {type(exc).__name__}: {exc}") from None
    if not getattr(adapter, "name", None) or getattr(adapter, "name", None) == "adapter":
        try:
            adapter.name = spec
        except AttributeError:
            pass
    return adapter
