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
