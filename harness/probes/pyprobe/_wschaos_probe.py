"""The wschaos in-process probe: a side channel into a Python target.

Loaded by this directory's ``sitecustomize`` when ``WSCHAOS_PROBE_SOCKET`` is
set. A daemon thread serves that Unix socket: one JSON request line in, one
JSON response line out, then the connection closes. It reports what a service
without an honest ``/stats`` cannot: the asyncio tasks of every running loop,
every thread and its top frames, the default executor's threads, event-loop
lag (or that the loop is blocked), and on request the number of live objects
of named types.

Rules this module keeps, because it runs inside someone else's process:

* it never prints, and never lets an exception escape into the target;
* it never keeps the process alive (daemon thread, blocking ``accept``);
* it changes no target code: loops are found by wrapping
  ``BaseEventLoop.run_forever`` once ``asyncio.base_events`` is imported,
  so a target that never uses asyncio never imports it because of us;
* only the process that bound the socket serves it and removes it at exit,
  so Python children that inherit the environment (or a fork) stay silent.

Only the standard library is used: the target's environment is not ours.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import socket
import sys
import threading
import time
import weakref

__all__ = ["ENV_VAR", "PROTOCOL_VERSION", "handle_request", "install", "start"]

ENV_VAR = "WSCHAOS_PROBE_SOCKET"
PROTOCOL_VERSION = 1
THREAD_NAME = "wschaos-probe"

# loop -> ident of the thread that last ran it; weak so the probe never keeps
# a finished loop (and everything it references) alive.
_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STATE: dict = {"installed": False, "path": None, "pid": None, "ino": None}
_MAX_REQUEST = 64 * 1024


# -- finding loops -------------------------------------------------------------
def _patch_base_events(module) -> None:
    cls = getattr(module, "BaseEventLoop", None)
    orig = getattr(cls, "run_forever", None)
    if cls is None or orig is None or getattr(orig, "_wschaos_wrapped", False):
        return

    def run_forever(self, *args, **kwargs):
        try:
            _LOOPS[self] = threading.get_ident()
        except Exception:
            pass
        return orig(self, *args, **kwargs)

    run_forever._wschaos_wrapped = True  # type: ignore[attr-defined]
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(run_forever, attr, getattr(orig, attr))
        except Exception:
            pass
    cls.run_forever = run_forever


class _PatchingLoader:
    """Runs the real loader, then wraps ``run_forever`` in the fresh module."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            _patch_base_events(module)
        except Exception:
            pass

    def __getattr__(self, name):  # get_code, get_source, ... for tools that ask
        return getattr(self._loader, name)


class _Finder:
    """A meta-path hook that waits for ``asyncio.base_events`` to be imported.

    Importing asyncio ourselves at startup would cost every target tens of
    milliseconds and change its import order; this costs one dict lookup per
    import until asyncio shows up, then removes itself.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "asyncio.base_events":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        try:
            from importlib.machinery import PathFinder

            spec = PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
            return spec
        except Exception:
            return None


def _hook_asyncio() -> None:
    module = sys.modules.get("asyncio.base_events")
    if module is not None:
        _patch_base_events(module)
    else:
        sys.meta_path.insert(0, _Finder())


# -- collecting ---------------------------------------------------------------
def _frames(frame, limit: int) -> list[str]:
    """Innermost ``limit`` frames, outermost first, without reading source files."""
    out: list[str] = []
    while frame is not None and len(out) < limit:
        code = frame.f_code
        out.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    out.reverse()
    return out


def _task_info(task, stack_limit: int) -> dict:
    info: dict = {"name": None, "coro": None, "done": None, "cancelled": None, "stack": []}
    try:
        info["name"] = task.get_name()
        coro = task.get_coro()
        info["coro"] = getattr(coro, "__qualname__", None) or type(coro).__name__
        info["done"] = task.done()
        info["cancelled"] = task.cancelled()
        # get_stack gives outermost-first frames for a suspended coroutine.
        info["stack"] = [
            f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
            for f in task.get_stack(limit=stack_limit)
        ]
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _collect_tasks(loop, stack_limit: int, max_tasks: int) -> tuple[int, list[dict]]:
    import asyncio  # already imported: a loop exists

    tasks = list(asyncio.all_tasks(loop))  # all_tasks retries if the set changes under it
    return len(tasks), [_task_info(t, stack_limit) for t in tasks[:max_tasks]]


class _LoopProbe:
    """One loop's answer: a callback scheduled on it, then collected.

    Every loop's callback is scheduled before any is waited on, so several
    blocked loops cost one lag bound in all, not one each.
    """

    def __init__(self, loop, thread_ident, req: dict) -> None:
        self.loop = loop
        self.stack_limit = int(req.get("stack_limit", 5))
        self.max_tasks = int(req.get("max_tasks", 200))
        self.done = threading.Event()
        self.box: dict = {"abandoned": False}
        self.sent = time.monotonic_ns()
        self.entry: dict = {
            "id": hex(id(loop)),
            "type": type(loop).__name__,
            "thread_ident": thread_ident,
            "running": bool(loop.is_running()),
            "closed": bool(loop.is_closed()),
            "blocked": False,
            "lag_ms": None,
            "tasks_count": None,
            "tasks": [],
            "tasks_source": None,
        }
        self.scheduled = False
        if self.entry["running"] and not self.entry["closed"]:
            try:
                loop.call_soon_threadsafe(self._on_loop)
                self.scheduled = True
            except Exception as exc:  # closed between the check and the call
                self.entry["error"] = f"{type(exc).__name__}: {exc}"

    def _on_loop(self) -> None:
        # Runs on the loop's own thread, where reading its tasks is safe.
        # It must never raise: the loop would log it as the target's error.
        box = self.box
        try:
            box["ran_ns"] = time.monotonic_ns()
            if box["abandoned"]:
                return  # the loop was reported blocked; nobody waits for this any more
            box["count"], box["tasks"] = _collect_tasks(self.loop, self.stack_limit, self.max_tasks)
        except Exception as exc:
            box["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def finish(self, deadline: float) -> dict:
        entry, box = self.entry, self.box
        if not self.scheduled:
            return entry
        if self.done.wait(max(0.0, deadline - time.monotonic())):
            entry["lag_ms"] = round((box["ran_ns"] - self.sent) / 1e6, 3)
            entry["tasks_count"] = box.get("count")
            entry["tasks"] = box.get("tasks", [])
            entry["tasks_source"] = "loop"
            if "error" in box:
                entry["error"] = box["error"]
            return entry
        box["abandoned"] = True
        entry["blocked"] = True
        entry["lag_ms"] = round((time.monotonic_ns() - self.sent) / 1e6, 3)
        try:
            # The loop is stuck in a blocking call, so its task set is not
            # changing much; reading it from here is the best that can be done.
            entry["tasks_count"], entry["tasks"] = _collect_tasks(self.loop, self.stack_limit, self.max_tasks)
            entry["tasks_source"] = "best_effort"
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry


def _threads(stack_limit: int) -> list[dict]:
    frames = sys._current_frames()
    out = []
    for t in threading.enumerate():
        frame = frames.get(t.ident) if t.ident is not None else None
        out.append({
            "name": t.name,
            "ident": t.ident,
            "native_id": getattr(t, "native_id", None),
            "daemon": t.daemon,
            "alive": t.is_alive(),
            "probe": t.name == THREAD_NAME,
            "frames": _frames(frame, stack_limit) if frame is not None else [],
        })
    return out


def _gc_counts(names) -> dict:
    wanted = {str(n) for n in names}
    counts = dict.fromkeys(wanted, 0)
    objs = gc.get_objects()
    try:
        for o in objs:
            t = type(o)
            q = t.__qualname__
            if q in wanted:
                counts[q] += 1
            full = f"{t.__module__}.{q}"
            if full in wanted:
                counts[full] += 1
    finally:
        del objs  # do not keep every object in the process alive any longer
    return counts


def handle_request(req: dict) -> dict:
    """Answer one request; pure data in, JSON-able data out."""
    started = time.monotonic_ns()
    stack_limit = int(req.get("stack_limit", 5))
    resp: dict = {
        "ok": True,
        "version": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "errors": [],
    }
    pending: list[_LoopProbe] = []
    for loop, ident in list(_LOOPS.items()):
        try:
            pending.append(_LoopProbe(loop, ident, req))
        except Exception as exc:
            resp["errors"].append(f"loop: {type(exc).__name__}: {exc}")
    deadline = time.monotonic() + float(req.get("lag_timeout_ms", 500)) / 1000.0
    loops = []
    for probe in pending:
        try:
            loops.append(probe.finish(deadline))
        except Exception as exc:
            resp["errors"].append(f"loop: {type(exc).__name__}: {exc}")
    running = [lp for lp in loops if lp["running"] and not lp["closed"]]
    resp["loops"] = loops
    resp["tasks"] = sum(lp["tasks_count"] or 0 for lp in running) if running else None
    lags = [lp["lag_ms"] for lp in running if lp["lag_ms"] is not None]
    resp["loop_lag_ms"] = max(lags) if lags else None
    resp["blocked"] = any(lp["blocked"] for lp in running)
    try:
        threads = _threads(stack_limit)
    except Exception as exc:
        threads = []
        resp["errors"].append(f"threads: {type(exc).__name__}: {exc}")
    names = {t["ident"]: t["name"] for t in threads}
    for lp in loops:
        lp["thread_name"] = names.get(lp["thread_ident"])
    resp["threads"] = threads
    resp["thread_count"] = len(threads)
    # asyncio's default executor names its workers "asyncio_N".
    resp["executor_threads"] = [t["name"] for t in threads if t["name"].startswith("asyncio_")]
    if req.get("gc_types"):
        try:
            resp["gc"] = _gc_counts(req["gc_types"])
        except Exception as exc:
            resp["errors"].append(f"gc: {type(exc).__name__}: {exc}")
    # What answering cost the target, so the probe's own overhead stays visible.
    resp["probe_ms"] = round((time.monotonic_ns() - started) / 1e6, 3)
    return resp


# -- serving ------------------------------------------------------------------
def _serve_one(conn) -> None:
    conn.settimeout(5.0)  # a client that connects and says nothing must not wedge us
    buf = b""
    while b"\n" not in buf and len(buf) < _MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
    try:
        req = json.loads(buf.split(b"\n", 1)[0] or b"{}")
        if not isinstance(req, dict):
            raise ValueError("request must be a JSON object")
        resp = handle_request(req)
    except Exception as exc:
        resp = {"ok": False, "version": PROTOCOL_VERSION, "error": f"{type(exc).__name__}: {exc}"}
    conn.sendall(json.dumps(resp, default=repr).encode() + b"\n")


def _serve(sock) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return  # socket closed at exit
        except BaseException:
            return
        try:
            with conn:
                _serve_one(conn)
        except BaseException:
            pass  # a vanished client, a finalizing interpreter: never the target's problem


def _cleanup() -> None:
    path = _STATE["path"]
    if path is None or _STATE["pid"] != os.getpid():
        return  # a forked child inherited this handler: the socket is not its own
    try:
        if os.stat(path).st_ino == _STATE["ino"]:
            os.unlink(path)
    except OSError:
        pass


def _bind(path: str):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        # Someone holds the path. If it answers, it is the process this probe
        # was meant for (we are its child): stay silent. If not, it is stale.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.2)
            probe.connect(path)
            sock.close()
            return None
        except OSError:
            os.unlink(path)
            sock.bind(path)
        finally:
            probe.close()
    sock.listen(8)
    return sock


def start(path: str) -> bool:
    """Serve ``path`` from a daemon thread; False (silently) when not possible."""
    if _STATE["path"] is not None:
        return False
    try:
        sock = _bind(path)
        if sock is None:
            return False
        _STATE.update(path=path, pid=os.getpid(), ino=os.stat(path).st_ino)
        atexit.register(_cleanup)
        try:
            import _wschaos_fork  # a sibling on the same injected path

            _wschaos_fork.install(THREAD_NAME)
        except Exception:
            pass
        t = threading.Thread(target=_serve, args=(sock,), name=THREAD_NAME, daemon=True)
        t.start()
        return True
    except Exception:
        return False


def install() -> None:
    """Called from sitecustomize: hook asyncio and serve when the variable is set."""
    if _STATE["installed"]:
        return
    _STATE["installed"] = True
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    try:
        _hook_asyncio()
    except Exception:
        pass
    start(path)
