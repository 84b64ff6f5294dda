"""Metric analysis: verdicts from Prometheus answers, and a real Prometheus scraping the sandbox's tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.analysis import FAILURE, INCONCLUSIVE, SUCCESS, Analysis, judge
from pipelines.sandbox import serve
from tests.loopback import connection_recorder, point_proxies_at, serve_app
from tests.prometheus_server import start_prometheus

pytestmark = pytest.mark.anyio
QUERY = "max(fleetgate_sandbox_errors_total)"


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [1.0, v]} for v in values]}}


@pytest.mark.parametrize("body, kind", [
    (vector("0"), SUCCESS),
    (vector("0", "0.5"), SUCCESS),
    (vector("0", "1"), FAILURE),  # any series above the maximum fails
    (vector("+Inf"), FAILURE),
    (vector(), INCONCLUSIVE),  # no data is not "fine"
    (vector("NaN"), INCONCLUSIVE),
    (vector("0", "NaN"), INCONCLUSIVE),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}}, FAILURE),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, INCONCLUSIVE),
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, INCONCLUSIVE),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, 2]}]}}, INCONCLUSIVE),
    ([], INCONCLUSIVE),
])
def test_judge(body: Any, kind: str) -> None:
    assert judge(body, 0.5).kind == kind


class FakePrometheus:
    """Answers scripted bodies in turn; records the headers it was sent."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.headers: list[dict[str, str]] = []
        self.queries: list[str] = []

    def app(self) -> Starlette:
        async def query(request: Request) -> Response:
            self.headers.append(dict(request.headers))
            self.queries.append(request.query_params["query"])
            status, body = self.answers.pop(0) if self.answers else (200, vector())
            if isinstance(body, str):
                return Response(body, status_code=status)
            return JSONResponse(body, status_code=status)

        return Starlette(routes=[Route("/api/v1/query", query, methods=["GET"])])


async def test_inconclusive_in_a_row_fails_closed_and_a_clear_tick_resets_the_count() -> None:
    fake = FakePrometheus([(200, vector()), (503, "<html>down</html>"), (200, vector("0")),
                           (200, vector()), (400, {"status": "error", "error": "bad"}), (200, vector("NaN"))])
    async with serve_app(fake.app()) as base:
        analysis = Analysis(base, "sum(x)", 0, 3)
        why = [(await analysis.tick())[1] for _ in range(6)]
        await analysis.aclose()
    assert why[:5] == [None] * 5  # two inconclusive, a success resets, then two more
    assert why[5] is not None and "3 time(s) in a row" in why[5]
    assert fake.queries == ["sum(x)"] * 6
    assert all("authorization" not in h for h in fake.headers)  # no token goes to Prometheus


async def test_an_error_status_with_a_good_looking_body_is_not_data() -> None:
    fake = FakePrometheus([(500, vector("0"))])
    async with serve_app(fake.app()) as base:
        analysis = Analysis(base, "sum(x)", 0, 1)
        verdict, why = await analysis.tick()
        await analysis.aclose()
    assert verdict.kind == INCONCLUSIVE and why is not None


async def test_a_redirect_is_not_followed_and_is_no_data() -> None:
    with connection_recorder() as elsewhere:
        fake = FakePrometheus([(200, vector("0"))])
        app = fake.app()

        async def moved(request: Request) -> Response:
            return Response(status_code=302, headers={"Location": f"{elsewhere.url}/api/v1/query"})

        app.router.routes.insert(0, Route("/api/v1/query", moved, methods=["GET"]))
        async with serve_app(app) as base:
            analysis = Analysis(base, "sum(x)", 0, 1)
            verdict, why = await analysis.tick()
            await analysis.aclose()
        assert verdict.kind == INCONCLUSIVE and why is not None and "HTTP 302" in verdict.detail
        assert elsewhere.settle() == 0  # the far end of the redirect was never asked


async def test_a_proxy_from_the_environment_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with connection_recorder() as proxy:
        point_proxies_at(monkeypatch, proxy.url)
        fake = FakePrometheus([(200, vector("0"))])
        async with serve_app(fake.app()) as base:
            analysis = Analysis(base, "sum(x)", 0, 1)
            verdict, _ = await analysis.tick()
            await analysis.aclose()
        assert verdict.kind == SUCCESS and fake.queries == ["sum(x)"]
        assert proxy.settle() == 0


async def test_unreachable_prometheus_is_inconclusive() -> None:
    analysis = Analysis("http://127.0.0.1:1", "up", 0, 1)
    verdict, why = await analysis.tick()
    await analysis.aclose()
    assert verdict.kind == INCONCLUSIVE and why is not None and "unreachable" in why


async def test_a_real_prometheus_sees_the_error_counter_climb_after_the_deploy(tmp_path: Path) -> None:
    async with serve("happy") as sb:
        world = sb.state
        canary = sorted(world.tenants)[0]
        world.tenants[canary].errors_per_scrape = 1.0
        with start_prometheus(tmp_path / "prom", {"tenants": f"{world.tenants_url}/metrics"}) as prom:
            await prom.wait_for_series(QUERY)
            analysis = Analysis(prom.url, QUERY, 0, 3)
            before, why_before = await analysis.tick()
            assert (before.kind, before.value, why_before) == (SUCCESS, 0.0, None)  # old SHA: no errors
            world.tenants[canary].sha = world.deploy_sha  # the canary runs the release; its errors climb
            await prom.wait_for_series(f"{QUERY} > 0")
            after, why_after = await analysis.tick()
            await analysis.aclose()
    assert after.kind == FAILURE and after.value is not None and after.value > 0
    assert why_after is not None and "analysis failed" in why_after
