"""Approval after the canary, the watched soak, the analysis and the notifications, end to end over the sandbox."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import stamina
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.deploy import deploy_production
from pipelines.errors import FleetgateError
from pipelines.ledger import read_ledger
from pipelines.output import Output
from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.world import APPROVER_LOGIN
from pipelines.settings import resolve
from tests.loopback import serve_app
from tests.prometheus_server import start_prometheus
from tests.ran import Run

pytestmark = pytest.mark.anyio


async def deploy(sb: Sandbox, tmp_path: Path, **flags: Any) -> Run:
    flags.setdefault("ledger", str(tmp_path / "ledger.jsonl"))
    flags.setdefault("soak_seconds", 0.3)
    settings = resolve("deploy-production", flags, {}, overlay=sb.overlay)
    stderr = io.StringIO()
    out = Output(json_mode=True, stream=stderr, stdout=io.StringIO())
    result: dict[str, Any] | None = None
    error: FleetgateError | None = None
    try:
        result = await deploy_production(settings, out)
    except FleetgateError as exc:
        error = exc
    return Run(result, error, stderr.getvalue(), "", read_ledger(settings.ledger))


def written(sb: Sandbox) -> list[list[str]]:
    return [w.slugs for w in sb.state.writes]


# ------------------------------------------------------------------------------------------------ approval


async def test_approved_run_waits_for_the_approver_then_deploys(tmp_path: Path) -> None:
    async with serve("canary-approved") as sb:
        run = await deploy(sb, tmp_path, approve_after_canary=True)
        status = sb.state.statuses[sb.state.deploy_sha]["fleetgate/approve"]
        writes = sb.state.writes
    assert run.exit_code == 0, run.stderr
    assert writes[0].slugs == ["alpha"] and len(writes) == 3
    assert writes[1].time - writes[0].time >= 1.0  # the waves waited for the approver (1 s after the pause)
    [approved] = run.events("approval", action="approved")
    assert approved["approver"] == APPROVER_LOGIN == run.report["approval"]["approver"] == status.creator
    assert f"fleetgate approve --repo acme/fleet --sha {sb.state.deploy_sha}" in run.stderr
    # the lease was renewed and the kill switch re-read while it waited
    polls = run.events("kill_switch", before="approval poll")
    assert polls and all(p["engaged"] is False for p in polls)


async def test_rejected_run_stops_after_the_canary_with_exit_1(tmp_path: Path) -> None:
    async with serve("canary-rejected") as sb:
        run = await deploy(sb, tmp_path, approve_after_canary=True)
        writes = written(sb)
    assert run.exit_code == 1 and "rejected by release-manager" in run.error.message  # type: ignore[union-attr]
    assert writes == [["alpha"]]  # no write after the canary
    assert run.events("approval", action="rejected")[0]["approver"] == APPROVER_LOGIN
    assert run.events("done")[-1]["outcome"] == "failed"


async def test_rejected_run_rolls_the_canary_back_with_on_failure_rollback(tmp_path: Path) -> None:
    async with serve("canary-rejected") as sb:
        run = await deploy(sb, tmp_path, approve_after_canary=True, on_failure="rollback")
        shas = sb.state.tenant_shas()
        old = sb.state.tenants["bravo"].sha
    assert run.exit_code == 1 and run.report["outcome"] == "rolled-back"
    assert shas["alpha"] == old  # the canary is back on what it ran


async def test_unanswered_approval_fails_at_the_timeout(tmp_path: Path) -> None:
    async with serve("canary-unanswered") as sb:
        run = await deploy(sb, tmp_path, approve_after_canary=True, approval_timeout=0.5)
        writes = written(sb)
    assert run.exit_code == 1 and "no approval within 0.5s" in run.error.message  # type: ignore[union-attr]
    assert writes == [["alpha"]]
    assert run.events("approval", action="failed")


async def test_the_kill_switch_stops_a_paused_run_with_exit_4(tmp_path: Path) -> None:
    async with serve("canary-unanswered") as sb:
        sb.state.on_write(1, lambda w: w.engage_kill_switch("true"))
        run = await deploy(sb, tmp_path, approve_after_canary=True, approval_timeout=30)
        writes = written(sb)
    assert run.exit_code == 4 and writes == [["alpha"]]


async def test_without_the_flag_nobody_is_waited_for(tmp_path: Path) -> None:
    async with serve("canary-unanswered") as sb:
        run = await deploy(sb, tmp_path)
    assert run.exit_code == 0 and not run.events("approval")


# ------------------------------------------------------------------------------------------------ soak watch


async def test_a_tenant_that_regresses_in_the_soak_fails_the_run_over_budget(tmp_path: Path) -> None:
    async with serve("tenant-regresses") as sb:
        run = await deploy(sb, tmp_path)
    assert run.exit_code == 1 and "bravo regressed during the soak" in run.error.message  # type: ignore[union-attr]
    assert run.events("wave_failed")[-1]["stragglers"] == ["bravo"]


async def test_a_regressed_tenant_within_the_budget_is_a_named_straggler(tmp_path: Path) -> None:
    async with serve("tenant-regresses") as sb:
        run = await deploy(sb, tmp_path, max_stragglers=1)
    assert run.exit_code == 0, run.stderr
    assert run.report["stragglers"] == ["bravo"]
    assert run.events("soak", action="regressed")[0]["slug"] == "bravo"


async def test_the_canary_is_never_a_straggler(tmp_path: Path) -> None:
    async with serve("canary-regresses") as sb:
        run = await deploy(sb, tmp_path, max_stragglers=5)
        writes = written(sb)
    assert run.exit_code == 1 and "the canary must stay verified" in run.error.message  # type: ignore[union-attr]
    assert writes == [["alpha"]]


async def test_the_soak_after_the_last_wave_is_watched(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await deploy(sb, tmp_path)
    assert run.exit_code == 0
    watched = run.events("soak", action="watched")
    assert [e["after"] for e in watched] == ["canary", "wave 1", "wave 2"] and all(e["ticks"] >= 1 for e in watched)


async def test_health_path_unverifies_an_unhealthy_tenant(tmp_path: Path) -> None:
    async with serve("unhealthy-after-deploy") as sb:
        unwatched = await deploy(sb, tmp_path, ledger=str(tmp_path / "a.jsonl"))
    async with serve("unhealthy-after-deploy") as sb:
        watched = await deploy(sb, tmp_path, ledger=str(tmp_path / "b.jsonl"), health_path="/healthz")
        asked = sb.state.requests_to("tenants", "GET", "/healthz")
    assert unwatched.exit_code == 0
    assert watched.exit_code == 1 and "charlie (unhealthy" in watched.error.message  # type: ignore[union-attr]
    assert asked and all("authorization" not in r.headers for r in asked)


async def test_one_health_client_serves_every_read_of_a_run(tmp_path: Path, clients_made: list[Any]) -> None:
    made = clients_made
    async with serve() as sb:
        run = await deploy(sb, tmp_path, health_path="/healthz")
        asked = sb.state.requests_to("tenants", "GET", "/healthz")
        fleet = len(sb.state.tenants)
    assert run.exit_code == 0, run.stderr
    assert len(asked) > fleet  # the waves, the soak ticks and the final verify all checked health
    assert len(made) == 1 and made[0].is_closed  # one client for all of them, closed with the run


async def test_the_analysis_fails_the_wave_through_a_real_prometheus(tmp_path: Path) -> None:
    query = "max(fleetgate_sandbox_errors_total)"
    async with serve("errors-after-deploy") as sb:
        with start_prometheus(tmp_path / "prom", {"tenants": f"{sb.state.tenants_url}/metrics"}) as prom:
            await prom.wait_for_series(query)
            run = await deploy(sb, tmp_path, soak_seconds=30, prometheus_url=prom.url, analysis_query=query,
                               analysis_max=0)
        writes = written(sb)
    assert run.exit_code == 1, run.stderr
    assert "analysis failed" in run.error.message and writes == [["alpha"]]  # type: ignore[union-attr]
    [failed] = run.events("wave_failed")
    assert failed["label"] == "canary" and failed["analysis"]["verdict"] == "failure"


# ------------------------------------------------------------------------------------------------ notifications


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.bodies.append(json.loads(await request.body()))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@pytest.mark.parametrize("scenario, flags, expected", [
    ("canary-approved", {"approve_after_canary": True}, ["waiting-for-approval", "deployed"]),
    ("stuck-canary", {}, ["failed"]),
    ("kill-switch-flips", {}, ["halted"]),
    ("newer-head-green", {}, ["stood-down"]),
    ("kill-switch-engaged", {}, ["disabled"]),
    ("gate-failure", {}, ["failed"]),
])
async def test_one_message_per_ending(tmp_path: Path, scenario: str, flags: dict[str, Any],
                                      expected: list[str]) -> None:
    stamina.set_testing(True, attempts=2)
    receiver = Receiver()
    try:
        async with serve_app(receiver.app()) as base, serve(scenario) as sb:
            run = await deploy(sb, tmp_path, notify=(base.replace("http://", "json://") + "/hook/secret-x9",),
                               soak_seconds=0.05, **flags)
    finally:
        stamina.set_testing(False)
    outcomes = [b["title"].split(": ", 1)[1].split(" ")[0] for b in receiver.bodies]
    assert outcomes == expected, run.stderr
    assert all(sb.state.deploy_sha in b["message"] for b in receiver.bodies)
    assert [e["delivered"] for e in run.events("notify")] == [True] * len(expected)
    assert "secret-x9" not in json.dumps(run.ledger) + run.stderr


def test_the_summary_names_the_approver() -> None:
    from pipelines.summary import render

    text = render({"ok": True, "exit_code": 0, "sha": "0" * 40,
                   "approval": {"approved": True, "approver": "alice", "waited_seconds": 3.5}})
    assert "**Approved by** `alice` after 3.5s" in text


async def test_verify_with_a_health_path_names_the_unhealthy_tenant() -> None:
    from pipelines.verify import run as verify

    async with serve("unhealthy-after-deploy") as sb:
        for tenant in sb.state.tenants.values():
            tenant.sha = sb.state.deploy_sha
        out = Output(json_mode=True, stream=io.StringIO(), stdout=io.StringIO())
        plain = await verify(resolve("verify", {}, {}, overlay=sb.overlay), out)
        with pytest.raises(FleetgateError, match=r"1 of 7 tenant\(s\) not on \w+: charlie"):
            await verify(resolve("verify", {"health_path": "/healthz"}, {}, overlay=sb.overlay), out)
    assert plain["ok"] is True
