"""The soak watch, the health check and the approval pause, driven by fakes and a fake clock."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pipelines.errors import Failed, HaltedMixed
from pipelines.gitea import CommitStatus
from pipelines.verify import VERIFIED, Reading
from pipelines.watch import UNHEALTHY, HealthCheckedReader, SoakWatch, Tick, wait_for_approval
from tests.loopback import serve_app

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "f" * 40
pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def reading(slug: str, seen: str) -> Reading:
    return Reading(slug=slug, expected=SHA, seen=seen, verdict=VERIFIED if seen == SHA else "stale",
                   latency_ms=1.0, detail="")


class FakeReader:
    """Each tenant's SHA over time: `timeline[slug]` is what the n-th read reports (the last one sticks)."""

    def __init__(self, timeline: dict[str, list[str]]) -> None:
        self.timeline = timeline
        self.reads: list[list[str]] = []

    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]:
        self.reads.append(list(slugs))
        out = {}
        for slug in slugs:
            seq = self.timeline[slug]
            out[slug] = reading(slug, seq.pop(0) if len(seq) > 1 else seq[0])
        return out


async def test_the_watch_ticks_every_interval_and_reports_a_regressed_tenant() -> None:
    clock = FakeClock()
    reader = FakeReader({"alpha": [SHA], "bravo": [SHA, SHA, OLD]})
    watch = SoakWatch(reader, SHA, interval=5, clock=clock)
    seen: list[Tick] = []
    watched = ["alpha", "bravo"]

    async def on_tick(tick: Tick) -> None:
        seen.append(tick)
        for slug in tick.regressed:
            watched.remove(slug)  # a straggler leaves the watch

    ticks = await watch.soak(12, lambda: list(watched), on_tick, fresh=["alpha", "bravo"])
    assert ticks == 3 and clock.sleeps == [5, 5, 2]  # the last tick lands at the end of the soak
    assert [sorted(t.regressed) for t in seen] == [[], [], ["bravo"]]
    assert reader.reads == [["alpha", "bravo"]] * 3  # the soak's own tenants: at every tick


async def test_across_soaks_an_older_tenant_is_re_read_every_interval_the_new_wave_at_every_end() -> None:
    """Soaks of 1 s with a 5 s interval: the wave just soaked is read at its soak's end, a tenant of an
    earlier wave only once its last read is 5 s old — each tenant as often as --verify-interval says,
    not the whole fleet at every wave."""
    clock = FakeClock()
    slugs = [f"t{i}" for i in range(8)]
    reader = FakeReader({slug: [SHA] for slug in slugs})
    watch = SoakWatch(reader, SHA, interval=5, clock=clock)
    reads: list[int] = []

    async def on_tick(tick: Tick) -> None:
        reads.append(tick.read)

    for n in range(1, 9):  # wave n is t{n-1}; each soak watches every tenant verified so far
        await watch.soak(1, lambda n=n: slugs[:n], on_tick, fresh=[slugs[n - 1]])
    assert [sorted(r) for r in reader.reads] == [
        ["t0"], ["t1"], ["t2"], ["t3"], ["t4"],
        ["t0", "t5"],  # t0 was last read 5 s ago (1 s soaks): due again; t1…t4 are not yet
        ["t1", "t6"], ["t2", "t7"]]
    assert reads == [1, 1, 1, 1, 1, 2, 2, 2]


async def test_without_fresh_tenants_a_tick_reads_only_those_due() -> None:
    clock = FakeClock()
    reader = FakeReader({"alpha": [SHA]})
    watch = SoakWatch(reader, SHA, interval=5, clock=clock)

    async def on_tick(tick: Tick) -> None:
        pass

    assert await watch.soak(12, lambda: ["alpha"], on_tick) == 3  # ticks at 5, 10 and 12
    assert reader.reads == [["alpha"], ["alpha"]]  # at 12 s alpha was read 2 s ago: not due


class SlowReader(FakeReader):
    """A read that takes 0.1 s of the fake clock per tenant."""

    def __init__(self, clock: FakeClock, timeline: dict[str, list[str]]) -> None:
        super().__init__(timeline)
        self.clock = clock

    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]:
        self.clock.t += 0.1 * len(slugs)
        return await super().read(slugs, expected)


async def test_the_last_tick_starts_early_by_what_a_tick_cost_so_the_soak_ends_on_time() -> None:
    clock = FakeClock()
    watch = SoakWatch(SlowReader(clock, {"alpha": [SHA], "bravo": [SHA]}), SHA, interval=5, clock=clock)

    async def on_tick(tick: Tick) -> None:
        assert not tick.regressed

    start = clock.t
    assert await watch.soak(1, lambda: ["alpha", "bravo"], on_tick, fresh=["alpha", "bravo"]) == 1
    assert clock.t == pytest.approx(start + 1.2)  # the first soak cannot know what a read costs
    start = clock.t
    assert await watch.soak(1, lambda: ["alpha", "bravo"], on_tick, fresh=["alpha", "bravo"]) == 1
    assert clock.t == pytest.approx(start + 1.0)  # the second ends on time: its tick began 0.25 s early
    assert clock.sleeps[-2:] == pytest.approx([0.75, 0.05])  # 0.2 s cost, with the margin; then the rest


async def test_a_soak_whose_last_tick_was_quicker_than_feared_still_lasts_its_seconds() -> None:
    clock = FakeClock()
    reader = SlowReader(clock, {"alpha": [SHA]})
    watch = SoakWatch(reader, SHA, interval=5, clock=clock)

    async def on_tick(tick: Tick) -> None:
        assert not tick.regressed

    await watch.soak(1, lambda: ["alpha"], on_tick, fresh=["alpha"])  # learns 0.1 s per tenant
    reader.clock = FakeClock()  # from now on a read costs nothing on the soak's clock
    start = clock.t
    assert await watch.soak(1, lambda: ["alpha"], on_tick, fresh=["alpha"]) == 1
    assert clock.t == pytest.approx(start + 1.0)  # not 0.875 s: the soak is never cut short


async def test_a_raising_on_tick_stops_the_soak() -> None:
    clock = FakeClock()
    watch = SoakWatch(FakeReader({"alpha": [SHA, OLD]}), SHA, interval=1, clock=clock)

    async def on_tick(tick: Tick) -> None:
        if tick.regressed:
            raise Failed("canary regressed")

    with pytest.raises(Failed, match="canary regressed"):
        await watch.soak(60, lambda: ["alpha"], on_tick)
    assert clock.t == 1002.0  # stopped at the second tick, not after the whole soak


async def test_no_soak_no_tick() -> None:
    watch = SoakWatch(FakeReader({}), SHA, interval=1, clock=FakeClock())

    async def on_tick(tick: Tick) -> None:
        raise AssertionError("no tick in a zero soak")

    assert await watch.soak(0, lambda: [], on_tick) == 0


class FakeGitea:
    def __init__(self, states: list[str], creator: str = "release-manager") -> None:
        self.states = states
        self.creator = creator
        self.reads = 0

    async def combined_status(self, sha: str) -> dict[str, CommitStatus]:
        self.reads += 1
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if not state:
            return {"CI / test (push)": CommitStatus("CI / test (push)", "success", "", "")}
        return {"fleetgate/approve": CommitStatus("fleetgate/approve", state, "", "ship it", id=3,
                                                  creator=self.creator)}


async def test_approval_goes_on_when_success_arrives_and_names_the_approver() -> None:
    clock = FakeClock()
    gitea = FakeGitea(["", "pending", "success"])
    alive: list[float] = []

    async def keep_alive() -> None:
        alive.append(clock.now())

    approval = await wait_for_approval(gitea, SHA, "fleetgate/approve", timeout=60, interval=10,
                                       keep_alive=keep_alive, clock=clock)
    assert approval.approved and approval.approver == "release-manager" and approval.waited == 20
    assert alive == [1000, 1010, 1020]  # the lease renewed and the switch re-read before every poll


@pytest.mark.parametrize("state", ["failure", "error", "warning"])
async def test_anything_final_but_success_stops(state: str) -> None:
    async def keep_alive() -> None:
        return None

    approval = await wait_for_approval(FakeGitea([state]), SHA, "fleetgate/approve", timeout=60, interval=10,
                                       keep_alive=keep_alive, clock=FakeClock())
    assert not approval.approved and approval.state == state


async def test_no_answer_by_the_timeout_fails() -> None:
    clock = FakeClock()

    async def keep_alive() -> None:
        return None

    with pytest.raises(Failed, match="no approval within 25s"):
        await wait_for_approval(FakeGitea([""]), SHA, "fleetgate/approve", timeout=25, interval=10,
                                keep_alive=keep_alive, clock=clock)
    assert clock.sleeps == [10, 10, 5]


async def test_the_kill_switch_stops_a_paused_run() -> None:
    gitea = FakeGitea([""])

    async def keep_alive() -> None:
        if gitea.reads >= 2:
            raise HaltedMixed("kill switch engaged while waiting for approval")

    with pytest.raises(HaltedMixed):
        await wait_for_approval(gitea, SHA, "fleetgate/approve", timeout=600, interval=10,
                                keep_alive=keep_alive, clock=FakeClock())
    assert gitea.reads == 2


async def test_health_checked_reader_unverifies_an_unhealthy_tenant() -> None:
    health = {"alpha": 200, "bravo": 503}
    asked: list[str] = []

    async def healthz(request: Request) -> Response:
        slug = request.path_params["slug"]
        asked.append(slug)
        return PlainTextResponse("x", status_code=health[slug])

    app = Starlette(routes=[Route("/t/{slug}/healthz", healthz)])
    async with serve_app(app) as base:
        reader = HealthCheckedReader(FakeReader({"alpha": [SHA], "bravo": [SHA], "charlie": [OLD]}),
                                     lambda slug: f"{base}/t/{slug}", "/healthz")
        readings = await reader.read(["alpha", "bravo", "charlie"], SHA)
    assert readings["alpha"].verdict == VERIFIED
    assert readings["bravo"].verdict == UNHEALTHY and "HTTP 503" in readings["bravo"].detail
    assert readings["charlie"].verdict == "stale"
    assert sorted(asked) == ["alpha", "bravo"]  # a tenant not on the SHA is not asked


class ReaderWithConcurrency(FakeReader):
    """A fake inner reader that says how many reads it keeps in flight (as `BuildinfoReader` does)."""

    def __init__(self, timeline: dict[str, list[str]], concurrency: int) -> None:
        super().__init__(timeline)
        self.concurrency = concurrency


def _healthz_app(peers: list[tuple[str, int]], headers: list[dict[str, str]]) -> Starlette:
    async def healthz(request: Request) -> Response:
        assert request.client is not None
        peers.append((request.client.host, request.client.port))
        headers.append(dict(request.headers))
        return PlainTextResponse("ok", headers={"Set-Cookie": f"tenant={request.path_params['slug']}; Path=/"})

    return Starlette(routes=[Route("/t/{slug}/healthz", healthz)])


async def test_entered_the_health_reader_keeps_one_client_and_its_connection_for_the_run(
        clients_made: list[httpx.AsyncClient]) -> None:
    peers: list[tuple[str, int]] = []
    headers: list[dict[str, str]] = []
    slugs = ["alpha", "bravo", "charlie"]
    async with serve_app(_healthz_app(peers, headers)) as base:
        inner = ReaderWithConcurrency({slug: [SHA] for slug in slugs}, concurrency=1)
        async with HealthCheckedReader(inner, lambda slug: f"{base}/t/{slug}", "/healthz") as reader:
            for _ in range(3):  # three soak ticks
                readings = await reader.read(slugs, SHA)
                assert all(r.verdict == VERIFIED for r in readings.values())
            assert len(clients_made) == 1 and not clients_made[0].is_closed
        assert clients_made[0].is_closed  # closed when the run leaves the reader
    assert len(peers) == 9 and len(set(peers)) == 1  # nine checks over one kept-alive connection
    for sent in headers:
        assert sent["user-agent"] == "fleetgate-health"
        assert "authorization" not in sent and "cookie" not in sent


async def test_not_entered_each_read_opens_and_closes_its_own_client(
        clients_made: list[httpx.AsyncClient]) -> None:
    async with serve_app(_healthz_app([], [])) as base:
        reader = HealthCheckedReader(FakeReader({"alpha": [SHA]}), lambda slug: f"{base}/t/{slug}", "/healthz")
        for _ in range(2):
            assert (await reader.read(["alpha"], SHA))["alpha"].verdict == VERIFIED
    assert len(clients_made) == 2 and all(c.is_closed for c in clients_made)


async def test_a_cookie_one_tenant_sets_never_reaches_another() -> None:
    headers: list[dict[str, str]] = []
    async with serve_app(_healthz_app([], headers)) as base:
        by_name = base.replace("127.0.0.1", "localhost")  # a host name: cookie jars refuse IP hosts
        inner = ReaderWithConcurrency({"alpha": [SHA], "bravo": [SHA]}, concurrency=1)
        async with HealthCheckedReader(inner, lambda slug: f"{by_name}/t/{slug}", "/healthz") as reader:
            await reader.read(["alpha", "bravo"], SHA)
            await reader.read(["alpha", "bravo"], SHA)
    assert len(headers) == 4 and all("cookie" not in h for h in headers)


class InFlight(httpx.AsyncBaseTransport):
    """Holds every request until `bound` are in flight at once, then lets all go; records the most seen.

    An unbounded reader has every request in flight before the first is let go; one bounded below
    `bound` never fills it, and its checks end as unhealthy at their timeout."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.in_flight = 0
        self.most = 0
        self.requests: list[httpx.Request] = []
        self.full = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.bound:
            self.full.set()
        try:
            await self.full.wait()
        finally:
            self.in_flight -= 1
        return httpx.Response(200, text="ok")


@pytest.mark.parametrize("concurrency, tenants, bound", [
    (3, 10, 3),  # the inner reader's --verify-concurrency
    (None, 100, 64),  # an inner reader that does not say: the default
])
async def test_at_most_concurrency_health_checks_are_in_flight(concurrency: int | None, tenants: int,
                                                              bound: int) -> None:
    slugs = [f"t{i:03d}" for i in range(tenants)]
    timeline = {slug: [SHA] for slug in slugs}
    inner = FakeReader(timeline) if concurrency is None else ReaderWithConcurrency(timeline, concurrency)
    transport = InFlight(bound)
    reader = HealthCheckedReader(inner, lambda slug: f"https://{slug}.tenants.example", "/healthz",
                                 transport=transport)
    readings = await reader.read(slugs, SHA)
    assert transport.most == bound
    assert all(r.verdict == VERIFIED for r in readings.values())
    assert sorted(r.url.host for r in transport.requests) == [f"{s}.tenants.example" for s in slugs]
