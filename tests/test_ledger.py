"""The ledger: one valid JSON line per event, on disk as soon as it is recorded, never a secret."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from pipelines.ledger import EVENTS, Ledger, new_run_id, read_ledger, verified_shas
from pipelines.redact import Secret

SHA_A = "a" * 40
SHA_B = "b" * 40
TOKEN = "ledger-secret-token-93bd1"


def test_each_event_is_one_json_line_on_disk_when_recorded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.jsonl"
    ledger = Ledger(path, "run-1")
    ledger.record("plan", sha=SHA_A, tag="staging-aaaaaaa", dry_run=False)
    # Read by an independent file handle right away: nothing is held in a buffer.
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
    ledger.record("wave_start", index=1, slugs=["a", "b"])
    ledger.record("lease", action="taken", expires="2026-01-01T00:00:00Z")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["plan", "wave_start", "lease"]
    assert all(e["run_id"] == "run-1" for e in events)
    assert events[1]["slugs"] == ["a", "b"] and events[1]["index"] == 1
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"])
        assert datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def test_two_ledgers_on_one_file_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    first, second = Ledger(path, "r1"), Ledger(path, "r2")
    for i in range(20):
        (first if i % 2 else second).record("soak", seconds=i, note="x" * 500)
    events = read_ledger(path)
    assert len(events) == 20 and {e["run_id"] for e in events} == {"r1", "r2"}


def test_no_secret_reaches_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    token = Secret(TOKEN)
    Ledger(path, "r1").record(
        "cp_call", token=token, error=f"denied for Bearer {TOKEN}",
        rows=[{"slug": "a", "error": "clone https://bot:pw-1234@git.example/x failed\x1b[31m"}],
        nested={"why": ("token=" + TOKEN, {TOKEN})},
    )
    text = path.read_text(encoding="utf-8")
    assert TOKEN not in text and "pw-1234" not in text and "\\u001b" not in text and "\x1b" not in text
    (event,) = read_ledger(path)
    assert event["token"] == "***"
    assert event["rows"][0]["slug"] == "a"


def test_unknown_events_and_reserved_keys_are_programming_errors(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.jsonl", "r1")
    with pytest.raises(ValueError, match="unknown ledger event"):
        ledger.record("deployed")
    with pytest.raises(ValueError, match="may not override"):
        ledger.record("done", run_id="forged")
    with pytest.raises(ValueError, match="lease event needs action"):
        ledger.record("lease", action="stolen")
    assert not (tmp_path / "l.jsonl").exists()
    assert {"plan", "gate", "kill_switch", "lease", "wave_start", "cp_call", "wave_verified", "wave_failed",
            "soak", "approval", "rollback", "halt", "superseded", "notify", "done"} == EVENTS


def test_verified_shas_needs_a_verified_real_done(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, "r1")
    ledger.record("done", sha=SHA_A, verified=True, dry_run=False, exit_code=0)
    ledger.record("done", sha=SHA_B, verified=True, dry_run=True)  # a dry run verifies nothing
    ledger.record("done", sha="c" * 40, verified=False, dry_run=False)
    ledger.record("done", sha="d" * 40, verified="true", dry_run=False)  # not a boolean
    ledger.record("done", sha="e" * 40, verified=True)  # dry_run missing
    ledger.record("wave_verified", sha="f" * 40, verified=True, dry_run=False)
    ledger.record("done", sha="not-a-sha", verified=True, dry_run=False)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"event": "done", "sha": "' + "9" * 40 + '", "verified": tr')  # torn last line
    assert verified_shas(path) == {SHA_A}


def test_read_ledger_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_ledger(tmp_path / "absent.jsonl") == []
    assert verified_shas(tmp_path / "absent.jsonl") == set()


def test_run_id_from_actions_or_random() -> None:
    assert re.fullmatch(r"4711-2-[0-9a-f]{8}", new_run_id({"GITHUB_RUN_ID": "4711", "GITHUB_RUN_ATTEMPT": "2"}))
    assert re.fullmatch(r"4711-1-[0-9a-f]{8}", new_run_id({"GITHUB_RUN_ID": "4711"}))
    assert re.fullmatch(r"4711-1-deploy-[0-9a-f]{8}", new_run_id({"GITHUB_RUN_ID": "4711", "GITHUB_JOB": "deploy"}))
    assert re.fullmatch(r"4711-1-[0-9a-f]{8}", new_run_id({"GITHUB_RUN_ID": "4711", "GITHUB_JOB": "a b;c"}))
    # two processes of the same job never share a run id, so never a lease
    same = {"GITHUB_RUN_ID": "4711", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "deploy"}
    assert new_run_id(same) != new_run_id(same)
    local = new_run_id({})
    assert re.fullmatch(r"local-[0-9a-f]{12}", local) and local != new_run_id({})
    assert new_run_id({"GITHUB_RUN_ID": "4711; rm -rf /"}).startswith("local-")
