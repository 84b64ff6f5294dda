"""URL checks that match the HTTP layer: the CP URL guard (a run may talk to a non-production control
plane only when told so), host names httpx will accept, and URLs compared as httpx will send them."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import idna

from pipelines.errors import UsageError

# The production control plane: the guard's default, and what the linter calls a production deploy.
PRODUCTION_CP_URL = "https://api.moleculesai.app"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port), normalised: case, trailing dot/slash and default port do not matter."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        raise UsageError(f"not an http(s) origin without credentials: {url!r}")
    return scheme, host, parts.port or _DEFAULT_PORTS[scheme]


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def check_cp_url(cp_url: str, prod_cp_url: str, allow_non_prod: bool) -> None:
    if not same_origin(cp_url, prod_cp_url) and not allow_non_prod:
        raise UsageError(
            f"--cp-url {cp_url} is not the production control plane {prod_cp_url}; "
            "pass --allow-non-prod-cp-url (PROD_ALLOW_NON_PROD_CP_URL=true) if that is intended"
        )


def check_host(hostname: str, where: str) -> None:
    """`hostname` is an IP address or a valid IDNA name (control characters, empty labels, `%`, braces
    and broken A-labels are refused here, before the HTTP layer would fail or, worse, send it)."""
    try:
        ipaddress.ip_address(hostname)
        return
    except ValueError:
        pass
    try:
        # As httpx encodes a non-ASCII host (IDNA 2008, no mapping: a zero-width space is refused, not
        # dropped). An ASCII host is sent as it is: checked as IDNA too, but for an underscore, which
        # container networks resolve although RFC 1123 does not allow it.
        idna.encode(hostname.lower().replace("_", "u") if hostname.isascii() else hostname.lower())
    except (idna.IDNAError, UnicodeError, ValueError):
        raise UsageError(f"{where}: {hostname[:80]!r} is not a valid host name (IDNA)") from None


def normalised_url(url: str, where: str) -> str:
    """`url` as httpx will request it: host lower-cased and IDNA-encoded, dot segments folded."""
    import httpx

    try:
        return str(httpx.URL(url)).rstrip("/")
    except httpx.InvalidURL as exc:
        raise UsageError(f"{where}: not a valid URL: {str(exc)[:120]}") from None
