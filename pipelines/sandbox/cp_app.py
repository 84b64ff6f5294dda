"""The control plane double: `POST /cp/admin/tenants/redeploy-fleet` (CONTRACT §4).

A wave's tenants are redeployed concurrently, each taking its own latency; the answer comes when
the slowest is done. Faults (5xx after a partial wave, refusals, leaky error texts, hostile slugs)
come from `World.cp_faults`; every call lands in `World.cp_calls`, every write in `World.writes`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pipelines.sandbox.world import CPCall, World

REDEPLOY_PATH = "/cp/admin/tenants/redeploy-fleet"


def _row(slug: str, phase: str, *, ok: bool = True, error: str = "",
         verified: bool | None = None) -> dict[str, Any]:
    return {
        "slug": slug, "phase": phase,
        "ssm_status": ("Success" if ok else "Failed") if phase != "dry_run" else "",
        "ssm_exit_code": (0 if ok else 1) if phase != "dry_run" else None,
        "healthz_ok": ok if phase != "dry_run" else None,
        "error": error, "verified_on_target": verified,
    }


def build_app(world: World) -> ASGIApp:
    async def redeploy_fleet(request: Request) -> Response:
        call = CPCall(start=time.monotonic(), body=None)
        world.cp_calls.append(call)
        try:
            response = await _answer(world, request, call)
        finally:
            call.end = time.monotonic()
        call.status = response.status_code
        return response

    async def redirected(request: Request) -> Response:
        # The far end of a tenant's redirect: it would "verify" anyone who followed it.
        slug = request.path_params["slug"]
        return JSONResponse({"git_sha": world.deploy_sha, "slug": slug})

    return Starlette(routes=[
        Route(REDEPLOY_PATH, redeploy_fleet, methods=["POST"]),
        Route("/redirected/{slug}/buildinfo", redirected, methods=["GET"]),
    ])


async def _answer(world: World, request: Request, call: CPCall) -> Response:
    faults = world.cp_faults
    await world.pause(faults.latency)
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != world.cp_token:
        return JSONResponse({"ok": False, "error": "unauthorized"}, status_code=401)
    try:
        body = json.loads(await request.body())
    except ValueError:
        return JSONResponse({"ok": False, "error": "body is not JSON"}, status_code=400)
    call.body = body
    if not isinstance(body, dict):
        return JSONResponse({"ok": False, "error": "body must be a JSON object"}, status_code=400)
    if body.get("confirm") is not True:
        return JSONResponse({"ok": False, "error": "confirm: true is required"}, status_code=400)
    tag = body.get("target_tag")
    if not isinstance(tag, str) or not tag:
        return JSONResponse({"ok": False, "error": "target_tag is required"}, status_code=400)
    only = body.get("only_slugs")
    if only is not None and (not isinstance(only, list) or not all(isinstance(s, str) for s in only)):
        return JSONResponse({"ok": False, "error": "only_slugs must be a list of strings"}, status_code=400)
    dry_run = body.get("dry_run") is True
    listing = dry_run and not only
    # A refusal or an unknown tag answers 200 with ok:false, as the real CP does.
    if listing and faults.refuse_dry_run:
        return JSONResponse({"ok": False, "results": [], "error": faults.refuse_dry_run})
    sha = world.registry.get(tag)
    if sha is None:
        return JSONResponse({"ok": False, "results": [], "error": f"unknown image tag {tag!r}"})
    if listing:
        rows = [_row(slug, "dry_run") for slug in sorted(world.tenants)]
        rows += [_row(slug, "dry_run") for slug in faults.hostile_slugs]
        return JSONResponse({"ok": True, "results": rows})
    if not dry_run and faults.refuse:
        return JSONResponse({"ok": False, "results": [], "error": faults.refuse})

    wanted = list(only) if only else sorted(world.tenants)
    known = [s for s in wanted if s in world.tenants]
    unknown = [s for s in wanted if s not in world.tenants]
    if dry_run:
        rows = [_row(s, "dry_run") for s in known]
        rows += [_row(s, "error", ok=False, error="unknown tenant") for s in unknown]
        return JSONResponse({"ok": True, "results": rows})

    failing = faults.fail_next > 0
    if failing:
        faults.fail_next -= 1
        known = known[: faults.fail_after_slugs]
    if known:
        world.record_write(known, tag, sha)
    results: dict[str, dict[str, Any]] = {}
    # Concurrently, each tenant done at its own latency from now: one task walks them in that order
    # (a task per tenant costs more than the rest of the call at fleet size).
    start = world.now()
    for tenant in sorted((world.tenants[slug] for slug in known), key=lambda t: t.latency):
        await world.pause(start + tenant.latency - world.now())
        world.redeploy(tenant, sha)
        failed = tenant.reports_failure
        results[tenant.slug] = _row(tenant.slug, "failed" if failed else "redeployed", ok=not failed,
                                    error=faults.row_error if failed else "",
                                    verified=tenant.sha == sha and tenant.pending_sha is None and not failed)
    if failing:
        return Response(faults.fail_body, status_code=faults.fail_status, media_type="text/html")
    rows = [results[s] for s in known] + [_row(s, "error", ok=False, error="unknown tenant") for s in unknown]
    return JSONResponse({"ok": True, "results": rows})
