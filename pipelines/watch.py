"""Eyes on a release between its waves: the health check, the soak watch and the approval pause (CONTRACT §1).

- `HealthCheckedReader` wraps the `/buildinfo` reader: with `--health-path`, a tenant reporting the
  SHA counts as verified only when its health URL answers 2xx too, wherever `/buildinfo` is read
  (a wave's verification, the soak watch, the final verify).
- `SoakWatch.soak` replaces a blind sleep: it ticks every `--verify-interval` and at the soak's end,
  re-reading the wave just soaked and every verified tenant last read an interval ago or more (and
  the metric analysis ticks); a regressed tenant is handed to the engine, which makes it a named
  straggler within the budget or fails the run (the canary never is a straggler).
- `wait_for_approval` pauses after the verified canary until the status `--approval-context` on the
  SHA is `success` (go on) or anything final but success (stop), or `--approval-timeout` passes.
  `keep_alive` runs before every poll: the engine renews the lease and re-reads the kill switch
  there, so a paused run still holds its lease and still stops for the switch.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType
from typing import Any, Protocol

import anyio
import httpx

from pipelines.analysis import Analysis, Verdict
from pipelines.errors import Failed
from pipelines.gitea import CommitStatus
from pipelines.http.client import Limits, make_client
from pipelines.verify import DEFAULT_CONCURRENCY, VERIFIED, Reading, fan_out

UNHEALTHY = "unhealthy"
HEALTH_TIMEOUT = 5.0
PENDING_STATES = frozenset({"pending", ""})
# The last tick of a soak starts early by this many times what a tick of its size cost before: a read
# costs more on a busy box now and then, and a tick that ends late delays every later wave.
LAST_TICK_MARGIN = 1.25


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class AnyioClock:
    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class Reader(Protocol):
    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]: ...


class HealthCheckedReader:
    """A `/buildinfo` reader whose verified tenants must also answer 2xx on `health_path`.

    `async with` it to keep one client (its TLS context, its connections) for a run, as the rollout
    does; used without, each `read` opens and closes its own. Entering it does not enter `inner`:
    the inner reader is the caller's to open and close. At most `concurrency` health checks are in
    flight: the inner reader's (`--verify-concurrency`), else `DEFAULT_CONCURRENCY`.
    """

    def __init__(self, inner: Reader, tenant_url: Callable[[str], str], health_path: str, *,
                 timeout: float = HEALTH_TIMEOUT, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner
        self._tenant_url = tenant_url
        self.health_path = health_path
        self.timeout = timeout
        self.concurrency = int(getattr(inner, "concurrency", DEFAULT_CONCURRENCY))
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._transport = transport  # tests only (a counting or mock transport); None = real sockets
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        # Public endpoints of code we deploy: no auth, no proxy, no redirect, a deadline per request.
        t = self.timeout
        client = make_client(headers={"User-Agent": "fleetgate-health"},
                             limits=Limits(connect=t, read=t, write=t, pool=t, deadline=t),
                             transport=self._transport)
        # One client now serves a whole run: a cookie one tenant sets must never reach another.
        client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return client

    async def __aenter__(self) -> HealthCheckedReader:
        if self._client is None:
            self._client = self._open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]:
        readings = await self.inner.read(slugs, expected)
        verified = [slug for slug, r in readings.items() if r.verdict == VERIFIED]
        if not verified:
            return readings
        if self._client is not None:
            await self._check_all(self._client, verified, readings)
            return readings
        client = self._open()  # not entered: a client for this call only
        try:
            await self._check_all(client, verified, readings)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
        return readings

    async def _check_all(self, client: httpx.AsyncClient, slugs: list[str], readings: dict[str, Reading]) -> None:
        await fan_out(slugs, self.concurrency, lambda slug: self._check(client, slug, readings))

    async def _check(self, client: httpx.AsyncClient, slug: str, readings: dict[str, Reading]) -> None:
        url = self._tenant_url(slug).rstrip("/") + self.health_path
        why = ""
        with anyio.move_on_after(self.timeout) as scope:
            try:
                resp = await client.get(url)
                if not 200 <= resp.status_code < 300:
                    why = f"health {self.health_path}: HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                why = f"health {self.health_path}: {type(exc).__name__}"
        if scope.cancelled_caught:
            why = f"health {self.health_path}: no answer within {self.timeout:g}s"
        if why:
            readings[slug] = replace(readings[slug], verdict=UNHEALTHY, detail=why)

    async def wait_verified(self, slugs: Sequence[str], sha: str, *,
                            timeout: float,  # noqa: ASYNC109 -- the reader's interface; a budget, not a cancel
                            interval: float,
                            on_progress: Callable[[int], object] | None = None) -> dict[str, Reading]:
        """As `BuildinfoReader.wait_verified`, with the health check part of "verified"."""
        deadline = anyio.current_time() + timeout
        readings = await self.read(slugs, sha)
        while True:
            if on_progress is not None:  # the live "n of m verified" line
                on_progress(sum(1 for r in readings.values() if r.verdict == VERIFIED))
            pending = [slug for slug, r in readings.items() if r.verdict != VERIFIED]
            remaining = deadline - anyio.current_time()
            if not pending or remaining <= 0:
                return readings
            await anyio.sleep(min(interval, remaining))
            readings.update(await self.read(pending, sha))


@dataclass
class Tick:
    """One look at the verified tenants during a soak."""

    regressed: dict[str, Reading]
    analysis: Verdict | None
    analysis_failure: str | None
    read: int = 0  # tenants re-read at this tick


class SoakWatch:
    """The soak as a watch: `soak(seconds, slugs, on_tick, fresh=…)` ticks every `interval`.

    A tick re-reads the tenants of the wave just soaked (`fresh`) and every other watched tenant the
    watch last read at least `interval` ago: each tenant is re-read every `--verify-interval`, across
    soaks, as CONTRACT §1 says — not at the end of every soak whatever the interval (with soaks shorter
    than the interval that read the whole fleet at every wave, several times as often as asked)."""

    def __init__(self, reader: Reader, sha: str, interval: float, analysis: Analysis | None = None, *,
                 clock: Clock | None = None) -> None:
        self.clock = clock or AnyioClock()
        self.reader = reader
        self.sha = sha
        self.interval = interval
        self.analysis = analysis
        self.ticks = 0
        self._seconds_per_slug = 0.0  # what the last tick cost, per tenant read
        self._read_at: dict[str, float] = {}  # when a tick last read each tenant (the tick's start)

    def due(self, watched: Sequence[str], fresh: Collection[str], at: float) -> list[str]:
        """The watched tenants a tick at `at` re-reads."""
        return [slug for slug in watched
                if slug in fresh or at - self._read_at.get(slug, -math.inf) >= self.interval]

    async def tick(self, slugs: Sequence[str]) -> Tick:
        started = self.clock.now()
        readings = await self.reader.read(slugs, self.sha) if slugs else {}
        for slug in slugs:
            self._read_at[slug] = started
        regressed = {slug: r for slug, r in readings.items() if r.verdict != VERIFIED}
        verdict, failure = (await self.analysis.tick()) if self.analysis is not None else (None, None)
        self.ticks += 1
        return Tick(regressed=regressed, analysis=verdict, analysis_failure=failure, read=len(slugs))

    async def soak(self, seconds: float, slugs: Callable[[], Sequence[str]],
                   on_tick: Callable[[Tick], Awaitable[None]], *, fresh: Collection[str] = ()) -> int:
        """Watch for `seconds`: a tick every `interval` (and one at the end), each handed to `on_tick`,
        which raises to stop the run. `slugs()` is asked each tick: a straggler leaves the watch.
        `fresh`: the tenants this soak is for, read at every tick. Returns the number of ticks."""
        deadline = self.clock.now() + seconds
        fresh = frozenset(fresh)
        ticks = 0
        while True:
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                return ticks
            # The last tick starts early by what a tick of its size took before (with a margin), so the
            # soak ends on time rather than one fleet read late: a rollout of many waves would pay that
            # every wave. A tick quicker than that waits out the rest: a soak is never cut short.
            cost = self._seconds_per_slug * len(self.due(slugs(), fresh, deadline)) * LAST_TICK_MARGIN
            last = remaining <= self.interval + cost
            await self.clock.sleep(max(0.0, remaining - cost) if last else self.interval)
            started = self.clock.now()
            due = self.due(slugs(), fresh, started)
            tick = await self.tick(due)
            if due:
                self._seconds_per_slug = (self.clock.now() - started) / len(due)
            await on_tick(tick)
            ticks += 1
            if last:
                if (left := deadline - self.clock.now()) > 0:
                    await self.clock.sleep(left)
                return ticks


class StatusReader(Protocol):
    async def combined_status(self, sha: str) -> dict[str, CommitStatus]: ...


@dataclass(frozen=True)
class Approval:
    approved: bool
    state: str
    approver: str  # the status's creator.login ("" when Gitea did not say)
    description: str
    waited: float

    def facts(self) -> dict[str, Any]:
        return {"approved": self.approved, "state": self.state, "approver": self.approver,
                "description": self.description, "waited_seconds": round(self.waited, 3)}


async def wait_for_approval(gitea: StatusReader, sha: str, context: str, *,
                            timeout: float,  # noqa: ASYNC109 -- a budget, read against the clock
                            interval: float, keep_alive: Callable[[], Awaitable[None]],
                            clock: Clock | None = None) -> Approval:
    """Poll the `context` status on `sha` until it is final; `keep_alive` before every poll (it raises
    to stop: the kill switch). Raises Failed when nothing final arrives within `timeout`."""
    clock = clock or AnyioClock()
    started = clock.now()
    deadline = started + timeout
    while True:
        await keep_alive()
        status = (await gitea.combined_status(sha)).get(context)
        state = status.state if status is not None else ""
        if state not in PENDING_STATES:
            assert status is not None
            return Approval(approved=state == "success", state=state, approver=status.creator,
                            description=status.description, waited=clock.now() - started)
        remaining = deadline - clock.now()
        if remaining <= 0:
            raise Failed(f"no approval within {timeout:g}s: the status {context!r} on {sha[:12]} is "
                         f"{state or 'absent'}")
        await clock.sleep(min(interval, remaining))


__all__ = ["UNHEALTHY", "AnyioClock", "Approval", "Clock", "HealthCheckedReader", "SoakWatch", "Tick",
           "wait_for_approval"]
