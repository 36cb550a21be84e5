"""Keep the probe's thread out of Python 3.12+'s fork warning.

From 3.12, ``os.fork()`` in a multi-threaded process warns
"This process (pid=N) is multi-threaded, use of fork() may lead to deadlocks
in the child" (a DeprecationWarning, shown when the caller is ``__main__`` or
warnings are enabled). A target whose only other thread is the probe's would
print that line only because wschaos is watching it. So, right before each
fork, that exact warning is filtered when the probe's is the one extra
thread, and unfiltered otherwise: a target with threads of its own still gets
its warning. The decision is remade at every fork rather than undone after
it, because 3.13 warns only after the after-fork hooks have run.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

__all__ = ["install"]

_MESSAGE = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"
_STATE: dict = {"filter": None, "installed": False}


def _os_thread_count() -> int:
    """The kernel's count (what CPython's check reads on Linux), else threading's."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        return int(stat.rsplit(b")", 1)[1].split()[17])  # field 20: num_threads
    except (OSError, ValueError, IndexError):
        return threading.active_count()


def _before(thread_name: str) -> None:
    try:
        _remove()
        ours = any(t.name == thread_name and t.is_alive() for t in threading.enumerate())
        if ours and _os_thread_count() == 2:
            warnings.filterwarnings("ignore", message=_MESSAGE, category=DeprecationWarning)
            _STATE["filter"] = warnings.filters[0]
    except Exception:
        pass


def _remove() -> None:
    entry, _STATE["filter"] = _STATE["filter"], None
    if entry is None:
        return
    try:
        warnings.filters.remove(entry)  # type: ignore[attr-defined]  # a list at run time
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()  # the C side caches the filter list's version
    except ValueError:
        pass  # already gone: the target reset its filters (catch_warnings)


def install(thread_name: str) -> None:
    if _STATE["installed"] or sys.version_info < (3, 12) or not hasattr(os, "register_at_fork"):
        return
    _STATE["installed"] = True
    os.register_at_fork(before=lambda: _before(thread_name))
