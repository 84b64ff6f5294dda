"""Tenant slugs from outside (the CP, `--only`, a wave): checked against `SLUG_RE`, printed escaped.

Its own module, free of httpx, so `fleetgate verify --only x` (which talks to no CP) does not pay
for the HTTP client stack to check a slug.
"""

from __future__ import annotations

from pipelines.errors import Failed
from pipelines.settings import SLUG_RE


def escaped_slug(value: object) -> str:
    """A rejected slug as it may be printed: repr (escapes control characters), truncated."""
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def check_slug(value: object, where: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise Failed(f"{where}: rejected tenant slug {escaped_slug(value)} (allowed: {SLUG_RE.pattern})")
    return value


__all__ = ["check_slug", "escaped_slug"]
