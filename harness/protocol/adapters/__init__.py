"""Protocol adapters: how the harness speaks to a target.

``load_adapter(target)`` picks one from ``target.adapter``:

* ``"reference"`` (default): the reference protocol of PROTOCOL.md;
* ``"declarative"``: described by the target file's ``adapter_config`` table
  (``docs/adapters.md``);
* ``"package.module:ClassName"``: a Python class, built with the
  ``adapter_config`` table as its one argument when the table is not empty.
  The module is looked for first beside the target file that names it
  (``Target.base_dir``), then on the import path: no ``PYTHONPATH`` needed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
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
    base_dir: str | None = None
    ws_path = ""
    if target is None or isinstance(target, str):
        spec = target or "reference"
        cfg: Mapping[str, Any] = config or {}
        where = source or "adapter"
    else:
        spec = getattr(target, "adapter", "reference") or "reference"
        cfg = config if config is not None else getattr(target, "adapter_config", {}) or {}
        where = source or f"target {getattr(target, 'name', '?')!r}"
        base_dir = getattr(target, "base_dir", None)
        ws_path = getattr(target, "ws_path", "") or ""
    if spec == "reference":
        adapter: Adapter = ReferenceAdapter()
    elif spec == "declarative":
        if not cfg:
            raise AdapterError(f"{where}: adapter = 'declarative' needs an [adapter_config] table")
        adapter = DeclarativeAdapter(cfg, source=where)
    elif ":" not in spec:
        raise AdapterError(
            f"{where}: adapter {spec!r} is not 'reference', 'declarative' or 'package.module:ClassName'"
        )
    else:
        adapter = _import_adapter(spec, cfg, where, base_dir)
    if "{session_id}" in ws_path and getattr(adapter, "session", None) is None:
        raise AdapterError(f"{where}: ws_path {ws_path!r} uses {{session_id}}, but the adapter makes no session "
                           "before the WebSocket opens (adapter_config.session.create)")
    return adapter


#: Imports that put a target file's directory first on sys.path, one at a time.
_IMPORT_LOCK = threading.Lock()


def _module_file(base_dir: str, mod_name: str) -> Path | None:
    """The file ``mod_name`` names under ``base_dir`` (a module or a package), or None."""
    parts = mod_name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    stem = Path(base_dir, *parts)
    for cand in (stem.with_suffix(".py"), stem / "__init__.py"):
        if cand.is_file():
            return cand.resolve()
    return None


def _import_beside(base_dir: str | None, mod_name: str) -> ModuleType:
    """Import ``mod_name`` from ``base_dir`` when it is there, else from the import path.

    The directory goes first on ``sys.path`` while the module (and what it imports
    beside it) loads, and comes off again. A module of that name already imported
    from elsewhere is an error, not silently used in its place.
    """
    found = _module_file(base_dir, mod_name) if base_dir else None
    if found is None:
        return importlib.import_module(mod_name)
    with _IMPORT_LOCK:
        loaded = sys.modules.get(mod_name)
        if loaded is not None:
            where = getattr(loaded, "__file__", None)
            if where and Path(where).resolve() == found:
                return loaded
            raise ImportError(f"a module {mod_name!r} is already imported from {where or 'elsewhere'}, "
                              f"not {found}; give the adapter module a name of its own")
        sys.path.insert(0, str(base_dir))
        try:
            return importlib.import_module(mod_name)
        finally:
            try:
                sys.path.remove(str(base_dir))
            except ValueError:
                pass


def _import_adapter(spec: str, cfg: Mapping[str, Any], where: str, base_dir: str | None = None) -> Adapter:
    mod_name, _, cls_name = spec.partition(":")
    if not mod_name or not cls_name:
        raise AdapterError(f"{where}: adapter {spec!r} must be 'package.module:ClassName'")
    try:
        module = _import_beside(base_dir, mod_name)
    except Exception as exc:  # any import failure is a configuration error here
        beside = f" (looked beside the target file in {base_dir} too)" if base_dir else ""
        raise AdapterError(f"{where}: adapter {spec!r}: cannot import {mod_name!r}{beside}: "
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
