"""The target description: loading, validation and the loopback guard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.target.spec import (
    RemoteAddressError,
    TargetError,
    check_loopback,
    load_pyproject_target,
    load_target,
    reference_target,
    target_from_cmd,
)


def test_reference_target_runs_the_embedded_server_on_port_zero():
    """The reference target starts this interpreter's reference server on a free port."""
    t = reference_target()
    assert t.argv[:3] == (sys.executable, "-m", "reference_server")
    assert t.argv[t.argv.index("--port") + 1] == "0"
    assert t.ws_url(8123) == "ws://127.0.0.1:8123/ws"


def test_faults_are_appended_as_switches_and_remembered():
    """with_faults adds --fault NAME pairs and records the names for reports."""
    t = reference_target(["leak_tasks"]).with_faults("stats_lie")
    assert t.faults == ("leak_tasks", "stats_lie")
    assert t.argv[-4:] == ("--fault", "leak_tasks", "--fault", "stats_lie")


def test_limits_flow_into_the_server_flags():
    """Grace and heartbeat limits become the reference server's own flags."""
    t = reference_target(grace_s=1.5, heartbeat_interval_s=2)
    assert t.argv[t.argv.index("--grace") + 1] == "1.5"
    assert t.argv[t.argv.index("--heartbeat-interval") + 1] == "2"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "ws://127.0.0.1:9/ws"])
def test_loopback_addresses_are_accepted(host):
    """127.0.0.0/8, ::1 and localhost pass the guard."""
    check_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "example.com", "ws://10.1.1.1/ws"])
def test_other_addresses_are_refused_unless_allowed(host):
    """Anything else is refused with a message naming --allow-remote."""
    with pytest.raises(RemoteAddressError, match="allow-remote"):
        check_loopback(host)
    check_loopback(host, allow_remote=True)


def test_a_remote_host_in_a_target_file_is_refused(tmp_path: Path):
    """A target file naming a remote host fails to load, naming the file."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\nhost = "10.0.0.5"\n')
    with pytest.raises(RemoteAddressError, match=r"t\.toml"):
        load_target(f)
    assert load_target(f, allow_remote=True).host == "10.0.0.5"


def test_target_file_round_trip(tmp_path: Path):
    """A complete target file becomes a frozen Target with its limits and readiness."""
    f = tmp_path / "t.toml"
    f.write_text(
        """
[target]
name = "chat"
argv = ["python", "-m", "chat", "--port", "{port}"]
env = { CHAT_MODE = "test" }
cwd = "srv"
stats_path = false
readiness = { kind = "port" }
python_probe = true
[target.limits]
grace_s = 5
exit_codes = [0, 130]
"""
    )
    t = load_target(f)
    assert t.name == "chat"
    assert t.render_argv(4242)[-1] == "4242"
    assert t.env == {"CHAT_MODE": "test"}
    assert t.cwd == str((tmp_path / "srv").resolve())
    assert t.stats_path is None
    assert t.readiness.kind == "port"
    assert t.limits.grace_s == 5 and t.limits.exit_codes == (0, 130)
    assert t.python_probe


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name = 'x'", "needs cmd"),
        ("cmd = 'a'\nbogus = 1", "unknown key"),
        ("cmd = 'a'\nport = 'eighty'", "port must be a int"),
        ("cmd = 'a'\n[target.limits]\ngrace_s = -1", "limits.grace_s must be a positive number"),
        ("cmd = 'a'\n[target.limits]\nspeed = 1", "unknown limit"),
        ("cmd = 'a'\nreadiness = { kind = 'smoke' }", "readiness.kind"),
        ("cmd = 'a'\nreadiness = { kind = 'http' }", "needs readiness.url"),
        ("cmd = 'a \"unterminated'", "No closing quotation"),
    ],
)
def test_bad_target_files_get_clear_errors(tmp_path: Path, body: str, message: str):
    """Each bad value is reported with the file and the key, never a traceback."""
    f = tmp_path / "bad.toml"
    f.write_text("[target]\n" + body + "\n")
    with pytest.raises((TargetError, ValueError), match=message):
        load_target(f)


def test_invalid_toml_and_missing_file(tmp_path: Path):
    """Unparsable or absent files are TargetErrors naming the path."""
    f = tmp_path / "broken.toml"
    f.write_text("[target\n")
    with pytest.raises(TargetError, match="not valid TOML"):
        load_target(f)
    with pytest.raises(TargetError, match="no such target file"):
        load_target(tmp_path / "absent.toml")


def test_pyproject_table(tmp_path: Path):
    """[tool.wschaos.target] in a project's pyproject describes its server."""
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\nname = "x"\n[tool.wschaos.target]\ncmd = "myserver --port {port}"\n')
    t = load_pyproject_target(p)
    assert t is not None and t.argv == ("myserver", "--port", "{port}")
    p.write_text('[project]\nname = "x"\n')
    assert load_pyproject_target(p) is None


def test_target_from_cmd_splits_like_a_shell():
    """--target-cmd is split with shell quoting rules."""
    t = target_from_cmd("python -m 'my server' --port {port}")
    assert t.argv == ("python", "-m", "my server", "--port", "{port}")
    with pytest.raises(TargetError, match="cannot split"):
        target_from_cmd("python 'oops")


def test_server_flags_follow_limit_changes_on_the_reference_server():
    """with_server_flags rewrites the reference server's own flags along with the limits."""
    t = reference_target(["no_keepalive"]).with_server_flags(heartbeat_interval_s=1, hard_limit_s=2)
    assert t.argv[t.argv.index("--heartbeat-interval") + 1] == "1"
    assert t.argv[t.argv.index("--hard-limit") + 1] == "2"
    assert t.limits.heartbeat_interval_s == 1 and t.faults == ("no_keepalive",)


def test_a_target_is_never_held_to_a_limit_it_cannot_be_told():
    """Without a placeholder or protocol_flags the limit keeps its declared value, and argv is untouched."""
    foreign = target_from_cmd("srv --port {port}").with_server_flags(heartbeat_interval_s=1, grace_s=1)
    assert foreign.argv == ("srv", "--port", "{port}")
    assert (foreign.limits.heartbeat_interval_s, foreign.limits.grace_s) == (10, 3)
    assert not foreign.takes_flag("heartbeat_interval_s")


def test_placeholders_tell_a_target_its_limits():
    """{heartbeat_interval}, {grace}, {hard_limit}, {max_size} are filled from the limits the case set."""
    t = target_from_cmd("srv --port {port} --ping {heartbeat_interval} --grace={grace} {hard_limit} {max_size}")
    assert t.takes_flag("heartbeat_interval_s") and t.takes_flag("grace_s") and t.takes_flag("max_size")
    told = t.with_server_flags(heartbeat_interval_s=1.5, grace_s=2)
    assert told.limits.heartbeat_interval_s == 1.5 and told.limits.grace_s == 2
    assert told.render_argv(8080) == ["srv", "--port", "8080", "--ping", "1.5", "--grace=2", "10", "1048576"]


def test_protocol_flags_sets_the_flags_on_the_command_line(tmp_path: Path):
    """protocol_flags = true: the target takes every PROTOCOL.md flag, set on its argv like the reference server's."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\nprotocol_flags = true\n')
    t = load_target(f).with_server_flags(heartbeat_interval_s=1)
    assert t.argv[-2:] == ("--heartbeat-interval", "1") and t.limits.heartbeat_interval_s == 1


def test_conventions_and_capabilities_default_to_the_protocol(tmp_path: Path):
    """A bare target is held to PROTOCOL.md's conventions; a file may declare its own, validated by key."""
    bare = target_from_cmd("srv --port {port}")
    assert bare.conventions.close_codes == (1001,) and bare.conventions.stderr_max_lines is None
    assert bare.conventions.interrupt_order == "final_then_ack" and bare.readiness.stream == "stdout"
    assert bare.capabilities.agents == ("async", "upstream", "blocking") and not bare.capabilities.hooks
    f = tmp_path / "t.toml"
    f.write_text(
        '[target]\ncmd = "uvicorn app:app --port {port}"\n'
        'readiness = { kind = "line", pattern = "Uvicorn running on http://127.0.0.1:(?P<port>\\\\d+)", stream = "stderr" }\n'
        '[target.conventions]\nclose_codes = [1001, 1012]\ninterrupt_order = "ack_then_final"\n'
        'replaces_active = true\nafter_ack_grace_ms = 20\nstderr_max_lines = 2\n'
        '[target.capabilities]\nagents = ["async"]\nhooks = { stuck_drain = ["--stuck"] }\n')
    t = load_target(f)
    assert t.conventions.close_codes == (1001, 1012) and t.conventions.interrupt_order == "ack_then_final"
    assert t.conventions.replaces_active and t.conventions.after_ack_grace_ms == 20
    assert t.conventions.stderr_max_lines == 2 and t.readiness.stream == "stderr"
    assert t.capabilities.agents == ("async",) and t.capabilities.hook_args("stuck_drain") == ("--stuck",)
    assert t.capabilities.hook_args("drain_delay") is None


@pytest.mark.parametrize("body, message", [
    ('[target.conventions]\nclose_codes = [12]\n', "conventions.close_codes must be"),
    ('[target.conventions]\ninterrupt_order = "sometimes"\n', "conventions.interrupt_order must be one of"),
    ('[target.conventions]\ncolse_codes = [1001]\n', "conventions: unknown key(s) colse_codes"),
    ('[target.capabilities]\nagents = ["magic"]\n', "capabilities.agents must be a list drawn from"),
    ('[target.capabilities]\nhooks = { stuck = ["x"] }\n', "capabilities.hooks: unknown key(s) stuck"),
    ('readiness = { stream = "stdin" }\n', "readiness.stream must be stdout, stderr or any"),
])
def test_a_bad_declaration_names_the_file_and_the_key(tmp_path: Path, body: str, message: str):
    """Each bad key of a declaration is one clear error naming where it came from."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\n' + body)
    with pytest.raises(TargetError) as err:
        load_target(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_a_target_file_cannot_set_fault_switches(tmp_path: Path):
    """faults belong to the reference server's command line, not to a target file."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\nfaults = ["leak_tasks"]\n')
    with pytest.raises(TargetError, match=r"unknown key.*faults"):
        load_target(f)


def test_a_target_file_may_allow_chunks_after_an_interrupt(tmp_path: Path):
    """limits.chunks_after_interrupt: 0 unless the file says otherwise (1 lets one chunk in flight through)."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\n')
    assert load_target(f).limits.chunks_after_interrupt == 0
    f.write_text('[target]\ncmd = "srv --port {port}"\n[target.limits]\nchunks_after_interrupt = 1\n')
    assert load_target(f).limits.chunks_after_interrupt == 1


def test_a_target_remembers_the_file_it_came_from_and_replays_by_it(tmp_path: Path):
    """load_target sets source_file; a replay line without target arguments names that file."""
    from harness.engine.scenario import REGISTRY, load_scenarios, replay_command

    load_scenarios()
    f = tmp_path / "my target.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\n')
    t = load_target(f)
    assert t.source_file == str(f)
    case = REGISTRY["interrupts.basic[one]"]
    assert replay_command(case, 7, target=t) == f"wschaos run --case 'interrupts.basic[one]' --seed 7 --target '{f}'"
    # Arguments given win; a target changed after loading, or made in code, has no file to name.
    assert replay_command(case, 7, "--target other.toml", t).endswith("--seed 7 --target other.toml")
    for changed in (t.with_args("--defect", "x"), t.with_faults("leak_tasks"), t.with_limits(grace_s=1),
                    reference_target()):
        assert changed.source_file is None
        assert replay_command(case, 7, target=changed) == "wschaos run --case 'interrupts.basic[one]' --seed 7"
    assert t.with_args().source_file == str(f) and t.with_limits().source_file == str(f)


def test_a_target_file_cannot_say_where_it_lies(tmp_path: Path):
    """source_file comes from load_target alone: the file cannot set it."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\nsource_file = "elsewhere.toml"\n')
    with pytest.raises(TargetError, match=r"unknown key.*source_file"):
        load_target(f)


def test_the_menu_clients_file_lets_wschaos_open_its_agent_through_a_session():
    """menu_client.toml declares the session path_sessions wants, so wschaos's own client can connect."""
    from harness.protocol.adapters import load_adapter

    t = load_target(Path(__file__).parent / "fixtures" / "clients" / "menu_client.toml")
    adapter = load_adapter(t)
    assert t.ws_path == "/ws/session/{session_id}"
    assert adapter.session is not None and adapter.session.create is not None
    assert adapter.correlation == "order" and t.interactive is not None


def test_a_count_limit_takes_zero_and_refuses_fractions(tmp_path: Path):
    """limits.chunks_after_interrupt is a count: 0 (none allowed) is valid, 1.5 is not."""
    f = tmp_path / "t.toml"
    f.write_text('[target]\ncmd = "srv --port {port}"\n[target.limits]\nchunks_after_interrupt = 0\n')
    assert load_target(f).limits.chunks_after_interrupt == 0
    f.write_text('[target]\ncmd = "srv --port {port}"\n[target.limits]\nchunks_after_interrupt = 1.5\n')
    with pytest.raises(TargetError, match=r"limits.chunks_after_interrupt must be a whole number >= 0"):
        load_target(f)
