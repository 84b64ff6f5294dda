"""The control-plane client: `POST {cp}/cp/admin/tenants/redeploy-fleet` (CONTRACT §4).

One call lists the tenants (a dry run), one scoped call redeploys one wave. Everything the CP says
is untrusted: answers are parsed defensively (anything malformed is `Failed`, never a crash),
slugs must match `SLUG_RE` (a hostile one fails the run and is never requested), and a row's
`error` text is redacted (escape sequences, secrets, control characters) and truncated before it
can reach any output. The raw body is never printed, logged or kept.

`Authorization: Bearer` goes only to the CP origin: the request URL is built from `cp_url`,
redirects are not followed, and the client ignores the environment (`trust_env=False`: no proxy
from `*_PROXY` that could re-route the token through another host).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import stamina

from pipelines.errors import Failed
from pipelines.redact import Secret, redact
from pipelines.settings import SLUG_RE

REDEPLOY_PATH = "/cp/admin/tenants/redeploy-fleet"
RETRIED_STATUSES = frozenset({502, 503, 504})
RETRIES = 3  # after the first attempt: backoff × 1, 2, 4
ERROR_TEXT_LIMIT = 200
# Connecting and sending are quick; only the read waits for a wave's slowest tenant.
SHORT_TIMEOUT = 10.0
# A CP answer bigger than this is not an answer we can trust to parse; tenants × rows stays far below.
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class CPRow:
    """One tenant's row of a CP answer. Informational: `/buildinfo` is the only source of truth."""

    slug: str
    phase: str
    ssm_status: str
    ssm_exit_code: int | None
    healthz_ok: bool | None
    error: str  # redacted, truncated
    verified_on_target: bool | None


@dataclass(frozen=True)
class CPAnswer:
    ok: bool
    rows: list[CPRow]
    error: str  # redacted
    status: int = 0  # HTTP status of the answer that was parsed (0 when no call was needed)
    attempts: int = 0  # calls made (1 = no retry)
    sent: tuple[tuple[str, ...], ...] = ()  # the only_slugs of each attempt, in order


class _Retryable(Exception):
    """A 502/503/504: the wave may be half done; retry for the tenants that still need it."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


_RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, _Retryable)


def escaped_slug(value: object) -> str:
    """A rejected slug as it may be printed: repr (escapes control characters), truncated."""
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def check_slug(value: object, where: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise Failed(f"{where}: rejected tenant slug {escaped_slug(value)} (allowed: {SLUG_RE.pattern})")
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Retryable):
        return f"HTTP {exc.status}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"connection error ({type(exc).__name__})"


class CPClient:
    """An async context manager holding one httpx client for the CP origin."""

    def __init__(self, cp_url: str, token: Secret, *, read_timeout: float, retry_backoff: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport  # tests only (httpx.MockTransport); None = real sockets
        self.cp_url = cp_url.rstrip("/")
        self._token = token
        self.read_timeout = read_timeout
        self.retry_backoff = retry_backoff
        short = min(SHORT_TIMEOUT, read_timeout) if read_timeout > 0 else SHORT_TIMEOUT
        self._timeout = httpx.Timeout(connect=short, read=read_timeout, write=short, pool=short)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> CPClient:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, trust_env=False,
                                         transport=self._transport)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---------------------------------------------------------------- public calls

    async def list_tenants(self, target_tag: str) -> list[str]:
        """The CP's dry-run listing: every tenant slug, validated, deduplicated, sorted."""
        body: dict[str, Any] = {"target_tag": target_tag, "confirm": True, "dry_run": True,
                                "batch_size": 1, "soak_seconds": 0}
        answer = await self._call_with_retries(body, None, None)
        return sorted({row.slug for row in answer.rows})

    async def redeploy_wave(self, target_tag: str, slugs: list[str], *, dry_run: bool,
                            still_needed: Callable[[list[str]], Awaitable[list[str]]]) -> CPAnswer:
        """One scoped call for one wave. 502/503/504, timeouts and lost connections are retried
        (3 times, backing off retry_backoff × 1, 2, 4), each retry re-sending only the slugs
        `still_needed` returns; when none are still needed, no further call is made.
        Any other non-2xx, `ok: false` or a malformed answer: `Failed`."""
        if not slugs:
            raise Failed("CP wave: no tenants to redeploy (a wave is never empty)")
        wave = [check_slug(s, "CP wave") for s in slugs]
        if len(set(wave)) != len(wave):
            raise Failed("CP wave: duplicate tenant slugs in one wave")
        body: dict[str, Any] = {"target_tag": target_tag, "confirm": True, "dry_run": dry_run,
                                "soak_seconds": 0}
        return await self._call_with_retries(body, wave, still_needed)

    # ---------------------------------------------------------------- internals

    async def _call_with_retries(self, body: dict[str, Any], wave: list[str] | None,
                                 still_needed: Callable[[list[str]], Awaitable[list[str]]] | None,
                                 ) -> CPAnswer:
        sent: list[tuple[str, ...]] = []
        try:
            # Bounded by attempts; each attempt has its own explicit timeouts, so no overall deadline.
            async for attempt in stamina.retry_context(
                on=_RETRIED_ERRORS, attempts=RETRIES + 1, timeout=None,
                wait_initial=self.retry_backoff, wait_exp_base=2, wait_jitter=0,
                wait_max=self.retry_backoff * 2 ** (RETRIES - 1),
            ):
                with attempt:
                    payload = dict(body)
                    if wave is not None:
                        slugs = wave
                        if attempt.num > 1 and still_needed is not None:
                            slugs = _still_within(wave, await still_needed(list(wave)))
                            if not slugs:
                                return CPAnswer(ok=True, rows=[], error="", status=0, attempts=len(sent),
                                                sent=tuple(sent))
                        payload["only_slugs"] = slugs
                        payload["batch_size"] = len(slugs)
                        sent.append(tuple(slugs))
                    else:
                        sent.append(())
                    status, raw = await self._post(payload)
                    answer = _parse_answer(status, raw, expected=set(payload.get("only_slugs") or []) or None)
                    return CPAnswer(ok=answer.ok, rows=answer.rows, error=answer.error, status=status,
                                    attempts=len(sent), sent=tuple(sent))
        except _RETRIED_ERRORS as exc:
            raise Failed(f"CP redeploy-fleet: {_describe(exc)} after {len(sent)} attempts "
                     f"({RETRIES} retries); giving up",
                         details={"cp_attempts": [list(s) for s in sent]}) from None
        raise AssertionError("unreachable: stamina either returns an attempt's answer or re-raises")

    async def _post(self, payload: dict[str, Any]) -> tuple[int, bytes]:
        if self._client is None:
            raise RuntimeError("CPClient used outside `async with`")
        url = self.cp_url + REDEPLOY_PATH
        headers = {"Authorization": f"Bearer {self._token.reveal()}", "Accept": "application/json"}
        async with self._client.stream("POST", url, json=payload, headers=headers) as response:
            if response.status_code in RETRIED_STATUSES:
                raise _Retryable(response.status_code)
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw.extend(chunk)
                if len(raw) > MAX_BODY_BYTES:
                    raise Failed(f"CP redeploy-fleet: answer larger than {MAX_BODY_BYTES} bytes (HTTP "
                                 f"{response.status_code}); refusing to parse it")
            return response.status_code, bytes(raw)


def _still_within(wave: list[str], needed: list[str]) -> list[str]:
    """The wave's slugs that are still needed, in wave order: a retry never widens the wave."""
    wanted = set(needed)
    return [s for s in wave if s in wanted]


def _parse_answer(status: int, raw: bytes, *, expected: set[str] | None) -> CPAnswer:
    """Turn a non-retried CP answer into a `CPAnswer`, or `Failed` naming what was wrong."""
    where = f"CP redeploy-fleet (HTTP {status})"
    data: Any = None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if 300 <= status < 400:
        raise Failed(f"{where}: redirect not followed (the CP token goes only to --cp-url)")
    if not 200 <= status < 300:
        said = ""
        if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"].strip():
            said = f": {redact(data['error'], limit=ERROR_TEXT_LIMIT)}"
        raise Failed(f"{where}: refused{said}")
    if not isinstance(data, dict):
        raise Failed(f"{where}: answer is not a JSON object")
    ok = data.get("ok")
    if not isinstance(ok, bool):
        raise Failed(f"{where}: answer has no boolean `ok`")
    error_field = data.get("error")
    if error_field is not None and not isinstance(error_field, str):
        raise Failed(f"{where}: `error` is not a string")
    error = redact(error_field or "", limit=ERROR_TEXT_LIMIT)
    if not ok:
        raise Failed(f"{where}: ok: false — {error or 'no reason given'}")
    results = data.get("results")
    if not isinstance(results, list):
        raise Failed(f"{where}: answer has no `results` list")
    rows = [_parse_row(item, i, where) for i, item in enumerate(results)]
    if expected is not None:
        strangers = sorted({r.slug for r in rows} - expected)
        if strangers:
            raise Failed(f"{where}: answered for tenants outside the wave: {', '.join(strangers[:5])}")
    return CPAnswer(ok=True, rows=rows, error=error)


def _parse_row(item: Any, index: int, where: str) -> CPRow:
    if not isinstance(item, dict):
        raise Failed(f"{where}: results[{index}] is not an object")
    slug = check_slug(item.get("slug"), f"{where}: results[{index}]")

    def text(name: str) -> str:
        value = item.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise Failed(f"{where}: results[{index}].{name} is not a string")
        return redact(value, limit=ERROR_TEXT_LIMIT)

    def flag(name: str) -> bool | None:
        value = item.get(name)
        if value is not None and not isinstance(value, bool):
            raise Failed(f"{where}: results[{index}].{name} is not a boolean")
        return value

    exit_code = item.get("ssm_exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise Failed(f"{where}: results[{index}].ssm_exit_code is not an integer")
    return CPRow(slug=slug, phase=text("phase")[:60], ssm_status=text("ssm_status")[:60],
                 ssm_exit_code=exit_code, healthz_ok=flag("healthz_ok"), error=text("error"),
                 verified_on_target=flag("verified_on_target"))


def row_facts(row: CPRow) -> dict[str, Any]:
    """A row as ledger/summary facts (already redacted)."""
    return {"slug": row.slug, "phase": row.phase, "ssm_status": row.ssm_status,
            "ssm_exit_code": row.ssm_exit_code, "healthz_ok": row.healthz_ok, "error": row.error,
            "verified_on_target": row.verified_on_target}
