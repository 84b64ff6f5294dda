"""Secrets and redaction: no token, credential or control character reaches a log.

`Secret` hides its value from repr/str/format; every Secret made registers its value so that
`redact` can scrub it from any text (CP error rows, exception messages) before output — in any
case, and in the forms a server or a library may echo it back: base64 (standard and URL-safe,
with or without padding, also inside a `user:token` pair), percent-encoded, or split by
zero-width characters. Invisible characters (zero-width, bidi overrides and isolates) are removed
from all text first: they hide or reorder what a reader sees, and they would split a token.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_to_bytes

_KNOWN: set[str] = set()
_CREDENTIAL_PATTERNS = (
    # auth header values: a word after "token"/"bearer" counts only if it has a digit (so prose survives)
    re.compile(r"(?i)\b(bearer|token|basic)\s+(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{6,}"),
    # user:pass@ in URLs; the scheme is bounded so a long run of letters is not scanned quadratically
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://)[^/\s:@]*(:[^/\s@]*)?@"),
    re.compile(r"(?i)\b((?:access_)?token|password|passwd|secret|api[_-]?key)=([^&\s\"']+)"),
    re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16})\b"),
)
# Whole terminal escape sequences (CSI, OSC, two-byte) go first, so no `[31m` fragment survives.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x1b\u0080-\u009f\u2028\u2029]")
# Zero-width characters, soft hyphen, bidi marks, embeddings, overrides and isolates, BOM.
INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                       "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
_WORD = re.compile(r"\S+")
_compiled: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)
_shortest_form = 0  # characters in the shortest form of a known secret: a shorter text cannot hold one
# What `redact` answered, by (text, limit, fold), for the secrets known now: a run's ledger writes the
# same slugs and SHAs many times (a 1,000-tenant `done` holds ~10,000 strings), and ten regex passes
# each cost more than the rest of a record. Emptied whenever the known secrets change (it is tied to
# the compiled pattern), and bounded. It holds texts as given; it never leaves the process.
_memo: dict[tuple[str, int, bool], str] = {}
_MEMO_MAX = 1 << 16


def _forms(value: str) -> set[str]:
    """`value` as a server or a library may echo it: itself, base64 and percent-encoded."""
    raw = value.encode("utf-8")
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value)}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms |= {text, text.rstrip("=")}
    return forms


def _known_pattern() -> re.Pattern[str] | None:
    """One case-insensitive pattern for every form of every known secret, rebuilt when one is added."""
    global _compiled, _shortest_form
    known = frozenset(_KNOWN)
    if known != _compiled[0]:
        forms = sorted({f for value in known for f in _forms(value)}, key=len, reverse=True)
        _shortest_form = len(forms[-1]) if forms else 0
        _compiled = (known, re.compile("|".join(map(re.escape, forms)), re.IGNORECASE) if forms else None)
        _memo.clear()  # an answer given before this secret was known may hold it
    return _compiled[1]


def _hides_a_secret(decoded: bytes, pattern: re.Pattern[str]) -> bool:
    return pattern.search(decoded.decode("utf-8", "replace")) is not None


def _base64_hides(run: str, pattern: re.Pattern[str]) -> bool:
    """Whether `run` is base64 (either alphabet, any offset, padded or not) of text holding a secret —
    e.g. `Basic base64(user:token)`, whatever the user."""
    if len(run) * 3 // 4 < _shortest_form:  # decodes to fewer characters than any form of a secret
        return False
    normalised = run.rstrip("=").replace("-", "+").replace("_", "/")
    for offset in range(4):
        chunk = normalised[offset:]
        if len(chunk) % 4 == 1:  # one stray character cannot be base64: drop it
            chunk = chunk[:-1]
        if len(chunk) < 4:
            break
        chunk += "=" * (-len(chunk) % 4)
        try:
            decoded = base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError):
            continue
        if _hides_a_secret(decoded, pattern):
            return True
    return False


def scrub_secrets(text: str) -> str:
    """`text` with invisible characters removed and every known secret, in any of its forms, as ***."""
    out = INVISIBLE.sub("", text)
    pattern = _known_pattern()
    if pattern is None:
        return out
    out = pattern.sub("***", out)
    out = _BASE64_RUN.sub(lambda m: "***" if _base64_hides(m.group(), pattern) else m.group(), out)
    if "%" not in out:
        return out
    # A word holding a percent-encoded secret goes whole (at worst a URL more than needed).
    return _WORD.sub(lambda m: "***" if "%" in m.group() and _hides_a_secret(unquote_to_bytes(m.group()), pattern)
                     else m.group(), out)


def redact_tree(value: Any, *, limit: int, fold: bool = True, key_limit: int = 200) -> Any:
    """A JSON-bound value made safe to write: every string (keys too) through `redact`, a `Secret` as
    `***`, anything else that is not a JSON type as its redacted `str`, sets sorted."""
    if isinstance(value, Secret):
        return "***"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value, limit=limit, fold=fold)
    if isinstance(value, Mapping):
        return {(redact(k, limit=key_limit) if isinstance(k, str) else k): redact_tree(v, limit=limit, fold=fold,
                                                                                    key_limit=key_limit)
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [redact_tree(v, limit=limit, fold=fold, key_limit=key_limit) for v in items]
    return redact(str(value), limit=limit, fold=fold)


class Secret:
    """A token. Its value leaves only through `reveal()`, for an Authorization header."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= 4:
            _KNOWN.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickled with its value
        raise TypeError("a Secret cannot be pickled")


def redact(text: str, limit: int = 300, *, fold: bool = True) -> str:
    """`text` with known secrets, credentials and control characters removed, truncated; on one
    line with white space folded, or (`fold=False`, for one line of a table) with its spacing kept."""
    _known_pattern()  # first: a secret added since the last call empties the memo
    key = (text, limit, fold)
    out = _memo.get(key)
    if out is None:
        out = _redact(text, limit, fold)
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[key] = out
    return out


def _redact(text: str, limit: int, fold: bool) -> str:
    out = scrub_secrets(_ANSI_ESCAPE.sub("", text))
    out = _CREDENTIAL_PATTERNS[0].sub(lambda m: f"{m.group(1)} ***", out)
    out = _CREDENTIAL_PATTERNS[1].sub(lambda m: f"{m.group(1)}***@", out)
    out = _CREDENTIAL_PATTERNS[2].sub(lambda m: f"{m.group(1)}=***", out)
    out = _CREDENTIAL_PATTERNS[3].sub("***", out)
    out = _CONTROL.sub(" ", out)
    out = " ".join(out.split()) if fold else out.rstrip()
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out
