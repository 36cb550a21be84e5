"""The checker registry: names from where checkers live, unique, aliases, and no invented check names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from test_checkers_timeline import assert_fail, assert_pass, assert_unknown

from harness import checkers
from harness.checkers.registry import Registry, RegistryError, UnknownCheck
from harness.core.verdict import Verdict, passed

ROOT = Path(__file__).resolve().parent.parent


def _defined_in(module: str, fn: Any, name: str | None = None) -> Any:
    """``fn`` as if written at module level of ``module`` (what the decorator reads)."""
    fn.__module__ = module
    fn.__name__ = fn.__qualname__ = name or fn.__name__
    return fn


def _rule(name: str) -> Any:
    def rule(x: Any = None) -> Verdict:
        """Always passes."""
        return passed(name, "fine")

    return rule


# -- names come from modules ---------------------------------------------------------
def test_a_check_name_is_its_module_and_function():
    """ack_latency defined in harness.checkers.interrupts registers as interrupts.ack_latency."""
    reg = Registry()
    fn = reg.checker(_defined_in("harness.checkers.interrupts", _rule("interrupts.ack_latency"), "ack_latency"))
    assert fn.check_name == "interrupts.ack_latency"
    assert reg.resolve("interrupts.ack_latency").function is fn
    assert reg.resolve("interrupts.ack_latency").module == "harness.checkers.interrupts"


def test_every_registered_name_is_where_its_checker_is_defined():
    """For each check, area.rule is the module under harness.checkers and the function's name."""
    for c in checkers.REGISTRY:
        area, rule = c.name.split(".")
        assert c.module == f"harness.checkers.{area}", c.name
        assert c.function.__name__ == rule, c.name
        assert getattr(importlib.import_module(c.module), rule) is c.function, c.name


def test_a_checker_defined_where_no_name_can_come_from_is_refused():
    """Outside the package, in a private module, nested or private: no check name, so an error."""
    reg = Registry()
    for module, name in (("tests.helpers", "rule"), ("harness.checkers", "rule"),
                         ("harness.checkers._core", "rule"), ("harness.checkers.a.b", "rule"),
                         ("harness.checkers.area", "_rule")):
        with pytest.raises(RegistryError, match="checker"):
            reg.checker(_defined_in(module, _rule("x.y"), name))
    nested = _defined_in("harness.checkers.area", _rule("area.rule"))
    nested.__qualname__ = "outer.<locals>.rule"
    with pytest.raises(RegistryError, match="module-level"):
        reg.checker(nested)


def test_a_checker_without_a_docstring_is_refused():
    """The catalogue says what each check holds from its docstring's first line."""
    def rule() -> Verdict:
        return passed("area.rule", "fine")

    with pytest.raises(RegistryError, match="docstring"):
        Registry().checker(_defined_in("harness.checkers.area", rule))


def test_importing_the_package_fills_the_registry_from_every_module():
    """Every public module of harness.checkers is imported; CHECKS is exactly the registry."""
    for info in pkgutil.iter_modules(checkers.__path__):
        if not info.name.startswith("_"):
            assert f"harness.checkers.{info.name}" in sys.modules, info.name
    assert sorted(checkers.CHECKS) == [c.name for c in checkers.REGISTRY]
    assert {"keepalive.dropped_within", "client.exit_time", "bounds.within"} <= set(checkers.CHECKS)


def test_the_catalogue_lists_every_check():
    """python -m harness.checkers prints one row per registered check."""
    from harness.checkers.__main__ import catalogue

    rows = [ln for ln in catalogue().splitlines() if ln.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == sorted(checkers.CHECKS)


# -- unique names, aliases ---------------------------------------------------------------
def test_a_name_is_given_once():
    """A name already another check's alias is refused; the same definition again (a reload) replaces itself."""
    reg = Registry()
    reg.checker(aliases=("area.old",))(_defined_in("harness.checkers.area", _rule("area.new"), "new"))
    with pytest.raises(RegistryError, match=re.escape("already an alias of area.new")):
        reg.checker(_defined_in("harness.checkers.area", _rule("area.old"), "old"))
    again = _defined_in("harness.checkers.area", _rule("area.new"), "new")
    reg.checker(aliases=("area.old",))(again)
    assert len(reg) == 1 and reg.resolve("area.old").function.__wrapped__ is again


def test_registered_names_and_aliases_are_all_distinct():
    """No two checks share a name, and no alias is also a check's name or another check's alias."""
    names = [c.name for c in checkers.REGISTRY]
    assert len(names) == len(set(names))
    aliases = [a for c in checkers.REGISTRY for a in c.aliases]
    assert len(aliases) == len(set(aliases)) and not set(aliases) & set(names)


def test_an_alias_clash_is_refused():
    """An alias already a check's name, or already another check's alias, is an error."""
    reg = Registry()
    reg.checker(_defined_in("harness.checkers.area", _rule("area.one"), "one"))
    with pytest.raises(RegistryError, match=re.escape("already names area.one")):
        reg.checker(aliases=("area.one",))(_defined_in("harness.checkers.area", _rule("area.two"), "two"))
    reg.checker(aliases=("area.old",))(_defined_in("harness.checkers.area", _rule("area.three"), "three"))
    with pytest.raises(RegistryError, match=re.escape("already names area.three")):
        reg.checker(aliases=("area.old",))(_defined_in("harness.checkers.area", _rule("area.four"), "four"))
    with pytest.raises(RegistryError, match=re.escape("not an earlier dotted check name")):
        reg.checker(aliases=("old",))(_defined_in("harness.checkers.area", _rule("area.five"), "five"))


def test_an_earlier_name_resolves_to_the_current_check():
    """A check renamed keeps its old name as an alias: known-failures and baselines still match."""
    reg = Registry()
    fn = reg.checker(aliases=("replies.upstream_closed",))(
        _defined_in("harness.checkers.interrupts", _rule("interrupts.upstream_closed"), "upstream_closed"))
    assert reg.resolve("replies.upstream_closed").function is fn
    assert reg.resolve("replies.upstream_closed@after the INTERRUPT").name == "interrupts.upstream_closed"
    assert reg.canonical("replies.upstream_closed@row 1") == "interrupts.upstream_closed@row 1"
    assert reg.canonical("interrupts.upstream_closed") == "interrupts.upstream_closed"
    assert "replies.upstream_closed" in reg


def test_a_name_no_checker_registered_resolves_to_an_error_naming_close_ones():
    """resolve() refuses an unknown name and suggests the nearest; canonical() leaves it as it is."""
    with pytest.raises(UnknownCheck, match=re.escape("did you mean keepalive.dropped_within")):
        checkers.resolve("keepalive.dropped_withn")
    assert checkers.canonical("interactive.exit.completed") == "interactive.exit.completed"
    assert checkers.canonical("input.error_code@not json") == "input.error_code@not json"
    assert checkers.resolve("input.error_code@not json").function is checkers.error_code


# -- a call site cannot invent a check -------------------------------------------------------
def test_within_bound_refuses_a_check_name_no_checker_registered():
    """within_bound(check=...) with an unregistered name raises instead of judging under it."""
    with pytest.raises(UnknownCheck, match=re.escape("no checker is registered as 'keepalive.silence'")):
        checkers.within_bound(1850.0, 2500, what="drop", check="keepalive.silence")
    with pytest.raises(RegistryError, match="not a duration check"):
        checkers.within_bound(1850.0, 2500, what="drop", check="shutdown.finals")


def test_within_bound_with_a_registered_name_is_that_checks_own_verdict():
    """keepalive.dropped_within and client.exit_time through within_bound equal the checks called directly."""
    for value in (1850.0, 3100.0, None):
        via = checkers.within_bound(value, 2500, what="drop of a silent peer (stop_reading)",
                                    check="keepalive.dropped_within")
        assert via == checkers.keepalive.dropped_within(value, 2500, what="drop of a silent peer (stop_reading)")
        via = checkers.within_bound(value, 1000, what="client exit after quit 0", check="client.exit_time",
                                    stacks=["Thread 0x1"])
        assert via == checkers.client.exit_time(value, 1000, what="client exit after quit 0", stacks=["Thread 0x1"])


def test_the_rule_checks_keep_the_words_scenarios_produced():
    """keepalive.dropped_within and client.exit_time say what within_bound said under those names."""
    v = assert_fail(checkers.keepalive.dropped_within(None, 2500, what="drop of a silent peer (frozen_process)"),
                    "drop of a silent peer (frozen_process): did not happen within 2500 ms")
    assert v.check == "keepalive.dropped_within" and v.figures["hung"] is True
    v = assert_pass(checkers.keepalive.dropped_within(1850.0, 2500, what="drop"))
    assert v.message == "drop took 1850.0 ms <= bound 2500 ms" and v.figures["value_ms"] == 1850.0
    v = assert_fail(checkers.client.exit_time(None, 1000, what="client exit after quit 0",
                                              stacks='Thread 0x1 (idle): "loop"'),
                    "client exit after quit 0: did not happen within 1000 ms; stacks: Thread 0x1")
    assert v.check == "client.exit_time"
    assert_fail(checkers.client.exit_time(1250.0, 1000), "client exit took 1250.0 ms > bound 1000 ms")


def test_a_checker_judging_under_an_unregistered_name_is_unknown():
    """A verdict named otherwise than any registered check is a checker bug, never a pass."""
    reg = Registry()
    fn = reg.checker(_defined_in("harness.checkers.area", _rule("area.typo"), "rule"))
    assert_unknown(fn(), "unregistered name 'area.typo'")


# -- the two signature conventions -------------------------------------------------------------
def test_every_checker_takes_a_history_first_or_values_first_with_keyword_options():
    """(history, ...) or (value, bound, *, what): a ``what`` is keyword-only, a history always first."""
    for c in checkers.REGISTRY:
        params = list(c.signature.parameters.values())
        assert params, c.name
        assert c.reads_history == (params[0].name == "history"), c.name
        assert all(p.name != "history" for p in params[1:]), c.name
        for p in params:
            if p.name == "what":
                assert p.kind is inspect.Parameter.KEYWORD_ONLY, c.name


def test_history_checkers_given_no_history_are_unknown():
    """Every (history, ...) checker given something else says there was no history to judge."""
    for c in checkers.REGISTRY:
        if c.reads_history:
            assert_unknown(c.function(None), "no history")


def test_a_value_checker_given_its_figure_name_positionally_is_refused():
    """``what`` and ``port`` are keyword-only: a call with them in a value's place is unknown, never judged."""
    for v in (checkers.back_to_baseline("tasks", 3, 57, 2, cycles=300),
              checkers.growth_per_1000("fds", [(0, 1), (10, 2), (20, 3)], 1),
              checkers.probe_agrees(3, 57, "tasks", 1),
              checkers.port_free(False, 8765)):
        assert_unknown(v, "checker crashed", "TypeError", "positional argument")


def test_a_call_fitting_neither_form_says_what_the_current_one_wants():
    """A value checker called without its ``what`` is unknown, naming the missing argument."""
    assert_unknown(checkers.back_to_baseline(4, 3, 2), "missing 1 required keyword-only argument: 'what'")


# -- what docs and known-failures files name ----------------------------------------------------
def _doc_check_names() -> set[str]:
    text = (ROOT / "docs" / "scenarios.md").read_text()
    return {m.group(1) for m in re.finditer(r"^\| `([a-z_]+\.[a-z_0-9]+)(?:@[^`]*)?`", text, re.M)}


def test_the_checks_the_docs_and_examples_name_are_registered():
    """docs/scenarios.md's check tables and examples/known-failures.toml name only registered checks."""
    named = _doc_check_names()
    assert len(named) >= 30
    examples = (ROOT / "examples" / "known-failures.toml").read_text()
    named |= {m.group(1) for m in re.finditer(r'check = "[^"]*::([a-z_]+\.[a-z_0-9]+)"', examples)}
    assert sorted(n for n in named if n not in checkers.CHECKS) == []
