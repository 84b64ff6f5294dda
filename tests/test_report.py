"""`report`: one run of the ledger as text, Markdown and one self-contained HTML page — the HTML
opened in headless Chromium (Debian's `chromium`), screenshotted and checked."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest
from loopback import run_main

from pipelines.ledger import Ledger
from pipelines.report.model import summary_result
from pipelines.report.runs import find_run, group_runs
from pipelines.sandbox.scenarios import SANDBOX_LEDGER
from pipelines.summary import render as render_summary

HOSTILE = '<script>alert(1)</script><a href="http://evil.example/">click</a>'


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")


def deploy(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> int:
    code, _, _ = run_main(monkeypatch, capsys, "deploy-production", "--sandbox", *args)
    return code


def report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "report", "--ledger", SANDBOX_LEDGER, *args)


def test_runs_are_grouped_by_run_id_and_ordered_by_their_last_write() -> None:
    events = [{"run_id": "a", "event": "plan"}, {"run_id": "b", "event": "plan"},
              {"run_id": "op", "event": "lease", "action": "broken"}, {"run_id": "a", "event": "done"}]
    runs = group_runs(events)
    assert [r.run_id for r in runs] == ["b", "a"]  # the operator's lone lease record is no run
    assert runs[0].outcome == "unfinished" and runs[1].outcome == "?"


def test_text_and_markdown_tell_the_run_from_its_own_facts(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy(monkeypatch, capsys, "--scenario", "stuck-tenant", "--max-stragglers", "1") == 0
    record = find_run(SANDBOX_LEDGER)
    assert record is not None
    code, text, _ = report(monkeypatch, capsys)
    assert code == 0
    assert f"run {record.run_id}" in text and "canary 0: verified, 1/1 verified" in text
    assert "canary: CP call ok" in text  # the CP call named by its wave's label
    assert "stragglers within the budget: delta" in text  # the 4th tenant, as the run recorded it
    code, md, _ = report(monkeypatch, capsys, "--format", "md", "--run", record.run_id[:10])
    assert code == 0 and md == render_summary(summary_result(record))  # what the step summary holds
    assert "delta" in md
    code, out, _ = report(monkeypatch, capsys, "--json")
    assert code == 0 and json.loads(out)["run"]["stragglers"] == ["delta"]


def test_a_done_that_carries_its_result_is_rendered_as_is(tmp_path: Path) -> None:
    result = {"verb": "rollout", "outcome": "deployed", "exit_code": 0, "sha": "c" * 40, "stragglers": ["x"],
              "waves": [{"index": 0, "kind": "canary", "slugs": ["a"], "verified": ["a"], "stragglers": []}]}
    ledger = Ledger(tmp_path / "l.jsonl", "r1")
    ledger.record("plan", verb="rollout")
    ledger.record("done", outcome="deployed", exit_code=0, result=result)
    record = find_run(tmp_path / "l.jsonl")
    assert record is not None and summary_result(record) == result


def test_unknown_run_is_a_usage_error_and_an_empty_ledger_fails(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = report(monkeypatch, capsys)
    assert code == 1 and "nothing to report" in err
    Ledger(SANDBOX_LEDGER, "r-1").record("plan", verb="rollout")
    code, _, err = report(monkeypatch, capsys, "--run", "nope")
    assert code == 2 and "r-1" in err


def test_html_escapes_everything_and_links_nothing(tmp_path: Path) -> None:
    from pipelines.report.render import html_page

    ledger = Ledger(tmp_path / "l.jsonl", "run-x")
    ledger.record("plan", verb="deploy-production", sha="d" * 40, tag=HOSTILE)
    ledger.record("wave_start", wave=1, label=HOSTILE, slugs=[HOSTILE])
    ledger.record("wave_failed", wave=1, label=HOSTILE, reason=HOSTILE)
    ledger.record("halt", reason=HOSTILE)
    ledger.record("done", exit_code=1, outcome="failed", error=HOSTILE,
                  tenants={"alpha": {"before": HOSTILE, "after": None, "verdict": HOSTILE}})
    record = find_run(tmp_path / "l.jsonl")
    assert record is not None
    page = html_page(record)
    assert "<script" not in page
    assert "<a " not in page and ' href="' not in page  # escaped text, never a link
    assert "&lt;script&gt;" in page and "&lt;a href=&quot;" in page


# ---------------------------------------------------------------- in a real browser


def chromium() -> str:
    """Debian's chromium; installed here when missing (tests need it: never skipped)."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                       capture_output=True, timeout=900)
        found = shutil.which("chromium")
    assert found is not None, "chromium could not be installed"
    return found


def browse(url: str, *what: str) -> subprocess.CompletedProcess[bytes]:
    profile = tempfile.mkdtemp(prefix="fleetgate-chromium-")
    try:
        return subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1200,1600", *what, url],
            capture_output=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def png_colours(data: bytes) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct pixel values) of an 8-bit RGB/RGBA PNG: a decoder just big enough."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 4 == 0:  # every 4th row is plenty to tell a drawn page from a blank one
            colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp * 2))
        previous = line
    return width, height, colours


def test_the_html_report_renders_in_chromium(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    assert deploy(monkeypatch, capsys) == 0
    code, page, _ = report(monkeypatch, capsys, "--format", "html")
    assert code == 0
    target = tmp_path / "run.html"
    target.write_text(page, encoding="utf-8")
    shot = tmp_path / "run.png"
    done = browse(target.as_uri(), f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    assert len(colours) > 20  # text, bars in four colours, tables: far from a blank page
    assert bytes.fromhex("2e9d57") in colours and bytes.fromhex("3a6fd8") in colours  # verified and CP bars
    dom = browse(target.as_uri(), "--dump-dom").stdout.decode("utf-8", "replace")
    assert dom.count('<tr class="wave">') == 3  # the canary and two waves of three (seven tenants)
    for label in ("canary", "wave 1", "wave 2"):
        assert f'class="lane">{label}</text>' in dom, label
    assert 'id="outcome"' in dom and "exit 0" in dom
    shutil.copy(shot, Path(tempfile.gettempdir()) / "fleetgate-report-screenshot.png")  # for a human to look at


def test_the_timeline_draws_soaks_once_and_marks_a_regression(tmp_path: Path) -> None:
    from pipelines.report.model import timeline

    ledger = Ledger(tmp_path / "l.jsonl", "run-s")
    ledger.record("plan", verb="rollout")
    ledger.record("wave_start", wave=0, label="canary", canary=True, slugs=["alpha"])
    ledger.record("cp_call", wave=0, ok=True)
    ledger.record("wave_verified", wave=0, label="canary", slugs=["alpha"], stragglers=[])
    ledger.record("approval", action="waiting", context="fleetgate/approve")
    ledger.record("approval", action="approved", context="fleetgate/approve")
    ledger.record("soak", after="canary", seconds=60)
    ledger.record("soak", after="canary", action="regressed", slug="alpha", verdict="stale")
    ledger.record("soak", after="canary", action="watched", ticks=3)
    ledger.record("done", exit_code=1, outcome="failed")
    record = find_run(tmp_path / "l.jsonl")
    assert record is not None
    line = timeline(record)
    assert [s.label for s in line.spans if s.lane == "soak"] == ["soak after canary (60s)"]
    assert [m.label for m in line.marks if m.lane == "soak"] == ["alpha regressed"]
    assert [s.lane for s in line.spans if s.label == "approval wait"] == ["approval"]
    assert [s.label for s in line.spans if s.lane == "canary"] == ["CP call ok", "verified"]
