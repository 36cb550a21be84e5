"""The explorer: generated programs find a race nobody scripted, shrink it, and replay it.

The proof runs the explorer as a user would (``main(argv)`` of
``harness.explore.command``) against the real reference server with
``--fault cancel_before_start_leak``: a request interrupted before its task
first ran stays on the books forever. Nothing in the explorer's configuration
mentions interrupts or ``/stats``; it has to find the program that leaks, shrink
it, and the saved program has to reproduce it on replay. Against the correct
server a short exploration must find nothing. The model and the strategies are
checked with plain data.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from harness.explore import strategies
from harness.explore.command import ExitCode, main
from harness.explore.model import Model
from harness.explore.program import ProgramError, load_program_file, render_program, validate_steps

#: A seed whose search meets the leak within a few seconds on a loaded machine.
SEED = 3


def _no_target_left() -> None:
    left = [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and "reference_server" in " ".join(p.cmdline())]
    assert not left, f"targets left running: {[p.pid for p in left]}"


def _finding(report_dir: Path) -> dict:
    files = sorted(p for p in report_dir.glob("explore/*/finding-*.json") if p.parent.name != "latest")
    assert len(files) == 1, files
    return json.loads(files[0].read_text()) | {"_path": str(files[0])}


# -- the proof -----------------------------------------------------------------------


@pytest.mark.solo  # "within 60 s on this machine": with the other xdist worker's load it may miss
def test_the_explorer_finds_the_cancel_before_start_leak_shrinks_and_replays_it(tmp_path: Path, capsys) -> None:
    """From scratch, the explorer finds a leaked active request, shrinks it to at most 3 steps; it replays, not when fixed."""
    code = main(["explore", "--fault", "cancel_before_start_leak", "--budget", "30", "--seed", str(SEED),
                 "--shrink-budget", "40", "--confirm", "0", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == ExitCode.FOUND, err
    found = _finding(tmp_path)
    f = found["finding"]
    # The books of a request cancelled before it ran: active_requests never comes back.
    assert f["key"] == "resources.back_to_baseline@active_requests", f
    assert len(found["steps"]) <= 3, "\n".join(found["program"])
    # Found and shrunk to this program within 60 s.
    assert f["found_after_s"] + f["best_after_s"] <= 60, f
    # Printed as numbered steps a person can read, with the command that replays it.
    assert "1. s0 " in err and "replay: wschaos replay" in err
    assert found["target"] == {"kind": "reference", "faults": ["cancel_before_start_leak"], "name": "reference"}
    _no_target_left()

    code = main(["replay", found["_path"], "--times", "10", "--report-dir", str(tmp_path / "replays")])
    err = capsys.readouterr().err
    assert code == ExitCode.FOUND, err
    reproduced = int(err.split("replay: reproduced ", 1)[1].split(" ", 1)[0])
    assert reproduced >= 9, err
    assert "of 10 runs" in err
    _no_target_left()

    # The same program against the server without the fault: it never fails.
    code = main(["replay", found["_path"], "--times", "3", "--no-faults", "--report-dir", str(tmp_path / "fixed")])
    err = capsys.readouterr().err
    assert code == ExitCode.CLEAN and "reproduced 0 of 3 runs" in err, err
    _no_target_left()


@pytest.mark.parametrize("program", ["reuse_in_one_write", "oversize_unread", "interrupt_unread_then_reset",
                                     "bad_frame_unread_then_oversize"])
def test_programs_that_once_gave_false_findings_pass_on_the_correct_server(program: str, tmp_path: Path,
                                                                           capsys) -> None:
    """Programs 10-minute explorations of the correct server once reported, replayed clean: an id
    reused in the write of the INTERRUPT that frees it (then reused again); an oversize frame sent
    while not reading, then an INTERRUPT no server owes an ACK; an INTERRUPT sent while not
    reading whose ACK the session's own RST threw away; a malformed frame sent while not reading,
    then an oversize frame whose 1009 close is not the malformed frame's doing."""
    path = Path(__file__).parent / "fixtures" / "explore" / f"{program}.json"
    code = main(["replay", str(path), "--times", "2", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == ExitCode.CLEAN and "reproduced 0 of 2 runs" in err, err
    _no_target_left()


def test_a_short_exploration_of_the_correct_server_finds_nothing(tmp_path: Path, capsys) -> None:
    """Against the reference server without faults, a 3 s exploration ends clean: exit 0, no finding."""
    code = main(["explore", "--budget", "3", "--seed", "11", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == ExitCode.CLEAN, err
    assert "nothing found within the budget" in err
    assert not list(tmp_path.glob("explore/*/finding-*.json"))
    assert (tmp_path / "explore" / "latest").is_dir()
    _no_target_left()


# -- bad input ---------------------------------------------------------------------------


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    broken = tmp / "broken.json"
    broken.write_text(json.dumps({"wschaos_explore": 1, "seed": 1, "target": {"kind": "reference"},
                                  "steps": [{"do": "dance", "s": 0}]}))
    not_json = tmp / "notjson.json"
    not_json.write_text("{nope")
    return [
        (["explore", "--fault", "no_such_fault", "--budget", "1"], "unknown fault no_such_fault"),
        (["explore", "--budget", "0"], "must be greater than 0"),
        (["explore", "--budget", "soon"], "is not a number"),
        (["explore", "--seed", "abc"], "invalid int value: 'abc'"),
        (["explore", "--target", str(tmp / "missing.toml")], "no such target file"),
        (["explore", "--target", "a.toml", "--target-cmd", "b"], "give --target or --target-cmd, not both"),
        (["explore", "--fault", "leak_tasks", "--target-cmd", "python x.py"], "--fault applies to the embedded"),
        (["replay", str(tmp / "missing.json")], "no such program file"),
        (["replay", str(not_json)], "not JSON"),
        (["replay", str(broken)], "step 1: unknown step 'dance'"),
        (["replay", str(broken), "--times", "0"], "must be greater than 0"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]


@pytest.mark.parametrize("index", range(12))
def test_bad_input_is_one_stderr_line_and_exit_4(index: int, tmp_path: Path, capsys) -> None:
    """Each bad flag, name or file: exit 4 (a usage error), one line on stderr naming the problem, no traceback."""
    argv, expected = _bad_inputs(tmp_path)[index]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE, (argv, err)
    assert err.strip().count("\n") == 0, f"more than one line for {argv}:\n{err}"
    assert expected in err, err
    assert "Traceback" not in err and out == ""


# -- the model and the strategies, with plain data ----------------------------------------


class _Op:
    def __init__(self, outcome: str = "pending") -> None:
        self.outcome = outcome


def test_the_model_requires_busy_past_the_declared_limit_and_duplicate_for_an_active_id() -> None:
    """Long requests are surely active: one past the declared limit must be BUSY, an active id DUPLICATE_REQUEST."""
    m = Model()
    m.connected("s0", declared_max=2)
    for _ in range(2):
        rec = m.request("s0", m.new_request_id("s0"), long=True, agent=None, reused=False)
        assert rec.expect_error is None and rec.state == "active"
    assert m.request("s0", m.new_request_id("s0"), long=True, agent=None, reused=False).expect_error == "BUSY"
    assert m.request("s0", "s0-r1", long=True, agent=None, reused=True).expect_error == "DUPLICATE_REQUEST"


def test_the_model_gives_a_range_where_a_short_reply_may_have_ended() -> None:
    """An INTERRUPT of all must claim the long request and may claim the short one; after it neither is active."""
    m = Model()
    m.connected("s0")
    long = m.request("s0", m.new_request_id("s0"), long=True, agent=None, reused=False)
    short = m.request("s0", m.new_request_id("s0"), long=False, agent=None, reused=False)
    rec = m.interrupt("s0", "all", None)
    assert rec.sure == {long.request_id} and rec.maybe == {short.request_id}
    again = m.interrupt("s0", "again", None)
    assert again.must_not_find, "a second INTERRUPT of all finds nothing left"


def test_an_id_reused_in_the_write_of_the_interrupt_that_frees_it_may_be_refused_or_accepted() -> None:
    """REQUEST r1, INTERRUPT all and REQUEST r1 again in one write: the server may read the reuse
    before or after it freed r1, so the reuse may be refused or accepted, its answer may be the
    claimed one's, and every later reuse may be refused too (found by a 10-minute exploration)."""
    m = Model()
    m.connected("s0")
    first = m.request("s0", m.new_request_id("s0"), long=True, agent="upstream", reused=False)
    m.interrupt("s0", "all", None)  # its ACK has not come back: same write
    reuse = m.request("s0", first.request_id, long=False, agent="blocking", reused=True)
    assert reuse.expect_error == "?" and reuse.state == "maybe"
    reuse.op = _Op("ok")  # the client may have given it the claimed request's final
    m.refresh()
    assert reuse.state == "maybe", "an answer shared by two requests of one id does not end either"
    assert m.request("s0", first.request_id, long=False, agent=None, reused=True).expect_error == "?"


def test_a_finished_request_must_not_be_found() -> None:
    """Once the client has seen a request's final frame, interrupting it must answer NOT_FOUND."""
    m = Model()
    m.connected("s0")
    r = m.request("s0", m.new_request_id("s0"), long=False, agent=None, reused=False)
    r.op = _Op("ok")
    m.refresh()
    assert m.interrupt("s0", "own", r.request_id).must_not_find


def test_an_event_is_due_only_where_a_subscription_was_confirmed() -> None:
    """A SUBSCRIBE confirmed by a later round trip makes its EVENT due; one not yet confirmed only allows it."""
    m = Model()
    for s in ("s0", "s1", "s2"):
        m.connected(s)
    m.subscribe("s0", "a")
    m.confirm("s0", m.mark("s0"))
    m.subscribe("s1", "a")  # never confirmed
    m.publish("s2", "a")
    expected = m.expected_events()
    assert expected[("s0", "a")] == (1, 1)
    assert expected[("s1", "a")] == (0, 1)
    assert expected[("s2", "a")] == (0, 0)


def test_bad_frame_strategies_cover_every_row_of_the_bad_input_table() -> None:
    """Seeded malformed frames include cut JSON, JSON that is not an object, binary frames and every broken rule."""
    frames = strategies.sample_bad_frames(5, 300)
    assert frames == strategies.sample_bad_frames(5, 300), "the same seed draws the same frames"
    labels = {f.label for f in frames}
    for want in ("JSON cut short", "binary frame", "not an object", "type broken", "payload broken",
                 "request_id broken", "drop topic broken", "retype target_request_id broken"):
        assert any(want in label for label in labels), (want, sorted(labels))
    # The explorer's bad frames also draw the protocol's table rows as they stand.
    mixed = {f.label for f in strategies.sample_bad_frames(5, 400, table=True)}
    assert {f"table: {row[0]}" for row in strategies.TABLE} <= mixed
    assert {c for f in frames for c in f.codes} == set(strategies.BAD_CODES)
    assert any(isinstance(f.raw, bytes) for f in frames)


def test_a_program_file_names_its_bad_step(tmp_path: Path) -> None:
    """A program with an unknown step is refused with the step's number; a valid one renders as numbered steps."""
    with pytest.raises(ProgramError, match="step 2: unknown step 'twirl'"):
        validate_steps([{"do": "connect", "s": 0}, {"do": "twirl", "s": 0}])
    steps = [{"do": "burst", "s": 0, "frames": [{"do": "request"}, {"do": "interrupt", "target": "all"}]}]
    assert render_program(steps)[0].startswith("1. s0 sends in one write")
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"wschaos_explore": 1, "seed": 1, "target": {"kind": "reference"}, "steps": steps}))
    assert load_program_file(path).steps == steps


def test_the_gate_case_explores_briefly_and_the_release_profile_longer() -> None:
    """explore.short searches for at most 5 s in the gate and longer under --profile release."""
    from harness.engine.scenario import REGISTRY, load_scenarios

    load_scenarios()
    case = REGISTRY["explore.short[default]"]
    assert case.params_for("gate")["budget_s"] <= 5
    assert case.params_for("release")["budget_s"] > case.params_for("gate")["budget_s"]
