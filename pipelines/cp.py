"""The control-plane client: `POST {cp}/cp/admin/tenants/redeploy-fleet` (CONTRACT §4).

Single calls only. `list_tenants` (a dry run: it changes nothing) is retried on 502/503/504 and
transport failures; `redeploy_wave` is exactly ONE POST and never retried here: retrying a write
is the rollout's decision (`pipelines/rollout/engine.py`), and each retry passes its guard.
`CPUnavailable`, `TimedOut` and `Unreachable` say "the wave may be half done"; anything else is final.

Every call has a deadline over the whole exchange (`--cp-timeout`): a CP that drips one byte a
second cannot outlive it (`pipelines.http.client.send`). Everything the CP says is untrusted:
bodies are parsed with `parse_json` (depth-limited; gzip garbage, deep nesting, anything malformed
is `Failed`, never a crash), slugs must match `SLUG_RE` (a hostile one fails the run and is never
requested), and a row's `error` text is redacted and truncated before it can reach any output.
The raw body is never printed, logged or kept.

`Authorization: Bearer` goes only to the CP origin: the client comes from
`pipelines.http.client.make_client` (no redirects, no proxy or netrc from the environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import stamina

from pipelines.errors import Failed
from pipelines.http.body import BadJSON, parse_json
from pipelines.http.client import Limits, TimedOut, Unreachable, make_client, send
from pipelines.redact import Secret, redact
from pipelines.slugs import check_slug

REDEPLOY_PATH = "/cp/admin/tenants/redeploy-fleet"
RETRIED_STATUSES = frozenset({502, 503, 504})
LIST_RETRIES = 3  # after the first attempt of a listing: backoff × 1, 2, 4
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
    status: int = 0  # HTTP status of the answer
    sent: tuple[str, ...] = ()  # the only_slugs of the call


class CPUnavailable(Failed):
    """A 502/503/504: the CP (or its gateway) gave up; the wave may be half done."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# What "the call may be retried" means, for the listing here and for the rollout's wave retries.
RETRYABLE = (CPUnavailable, TimedOut, Unreachable)


class CPClient:
    """An async context manager holding one hardened client for the CP origin."""

    def __init__(self, cp_url: str, token: Secret, *, read_timeout: float, retry_backoff: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport  # tests only (httpx.MockTransport); None = real sockets
        self.cp_url = cp_url.rstrip("/")
        self._token = token
        self.read_timeout = read_timeout
        self.retry_backoff = retry_backoff
        short = min(SHORT_TIMEOUT, read_timeout) if read_timeout > 0 else SHORT_TIMEOUT
        # The deadline covers the whole exchange: connect, send, headers and every byte of the body.
        self.limits = Limits(connect=short, read=read_timeout, write=short, pool=short, deadline=read_timeout,
                             max_body=MAX_BODY_BYTES)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> CPClient:
        self._client = make_client(limits=self.limits, transport=self._transport)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---------------------------------------------------------------- public calls

    async def list_tenants(self, target_tag: str) -> list[str]:
        """The CP's dry-run listing: every tenant slug, validated, deduplicated, sorted.
        A dry run changes nothing, so it is retried (bounded, backing off) on 502/503/504 and timeouts."""
        body: dict[str, Any] = {"target_tag": target_tag, "confirm": True, "dry_run": True,
                                "batch_size": 1, "soak_seconds": 0}
        async for attempt in stamina.retry_context(
            on=RETRYABLE, attempts=LIST_RETRIES + 1, timeout=None,
            wait_initial=self.retry_backoff, wait_exp_base=2, wait_jitter=0,
            wait_max=self.retry_backoff * 2 ** (LIST_RETRIES - 1),
        ):
            with attempt:
                answer = await self._call(body, expected=None, what="CP listing")
                return sorted({row.slug for row in answer.rows})
        raise AssertionError("unreachable: stamina either returns an attempt's answer or re-raises")

    async def redeploy_wave(self, target_tag: str, slugs: list[str], *, dry_run: bool) -> CPAnswer:
        """ONE scoped call for one wave, never retried here (the caller's guard decides).
        502/503/504: `CPUnavailable`; no complete answer in time: `TimedOut`; any other non-2xx,
        `ok: false` or a malformed answer: `Failed`."""
        if not slugs:
            raise Failed("CP wave: no tenants to redeploy (a wave is never empty)")
        wave = [check_slug(s, "CP wave") for s in slugs]
        if len(set(wave)) != len(wave):
            raise Failed("CP wave: duplicate tenant slugs in one wave")
        body: dict[str, Any] = {"target_tag": target_tag, "confirm": True, "dry_run": dry_run,
                                "only_slugs": wave, "batch_size": len(wave), "soak_seconds": 0}
        return await self._call(body, expected=set(wave), what="CP redeploy-fleet")

    # ---------------------------------------------------------------- internals

    async def _call(self, payload: dict[str, Any], *, expected: set[str] | None, what: str) -> CPAnswer:
        if self._client is None:
            raise RuntimeError("CPClient used outside `async with`")
        headers = {"Authorization": f"Bearer {self._token.reveal()}", "Accept": "application/json"}
        answer = await send(self._client, "POST", self.cp_url + REDEPLOY_PATH, what=what, limits=self.limits,
                            headers=headers, json=payload)
        if answer.status in RETRIED_STATUSES:
            raise CPUnavailable(f"{what}: HTTP {answer.status}", answer.status)
        parsed = _parse_answer(answer.status, answer.body, expected=expected)
        return CPAnswer(ok=parsed.ok, rows=parsed.rows, error=parsed.error, status=answer.status,
                        sent=tuple(payload.get("only_slugs") or ()))


def _parse_answer(status: int, raw: bytes, *, expected: set[str] | None) -> CPAnswer:
    """Turn a non-retried CP answer into a `CPAnswer`, or `Failed` naming what was wrong."""
    where = f"CP redeploy-fleet (HTTP {status})"
    data: Any = None
    try:
        data = parse_json(raw)
    except BadJSON:
        data = None
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
