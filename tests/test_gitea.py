"""GiteaClient over real loopback sockets, against the sandbox's Gitea double and a few rogue servers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import stamina
from loopback import serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.errors import Failed
from pipelines.gitea import CONFLICTING, GiteaClient
from pipelines.redact import Secret
from pipelines.sandbox.gitea_app import build_app
from pipelines.sandbox.world import GITEA_TOKEN, READ, World
from tests.loopback import point_proxies_at

pytestmark = pytest.mark.anyio


@dataclass
class Seen:
    time: float
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class Recorder:
    """ASGI wrapper recording every request (what the client really sent on the wire)."""

    app: ASGIApp
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.seen.append(Seen(time.monotonic(), scope["method"], scope["path"],
                                  scope["query_string"].decode(), headers))
        await self.app(scope, receive, send)


@contextmanager
def waits_decided() -> Iterator[list[bool | float]]:
    """What the client's retry hook told stamina after each failed attempt (a float: seconds to wait)."""
    decided: list[bool | float] = []
    real = stamina.retry_context

    def recording(*args: Any, on: Callable[[Exception], bool | float], **kw: Any) -> Any:
        def hook(exc: Exception) -> bool | float:
            decided.append(on(exc))
            return decided[-1]
        return real(*args, on=hook, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stamina, "retry_context", recording)
        yield decided


def make_world() -> World:
    world = World()
    root = world.add_commit(label="root", branch="main")
    world.deploy_sha = world.add_commit(root, label="deploy", branch="main")
    return world


class Gitea:
    def __init__(self, world: World, recorder: Recorder, url: str) -> None:
        self.world, self.recorder, self.url = world, recorder, url

    def client(self, token: str | None = GITEA_TOKEN, **kw: Any) -> GiteaClient:
        kw.setdefault("retry_wait_initial", 0.01)
        kw.setdefault("retry_deadline", 5.0)
        return GiteaClient(self.url, self.world.repo, Secret(token) if token else None, **kw)


@pytest.fixture
async def gitea() -> AsyncIterator[Gitea]:
    world = make_world()
    recorder = Recorder(build_app(world))
    async with serve_app(recorder) as url:
        world.gitea_url = url
        yield Gitea(world, recorder, url)


async def test_combined_status_reads_every_page_and_the_status_field(gitea: Gitea) -> None:
    sha = gitea.world.deploy_sha
    for i in range(59):
        gitea.world.set_status(sha, f"lint-{i:02d}", "success")
    gitea.world.set_status(sha, "deploy-gate", "failure")  # the 60th: only on page 2
    async with gitea.client() as g:
        statuses = await g.combined_status(sha)
    assert len(statuses) == 60
    assert statuses["deploy-gate"].state == "failure"
    assert statuses["deploy-gate"].target_url.endswith("/actions/runs/60")
    pages = [s for s in gitea.recorder.seen if s.path.endswith(f"/commits/{sha}/status")]
    assert [p.query for p in pages] == ["page=1&limit=50", "page=2&limit=50"]
    assert all(p.headers["authorization"] == f"token {GITEA_TOKEN}" for p in pages)


async def test_a_commit_without_statuses_is_an_empty_dict(gitea: Gitea) -> None:
    async with gitea.client() as g:
        assert await g.combined_status(gitea.world.deploy_sha) == {}


async def test_5xx_is_retried_until_it_recovers(gitea: Gitea) -> None:
    gitea.world.set_status(gitea.world.deploy_sha, "ci", "success")
    gitea.world.gitea_faults.fail_next = 3
    async with gitea.client() as g:
        statuses = await g.combined_status(gitea.world.deploy_sha)
    assert statuses["ci"].state == "success"
    assert len(gitea.recorder.seen) == 4


async def test_5xx_that_never_recovers_fails_within_the_deadline(gitea: Gitea) -> None:
    gitea.world.gitea_faults.fail_next = 10_000
    async with gitea.client(retry_deadline=0.2) as g:  # the deadline under test: the client's own
        with pytest.raises(Failed, match=r"HTTP 503|within 0.2s"):
            await g.combined_status(gitea.world.deploy_sha)
    assert len(gitea.recorder.seen) >= 2


async def test_429_retry_after_is_honoured(gitea: Gitea) -> None:
    gitea.world.gitea_faults.rate_limit_next = 1
    gitea.world.gitea_faults.retry_after = "1"
    with stamina.set_testing(True, attempts=3), waits_decided() as waits:  # decided, never waited out
        async with gitea.client() as g:
            assert await g.get_variable("ANYTHING") is None
    _limited, _answered, repository = gitea.recorder.seen  # the 404 is believed once the repository answered
    assert repository.path == f"/api/v1/repos/{gitea.world.repo}"
    # The default backoff here is ~0.01s; only Retry-After makes the client wait a second.
    assert waits == [1.0]


async def test_429_with_a_retry_after_beyond_the_deadline_fails_at_once(gitea: Gitea) -> None:
    gitea.world.gitea_faults.rate_limit_next = 5
    gitea.world.gitea_faults.retry_after = "120"
    with waits_decided() as waits:
        async with gitea.client(retry_deadline=3.0) as g:
            with pytest.raises(Failed, match="HTTP 429"):
                await g.get_variable("ANYTHING")
    assert waits == [False]  # no retry at all, rather than one cut short by the deadline
    assert len(gitea.recorder.seen) == 1


async def test_401_fails_at_once_naming_the_permission(gitea: Gitea) -> None:
    async with gitea.client(token="not-a-real-token") as g:
        with pytest.raises(Failed) as info:
            await g.combined_status(gitea.world.deploy_sha)
    assert "HTTP 401" in info.value.message and "read:repository" in info.value.message
    assert "not-a-real-token" not in info.value.message
    assert len(gitea.recorder.seen) == 1  # no retry of an auth failure


async def test_without_a_token_no_authorization_header_is_sent(gitea: Gitea) -> None:
    async with gitea.client(token=None) as g:
        with pytest.raises(Failed, match="no Gitea token was given"):
            await g.get_variable("PROD_AUTO_DEPLOY_DISABLED")
    assert "authorization" not in gitea.recorder.seen[0].headers


async def test_a_read_only_token_cannot_write_and_says_which_permission(gitea: Gitea) -> None:
    gitea.world.gitea_tokens["read-only-token"] = {READ}
    async with gitea.client(token="read-only-token") as g:
        assert await g.can_write_variables() is False
        with pytest.raises(Failed, match=r"HTTP 403.*write:repository / Actions variables"):
            await g.update_variable("FLEETGATE_LEASE", "x")


async def test_write_probe_with_a_writing_token_leaves_nothing_behind(gitea: Gitea) -> None:
    async with gitea.client() as g:
        assert await g.can_write_variables() is True
    probe = [s for s in gitea.recorder.seen if s.method == "PUT"]
    assert len(probe) == 1 and "/actions/variables/FLEETGATE_WRITE_PROBE_" in probe[0].path
    assert gitea.world.variables == {}


async def test_variables_round_trip(gitea: Gitea) -> None:
    async with gitea.client() as g:
        assert await g.get_variable("FLEETGATE_LEASE") is None
        assert await g.create_variable("FLEETGATE_LEASE", '{"run":"a"}') is True
        assert await g.create_variable("FLEETGATE_LEASE", '{"run":"b"}') is False  # 409
        assert await g.get_variable("fleetgate_lease") == '{"run":"a"}'  # case-insensitive names
        await g.update_variable("FLEETGATE_LEASE", '{"run":"c"}')
        assert gitea.world.get_variable("FLEETGATE_LEASE") == '{"run":"c"}'
        gitea.world.gitea_faults.post_race_500 = True
        assert await g.create_variable("FLEETGATE_LEASE", '{"run":"d"}') is False  # lost race: 500, no retry
        await g.delete_variable("FLEETGATE_LEASE")
        await g.delete_variable("FLEETGATE_LEASE")  # already gone: fine
    assert gitea.world.variables == {}
    posts = [s for s in gitea.recorder.seen if s.method == "POST"]
    assert len(posts) == 3


async def test_unreadable_variable_fails_after_retries(gitea: Gitea) -> None:
    gitea.world.gitea_faults.unreadable_variables.add("PROD_AUTO_DEPLOY_DISABLED")
    async with gitea.client(retry_deadline=0.3) as g:
        with pytest.raises(Failed, match="variable PROD_AUTO_DEPLOY_DISABLED"):
            await g.get_variable("PROD_AUTO_DEPLOY_DISABLED")


async def test_branch_head_and_ancestry(gitea: Gitea) -> None:
    world = gitea.world
    base = world.deploy_sha
    newer = world.add_commit(base, label="newer", branch="main")
    side = world.add_commit(world.commits[base].parents[0], label="side")  # diverges before `base`
    merge = world.add_commit(parents=[newer, side], label="merge")
    async with gitea.client() as g:
        assert await g.branch_head("main") == newer
        assert await g.is_descendant(newer, base) is True
        assert await g.is_descendant(merge, base) is True
        assert await g.is_descendant(base, newer) is False  # an ancestor is not a descendant
        assert await g.is_descendant(base, base) is False  # nor is the commit itself
        assert await g.is_descendant(side, base) is False  # divergent history is not newer
        with pytest.raises(Failed, match="HTTP 404"):
            await g.is_descendant("f" * 40, base)
        with pytest.raises(Failed, match="branch nope"):
            await g.branch_head("nope")


# ---------------------------------------------------------------- rogue servers


async def test_a_redirect_is_not_followed_and_the_token_stays_home() -> None:
    elsewhere = Recorder(Starlette(routes=[Route("/{p:path}", lambda r: JSONResponse({}))]))
    async with serve_app(elsewhere) as other_url:
        async def redirect(request: Request) -> Response:
            return RedirectResponse(f"{other_url}{request.url.path}", status_code=307)

        app = Starlette(routes=[Route("/{p:path}", redirect)])
        async with serve_app(app) as url, GiteaClient(url, "acme/fleet", Secret("tok-123456"),
                                                      retry_wait_initial=0.01) as g:
            with pytest.raises(Failed, match=r"HTTP 307 redirect .* not followed"):
                await g.get_variable("PROD_AUTO_DEPLOY_DISABLED")
    assert elsewhere.seen == []


@pytest.mark.parametrize("body, match", [
    ("<html>gateway says hi</html>", "not JSON"),
    ('{"statuses": {"ci": "success"}}', "'statuses' is not a list"),
    ('{"statuses": [{"context": "ci", "state": "success"}]}', "no 'status' field"),
    ('{"sha": "' + "b" * 40 + '", "statuses": []}', "another commit"),
])
async def test_bad_status_answers_fail(body: str, match: str) -> None:
    app = Starlette(routes=[Route("/{p:path}", lambda r: PlainTextResponse(body))])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None, retry_wait_initial=0.01) as g:
        with pytest.raises(Failed, match=match):
            await g.combined_status("a" * 40)


async def test_paging_stops_at_an_empty_page_without_x_total_count() -> None:
    asked: list[int] = []

    async def status(request: Request) -> Response:
        page = int(request.query_params["page"])
        asked.append(page)
        entries = [{"context": f"c{page}-{i}", "status": "success", "id": page * 100 + i}
                   for i in range(50)] if page <= 2 else []
        return JSONResponse({"statuses": entries})

    app = Starlette(routes=[Route("/{p:path}", status)])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None, retry_wait_initial=0.01) as g:
        statuses = await g.combined_status("a" * 40)
    assert len(statuses) == 100 and asked == [1, 2, 3]


async def test_a_context_seen_twice_keeps_the_newest() -> None:
    async def status(request: Request) -> Response:
        entries = [{"context": "ci", "status": "pending", "id": 5},
                   {"context": "ci", "status": "success", "id": 9},
                   {"context": "ci", "status": "failure", "id": 7}]
        return JSONResponse({"statuses": entries}, headers={"X-Total-Count": "3"})

    app = Starlette(routes=[Route("/{p:path}", status)])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None) as g:
        assert (await g.combined_status("a" * 40))["ci"].state == "success"


async def test_connection_refused_fails_within_the_deadline() -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with GiteaClient(f"http://127.0.0.1:{port}", "acme/fleet", None, retry_deadline=0.3,
                           retry_wait_initial=0.01) as g:
        with pytest.raises(Failed, match=r"cannot reach|within 0.3s"):
            await g.branch_head("main")


# ---------------------------------------------------------------- the repository, the user, statuses


async def test_repository_user_and_a_created_status(gitea: Gitea) -> None:
    sha = gitea.world.deploy_sha
    async with gitea.client() as g:
        repo = await g.repository()
        login = await g.current_user()
        created = await g.create_status(sha, "success", "fleetgate / approve", "approved by a human",
                                        target_url="http://127.0.0.1:1/runs/1")
        statuses = await g.combined_status(sha)
    assert repo["full_name"] == gitea.world.repo and repo["permissions"]["push"] is True
    assert login == "gitea-actions"
    assert created.creator == login and created.state == "success"
    assert statuses["fleetgate / approve"].state == "success"
    posted = [s for s in gitea.recorder.seen if s.method == "POST"]
    assert [p.path for p in posted] == [f"/api/v1/repos/{gitea.world.repo}/statuses/{sha}"]


async def test_creating_a_status_is_never_retried(gitea: Gitea) -> None:
    gitea.world.gitea_faults.fail_next = 1
    async with gitea.client() as g:
        with pytest.raises(Failed, match="HTTP 503"):
            await g.create_status(gitea.world.deploy_sha, "success", "ctx", "d")
    assert len(gitea.recorder.seen) == 1


async def test_a_read_only_token_cannot_create_a_status(gitea: Gitea) -> None:
    gitea.world.gitea_tokens["read-only-token"] = {READ}
    async with gitea.client(token="read-only-token") as g:
        with pytest.raises(Failed, match=r"HTTP 403.*write:repository"):
            await g.create_status(gitea.world.deploy_sha, "success", "ctx", "d")


async def test_path_segments_are_percent_encoded() -> None:
    seen: list[str] = []

    async def anything(request: Request) -> Response:
        seen.append(request.scope["raw_path"].decode())
        return JSONResponse({"message": "nope"}, status_code=404)

    app = Starlette(routes=[Route("/{p:path}", anything)])
    async with serve_app(app) as url, GiteaClient(url, "ac me/fl?et#x", None, retry_wait_initial=0.01) as g:
        with pytest.raises(Failed, match="no such repository"):
            await g.get_variable("A/../B")
    assert seen == ["/api/v1/repos/ac%20me/fl%3Fet%23x/actions/variables/A%2F..%2FB",
                    "/api/v1/repos/ac%20me/fl%3Fet%23x"]


async def test_a_proxy_from_the_environment_never_sees_the_token(gitea: Gitea,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from loopback import connection_recorder

    with connection_recorder() as proxy:
        point_proxies_at(monkeypatch, proxy.url)
        async with gitea.client() as g:
            await g.branch_head("main")
        assert proxy.settle() == 0
    assert gitea.recorder.seen[0].headers["authorization"] == f"token {GITEA_TOKEN}"


# ---------------------------------------------------------------- duplicates and lying totals


@pytest.mark.parametrize("ids", [(7, 7), (None, None)])
async def test_a_context_reported_twice_with_conflicting_states_and_no_order_is_conflicting(
        ids: tuple[int | None, int | None]) -> None:
    async def status(request: Request) -> Response:
        entries: list[dict[str, Any]] = [{"context": "ci", "status": "failure"},
                                         {"context": "ci", "status": "success"}]
        for entry, ident in zip(entries, ids, strict=True):
            if ident is not None:
                entry["id"] = ident
        return JSONResponse({"statuses": entries}, headers={"X-Total-Count": "2"})

    app = Starlette(routes=[Route("/{p:path}", status)])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None) as g:
        held = (await g.combined_status("a" * 40))["ci"]
    assert held.state == CONFLICTING
    assert "failure and success" in held.description


async def test_a_lying_x_total_count_does_not_hide_a_page() -> None:
    asked: list[int] = []

    async def status(request: Request) -> Response:
        page = int(request.query_params["page"])
        asked.append(page)
        count = {1: 50, 2: 1}.get(page, 0)
        entries = [{"context": f"c{page}-{i}", "status": "success", "id": page * 100 + i} for i in range(count)]
        return JSONResponse({"statuses": entries}, headers={"X-Total-Count": "50"})  # there are 51

    app = Starlette(routes=[Route("/{p:path}", status)])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None) as g:
        statuses = await g.combined_status("a" * 40)
    assert "c2-0" in statuses and len(statuses) == 51
    assert asked == [1, 2]  # one request per page; the short page ends it


async def test_deeply_nested_json_from_gitea_is_a_one_line_failure() -> None:
    nested = '{"statuses": ' + "[" * 10_000 + "]" * 10_000 + "}"
    app = Starlette(routes=[Route("/{p:path}", lambda r: PlainTextResponse(nested))])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None) as g:
        with pytest.raises(Failed, match="not JSON we can read: nested deeper than 64 levels"):
            await g.combined_status("a" * 40)
