"""Secrets and redaction: no token, credential or control character reaches a log.

`Secret` hides its value from repr/str/format; every Secret made registers its value so that
`redact` can scrub it from any text (CP error rows, exception messages) before output.
"""

from __future__ import annotations

import re

_KNOWN: set[str] = set()
_CREDENTIAL_PATTERNS = (
    # auth header values: a word after "token"/"bearer" counts only if it has a digit (so prose survives)
    re.compile(r"(?i)\b(bearer|token|basic)\s+(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@]*(:[^/\s@]*)?@"),  # user:pass@ in URLs
    re.compile(r"(?i)\b((?:access_)?token|password|passwd|secret|api[_-]?key)=([^&\s\"']+)"),
    re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16})\b"),
)
# Whole terminal escape sequences (CSI, OSC, two-byte) go first, so no `[31m` fragment survives.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x1b\u0080-\u009f\u2028\u2029]")


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
    out = _ANSI_ESCAPE.sub("", text)
    for value in sorted(_KNOWN, key=len, reverse=True):
        out = out.replace(value, "***")
    out = _CREDENTIAL_PATTERNS[0].sub(lambda m: f"{m.group(1)} ***", out)
    out = _CREDENTIAL_PATTERNS[1].sub(lambda m: f"{m.group(1)}***@", out)
    out = _CREDENTIAL_PATTERNS[2].sub(lambda m: f"{m.group(1)}=***", out)
    out = _CREDENTIAL_PATTERNS[3].sub("***", out)
    out = _CONTROL.sub(" ", out)
    out = " ".join(out.split()) if fold else out.rstrip()
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out
