"""The one way fleetgate builds an HTTP client and makes a call (Gitea, CP, registry).

- `make_client`: no redirects followed (a credential never travels to where a 3xx points),
  `trust_env=False` (no `*_PROXY`, no netrc: nothing from the environment sees a token), and
  explicit connect/read/write/pool timeouts.
- `send`: ONE exchange under an overall deadline that covers the body read too (a server
  dripping a byte per second defeats a per-read timeout, not this), the body capped in size.
  Used for writes: the transport never retries a write on its own.
- `read`: `send` for GET/HEAD, retried through stamina on 429/5xx/transport errors, honouring
  `Retry-After` (delta-seconds or HTTP-date) and bounded by the policy's deadline.
- Every failure is a one-line, redacted `Failed` that names what was being done.

stamina's default instrumentation (a bare `stamina.retry_scheduled` log line per retry) is
switched off here, once, for the whole process: our own messages say what failed.
"""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import stamina
import stamina.instrumentation

from pipelines.errors import Failed
from pipelines.http.body import BadJSON, parse_json
from pipelines.redact import redact

stamina.instrumentation.set_on_retry_hooks([])

READ_METHODS = frozenset({"GET", "HEAD"})
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Timeouts of one exchange (seconds) and the largest body accepted (bytes)."""

    connect: float = 10.0
    read: float = 30.0
    write: float = 10.0
    pool: float = 10.0
    deadline: float = 60.0  # the whole exchange: connect, send, headers and body
    max_body: int = DEFAULT_MAX_BODY

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True)
class RetryPolicy:
    """How reads are retried: exponential backoff with jitter, all within `deadline` seconds."""

    deadline: float = 60.0
    wait_initial: float = 0.25
    wait_max: float = 5.0
    attempts: int | None = None  # None: as many as the deadline allows
    statuses: frozenset[int] = field(default=RETRIED_STATUSES)


@dataclass(frozen=True)
class Answer:
    """A complete answer: status, headers and the whole (bounded) body."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str = ""

    def json(self, what: str) -> Any:
        """The body as JSON (depth-limited), or `Failed` naming `what`."""
        try:
            return parse_json(self.body)
        except BadJSON as exc:
            raise Failed(f"{what}: the answer is not JSON we can read: {exc} (HTTP {self.status})") from None

    def text(self, limit: int = 160) -> str:
        """A redacted, one-line, short rendering of the body (for error messages)."""
        return redact(self.body.decode("utf-8", "replace"), limit=limit) if self.body.strip() else ""


@functools.cache
def _trust_store() -> ssl.SSLContext:
    """The one TLS context of the process, what httpx itself would build with `trust_env=False`
    (certifi's roots, no SSL_CERT_FILE): loading it costs ~20 ms, and a run opens several clients."""
    return httpx.create_ssl_context(trust_env=False)


def make_client(base_url: str = "", *, headers: Mapping[str, str] | None = None,
                limits: Limits | None = None,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` hardened the one way: no redirects, no environment, explicit timeouts.

    A header value httpx cannot send (non-ASCII, say, in a token) is `Failed` naming only the header,
    never its value."""
    for name, value in (headers or {}).items():
        if not (value.isascii() and value.isprintable()):  # a newline would also split the header
            raise Failed(f"the {name} header cannot be sent: its value is not printable ASCII "
                         "(check the token for stray characters)")
    try:
        return httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=(limits or Limits()).timeout(),
            follow_redirects=False,  # never carry a credential to another origin
            trust_env=False,  # no proxy or netrc from the environment sees the token
            verify=_trust_store(),
            transport=transport,
        )
    except (httpx.InvalidURL, ValueError) as exc:  # UnicodeError and IDNA errors are ValueErrors
        raise Failed(f"cannot build a client for {redact(base_url, limit=120)!r} ({type(exc).__name__})") from None


def retry_after_seconds(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT by definition
            return None
        seconds = when.timestamp() - now()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


class Unreachable(Failed):
    """A transport failure (refused, reset, protocol error): a read may try again."""


class TimedOut(Failed):
    """No complete answer in time (a timeout or the exchange's deadline): a read may try again."""


def _where(client: httpx.AsyncClient, url: str) -> str:
    """The origin spoken to, for messages (never a path or a query, which may carry a secret)."""
    try:
        target = httpx.URL(url)
        if not target.is_absolute_url:
            target = client.base_url
        return redact(f"{target.scheme}://{target.netloc.decode('ascii', 'replace')}", limit=120)
    except (httpx.InvalidURL, ValueError):
        return "the server"


async def send(client: httpx.AsyncClient, method: str, url: str, *, what: str,
               limits: Limits | None = None, params: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None, content: bytes | None = None,
               json: Any = None) -> Answer:
    """One exchange, whole body read, under `limits.deadline`; never retried, never redirected.

    A 3xx is `Failed` (no caller can use one); every other status is returned for the caller to judge.
    """
    lim = limits or Limits()
    where = _where(client, url)
    try:
        with anyio.fail_after(lim.deadline):
            async with client.stream(method, url, params=params, headers=headers, content=content,
                                     json=json) as resp:
                if 300 <= resp.status_code < 400:
                    location = redact(resp.headers.get("Location", "?"), limit=120)
                    raise Failed(f"{what}: HTTP {resp.status_code} redirect to {location} not followed "
                                 f"(check the URL of {where})")
                declared = resp.headers.get("Content-Length", "").strip()
                if declared.isdigit() and int(declared) > lim.max_body:
                    raise Failed(f"{what}: answer of {declared} bytes is larger than {lim.max_body}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > lim.max_body:
                        raise Failed(f"{what}: answer larger than {lim.max_body} bytes; not read further")
                return Answer(resp.status_code, resp.headers, bytes(body), str(resp.url))
    except TimeoutError:
        raise TimedOut(f"{what}: no complete answer from {where} within {lim.deadline:g}s") from None
    except httpx.TimeoutException as exc:
        raise TimedOut(f"{what}: {where} timed out ({type(exc).__name__})") from None
    except httpx.LocalProtocolError as exc:  # our request cannot be sent as is: trying again will not help
        raise Failed(f"{what}: the request to {where} cannot be sent ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise Unreachable(f"{what}: cannot reach {where} ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:  # a decoding error, say: not retryable
        raise Failed(f"{what}: {type(exc).__name__}: {redact(str(exc), limit=160)}") from None
    except (httpx.InvalidURL, ValueError) as exc:  # a URL, host or header httpx refuses (IDNA, non-ASCII)
        raise Failed(f"{what}: the request cannot be built ({type(exc).__name__})") from None


class _RetryableAnswer(Exception):
    """A read answered with a status worth another try (429, 5xx)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        super().__init__(f"HTTP {answer.status}")


def retry_decision(exc: Exception, policy: RetryPolicy, *, remaining: float,
                   now: Callable[[], float] = time.time) -> bool | float:
    """Whether to retry after `exc`: False, True (our backoff) or the seconds to wait.

    `Retry-After` is honoured, never waiting less than our first backoff (a confused server is
    not hammered); one that would end beyond the deadline stops the retrying at once.
    """
    if isinstance(exc, _RetryableAnswer):
        wait = retry_after_seconds(exc.answer.headers.get("Retry-After"), now=now)
        if wait is None:
            return True
        if wait > remaining:
            return False
        return max(wait, policy.wait_initial)
    return isinstance(exc, Unreachable | TimedOut)


async def read(client: httpx.AsyncClient, method: str, url: str, *, what: str,
               limits: Limits | None = None, policy: RetryPolicy | None = None,
               params: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None) -> Answer:
    """A GET/HEAD, retried on `policy.statuses` and transport errors within `policy.deadline`.

    Waits per `retry_decision`. When the retries end on a retryable status, that last answer is
    returned, for the caller to fail on with its own words.
    """
    if method.upper() not in READ_METHODS:
        raise ValueError(f"read() retries reads only; {method} goes through send()")
    pol = policy or RetryPolicy()
    started = time.monotonic()
    last: Answer | None = None  # the latest retryable answer, for when the deadline ends a backoff
    problem = "no answer"  # the latest transport failure, for the message

    def retry_hook(exc: Exception) -> bool | float:
        return retry_decision(exc, pol, remaining=pol.deadline - (time.monotonic() - started))

    try:
        with anyio.fail_after(pol.deadline):
            async for attempt in stamina.retry_context(
                on=retry_hook, attempts=pol.attempts, timeout=pol.deadline,
                wait_initial=pol.wait_initial, wait_max=max(pol.wait_initial, pol.wait_max),
                wait_jitter=pol.wait_initial,
            ):
                with attempt:
                    try:
                        answer = await send(client, method, url, what=what, limits=limits, params=params,
                                            headers=headers)
                    except (Unreachable, TimedOut) as exc:
                        problem = exc.message.removeprefix(f"{what}: ")
                        raise
                    if answer.status in pol.statuses:
                        last = answer
                        raise _RetryableAnswer(answer)
                    return answer
    except _RetryableAnswer as exc:
        return exc.answer
    except TimeoutError:
        if last is not None:
            return last
        raise TimedOut(f"{what}: no usable answer within {pol.deadline:g}s of retries (last: {problem})") from None
    raise AssertionError("unreachable: stamina either returns an attempt's answer or re-raises")


__all__ = ["Answer", "Limits", "RetryPolicy", "TimedOut", "Unreachable", "make_client", "read",
           "retry_after_seconds", "retry_decision", "send"]
