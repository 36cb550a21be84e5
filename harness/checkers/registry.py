"""The checker registry: a checker registers itself where it is defined, and its name comes from there.

::

    # harness/checkers/interrupts.py
    @checker
    def ack_latency(history: History, bound_ms: float, percentile: float = 99) -> Verdict:
        \"\"\"The p-th percentile of INTERRUPT->ACK latency is within ``bound_ms``.\"\"\"

registers the check ``interrupts.ack_latency``: the module directly under
``harness.checkers`` names the area, the function the rule. There is no
second list to keep: importing the package imports every module in it, and
the registry holds whatever those modules defined. A name can therefore not
be missed, invented at a call site, or given twice.

The decorator also wraps the checker so that its own bug or a missing
history never reads as a verdict (both become ``unknown``), and so that its
figures always serialise.

A rename keeps old reports working: ``@checker(aliases=("old.name",))``
makes :func:`resolve` and :func:`canonical` map the earlier name to the
current one, for known-failures files and baselines written before.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, overload

from harness.core.history import History
from harness.core.verdict import Verdict, unknown

__all__ = [
    "CHECKS",
    "REGISTRY",
    "Check",
    "Registry",
    "RegistryError",
    "UnknownCheck",
    "canonical",
    "checker",
    "jsonable",
    "resolve",
]

F = TypeVar("F", bound=Callable[..., Verdict])


class RegistryError(Exception):
    """A checker defined where no check name can come from, a name given twice, or a check misnamed
    at a call site. A programming error: raised, never turned into a verdict."""


class UnknownCheck(RegistryError, LookupError):
    """No checker is registered under that name, nor as an alias."""


@dataclass(frozen=True)
class Check:
    """One registered checker: its stable name, the callable scenarios call, and where it lives."""

    name: str
    function: Callable[..., Verdict]
    module: str
    aliases: tuple[str, ...] = ()
    #: The first parameter is ``history``: the checker judges a :class:`History`.
    reads_history: bool = False
    signature: inspect.Signature = field(default_factory=inspect.Signature, compare=False, repr=False)

    @property
    def area(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def summary(self) -> str:
        """The docstring's first line: what the check holds a service to."""
        return (inspect.getdoc(self.function) or "").strip().splitlines()[0]


class Registry:
    """Check name -> :class:`Check`, filled by the :meth:`checker` decorator where checkers are defined."""

    def __init__(self, package: str = "harness.checkers") -> None:
        self.package = package
        self._checks: dict[str, Check] = {}
        self._aliases: dict[str, str] = {}
        self._by_function: dict[int, Check] = {}

    # -- registering ---------------------------------------------------------
    @overload
    def checker(self, fn: F, /) -> F: ...

    @overload
    def checker(self, fn: None = None, /, *, aliases: Iterable[str] = ()) -> Callable[[F], F]: ...

    def checker(self, fn: F | None = None, /, *, aliases: Iterable[str] = ()) -> F | Callable[[F], F]:
        """Register ``fn`` as the check ``<module>.<function>``; use bare or with options.

        ``aliases``: earlier names of this check, still accepted by :meth:`resolve`.
        """
        def register(f: F) -> F:
            return self._register(f, tuple(aliases))

        return register(fn) if fn is not None else register

    def _register(self, fn: F, aliases: tuple[str, ...]) -> F:
        name = self._derive(fn)
        if not (inspect.getdoc(fn) or "").strip():
            raise RegistryError(f"checker {name} has no docstring: its first line says what the check holds")
        for alias in aliases:
            if alias.count(".") < 1 or "@" in alias or alias == name:
                raise RegistryError(f"checker {name}: alias {alias!r} is not an earlier dotted check name")
        sig = inspect.signature(fn)
        params = list(sig.parameters)
        reads_history = bool(params) and params[0] == "history"
        wrapped = _guard(name, fn, reads_history=reads_history, registry=self)
        entry = Check(name, wrapped, fn.__module__, aliases, reads_history, sig)
        old = self._checks.get(name)
        if old is not None and (old.module, old.function.__qualname__) != (fn.__module__, fn.__qualname__):
            raise RegistryError(f"check {name} is registered twice: {old.module}.{old.function.__qualname__} "
                                f"and {fn.__module__}.{fn.__qualname__}")
        for alias in aliases:
            taken = self._checks.get(alias) or self._checks.get(self._aliases.get(alias, ""))
            if taken is not None and taken.name != name:
                raise RegistryError(f"checker {name}: alias {alias!r} already names {taken.name}")
        if name in self._aliases and self._aliases[name] != name:
            raise RegistryError(f"check {name} is already an alias of {self._aliases[name]}")
        if old is not None:  # the same definition again (a module reloaded): replace it
            self._forget(old)
        self._checks[name] = entry
        self._aliases.update(dict.fromkeys(aliases, name))
        self._by_function[id(wrapped)] = entry
        return wrapped  # type: ignore[return-value]

    def _forget(self, entry: Check) -> None:
        self._by_function.pop(id(entry.function), None)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)

    def _derive(self, fn: Callable[..., Any]) -> str:
        """``<area>.<function>``, the area being the module directly under the package."""
        module, qualname = getattr(fn, "__module__", ""), getattr(fn, "__qualname__", "?")
        prefix = self.package + "."
        area = module[len(prefix):] if module.startswith(prefix) else ""
        where = f"{qualname} in {module}"
        if not area or "." in area or area.startswith("_"):
            raise RegistryError(f"{where}: a checker is defined in a public module directly under "
                                f"{self.package}; that module's name is the area of its check name")
        if "." in qualname or fn.__name__.startswith("_"):
            raise RegistryError(f"{where}: a checker is a public module-level function; "
                                f"its name is the rule part of the check name")
        return f"{area}.{fn.__name__}"

    # -- looking up ----------------------------------------------------------
    def resolve(self, name: str) -> Check:
        """The checker a check name (or an earlier alias) stands for; ``name@label`` resolves as ``name``."""
        base = name.split("@", 1)[0]
        entry = self._checks.get(self._aliases.get(base, base))
        if entry is None:
            near = difflib.get_close_matches(base, [*self._checks, *self._aliases], n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise UnknownCheck(f"no checker is registered as {base!r}{hint}")
        return entry

    def canonical(self, name: str) -> str:
        """``name`` under its current check name (an alias replaced, ``@label`` kept).

        A name no checker registered (a scenario's own ``<scenario>.completed``, a
        glob) comes back unchanged, so consumers can apply it to every verdict.
        """
        base, at, label = name.partition("@")
        current = self._aliases.get(base, base)
        return f"{current}{at}{label}" if current in self._checks else name

    def entry_for(self, fn: Any) -> Check | None:
        """The registration of a checker callable, or None for anything else (helpers, lambdas)."""
        entry = self._by_function.get(id(fn))
        return entry if entry is not None and entry.function is fn else None

    def functions(self) -> Mapping[str, Callable[..., Verdict]]:
        """A live, read-only view: check name -> checker callable."""
        return _FunctionView(self._checks)

    @property
    def aliases(self) -> Mapping[str, str]:
        """Earlier name -> current check name."""
        return MappingProxyType(self._aliases)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._aliases.get(name, name) in self._checks

    def __iter__(self) -> Iterator[Check]:
        return iter(sorted(self._checks.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._checks)


class _FunctionView(Mapping[str, Callable[..., Verdict]]):
    """CHECKS: check name -> checker, always what the registry holds now."""

    def __init__(self, checks: dict[str, Check]) -> None:
        self._checks = checks

    def __getitem__(self, name: str) -> Callable[..., Verdict]:
        return self._checks[name].function

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._checks))

    def __len__(self) -> int:
        return len(self._checks)

    def __repr__(self) -> str:
        return f"CHECKS({', '.join(self)})"


def _guard(name: str, fn: Callable[..., Verdict], *, reads_history: bool,
           registry: Registry) -> Callable[..., Verdict]:
    """``fn`` made safe to trust: no history, a crash or an unregistered verdict name is ``unknown``."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Verdict:
        if reads_history:
            hist = args[0] if args else kwargs.get("history")
            if not isinstance(hist, History):
                return unknown(name, f"no history to judge (got {type(hist).__name__})")
        try:
            v = fn(*args, **kwargs)
        except RegistryError:
            raise  # the call site named a check that does not exist: not the target's doing
        except Exception as exc:  # a checker's bug must not read as a verdict
            return unknown(name, f"checker crashed: {type(exc).__name__}: {exc}",
                           error=f"{type(exc).__name__}: {exc}")
        if v.check.split("@", 1)[0] not in registry._checks:
            return unknown(name, f"checker bug: it judged under the unregistered name {v.check!r}",
                           error=f"unregistered check name {v.check!r}")
        return Verdict(v.check, v.status, v.message, jsonable(v.figures))

    run.check_name = name  # type: ignore[attr-defined]
    return run


def jsonable(value: Any) -> Any:
    """Figures as plain JSON: tuples/sets to lists, NaN/inf to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


#: The registry of wschaos's checkers; ``harness.checkers`` fills it by importing its modules.
REGISTRY = Registry()
checker = REGISTRY.checker
resolve = REGISTRY.resolve
canonical = REGISTRY.canonical
#: Check name -> checker, for reports, documentation and the proofs' meta-test.
CHECKS = REGISTRY.functions()
