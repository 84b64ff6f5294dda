"""The step summary: appended Markdown with the wave table, stragglers and drift; redacted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.redact import Secret
from pipelines.summary import render, write_step_summary

SHA = "1234567" + "a" * 33
OLD = "7654321" + "b" * 33
TOKEN = "summary-secret-token-5521"


def result(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ok": False, "exit_code": 1, "verb": "rollout", "outcome": "failed", "sha": SHA,
        "target_tag": "staging-1234567", "run_id": "77-1", "dry_run": False, "canary": "acme",
        "message": "wave 2: 1 straggler over budget 0: globex",
        "waves": [
            {"index": 0, "kind": "canary", "slugs": ["acme"], "status": "verified", "verified": ["acme"],
             "stragglers": [], "cp_attempts": 1, "seconds": 3.5},
            {"index": 1, "kind": "wave", "slugs": ["beta", "globex", "initech"], "status": "failed",
             "verified": ["beta", "initech"], "stragglers": ["globex"], "cp_attempts": 2, "seconds": 12.0},
            {"index": 2, "kind": "wave", "slugs": ["hooli", "umbrella"], "status": "not started",
             "verified": [], "stragglers": [], "cp_attempts": 0, "seconds": 0.0},
        ],
        "skipped": ["zeta"], "lease": "released",
        "stragglers": ["globex"],
        "drift": {SHA: 3, OLD: 1},
        "tenants": {"acme": {"before": OLD, "after": SHA, "verdict": "verified"},
                    "globex": {"before": OLD, "after": OLD, "verdict": "stale"}},
    }
    base.update(extra)
    return base


def test_summary_names_outcome_waves_stragglers_and_drift(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("# earlier step\n", encoding="utf-8")
    assert write_step_summary(result(), env={"GITHUB_STEP_SUMMARY": str(target)}) is True
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n")  # appended, not replaced
    assert "fleetgate rollout: failed" in text and "`1234567`" in text and "`staging-1234567`" in text
    assert "exit code **1**" in text and "canary `acme`" in text
    assert "| 0 | canary | acme | verified | 1/1 | — | 1 | 3.5 |" in text
    assert "| 1 | wave | beta, globex, initech | failed | 2/3 | globex | 2 | 12.0 |" in text
    # a wave that never ran says so: no "0/2", no seconds
    assert "| 2 | wave | hooli, umbrella | not started | — | — | — | — |" in text
    assert "**Stragglers within the budget (1)**: globex" in text and "lease released" in text
    assert "**Already on the SHA, not written (1)**: zeta" in text
    assert "| `1234567` ← target | 3 |" in text and "| `7654321` | 1 |" in text
    assert "| globex | `7654321` | `7654321` | stale |" in text


def test_summary_is_redacted_and_escaped() -> None:
    Secret(TOKEN)
    text = render(result(message=f"CP said: Bearer {TOKEN} | <script>x</script> https://u:pw9@h/\x1b[2J",
                         drift={"unreachable": 2}))
    assert TOKEN not in text and "pw9" not in text and "\x1b" not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "\\|" in text  # a pipe in a message cannot break the table
    assert "| `unreachable` | 2 |" in text


def test_no_summary_without_the_variable(tmp_path: Path) -> None:
    assert write_step_summary(result(), env={}) is False
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_summary_does_not_raise(tmp_path: Path) -> None:
    assert write_step_summary(result(), env={"GITHUB_STEP_SUMMARY": str(tmp_path / "no" / "dir.md")}) is False


def test_a_sparse_or_odd_result_still_renders() -> None:
    text = render({"ok": True, "exit_code": 0, "sha": SHA, "dry_run": True, "waves": ["junk"],
                   "stragglers": [], "drift": {SHA: "x"}, "tenants": {"a": None}})
    assert "fleetgate rollout: deployed" in text and "**dry run**" in text
    assert "**Stragglers within the budget**: none" in text
    assert render({}).startswith("## ❌ fleetgate rollout: failed")


def test_server_text_cannot_become_a_link_an_image_or_html() -> None:
    hostile = "see [docs](https://evil.test/x) ![pixel](https://evil.test/p.png) <img src=x> `code` **bold**"
    text = render(result(message=hostile, tenants={"acme": {"before": OLD, "after": "`x`](y)", "verdict": hostile}},
                         rollback={"tag": "t`](https://evil.test)", "restored": ["acme"], "verified": True}))
    outside_code = re.sub(r"(?<!\\)`[^`]*(?<!\\)`", "", text)  # code spans are literal text
    assert not re.search(r"(?<!\\)\]\(", outside_code) and not re.search(r"(?<!\\)!\[", outside_code)
    assert "<img" not in text and "&lt;img" in text
    assert "\\[docs\\]\\(https://evil.test/x\\)" in text and "\\!\\[pixel\\]" in text
    assert "\\`code\\`" in text and "\\*\\*bold\\*\\*" in text
    # a code span cannot be closed from inside
    assert "`t'](https://evil.test)`" in text


def test_stragglers_line_and_wave_table_agree_and_caught_up_is_named() -> None:
    text = render(result(stragglers=[], caught_up=["globex"]))
    assert "**Stragglers within the budget**: none" in text and "reported the SHA later: globex" in text


def test_every_renderer_shows_a_wave_through_the_same_cells() -> None:
    from pipelines.summary import wave_cells

    failed = wave_cells({"index": 1, "kind": "wave", "status": "failed", "slugs": ["a", "b"], "verified": ["a"],
                         "stragglers": ["b"], "cp_attempts": 1, "seconds": 3.0})
    assert (failed.verified, failed.unverified, failed.calls, failed.seconds) == ("1/2", ["b"], "1", "3.0")
    later = wave_cells({"index": 2, "kind": "wave", "status": "not started", "slugs": ["c", "d"], "verified": [],
                        "stragglers": [], "cp_attempts": 0, "seconds": 0.0})
    assert (later.status, later.verified, later.unverified, later.calls, later.seconds) == (
        "not started", "—", [], "—", "—")  # never "0/2" for a wave that never ran
