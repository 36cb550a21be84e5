"""The results.json schema: round-trip, redaction on write, clear errors for bad files, the run store."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from harness.results.redact import redact
from harness.results.schema import (
    SCHEMA_MINOR,
    SCHEMA_VERSION,
    CaseResult,
    ResultsError,
    RunResult,
    TargetInfo,
    VerdictResult,
)
from harness.results.store import load_run, new_run_dir, save_run


def make_run() -> RunResult:
    return RunResult(
        run_id="r1", started_at="2025-01-01T00:00:00Z", duration_s=1.5, seed=7, profile="gate",
        target=TargetInfo("svc", ["svc", "--url", "ws://alice:hunter2@127.0.0.1:9/ws?token=abc&room=1"], ["late_chunks"]),
        cases=[CaseResult(
            "interrupts.storm[10x10]", "interrupts.storm", {"sessions": 10}, 1, 0.8,
            [VerdictResult("interrupts.ack_latency", "fail", "p99 212 ms", {"p99_ms": 212.5, "nan": float("nan")},
                           replay="wschaos run --case 'interrupts.storm[10x10]' --seed 7")],
            artifacts={"history": "interrupts.storm_10x10_/history.jsonl"},
            series={"tasks": [[0, 3], [50, 4]]},
            figures={"ack_latencies_ms": [1.0, 2.0]},
        )],
        status="complete", exit_code=1,
    )


def test_round_trip_keeps_every_field():
    run = make_run()
    back = RunResult.from_json(run.to_json(redact_secrets=False))
    run.cases[0].verdicts[0].figures["nan"] = None  # non-finite numbers are written as null
    assert back == run
    data = json.loads(run.to_json())
    assert (data["schema_version"], data["schema_minor"]) == (SCHEMA_VERSION, SCHEMA_MINOR) == (1, 1)
    assert data["comparison"] is None
    assert data["summary"] == {"pass": 0, "fail": 1, "unknown": 0, "known": 0, "stale": 0,
                               "checks": 1, "cases": 1, "errors": 0, "skipped": 0}


def test_unknown_keys_are_ignored_for_additive_changes():
    data = json.loads(make_run().to_json())
    data["future_field"] = 1
    data["cases"][0]["verdicts"][0]["new_thing"] = "x"
    assert RunResult.from_dict(data).run_id == "r1"


def test_save_redacts_url_credentials_and_tokens(tmp_path):
    """Credentials in the target's argv never reach results.json."""
    path = save_run(make_run(), tmp_path)
    text = path.read_text()
    assert "hunter2" not in text and "alice" not in text and "token=abc" not in text
    assert "ws://***@127.0.0.1:9/ws?token=***&room=1" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"Authorization": "Bearer x"}, {"Authorization": "***"}),
        ({"headers": {"X-Api-Key": "k", "Accept": "json"}}, {"headers": {"X-Api-Key": "***", "Accept": "json"}}),
        ({"access_token": "t", "clientSecret": "s", "db_password": "p"}, {"access_token": "***", "clientSecret": "***", "db_password": "***"}),
        ({"max_tokens": 5, "monkey": "m", "keepalive": 1}, {"max_tokens": 5, "monkey": "m", "keepalive": 1}),
        (["srv", "--token", "abc", "--api-key=zz", "--port", "1"], ["srv", "--token", "***", "--api-key=***", "--port", "1"]),
        (["-H", "Authorization: Bearer abc"], ["-H", "Authorization: ***"]),
        ("wss://u:p@h/ws?a=1&password=x", "wss://***@h/ws?a=1&password=***"),
        ("wschaos run --case 'a[b]' --target-cmd 'srv --token abc --port 1'",
         "wschaos run --case 'a[b]' --target-cmd 'srv --token *** --port 1'"),
    ],
)
def test_redact(value, expected):
    assert redact(value) == expected


def test_load_run_errors_name_the_file(tmp_path):
    with pytest.raises(ResultsError, match=r"no results\.json"):
        load_run(tmp_path)
    bad = tmp_path / "results.json"
    bad.write_text('{"schema_version": 1,\n  oops}')
    with pytest.raises(ResultsError, match=r"results.json: not valid JSON: .* line 2"):
        load_run(tmp_path)
    bad.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ResultsError, match=r"schema_version 99.*newer wschaos"):
        load_run(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ResultsError, match="schema_version None"):
        load_run(bad)
    data = json.loads(make_run().to_json())
    del data["run_id"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"missing field.*run_id"):
        load_run(bad)
    data = json.loads(make_run().to_json())
    data["cases"][0]["verdicts"][0]["status"] = "meh"
    bad.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"cases\[0\].verdicts\[0\]: status 'meh'"):
        load_run(bad)


def test_new_run_dir_and_latest_link(tmp_path):
    """Each run its own directory; latest follows the newest, through load_run too."""
    first = new_run_dir(tmp_path)
    second = new_run_dir(tmp_path)
    assert first != second and first.parent == tmp_path
    assert os.readlink(tmp_path / "latest") == second.name
    save_run(make_run(), second)
    assert load_run(tmp_path / "latest").run_id == "r1"
    named = new_run_dir(tmp_path, run_id="nightly-1")
    assert named.name == "nightly-1" and (tmp_path / "latest").resolve() == named.resolve()
    with pytest.raises(ResultsError, match="already exists"):
        new_run_dir(tmp_path, run_id="nightly-1")
    with pytest.raises(ResultsError, match="single directory name"):
        new_run_dir(tmp_path, run_id="../x")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".latest")]


def test_case_from_outcome_relativises_artifacts(tmp_path):
    outcome = SimpleNamespace(
        case_id="a[b]", scenario="a", params={"n": 1}, duration_s=0.1, error=None, skipped=None,
        verdicts=[SimpleNamespace(check="a.c", status="pass", message="ok", figures={"x": 1})],
        artifacts={"history": str(tmp_path / "a_b_" / "history.jsonl")}, series={"t": [(0, 1)]},
        figures={}, replay="wschaos run --case 'a[b]' --seed 1",
    )
    case = CaseResult.from_outcome(outcome, repeat=2, run_dir=tmp_path)
    assert case.artifacts == {"history": "a_b_/history.jsonl"}
    assert case.verdicts[0].replay == "wschaos run --case 'a[b]' --seed 1" and case.repeat == 2
    assert case.series == {"t": [[0, 1]]}


def test_minor_zero_files_and_the_comparison_field_read_back():
    """A file from before schema_minor (minor 0) still loads; a kept comparison survives the round trip."""
    data = json.loads(make_run().to_json())
    del data["schema_minor"], data["comparison"]
    assert RunResult.from_dict(data).comparison is None
    run = make_run()
    run.comparison = {"baseline": {"run_id": "r0"}, "ok": True, "regressions": []}
    assert RunResult.from_json(run.to_json()).comparison == run.comparison
