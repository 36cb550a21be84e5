"""Cases that need what a target lacks are skipped with the reason before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.engine.capabilities import unmet
from harness.engine.scenario import Case, run_case_sync
from harness.target.declared import Capabilities
from harness.target.spec import Target, reference_target, target_from_cmd


async def _never(ctx, **_):  # type: ignore[no-untyped-def]
    raise AssertionError("a case whose needs are unmet must not run")


def _case(*needs: str) -> Case:
    return Case(scenario="needs.test", name="x", fn=_never, requires=frozenset(needs))


# A command that would fail loudly if anything tried to start it.
NOT_STARTABLE = "/nonexistent/server --port {port}"


def test_an_undeclared_agent_skips_the_case_with_the_reason(tmp_path: Path):
    """A target declaring only the async agent skips a blocking case; nothing is started."""
    target = Target(name="svc", argv=(NOT_STARTABLE,), capabilities=Capabilities(agents=("async",)))
    out = run_case_sync(_case("agent:blocking"), target, seed=1, run_dir=tmp_path)
    assert out.skipped == "needs the blocking agent (the target declares async)"
    assert out.verdicts == [] and out.error is None


def test_a_protocol_without_subscribe_skips_pubsub_cases():
    """A declarative protocol with no subscribe template lacks SUBSCRIBE; the reference one has it."""
    decl = Target(name="svc", argv=(NOT_STARTABLE,), adapter="declarative", adapter_config={
        "request": {"template": {"type": "ask", "id": "{request_id}", "text": "{text}"}},
        "interrupt": {"template": {"type": "stop", "id": "{interrupt_id}"}},
        "match": [{"kind": "ready", "when": {"type": "hello"}}, {"kind": "final", "when": {"type": "done"}},
                  {"kind": "chunk", "when": {"type": "tok"}}],
    })
    assert unmet({"message:subscribe"}, decl) == ["needs the SUBSCRIBE message (the target's protocol has none)"]
    assert unmet({"message:subscribe", "message:heartbeat"}, reference_target()) == []


def test_hooks_and_interactive_clients_are_declared_not_assumed():
    """The stuck-drain hook and an interactive client are needs a bare command does not meet."""
    bare = target_from_cmd(NOT_STARTABLE)
    assert unmet({"hook:stuck_drain", "interactive"}, bare) == [
        "needs a way to make its drain stick (capabilities.hooks.stuck_drain)",
        "needs an interactive client (the target names none)",
    ]
    assert unmet({"hook:stuck_drain", "hook:drain_delay", "interactive", "agent:blocking"}, reference_target()) == []
    assert reference_target().capabilities.hook_args("drain_delay", ms=300) == ("--drain-delay-ms", "300")


def test_an_unknown_need_is_a_scenario_bug_not_a_skip():
    """A scenario asking for a capability no one can declare is refused loudly."""
    with pytest.raises(ValueError, match="unknown capability 'telepathy'"):
        unmet({"telepathy"}, reference_target())
