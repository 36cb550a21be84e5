"""What a client program sees inside one worker: the URL, its History, a Client factory.

A *program* is a module-level ``async def program(ctx: WorkerContext) -> value``.
The fleet runs it once per worker; ``ctx`` tells it which worker it is (of
how many), hands it a :class:`harness.client.connection.Client` factory whose
names are unique across workers and whose connections leave from the
worker's loopback source addresses, a seed, the run's parameters, and a
channel to the parent (:meth:`WorkerContext.report`,
:meth:`WorkerContext.wait_signal`). The value it returns (picklable) comes
back beside the merged history.

Work is split by a *global index*: :meth:`WorkerContext.share` gives this
worker's indices of ``range(total)`` and :meth:`WorkerContext.rng` a random
generator per index, so a program does the same work on one worker or on
many for a given seed, and only where it runs changes.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.client.connection import Client
from harness.core.history import History
from harness.target.spec import check_loopback

__all__ = [
    "Channel",
    "FleetError",
    "Program",
    "WorkerContext",
    "assign_sources",
    "check_url",
    "local_host",
    "source_addresses",
    "worker_prefix",
]

#: A client program: one call per worker, its value returned to the parent.
Program = Callable[["WorkerContext"], Awaitable[Any]]


class FleetError(RuntimeError):
    """A fleet was misused or one of its workers failed; the message names the worker."""


def local_host() -> str:
    """The name records from this machine carry: monotonic times compare only within it."""
    return socket.gethostname() or "localhost"


def worker_prefix(worker: int, workers: int) -> str:
    """The prefix of this worker's client names: none with a single worker (names as today)."""
    return "" if workers <= 1 else f"w{worker}."


# -- source addresses -------------------------------------------------------------
def source_addresses(spec: int | Sequence[str] | None) -> list[str]:
    """Loopback source addresses: N gives 127.0.0.1 .. 127.0.0.N; a list is checked as given.

    One source address reaches one server address and port from at most the
    ephemeral port range (``/proc/sys/net/ipv4/ip_local_port_range``, about
    28,000 ports): more connections to one server need more source addresses.
    Every address of 127.0.0.0/8 is on ``lo`` on Linux without configuration.
    """
    if spec is None:
        return []
    if isinstance(spec, bool):
        raise FleetError(f"source addresses: {spec!r} is neither a count nor a list of addresses")
    if isinstance(spec, int):
        if not 1 <= spec <= 254:
            raise FleetError(f"source addresses: {spec} is not between 1 and 254")
        return [f"127.0.0.{n}" for n in range(1, spec + 1)]
    if isinstance(spec, str):
        spec = [a for a in spec.split(",") if a.strip()]
    out = []
    for raw in spec:
        addr = str(raw).strip()
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise FleetError(f"source address {addr!r} is not an IP address") from None
        if not ip.is_loopback:
            raise FleetError(f"source address {addr!r} is outside loopback (127.0.0.0/8, ::1)")
        out.append(addr)
    if len(set(out)) != len(out):
        raise FleetError(f"source addresses repeat: {', '.join(out)}")
    return out


def assign_sources(addresses: Sequence[str], workers: int) -> list[list[str]]:
    """Each worker's source addresses: dealt round-robin; with fewer addresses than
    workers, workers share them (worker i takes address i mod n)."""
    if not addresses:
        return [[] for _ in range(workers)]
    if len(addresses) <= workers:
        return [[addresses[i % len(addresses)]] for i in range(workers)]
    return [list(addresses[i::workers]) for i in range(workers)]


# -- the channel to the parent ------------------------------------------------------
class Channel(Protocol):
    """How a program talks to the parent that started it (a socket, or a queue in-process)."""

    async def report(self, worker: int, kind: str, data: Mapping[str, Any]) -> None: ...

    async def wait_signal(self, name: str, timeout: float) -> Any: ...


class _NoChannel:
    """For engines without a parent channel (the distributed engine)."""

    async def report(self, worker: int, kind: str, data: Mapping[str, Any]) -> None:
        raise FleetError("this engine has no channel to the parent: report() is for local fleets")

    async def wait_signal(self, name: str, timeout: float) -> Any:
        raise FleetError("this engine has no channel to the parent: wait_signal() is for local fleets")


@dataclass
class WorkerContext:
    """One worker's view of the run; see the module docstring."""

    url: str
    history: History
    worker: int = 0
    workers: int = 1
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    #: This worker's loopback source addresses (empty: the kernel picks, as today).
    sources: list[str] = field(default_factory=list)
    host: str = field(default_factory=local_host)
    allow_remote: bool = False
    channel: Channel = field(default_factory=_NoChannel)
    _next_source: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._next_source = itertools.cycle(self.sources) if self.sources else None

    @property
    def prefix(self) -> str:
        return worker_prefix(self.worker, self.workers)

    def client(self, name: str, *, url: str | None = None, **kw: Any) -> Client:
        """A Client recording into this worker's History, named ``<prefix><name>``, from
        the next of this worker's source addresses (round-robin per client); to the run's
        URL unless another is given (a run spread over several target processes)."""
        target = url or self.url
        kw.setdefault("history", self.history)
        kw.setdefault("allow_remote", self.allow_remote)
        if self._next_source is not None and "local_addr" not in kw:
            kw["local_addr"] = (next(self._next_source), 0)
        return Client(target, name=f"{self.prefix}{name}", **kw)

    def share(self, total: int) -> range:
        """This worker's global indices of ``range(total)``: every ``workers``-th from ``worker``."""
        return range(self.worker, total, self.workers)

    def rng(self, index: int) -> random.Random:
        """A generator for global item ``index``: the same draws wherever the item runs."""
        return random.Random(f"wschaos-fleet/{self.seed}/{index}")

    async def report(self, kind: str, /, **data: Any) -> None:
        """Tell the parent something (``kind`` plus picklable data): progress, a step held."""
        await self.channel.report(self.worker, kind, data)

    async def wait_signal(self, name: str, timeout: float) -> Any:
        """Wait (bounded) for the parent's signal ``name``; its payload, or None at the bound."""
        return await self.channel.wait_signal(name, timeout)


def check_url(url: str, allow_remote: bool) -> None:
    """The fleet sends traffic to loopback only, unless remote targets were allowed."""
    check_loopback(url, where="fleet target URL", allow_remote=allow_remote)
