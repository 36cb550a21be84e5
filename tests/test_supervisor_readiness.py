"""Readiness parsing, from plain values: what a ready line says about the address,
which URL is polled, and how a wait is named in a start error. No process is started."""

from __future__ import annotations

import re

from harness.process.readiness import (
    KINDS,
    Ready,
    address_from_line,
    describe_wait,
    has_port_placeholder,
    port_problem,
    readiness_url,
)
from harness.target.spec import LISTENING_PATTERN, Readiness


def ready_line(line: str, pattern: str = LISTENING_PATTERN, *, host: str = "127.0.0.1", port: int = 0,
               port_given: bool = False) -> Ready:
    m = re.search(pattern, line)
    assert m is not None, f"/{pattern}/ does not match {line!r}"
    return address_from_line(m, host=host, port=port, port_given=port_given)


def test_the_ready_line_names_the_port_bound():
    """With port 0 and no {port}: "LISTENING 127.0.0.1:8765" means the target is on 8765."""
    assert ready_line("LISTENING 127.0.0.1:8765") == Ready("127.0.0.1", 8765)


def test_a_port_the_harness_gave_wins_over_the_line():
    """The harness picked 9000 for {port}: a line naming another port does not move it."""
    assert ready_line("LISTENING 127.0.0.1:8765", port=9000, port_given=True) == Ready("127.0.0.1", 9000)


def test_a_loopback_host_in_the_line_is_taken_brackets_stripped():
    """"LISTENING [::1]:8765": the target listens on ::1; "localhost" is loopback too."""
    assert ready_line("LISTENING [::1]:8765") == Ready("::1", 8765)
    assert ready_line("LISTENING localhost:8765") == Ready("localhost", 8765)


def test_a_non_loopback_host_in_the_line_is_ignored():
    """"LISTENING 0.0.0.0:8765": the port is taken, the host stays the loopback one the harness uses."""
    assert ready_line("LISTENING 0.0.0.0:8765") == Ready("127.0.0.1", 8765)
    assert ready_line("LISTENING 10.1.2.3:8765", host="::1") == Ready("::1", 8765)


def test_a_pattern_that_promises_a_port_must_deliver_one():
    """A port group that matched nothing, and no port otherwise: not ready, naming the line."""
    r = ready_line("UP", r"UP(?: on (?P<port>\d+))?")
    assert r.port == 0 and r.problem == "ready line 'UP' named no port and the target has none"


def test_a_line_without_a_port_group_is_ready_without_a_port():
    """A peer process or a client ("CONNECTED") is ready without listening anywhere."""
    assert ready_line("CONNECTED to the server", r"CONNECTED") == Ready("127.0.0.1", 0)


def test_the_http_readiness_url_gets_host_and_port():
    """{host} and {port} in the readiness URL are the target's address."""
    r = Readiness(kind="http", url="http://{host}:{port}/health")
    assert readiness_url(r, "127.0.0.1", 8765) == "http://127.0.0.1:8765/health"
    assert readiness_url(Readiness(kind="http"), "127.0.0.1", 8765) == ""


def test_each_kind_of_wait_is_named_for_the_start_error():
    """The start error says what was waited for: the line's pattern, the port, or the GET."""
    assert describe_wait(Readiness(pattern=r"^READY"), "127.0.0.1", 0) == "a stdout line matching /^READY/"
    assert describe_wait(Readiness(pattern=r"^READY", stream="stderr"), "127.0.0.1", 0) == "a stderr line matching /^READY/"
    assert describe_wait(Readiness(pattern=r"^READY", stream="any"), "127.0.0.1", 0) == "an output line matching /^READY/"
    assert describe_wait(Readiness(kind="port"), "127.0.0.1", 8765) == "port 127.0.0.1:8765 to accept"
    http = Readiness(kind="http", url="http://127.0.0.1:{port}/up")
    assert describe_wait(http, "127.0.0.1", 8765) == "GET http://127.0.0.1:8765/up to answer 2xx"
    assert KINDS == ("line", "port", "http")


def test_port_readiness_without_a_port_is_refused_before_the_start():
    """readiness 'port' with neither target.port nor {port}: nothing to wait on, said before launching."""
    assert port_problem(Readiness(kind="port"), 0) == (
        "readiness 'port' needs a port: give target.port or a {port} in argv"
    )
    assert port_problem(Readiness(kind="port"), 8765) is None
    assert port_problem(Readiness(kind="line"), 0) is None


def test_a_port_placeholder_is_found_inside_an_argument():
    """"--bind=127.0.0.1:{port}" takes the harness's port as well as a bare "{port}"."""
    assert has_port_placeholder(["srv", "--bind=127.0.0.1:{port}"])
    assert has_port_placeholder(["srv", "{port}"])
    assert not has_port_placeholder(["srv", "--port", "8765"])


def test_a_ready_line_on_stderr_is_found_where_the_target_says(tmp_path):
    """readiness.stream = "stderr" (uvicorn's habit): the line is awaited there, and not on stdout."""
    import asyncio
    import sys

    from harness.process.supervisor import Supervisor, TargetStartError
    from harness.target.spec import Target

    code = ("import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print('Uvicorn running on http://127.0.0.1:%d' % s.getsockname()[1], file=sys.stderr, flush=True); "
            "time.sleep(30)")
    pattern = r"Uvicorn running on http://(?P<host>[\d.]+):(?P<port>\d+)"

    async def start(stream: str, bound: float) -> Supervisor:
        target = Target(name="uv", argv=(sys.executable, "-c", code), stats_path=None, health_path=None,
                        readiness=Readiness(pattern=pattern, stream=stream)).with_limits(ready_timeout_s=bound)
        sup = Supervisor(target, tmp_path / stream)
        try:
            await sup.start()
        finally:
            await sup.stop()
        return sup

    assert asyncio.run(start("stderr", 10)).port > 0
    assert asyncio.run(start("any", 10)).port > 0
    try:
        asyncio.run(start("stdout", 1))
    except TargetStartError as exc:
        assert "waited for a stdout line matching" in str(exc)
    else:
        raise AssertionError("a stderr ready line must not satisfy stdout readiness")
