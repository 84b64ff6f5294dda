from __future__ import annotations

import pickle

import pytest

from pipelines.redact import Secret, redact


def test_secret_never_shows_its_value() -> None:
    s = Secret("tok-very-secret-1234")
    assert "tok-very" not in repr(s) + str(s) + f"{s}" + f"{s!r}"
    assert s.reveal() == "tok-very-secret-1234"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_known_secrets_are_scrubbed_from_any_text() -> None:
    Secret("zz-known-token-987")
    assert redact("the CP said zz-known-token-987 was bad") == "the CP said *** was bad"


@pytest.mark.parametrize(
    ("text", "absent"),
    [
        ("Authorization: Bearer abcdef123456", "abcdef123456"),
        ("fetch https://deploy:hunter2@registry.example/v2/", "hunter2"),
        ("GET /x?access_token=qwerty12&y=1", "qwerty12"),
        ("leaked ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghij"),
    ],
)
def test_credentials_are_scrubbed(text: str, absent: str) -> None:
    assert absent not in redact(text)


def test_escape_sequences_and_control_characters_leave_whole_and_output_is_one_line() -> None:
    out = redact("a\x1b[31mred\x1b[0m\n\x1b]0;title\x07next\rline\x00")
    assert out == "ared next line"
    assert "[31m" not in out


def test_long_text_is_truncated() -> None:
    out = redact("x" * 1000, limit=50)
    assert len(out) == 50 and out.endswith("…")


def test_prose_after_the_word_token_survives() -> None:
    assert redact("the Gitea token cannot write Actions variables") == "the Gitea token cannot write Actions variables"
