"""Secrets and redaction: the value never shows, and no form of a known token survives `redact`."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipelines.redact
from pipelines.redact import INVISIBLE, Secret, redact


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


# ---------------------------------------------------------------- every form of a token (property tests)

@contextmanager
def registered(token: str) -> Iterator[None]:
    """`Secret(token)` for one example only: random tokens such as `00000000` must not stay known and
    redact SHAs in every later test."""
    before = set(pipelines.redact._KNOWN)
    Secret(token)
    try:
        yield
    finally:
        pipelines.redact._KNOWN.intersection_update(before)

TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-+/="
tokens = st.text(alphabet=TOKEN_ALPHABET, min_size=8, max_size=48).filter(lambda t: t.strip("=") != "")
# Surrounding server text: printable ASCII, some non-ASCII, and the invisible characters themselves.
surroundings = st.text(alphabet=st.sampled_from(
    [chr(c) for c in range(32, 127)] + ["é", "ß", "€", "\u200b", "\u202e", "\u2066", "\ufeff", "\n", "\t"]),
    max_size=40)


def _b64(text: str, *, urlsafe: bool = False, padded: bool = True) -> str:
    raw = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text.encode()).decode()
    return raw if padded else raw.rstrip("=")


FORMS: dict[str, Callable[[str], str]] = {
    "as is": lambda t: t,
    "upper": str.upper,
    "lower": str.lower,
    "swapped case": str.swapcase,
    "base64": _b64,
    "base64 unpadded": lambda t: _b64(t, padded=False),
    "base64 url-safe": lambda t: _b64(t, urlsafe=True),
    "base64 url-safe unpadded": lambda t: _b64(t, urlsafe=True, padded=False),
    "basic auth pair": lambda t: _b64(f"deploy-bot:{t}"),
    "basic auth pair, url-safe unpadded": lambda t: _b64(f"x:{t}", urlsafe=True, padded=False),
    "percent-encoded": lambda t: quote(t, safe=""),
    "every character percent-encoded": lambda t: "".join(f"%{b:02x}" for b in t.encode()),
    "zero-width split": lambda t: "\u200b".join(t),
    "split by bidi and joiners": lambda t: "\u202e\u2066\u200d".join(t),
}


def _leaks(token: str, out: str) -> list[str]:
    """Which forms of `token` can still be read in `out` (after invisible characters are dropped)."""
    visible = INVISIBLE.sub("", out).lower()
    return [name for name, form in FORMS.items() if form(token).lower() in visible]


@settings(max_examples=150, deadline=None)
@given(token=tokens, form=st.sampled_from(sorted(FORMS)), before=surroundings, after=surroundings)
def test_no_form_of_a_known_token_survives(token: str, form: str, before: str, after: str) -> None:
    with registered(token):
        out = redact(before + FORMS[form](token) + after, limit=10_000)
        assert _leaks(token, out) == []


@settings(max_examples=100, deadline=None)
@given(text=surroundings)
def test_invisible_characters_never_survive(text: str) -> None:
    out = redact(text, limit=10_000)
    assert INVISIBLE.search(out) is None
    assert "\u202e" not in out and "\u200b" not in out


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from([chr(c) for c in range(32, 127)]), max_size=60))
def test_text_without_secrets_keeps_its_words(text: str) -> None:
    # Redaction of unknown text is only credential-shaped: plain words are untouched.
    words = [w for w in text.split() if w.isalpha()]
    out = redact(text, limit=10_000)
    assert all(w in out for w in words)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_of_a_token_is_redacted_in_a_cp_error(form: str) -> None:
    token = "cp-Admin-Token-4f9a2b77"
    with registered(token):
        out = redact(f"upstream said: invalid credential {FORMS[form](token)} (denied)")
    assert _leaks(token, out) == []
    assert out.startswith("upstream said: invalid credential") and out.endswith("(denied)")


def test_bidi_and_zero_width_characters_are_removed_from_server_text() -> None:
    assert redact("tenant \u202eTCEJER\u202c a\u200bb\u2066c\u2069 \ufeffok") == "tenant TCEJER abc ok"


# ---------------------------------------------------------------- the memo never outlives what was known

@given(token=tokens, prefix=surroundings)
def test_a_text_redacted_before_its_secret_was_known_is_redacted_after(token: str, prefix: str) -> None:
    """`redact` remembers its answers (a ledger repeats slugs and SHAs): a secret made after a text was
    first redacted must still be scrubbed from that same text the next time."""
    text = f"{prefix} {token} {prefix}"
    redact(text, limit=2000)  # remembered while the token was not a secret yet
    with registered(token):
        again = redact(text, limit=2000)
        assert token.lower() not in again.lower()
    assert redact(text, limit=2000) == redact(text, limit=2000)  # and forgotten again with the secret


def test_the_memo_answers_the_same_as_a_fresh_redaction() -> None:
    text = "tenant-001 runs 760874dcddabb1ef547664fd530b0df6339ba14f\x1b[31m token abc123def456"
    first = redact(text)
    assert redact(text) == first == pipelines.redact._redact(text, 300, True)
    assert redact(text, limit=20) == pipelines.redact._redact(text, 20, True) != first
