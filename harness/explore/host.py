"""One target for a whole exploration: started as a scenario starts it, restarted when it dies.

:class:`TargetHost` asks a scenario :class:`~harness.engine.scenario.Context`
for the target (``ctx.start_target``, which builds the
:class:`~harness.process.supervisor.Supervisor`, injects the Python probe when
the target wants it, and stops the whole tree at ``ctx.aclose()``), and for
the fake upstream the ``upstream`` agent streams from. The command line makes
a Context of its own for this; the gate case passes its own.

:func:`capabilities` reads what the target supports: the messages its adapter
can encode, whether its REQUEST takes the reference protocol's options, and
its declared limits. Steps are drawn from that and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.explore.execute import RunEnv
from harness.explore.program import ExploreConfig
from harness.explore.strategies import Capabilities
from harness.probes.observe import Observer
from harness.protocol.adapters import Adapter, Unsupported, load_adapter

if TYPE_CHECKING:
    from harness.engine.scenario import Context
    from harness.process.supervisor import Supervisor
    from harness.target.spec import Target
    from harness.upstream.fake import FakeUpstream

__all__ = ["TargetHost", "capabilities", "describe_target"]

#: Reference-protocol counters, after a program, that mean "restart before the next one".
_DIRTY_KEYS = ("connections", "sessions", "active_requests", "subscriptions", "per_session_state", "tasks")


def describe_target(target: Target, *, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """A target as a program file records it, so ``replay`` starts the same one again.

    The reference server is named by its fault switches; a target that came from a
    file or a command line by that ``source`` (``{"kind": "file", "path": ...}`` or
    ``{"kind": "cmd", "cmd": ...}``); any other as its target table (best effort:
    the keys ``load_target`` reads).
    """
    flags = {k: True for k in ("python_probe", "allow_remote") if getattr(target, k, False)}
    if target.name == "reference" and target.adapter == "reference" and source is None:
        return {"kind": "reference", "faults": list(target.faults), "name": target.name, **flags}
    if source is not None:
        return {**source, "name": target.name, **flags}
    return {"kind": "spec", "spec": _table(target), "name": target.name, **flags}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _table(target: Target) -> dict[str, Any]:
    table = {f.name: _plain(getattr(target, f.name)) for f in dataclasses.fields(target)
             if f.name not in ("faults",) and getattr(target, f.name) not in (None, (), {})}
    for key in ("stats_path", "health_path"):
        if getattr(target, key) is None:
            table[key] = False
    return table


def _supports(adapter: Adapter, method: str, *args: Any) -> bool:
    try:
        getattr(adapter, method)(*args)
    except Unsupported:
        return False
    except Exception:  # an adapter that cannot encode dummy values still has the message
        return True
    return True


def capabilities(target: Target, adapter: Adapter, config: ExploreConfig, *, upstream: bool) -> Capabilities:
    """What the explorer may do against ``target`` (reference options only where the protocol is the reference one)."""
    reference = adapter.name == "reference"
    agents: tuple[str, ...] = ()
    if reference:
        # The agents it declares; "upstream" only with a fake upstream to stream from.
        agents = tuple(a for a in ("async", "blocking", "upstream") if target.has_agent(a)
                       and (a != "upstream" or upstream or target.upstream is not None))
    pubsub = all(_supports(adapter, m, "t", "x") for m in ("encode_subscribe", "encode_unsubscribe")) and \
        _supports(adapter, "encode_publish", "t", {}, "x")
    return Capabilities(
        sessions=config.sessions,
        max_steps=config.max_steps,
        agents=agents,
        options=reference,
        heartbeat=_supports(adapter, "encode_heartbeat", "x"),
        pubsub=pubsub,
        # The bad-input table and its ERROR codes are the reference protocol's.
        bad_frames=reference,
        oversize=reference,
        proxy=config.proxy,
    )


class TargetHost:
    """The exploration's target, its adapter, and (for the reference server) a fake upstream."""

    def __init__(self, ctx: Context, config: ExploreConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.target: Target = ctx.target
        self.adapter = load_adapter(self.target)
        self.sup: Supervisor | None = None
        self.upstream: FakeUpstream | None = None
        self.restarts = 0
        self.initial: dict[str, Any] | None = None
        # Not recorded in the case's history: one sample per program would swamp it.
        self.probes = Observer(None, stats_path=self.target.stats_path, python_probe=self.target.python_probe,
                               stats_keys=self.target.stats_keys)
        # A target that declares its LLM upstream gets the case's fake from the Context; one
        # that only has the "upstream" agent (the reference server) gets a long-streaming fake here.
        self.own_upstream = config.upstream and self.target.upstream is None and self.target.has_agent("upstream")
        self.caps = capabilities(self.target, self.adapter, config, upstream=self.own_upstream)

    async def start(self) -> Supervisor:
        env: dict[str, str] = {}
        if self.own_upstream and "upstream" in self.caps.agents:
            if self.upstream is None:
                # Long streams: an upstream reply is as long as the explorer's "long" requests.
                self.upstream = await self.ctx.fake_upstream(tokens=100_000, token_delay_ms=20)
            env["OPENAI_BASE_URL"] = self.upstream.base_url
        self.sup = await self.ctx.start_target(env=env, name=f"target{self.restarts + 1}")
        self.initial = await self.probes.stats(self.sup)
        return self.sup

    async def restart(self, why: str) -> Supervisor:
        self.restarts += 1
        if self.sup is not None:
            self.ctx.history.observe("explore", "restart", reason=why, pid=self.sup.pid)
            await self.sup.stop()
        return await self.start()

    async def env(self) -> tuple[RunEnv, dict[str, Any] | None]:
        """A live target for the next program, and its idle figures just sampled."""
        if self.sup is None:
            await self.start()
        elif not self.sup.is_running():
            await self.restart("the target was not running")
        assert self.sup is not None
        base = await self.probes.stats(self.sup)
        if base is not None and self.initial is not None and self._dirty(base):
            await self.restart("its idle figures drifted from the first baseline")
            base = await self.probes.stats(self.sup)
        env = RunEnv(self.target, self.sup, self.adapter, self.config, upstream=self.upstream,
                     heartbeat=self.caps.heartbeat, options=self.caps.options)
        return env, base

    def _dirty(self, base: dict[str, Any]) -> bool:
        assert self.initial is not None
        for k in _DIRTY_KEYS:
            a, b = base.get(k), self.initial.get(k)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a - b >= self.config.dirty_restart:
                return True
        return False
