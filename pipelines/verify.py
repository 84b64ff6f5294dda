"""Reading `/buildinfo` of tenants and the drift report (CONTRACT §1 `verify`, §4 Tenants).

Verification is the only source of truth for "this tenant runs that SHA": a tenant counts as
verified only when `GET {tenant_url}/buildinfo` answers 200 with JSON `{"git_sha": <exactly the
expected SHA>}`. Tenants are public endpoints run by code we are deploying, so:

- the reader has its own HTTP session with no auth and no secret-bearing default headers; it
  ignores the environment (`trust_env=False`: no proxy from `*_PROXY`, whose credentials would
  travel as Proxy-Authorization, and no `~/.netrc` credentials) and refuses a tenant URL carrying
  `user:pass@` (it would become Basic auth);
- no redirect is followed (a 3xx is the verdict "redirect"), so nothing is fetched from another host;
- every slug is checked against `SLUG_RE` before any URL is built from it;
- every request has a deadline for the whole exchange (connect, headers and body, not just per
  socket read), and bodies are capped and never decompressed, so a slow-dripping or bomb-serving
  tenant cannot stall a wave or fill memory; JSON is parsed depth-limited (`parse_json`);
- at most `concurrency` reads are in flight (`--verify-concurrency`): that many workers pull
  from the run's slug list, so 10,000 tenants cost 64 tasks, not 10,000.

Engine: aiohttp's `ClientSession`, used directly. Measured side by side on this project's 2-core
box at 1,000 tenants × 50 ms (`python -m bench`, and issue 10's table): aiohttp stays within
1.06-1.6× the ideal ceil(N/C)·L from 32 to 256 in flight, httpx over the `httpx-aiohttp` transport
1.2-2.8× (httpx's request/response models cost CPU per read on top of the same sockets), and
httpx's own pool 4-69× (its connection-pool bookkeeping is quadratic in the requests waiting).
Fewer layers, fewer dependencies, and the numbers pick aiohttp. Gitea and CP calls stay on httpx:
they are a handful per run. aiohttp is imported when a reader opens, never on the CLI's start-up path.

ONE session serves every read of a run: the reader is an async context manager the rollout keeps
open (`async with BuildinfoReader(...) as reader`), so connections to a tenant origin are reused
from one read to the next. Used without `async with`, each `read` opens and closes its own session.

Verdicts: "verified", "stale" (another SHA), "read" (a valid SHA with no expectation, e.g. the
before-SHA captured for rollback), "unreachable" (connection error, timeout, or a gateway
502/503/504: the load balancer could not reach the tenant), "invalid"
(non-JSON, a bad shape, a body over the cap), "redirect", "http-<code>".
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from pipelines.errors import Failed, UsageError
from pipelines.http.body import BadJSON, parse_json
from pipelines.output import Output
from pipelines.redact import redact
from pipelines.settings import SHA_RE, SLUG_RE, Settings
from pipelines.slugs import check_slug, escaped_slug

if TYPE_CHECKING:
    import aiohttp

BUILDINFO_PATH = "/buildinfo"
BUILDINFO_TIMEOUT = 5.0
MAX_BUILDINFO_BYTES = 64 * 1024
DEFAULT_CONCURRENCY = 64  # CONTRACT §2 --verify-concurrency
VERIFIED = "verified"
GATEWAY_STATUSES = frozenset({502, 503, 504})
# identity: a compressed body is never inflated (no decompression bomb); it is simply not JSON.
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "fleetgate-verify"}


@dataclass(frozen=True)
class Reading:
    slug: str
    expected: str | None
    seen: str | None
    verdict: str
    latency_ms: float
    detail: str

    @property
    def verified(self) -> bool:
        return self.verdict == VERIFIED


def request_timeout(settings: Settings) -> float:
    """Per-request deadline for one `/buildinfo` read: never longer than the whole verify budget."""
    if settings.verify_timeout > 0:
        return min(BUILDINFO_TIMEOUT, settings.verify_timeout)
    return BUILDINFO_TIMEOUT


def _check_url(slug: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise Failed(f"tenant {slug}: the tenant URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise Failed(f"tenant {slug}: the tenant URL is not a valid http(s) URL")
    if "@" in parts.netloc:
        raise Failed(f"tenant {slug}: the tenant URL carries credentials; /buildinfo is public and "
                     "gets no auth of any kind")


async def fan_out(items: Sequence[str], concurrency: int, work: Callable[[str], Awaitable[None]]) -> None:
    """`work(item)` for every item, at most `concurrency` at a time: a fixed pool of workers over one
    shared iterator (each item taken by exactly one worker), not a task per item."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, len(items))):
            tg.start_soon(worker)


class BuildinfoReader:
    """Reads tenants' `/buildinfo`; `async with` it to keep one session (and its connections) for a run."""

    def __init__(self, tenant_url: Callable[[str], str], *, timeout: float = BUILDINFO_TIMEOUT,
                 concurrency: int = DEFAULT_CONCURRENCY, ssl_context: ssl.SSLContext | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._tenant_url = tenant_url
        self.timeout = timeout
        self.concurrency = concurrency
        self._ssl = ssl_context  # None: the system's trust store (aiohttp's default context)
        self._session: aiohttp.ClientSession | None = None
        self.sessions_opened = 0  # how many sessions this reader made (one per run when entered)

    @classmethod
    def for_settings(cls, settings: Settings) -> BuildinfoReader:
        return cls(settings.tenant_url, timeout=request_timeout(settings),
                   concurrency=settings.verify_concurrency)

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at import time: the CLI's start-up path never pays for it

        # ssl=True: aiohttp's own verifying context (the system's trust store), made once when aiohttp
        # is imported; building another would load the same certificates again (~25 ms).
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0,
                                         ssl=self._ssl if self._ssl is not None else True, ttl_dns_cache=60)
        self.sessions_opened += 1
        return aiohttp.ClientSession(connector=connector, headers=_HEADERS, trust_env=False,
                                     auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def __aenter__(self) -> BuildinfoReader:
        if self._session is None:
            self._session = self._open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()

    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]:
        """One read of each tenant, concurrently (at most `concurrency` in flight)."""
        checked = list(dict.fromkeys(check_slug(s, "tenant") for s in slugs))  # all checked before any request
        urls = {slug: self._tenant_url(slug).rstrip("/") + BUILDINFO_PATH for slug in checked}
        for slug, url in urls.items():
            _check_url(slug, url)
        if self._session is not None:
            return await self._read_all(self._session, checked, urls, expected)
        session = self._open()  # not entered: a session for this call only
        try:
            return await self._read_all(session, checked, urls, expected)
        finally:
            with anyio.CancelScope(shield=True):
                await session.close()

    async def _read_all(self, session: aiohttp.ClientSession, slugs: list[str], urls: dict[str, str],
                        expected: str | None) -> dict[str, Reading]:
        readings: dict[str, Reading] = {}

        async def one(slug: str) -> None:
            readings[slug] = await self._read_one(session, slug, urls[slug], expected)

        await fan_out(slugs, self.concurrency, one)
        return {slug: readings[slug] for slug in slugs}

    async def wait_verified(self, slugs: Sequence[str], sha: str, *,
                            timeout: float,  # noqa: ASYNC109 -- the agreed interface; a budget, not a cancel
                            interval: float,
                            on_progress: Callable[[int], object] | None = None) -> dict[str, Reading]:
        """Read, then re-read the unverified every `interval` until all are verified or `timeout`
        has passed since the start. Always reads at least once. `on_progress(verified)` after each read
        (the live "n of m verified" line)."""
        deadline = anyio.current_time() + timeout
        readings = await self.read(slugs, sha)
        while True:
            if on_progress is not None:
                on_progress(sum(1 for r in readings.values() if r.verified))
            pending = [slug for slug, r in readings.items() if not r.verified]
            remaining = deadline - anyio.current_time()
            if not pending or remaining <= 0:
                return readings
            await anyio.sleep(min(interval, remaining))
            readings.update(await self.read(pending, sha))

    async def _read_one(self, session: aiohttp.ClientSession, slug: str, url: str,
                        expected: str | None) -> Reading:
        import aiohttp

        start = anyio.current_time()

        def reading(verdict: str, detail: str = "", seen: str | None = None) -> Reading:
            latency = round((anyio.current_time() - start) * 1000, 1)
            return Reading(slug=slug, expected=expected, seen=seen, verdict=verdict, latency_ms=latency,
                           detail=detail)

        status = 0
        body = bytearray()
        too_big = False
        with anyio.move_on_after(self.timeout) as scope:  # the whole exchange, whatever aiohttp does
            try:
                async with session.get(url, allow_redirects=False) as response:
                    status = response.status
                    if status == 200:
                        while chunk := await response.content.read(MAX_BUILDINFO_BYTES + 1 - len(body)):
                            body.extend(chunk)
                            if len(body) > MAX_BUILDINFO_BYTES:
                                too_big = True
                                break
            except TimeoutError:
                return reading("unreachable", f"timed out after {self.timeout:g}s")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return reading("unreachable", f"connection error ({type(exc).__name__})")
        if scope.cancelled_caught:
            return reading("unreachable", f"timed out after {self.timeout:g}s")
        if 300 <= status < 400:
            return reading("redirect", f"HTTP {status}, not followed")
        if status in GATEWAY_STATUSES:  # the load balancer could not reach the tenant
            return reading("unreachable", f"HTTP {status} from the gateway")
        if status != 200:
            return reading(f"http-{status}", f"HTTP {status}")
        if too_big:
            return reading("invalid", f"body larger than {MAX_BUILDINFO_BYTES} bytes")
        try:
            data: Any = parse_json(bytes(body))
        except BadJSON:
            return reading("invalid", "not JSON")
        git_sha = data.get("git_sha") if isinstance(data, dict) else None
        if isinstance(git_sha, str) and SHA_RE.match(git_sha.lower()) and git_sha != git_sha.lower():
            # Not "exactly the SHA", so never verified; but kept, so the stand-down rule still sees a
            # newer commit a tenant reports in upper case (policy.normal_sha lowers it).
            return reading("invalid", "git_sha is not lower-case hex", seen=git_sha)
        if not isinstance(git_sha, str) or not SHA_RE.match(git_sha):
            shown = redact(repr(git_sha), limit=60) if isinstance(data, dict) else "not an object"
            return reading("invalid", f"git_sha is not a 40-hex SHA: {shown}")
        if expected is None:
            return reading("read", seen=git_sha)
        if git_sha == expected:
            return reading(VERIFIED, seen=git_sha)
        return reading("stale", f"runs {git_sha[:7]}", seen=git_sha)


def drift_report(readings: Mapping[str, Reading]) -> dict[str, Any]:
    """Per tenant and per fleet: how many tenants run which SHA (or fail to say, by verdict)."""
    by_sha: Counter[str] = Counter(r.seen if r.seen else r.verdict for r in readings.values())
    verified = sum(1 for r in readings.values() if r.verified)
    total = len(readings)
    return {
        "ok": total > 0 and verified == total,
        "total": total,
        "verified": verified,
        "drift": total - verified,
        "by_sha": dict(sorted(by_sha.items(), key=lambda kv: (-kv[1], kv[0]))),
        "tenants": {slug: {k: v for k, v in asdict(r).items() if k != "slug"}
                    for slug, r in sorted(readings.items())},
    }


def render_table(readings: Mapping[str, Reading]) -> list[str]:
    """The drift report as aligned lines for humans (stderr), one per tenant, then the counts by SHA."""
    width = max((len(slug) for slug in readings), default=0)
    lines = []
    for slug, r in sorted(readings.items()):
        seen = r.seen[:7] if r.seen else "-"
        detail = f"  {r.detail}" if r.detail and r.verdict not in (VERIFIED, "stale") else ""  # stale: seen says it
        lines.append(f"  {slug:<{width}}  {r.verdict:<11}  {seen:<7}  {r.latency_ms:>6.0f} ms{detail}")
    report = drift_report(readings)
    counts = ", ".join(f"{k[:7] if SHA_RE.match(k) else k} × {n}" for k, n in report["by_sha"].items())
    lines.append(f"fleet by SHA: {counts or 'none'} ({report['verified']}/{report['total']} verified)")
    return lines


async def list_fleet(settings: Settings) -> list[str]:
    """Every tenant slug from the CP's dry-run listing (needs --cp-token)."""
    if settings.cp_token is None:
        raise UsageError("--cp-token (or CP_ADMIN_API_TOKEN) is required to list tenants; "
                         "or pass --only SLUG")
    from pipelines.cp import CPClient  # here: httpx is paid for only when the CP is asked (not with --only)

    tag = settings.target_tag or settings.tag_for(settings.sha)
    async with CPClient(settings.cp_url, settings.cp_token, read_timeout=settings.cp_timeout,
                        retry_backoff=settings.cp_retry_backoff) as cp:
        return await cp.list_tenants(tag)


def only_slugs(only: Sequence[str]) -> list[str]:
    """`--only` values: user input, so a bad slug is a usage error (exit 2, nothing contacted)."""
    slugs: list[str] = []
    for value in only:
        for part in str(value).split(","):
            slug = part.strip()
            if not slug:
                continue
            if not SLUG_RE.match(slug):
                raise UsageError(f"--only: not a tenant slug: {escaped_slug(slug)}")
            slugs.append(slug)
    return sorted(set(slugs))


async def run(settings: Settings, out: Output, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `verify` verb: read every tenant's /buildinfo, print the drift report, exit 1 on drift."""
    slugs = only_slugs(only) if only else await list_fleet(settings)
    if not slugs:
        raise Failed("zero tenants to verify (an empty fleet proves nothing)")
    out.info(f"verify: reading /buildinfo of {len(slugs)} tenant(s), expecting {settings.short_sha}")
    async with BuildinfoReader.for_settings(settings) as reader:
        if settings.health_path:  # a tenant on the SHA whose health URL does not answer 2xx is not verified
            from pipelines.watch import HealthCheckedReader  # it builds on this module

            checked = HealthCheckedReader(reader, settings.tenant_url, settings.health_path,
                                          timeout=request_timeout(settings))
            readings = await checked.read(slugs, settings.sha)
        else:
            readings = await reader.read(slugs, settings.sha)
    for line in render_table(readings):
        out.info(line)
    report = drift_report(readings)
    result: dict[str, Any] = {"ok": report["ok"], "verb": "verify", "sha": settings.sha, **report}
    if not report["ok"]:
        off = [s for s, r in sorted(readings.items()) if not r.verified]
        named = ", ".join(off[:10]) + (f" and {len(off) - 10} more" if len(off) > 10 else "")
        raise Failed(f"{report['drift']} of {report['total']} tenant(s) not on {settings.short_sha}: "
                     f"{named}", details={k: v for k, v in result.items() if k not in ("ok", "verb")})
    out.result(result, human=f"verify: all {report['total']} tenant(s) verified on {settings.short_sha}")
    return result
