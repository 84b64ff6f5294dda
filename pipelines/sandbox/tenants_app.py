"""The tenant fleet double: `GET /tenants/{slug}/buildinfo` → `{"git_sha": …}` (public, no auth).

Per-tenant behaviour (`Tenant.buildinfo`): ok, unreachable (502 from the load balancer, connection
closed), non-json, bad-shape, slow (answers after `slow_seconds`), redirect (to another origin whose
answer would falsely "verify" it: following it is the bug this catches).
`GET /tenants/{slug}/healthz` answers `Tenant.health`; `GET /metrics` (Prometheus text format)
exposes every tenant's error counter, which climbs once a tenant with `errors_per_scrape` runs the
deploy SHA — what `--analysis-query` is tested against through a real Prometheus.

A healthy tenant's `/buildinfo` (every read of a rollout, bar the scripted faults) is answered on a
raw ASGI fast path, before Starlette's router: at 10,000 tenants the router and its Request and
Response objects were most of the sandbox's CPU, and the sandbox shares its loop with fleetgate.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pipelines.sandbox.world import BuildinfoRead, World

BUILT_AT = "2026-01-01T00:00:00Z"
HEADERS_KEY = "fleetgate.headers"  # the request's headers as recorded (sandbox/__init__.py), shared, not copied


def build_app(world: World) -> ASGIApp:
    async def buildinfo(request: Request) -> Response:
        slug = request.path_params["slug"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        world.buildinfo_reads.append(BuildinfoRead(time=time.monotonic(), slug=slug, headers=headers))
        tenant = world.tenants.get(slug)
        if tenant is None:
            return Response("no such tenant\n", status_code=404, media_type="text/plain")
        mode = tenant.buildinfo
        if mode == "unreachable":
            return Response("<html><body>502 Bad Gateway</body></html>", status_code=502,
                            media_type="text/html", headers={"Connection": "close"})
        if mode == "redirect":
            return RedirectResponse(f"{world.cp_url}/redirected/{slug}/buildinfo", status_code=302)
        if mode == "slow":
            await world.pause(tenant.slow_seconds)
        sha = world.buildinfo_sha(tenant)
        if mode == "non-json":
            return Response(f"<html><body>build {sha}</body></html>", media_type="text/html")
        if mode == "bad-shape":
            return JSONResponse({"sha": sha, "git_sha": None})
        return JSONResponse({"git_sha": sha, "built_at": BUILT_AT})

    async def health(request: Request) -> Response:
        tenant = world.tenants.get(request.path_params["slug"])
        if tenant is None:
            return Response("no such tenant\n", status_code=404, media_type="text/plain")
        status = world.health_status(tenant)
        return Response("ok\n" if status < 300 else "unhealthy\n", status_code=status, media_type="text/plain")

    async def metrics(request: Request) -> Response:
        """Prometheus text format: each tenant's error counter (climbing once it runs the deploy SHA)."""
        lines = ["# HELP fleetgate_sandbox_errors_total Errors a sandbox tenant served.",
                 "# TYPE fleetgate_sandbox_errors_total counter"]
        for slug, tenant in sorted(world.tenants.items()):
            if tenant.errors_per_scrape and tenant.sha == world.deploy_sha:
                tenant.errors_total += tenant.errors_per_scrape
            lines.append(f'fleetgate_sandbox_errors_total{{slug="{slug}"}} {tenant.errors_total:g}')
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    routed = Starlette(routes=[Route("/tenants/{slug}/buildinfo", buildinfo, methods=["GET"]),
                               Route("/tenants/{slug}/healthz", health, methods=["GET"]),
                               Route("/metrics", metrics, methods=["GET"])])
    prefix, suffix = "/tenants/", "/buildinfo"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "GET" and path.startswith(prefix) and path.endswith(suffix):
            slug = path[len(prefix):-len(suffix)]
            tenant = world.tenants.get(slug) if slug and "/" not in slug else None
            if tenant is not None and tenant.buildinfo == "ok":  # the answer `buildinfo` above gives, byte for byte
                headers = scope.get(HEADERS_KEY)
                if headers is None:
                    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                world.buildinfo_reads.append(BuildinfoRead(time=time.monotonic(), slug=slug, headers=headers))
                body = json.dumps({"git_sha": world.buildinfo_sha(tenant), "built_at": BUILT_AT},
                                  ensure_ascii=False, separators=(",", ":")).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode()),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await routed(scope, receive, send)

    return app
