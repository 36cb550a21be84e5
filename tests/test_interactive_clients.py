"""interactive.exit against terminal clients wschaos was not written around, described only by their target files.

``tests/fixtures/clients/menu_client.toml`` (a numbered menu, given the agent's
HTTP base URL, against ``path_sessions.py``) and ``script_runner.toml`` (a
Chinese script runner with no URL argument, a ``(y/N)`` confirmation and only
``q`` to quit, against ``stop_no_ack.py``). Each correct client passes every
case its contract allows; ``CLIENT_DEFECT=loop_thread_leak`` (the loop thread
is never stopped) fails the exit time and the noise, with the client's stacks
saved beside the case; ``CLIENT_DEFECT=no_close_frame`` (the socket is dropped
without a close frame) fails ``client.closed_cleanly`` and nothing else. The
close frame is read off the wire by wschaos's proxy, so the first tests here
prove the frame scanner and the proxy tap on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from harness import checkers
from harness.core.history import History
from harness.core.timing import scaled
from harness.engine.capabilities import unmet
from harness.engine.scenario import REGISTRY, CaseOutcome, load_scenarios, run_case
from harness.nemesis.nemesis import Nemesis
from harness.process.wire import ClientWire, FrameInfo, FrameScanner, tap_proxy
from harness.protocol.adapters import load_adapter
from harness.target.interactive import InteractiveSpec
from harness.target.spec import Target, load_target, reference_target

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "fixtures" / "clients"
EXIT_CASES = ("quit-0", "quit-q", "ctrl_c-idle", "ctrl_c-streaming")

load_scenarios()


# -- the frame scanner, on bytes --------------------------------------------------------

UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def frame(opcode: int, payload: bytes, *, mask: bytes | None = b"\x01\x02\x03\x04", fin: bool = True) -> bytes:
    """One WebSocket frame as it goes on the wire (masked, as a client sends, unless ``mask`` is None)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big") if n < 65536 else \
        bytes([127]) + n.to_bytes(8, "big")
    if mask is None:
        return head + size + payload
    size = bytes([size[0] | 0x80]) + size[1:]
    return head + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def frames_of(items: list[bytes | FrameInfo]) -> list[FrameInfo]:
    return [i for i in items if isinstance(i, FrameInfo)]


def test_a_masked_close_frame_after_the_upgrade_is_found_with_its_code_and_reason():
    """The client's close frame is read after its upgrade request: code, reason, masked."""
    scanner = FrameScanner("client")
    wire = UPGRADE + frame(0x1, b'{"type": "message"}') + frame(0x8, close_payload(1000, "bye"))
    found = frames_of(scanner.feed(wire))
    assert [f.opcode for f in found] == [0x1, 0x8]
    assert scanner.close == FrameInfo(0x8, True, True, 5, close_code=1000, close_reason="bye")


def test_frames_split_anywhere_across_reads_are_still_found():
    """Fed one byte at a time, the head, a 70 000-byte frame and the close frame are all seen."""
    scanner = FrameScanner("client")
    wire = UPGRADE + frame(0x2, b"x" * 70_000) + frame(0x8, close_payload(1001))
    found = []
    for i in range(0, len(wire), 997):
        found += frames_of(scanner.feed(wire[i:i + 997]))
    tiny = FrameScanner("client")
    for b in UPGRADE + frame(0x8, close_payload(1000)):
        tiny.feed(bytes([b]))
    assert [(f.opcode, f.length) for f in found] == [(0x2, 70_000), (0x8, 2)]
    assert scanner.close is not None and scanner.close.close_code == 1001
    assert tiny.close is not None and tiny.close.close_code == 1000


def test_a_keep_alive_request_before_the_upgrade_is_stepped_over():
    """A POST with a body on the same connection, then the upgrade: the body is not read as frames."""
    post = b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n" + bytes([0x88]) * 10
    scanner = FrameScanner("client")
    found = frames_of(scanner.feed(post + UPGRADE + frame(0x8, close_payload(1000))))
    assert len(scanner.heads) == 2 and [f.opcode for f in found] == [0x8]


def test_a_plain_http_connection_has_no_frames_and_a_socket_drop_no_close():
    """Bytes of an HTTP exchange, or frames with no close among them, leave no close frame."""
    http = FrameScanner("client")
    http.feed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    dropped = FrameScanner("client")
    dropped.feed(UPGRADE + frame(0x1, b"hello"))
    assert http.frames == 0 and http.close is None and not http.websocket
    assert dropped.frames == 1 and dropped.close is None


def test_the_server_side_switches_to_frames_only_on_101():
    """A 101 answer is followed by unmasked frames; a 404 with a body is not a WebSocket."""
    ok = FrameScanner("server")
    ok.feed(SWITCHING + frame(0x8, close_payload(1001), mask=None))
    refused = FrameScanner("server")
    refused.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop")
    assert ok.websocket and ok.close is not None and ok.close.masked is False and ok.close.close_code == 1001
    assert not refused.websocket and refused.frames == 0


def test_a_control_frame_longer_than_125_bytes_stops_the_scan_saying_why():
    """A close frame claiming 300 bytes is not a close frame: scanning stops with the reason."""
    scanner = FrameScanner("client")
    scanner.feed(UPGRADE + frame(0x8, b"\x03\xe8" + b"r" * 298))
    assert scanner.close is None and scanner.error is not None and "125" in scanner.error


# -- the checker, on values ----------------------------------------------------------------

def conn(n: int = 1, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {"conn": n, "websocket": True, "upgrade_requested": True, "close_frame": True,
                              "masked": True, "close_code": 1000, "ended": "fin", "scan_error": None}
    row.update(kw)
    return row


@pytest.mark.parametrize(
    ("rows", "status", "words"),
    [
        ([conn(1, websocket=False, upgrade_requested=False, close_frame=False), conn(2)], "pass", "code 1000"),
        ([conn(close_frame=False, masked=None, close_code=None)], "fail", "FIN and no close frame"),
        ([conn(close_frame=False, ended="rst")], "fail", "TCP reset and no close frame"),
        ([conn(close_frame=False, ended=None)], "fail", "still open, no close frame"),
        ([conn(masked=False)], "fail", "not masked"),
        ([conn(close_frame=False, scan_error="an HTTP body of unknown length")], "unknown", "could not be read"),
        ([conn(close_frame=False, server_dropped_first=True)], "unknown", "the server dropped it first"),
        ([conn(websocket=False, close_frame=False)], "unknown", "never answered 101"),
        ([], "unknown", "no WebSocket connection went through"),
        (None, "unknown", "not watched"),
    ],
    ids=["closed", "fin", "rst", "open", "unmasked", "unreadable", "server-dropped", "refused", "none", "unwatched"],
)
def test_closed_cleanly_passes_only_on_a_close_frame_before_the_socket_closed(rows, status, words):
    """Every WebSocket needs its masked close frame; without a WebSocket to judge it is unknown, never pass."""
    verdict = checkers.client.closed_cleanly(rows, what="client")
    assert verdict.check == "client.closed_cleanly"
    assert verdict.status == status and words in verdict.message, verdict


# -- the proxy tap, with a real client and server ------------------------------------------

def test_the_proxy_tap_sees_a_close_frame_and_its_absence():
    """Through wschaos's proxy: a client that closes shows code 1000; one that drops its socket shows none."""
    async def main() -> list[dict[str, object]]:
        async def echo(ws) -> None:  # type: ignore[no-untyped-def]
            with contextlib.suppress(ConnectionClosed):
                async for msg in ws:
                    await ws.send(msg)

        async with serve(echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            proxy = Nemesis(History()).proxy("127.0.0.1", port, name="wire")
            wire = tap_proxy(proxy, ClientWire())
            async with proxy:
                async with connect(proxy.url("/")) as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                ws = await connect(proxy.url("/"))
                await ws.send("hi")
                assert await ws.recv() == "hi"
                ws.transport.abort()  # no close frame: the socket just goes
                assert await wire.wait_ended(scaled(5))
            return wire.summaries()

    clean, dropped = asyncio.run(main())
    assert clean["websocket"] and clean["close_frame"] and clean["close_code"] == 1000 and clean["masked"]
    assert dropped["websocket"] and not dropped["close_frame"] and dropped["ended"] in ("fin", "rst")
    assert checkers.client.closed_cleanly([clean]).status == "pass"
    assert checkers.client.closed_cleanly([clean, dropped]).status == "fail"


# -- the clients, from their target files --------------------------------------------------

@pytest.fixture(autouse=True)
def venv_python_first(monkeypatch):
    """The target files say ``python``: the one with this project's dependencies."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def client_target(name: str, defect: str = "") -> Target:
    """The target file of a fixture client, with ``CLIENT_DEFECT`` set in the client's environment."""
    target = load_target(CLIENTS / f"{name}.toml")
    spec = target.interactive_spec()
    assert isinstance(spec, InteractiveSpec)
    if defect:
        target = replace(target, interactive=replace(spec, env={**spec.env, "CLIENT_DEFECT": defect}))
    assert unmet({"interactive"}, target) == []  # the declared contract meets the need by itself
    return target


def run(exit_case: str, target: Target, tmp_path: Path) -> CaseOutcome:
    return asyncio.run(run_case(REGISTRY[f"interactive.exit[{exit_case}]"], target, seed=3, run_dir=tmp_path))


def describe(outcome: CaseOutcome) -> str:
    return "\n".join(str(v) for v in outcome.verdicts) + (f"\n{outcome.error}" if outcome.error else "")


def verdict(outcome: CaseOutcome, check: str):  # type: ignore[no-untyped-def]
    found = [v for v in outcome.verdicts if v.check == check]
    assert len(found) == 1, f"{check}:\n{describe(outcome)}"
    return found[0]


def assert_all_pass(outcome: CaseOutcome) -> None:
    assert outcome.skipped is None, outcome.skipped
    names = {v.check for v in outcome.verdicts}
    assert {"client.exit_time", "client.closed_cleanly", "client.terminal_usable"} <= names, describe(outcome)
    assert all(v.status == "pass" for v in outcome.verdicts), describe(outcome)


@pytest.mark.parametrize(("client", "service", "quit_keys"),
                         [("menu_client", "path_sessions", ("0", "q")), ("script_runner", "stop_no_ack", ("q",))])
def test_each_client_target_file_describes_its_service_and_its_dialogue(client: str, service: str,
                                                                       quit_keys: tuple[str, ...]):
    """The target file loads, its service part builds an adapter, its client part is a streaming contract."""
    target = load_target(CLIENTS / f"{client}.toml")
    spec = target.interactive_spec()
    assert target.name == service and f"tests/fixtures/agents/{service}.py" in target.argv
    assert load_adapter(target).messages >= {"request", "interrupt"}
    assert spec is not None and spec.quit_keys == quit_keys and spec.can_stream
    assert Path(spec.argv[1]) == CLIENTS / f"{client}.py"


CORRECT = [("menu_client", c) for c in EXIT_CASES] + [("script_runner", c) for c in EXIT_CASES if c != "quit-0"]


@pytest.mark.parametrize(("client", "exit_case"), CORRECT, ids=[f"{c}-{k}" for c, k in CORRECT])
def test_a_correct_client_passes_every_exit_case(client: str, exit_case: str, tmp_path: Path):
    """Quit and Ctrl+C, idle and mid-reply: exit within 1 s, no traceback, a close frame, a usable terminal."""
    assert_all_pass(run(exit_case, client_target(client), tmp_path))


def test_a_quit_key_the_client_lacks_is_skipped_with_the_reason(tmp_path: Path):
    """script_runner quits on q only: quit-0 is skipped, naming the keys it has, and starts nothing."""
    outcome = run("quit-0", client_target("script_runner"), tmp_path)
    assert outcome.skipped == "the client's quit keys are 'q'; it has no '0' (quit_keys)"
    assert outcome.verdicts == []


def test_a_contract_without_a_stream_skips_the_streaming_case(tmp_path: Path):
    """A client whose contract names no way to start a reply has ctrl_c-streaming skipped, saying so."""
    target = client_target("menu_client")
    spec = target.interactive_spec()
    assert spec is not None
    target = replace(target, interactive=replace(spec, stream_send=None, stream_expect=None))
    outcome = run("ctrl_c-streaming", target, tmp_path)
    assert outcome.skipped is not None and "no stream" in outcome.skipped


def test_a_client_that_does_not_follow_its_dialogue_is_unknown_not_failed(tmp_path: Path):
    """A client that ends before its declared connected line (here: no URL given): unknown, with its output."""
    target = client_target("menu_client")
    spec = target.interactive_spec()
    assert spec is not None
    target = replace(target, interactive=replace(spec, argv=spec.argv[:2]))
    outcome = run("quit-q", target, tmp_path)
    [only] = outcome.verdicts
    assert only.check == "interactive.exit.completed" and only.status == "unknown", describe(outcome)
    assert "did not follow its declared dialogue" in only.message and "usage: menu_client.py" in only.message


@pytest.mark.slow
@pytest.mark.parametrize("client", ["menu_client", "script_runner"])
def test_a_leaked_loop_thread_fails_the_exit_time_and_the_noise(client: str, tmp_path: Path):
    """CLIENT_DEFECT=loop_thread_leak: Ctrl+C prints a traceback and hangs; the stacks are saved beside the case."""
    outcome = run("ctrl_c-idle", client_target(client, "loop_thread_leak"), tmp_path)
    exit_time = verdict(outcome, "client.exit_time")
    assert exit_time.status == "fail" and "did not happen within" in exit_time.message, describe(outcome)
    noise = verdict(outcome, "shutdown.output_noise")
    assert noise.status == "fail" and "KeyboardInterrupt" in noise.message, describe(outcome)
    assert verdict(outcome, "client.closed_cleanly").status == "fail"
    saved = Path(outcome.artifacts["client.forensics"])
    assert saved.parent == tmp_path / "interactive.exit_ctrl_c-idle_" and saved.is_file()
    assert "## thread stacks" in saved.read_text(encoding="utf-8")
    # The case's cleanup ended the hung client: nothing of it is left.
    [press] = History.from_jsonl(outcome.artifacts["history"]).operations("ctrl_c", client="nemesis")
    assert not psutil.pid_exists(int(press.data["pid"]))
    assert str(saved) in exit_time.message or any(str(saved) in s for s in exit_time.figures.get("stacks", []))


@pytest.mark.slow
@pytest.mark.parametrize(("client", "exit_case"), [("menu_client", "quit-q"), ("script_runner", "ctrl_c-streaming")])
def test_a_client_dropping_its_socket_fails_closed_cleanly_alone(client: str, exit_case: str, tmp_path: Path):
    """CLIENT_DEFECT=no_close_frame: the socket goes without a close frame; exit, output and terminal stay green."""
    outcome = run(exit_case, client_target(client, "no_close_frame"), tmp_path)
    closed = verdict(outcome, "client.closed_cleanly")
    assert closed.status == "fail" and "no close frame" in closed.message, describe(outcome)
    assert [v.check for v in outcome.verdicts if v.status != "pass"] == ["client.closed_cleanly"], describe(outcome)


@pytest.mark.slow
@pytest.mark.parametrize("exit_case", EXIT_CASES)
def test_the_reference_client_still_passes_every_exit_case(exit_case: str, tmp_path: Path):
    """interactive_client alone is the reference dialogue: all four cases pass, through the proxy too."""
    assert_all_pass(run(exit_case, reference_target(), tmp_path))
