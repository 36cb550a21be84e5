"""What a case needs of its target, checked before anything starts.

A scenario declares its needs (``@scenario(..., requires=...)``, fixed or
computed from a case's parameters) in this small vocabulary; a target that
lacks one gets the case *skipped with the reason*, shown in the progress line
and the summary, never run into a crash or a pass that could not have failed:

==================  ============================================================
``stats``           ``/stats`` or the injected Python probe
``pty``             a real terminal (always here)
``reference``       the reference server's own test switches
``agent:NAME``      the agent ``async``, ``upstream`` or ``blocking`` (declared)
``message:NAME``    a client message of the protocol (``interrupt``, ``heartbeat``,
                    ``subscribe``, ...) or what the service answers with: ``ack`` (interrupts
                    are acknowledged), ``final`` (a stopped reply ends with a final frame),
                    ``interrupt_target`` (an interrupt names the request it stops),
                    ``seq`` (chunks carry a sequence number); see ``Adapter.messages``
``interactive``     an interactive client to drive
``hook:NAME``       a declared test condition (``stuck_drain``, ``drain_delay``)
==================  ============================================================
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.protocol.adapters import AdapterError, load_adapter
from harness.target.declared import HOOKS
from harness.target.spec import Target

__all__ = ["KNOWN_PREFIXES", "unmet"]

KNOWN_PREFIXES = ("agent:", "message:", "hook:")
#: Why a ``message:NAME`` need is unmet, for the names that are not client messages.
_MESSAGE_WHY = {
    "ack": "needs interrupts to be acknowledged (the target sends no ACK: interrupt.answer)",
    "final": "needs a final frame for a stopped reply (the target sends none: interrupt.answer)",
    "interrupt_target": "needs interrupts that name the request they stop (the target's interrupt "
                        "names none, it stops whatever runs)",
    "seq": "needs chunks that carry a sequence number (the target declares none: fields.seq)",
}
_HOOK_WHY = {
    "stuck_drain": "a way to make its drain stick (capabilities.hooks.stuck_drain)",
    "drain_delay": "a way to make its drain last (capabilities.hooks.drain_delay)",
}


def unmet(needs: Iterable[str], target: Target) -> list[str]:
    """One reason per need the target does not meet; empty when the case can run."""
    reasons: list[str] = []
    messages: frozenset[str] | None = None
    for need in sorted(set(needs)):
        if need == "pty":
            continue
        if need == "stats":
            if not target.stats_path and not target.python_probe:
                reasons.append("needs /stats or the injected Python probe (python_probe = true)")
        elif need == "reference":
            if target.name != "reference":
                reasons.append("needs the reference server's test switches")
        elif need == "interactive":
            if target.interactive_spec() is None:
                reasons.append("needs an interactive client (the target names none)")
        elif need.startswith("agent:"):
            agent = need.split(":", 1)[1]
            if not target.has_agent(agent):
                reasons.append(f"needs the {agent} agent (the target declares {', '.join(target.capabilities.agents) or 'none'})")
        elif need.startswith("message:"):
            msg = need.split(":", 1)[1]
            if messages is None:
                try:
                    messages = load_adapter(target).messages
                except AdapterError as exc:
                    reasons.append(f"its adapter cannot be built: {exc}")
                    messages = frozenset()
                    continue
            if msg not in messages:
                reasons.append(_MESSAGE_WHY.get(msg, f"needs the {msg.upper()} message (the target's protocol has none)"))
        elif need.startswith("hook:"):
            hook = need.split(":", 1)[1]
            if hook not in HOOKS:
                raise ValueError(f"unknown hook {hook!r} in a scenario's requirements")
            if target.capabilities.hook_args(hook) is None:
                reasons.append(f"needs {_HOOK_WHY[hook]}")
        else:
            raise ValueError(f"unknown capability {need!r} in a scenario's requirements")
    return reasons
