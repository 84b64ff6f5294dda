"""Output: plain lines off a terminal, rich on one, NO_COLOR honoured, never a secret."""

from __future__ import annotations

import io

import pytest

from pipelines.output import Output
from pipelines.redact import Secret


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_lines_are_plain_kept_whole_and_redacted() -> None:
    token = Secret("tok-output-test-5678")
    err = io.StringIO()
    out = Output(stream=err)
    out.ok(f"table\n  alpha    verified\n  bravo    stale   token={token.reveal()}")
    text = err.getvalue()
    assert "\x1b" not in text
    assert text.splitlines() == ["✔ table", "  alpha    verified", "  bravo    stale   token=***"]


def test_on_a_terminal_colour_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    tty = FakeTTY()
    Output(stream=tty).error("it broke")
    assert "\x1b[" in tty.getvalue() and "it broke" in tty.getvalue()


def test_no_color_is_respected_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTTY()
    Output(stream=tty).error("it broke")
    assert "\x1b[3" not in tty.getvalue()  # no colour codes
    assert "✘ it broke" in tty.getvalue()


@pytest.mark.anyio
async def test_pause_shows_a_countdown_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    plain = io.StringIO()
    await Output(stream=plain).pause(0.01, "soaking after canary")
    assert plain.getvalue() == ""
    tty = FakeTTY()
    await Output(stream=tty).pause(0.01, "soaking after canary")
    assert "soaking after canary" in tty.getvalue()


def test_json_result_goes_to_stdout_and_human_line_to_stderr() -> None:
    err, std = io.StringIO(), io.StringIO()
    Output(json_mode=True, stream=err, stdout=std).result({"ok": True}, "done")
    assert std.getvalue().strip() == '{"ok": true}' and err.getvalue() == ""
    err, std = io.StringIO(), io.StringIO()
    Output(stream=err, stdout=std).result({"ok": True}, "done")
    assert std.getvalue() == "" and err.getvalue() == "done\n"


def test_long_slug_lists_are_cut_for_humans() -> None:
    from pipelines.output import cut_list

    slugs = [f"tenant-{i:03d}" for i in range(200)]
    assert cut_list(slugs) == ", ".join(slugs[:10]) + " … and 190 more"
    assert cut_list(slugs[:10]) == ", ".join(slugs[:10])
    assert cut_list([]) == "none"


def test_progress_off_a_terminal_is_one_plain_line_per_change() -> None:
    now = [100.0]
    err = io.StringIO()
    out = Output(stream=err)
    with out.progress("wave 2 of 5: verifying", total=3, seconds=60, clock=lambda: now[0]) as bar:
        now[0] += 10
        bar.update(done=1)
        bar.update(done=1)  # no change: no line
        now[0] += 5
        bar.update(done=3)
    lines = err.getvalue().splitlines()
    assert lines == ["wave 2 of 5: verifying — 0 of 3 verified — 0s of 60s, 60s left",
                     "wave 2 of 5: verifying — 1 of 3 verified — 10s of 60s, 50s left",
                     "wave 2 of 5: verifying — 3 of 3 verified — 15s of 60s, 45s left"]


def test_progress_on_a_terminal_draws_a_live_line_that_shows_elapsed_of_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    now = [0.0]
    tty = FakeTTY()
    out = Output(stream=tty)
    with out.progress("wave 1 of 3: CP call", seconds=600, clock=lambda: now[0]) as bar:
        now[0] = 42.0
        assert bar.text() == "wave 1 of 3: CP call — 42s of 600s, 558s left"
        bar.update(note="waiting for the slowest tenant")
        assert bar.text().endswith("— waiting for the slowest tenant")
    assert "wave 1 of 3: CP call" in tty.getvalue()  # rich drew it (and cleared it: transient)


def test_progress_text_is_redacted() -> None:
    token = Secret("tok-progress-test-9999")
    bar_text = []
    err = io.StringIO()
    with Output(stream=err).progress(f"label {token.reveal()}", clock=lambda: 0.0) as bar:
        bar_text.append(bar.text())
    assert "tok-progress-test-9999" not in err.getvalue() + bar_text[0]
