"""The sandbox's behaviour over real loopback sockets: what other tests and game days rely on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.cli import main as sandbox_main
from pipelines.sandbox.scenarios import SCENARIOS, TIMINGS, placeholder_overlay
from pipelines.sandbox.world import KILL_SWITCH_VARIABLE, LEASE_VARIABLE, READ
from pipelines.settings import resolve

REPO = Path(__file__).resolve().parents[1]
VARS = "/api/v1/repos/acme/fleet/actions/variables"
REDEPLOY = "/cp/admin/tenants/redeploy-fleet"


def gitea(sb: Sandbox, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sb.gitea_url, timeout=5.0,
                             headers={"Authorization": f"token {sb.state.gitea_token}"}, **kw)


def cp(sb: Sandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sb.cp_url, timeout=5.0,
                             headers={"Authorization": f"Bearer {sb.state.cp_token}"})


def wave(sb: Sandbox, slugs: list[str] | None = None, *, dry_run: bool = False,
         **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"target_tag": f"staging-{sb.state.deploy_sha[:7]}", "confirm": True,
                            "dry_run": dry_run, "batch_size": len(slugs or []) or 1, "soak_seconds": 0}
    if slugs is not None:
        body["only_slugs"] = slugs
    body.update(extra)
    return body


async def buildinfo(sb: Sandbox, slug: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.get(sb.tenant_url_template.format(slug=slug) + "/buildinfo")


# ---------------------------------------------------------------- serve()


@pytest.mark.anyio
async def test_serve_starts_on_three_loopback_origins_and_stops_cleanly() -> None:
    # How fast it starts is a speed goal (bench/), not an assertion here.
    async with serve("happy") as sb:
        origins = {sb.gitea_url, sb.cp_url, sb.tenant_url_template.split("/tenants")[0]}
        assert len(origins) == 3
        assert all(o.startswith("http://127.0.0.1:") for o in origins)
        async with gitea(sb) as client:
            assert (await client.get("/api/v1/repos/acme/fleet/branches/main")).status_code == 200
        assert (await buildinfo(sb, "alpha")).status_code == 200
        port = int(sb.gitea_url.rsplit(":", 1)[1])
    with pytest.raises(httpx.ConnectError):  # refused at once: nothing listens any more
        async with httpx.AsyncClient(timeout=60.0) as client:
            await client.get(f"http://127.0.0.1:{port}/")


@pytest.mark.anyio
async def test_shutdown_does_not_wait_for_a_scripted_slow_answer() -> None:
    async with serve("happy") as sb:
        sb.state.tenants["alpha"].buildinfo = "slow"  # an hour, here, unless cut short
        in_flight = anyio.Event()
        pause = sb.state.pause
        ended: list[str] = []

        async def hour_long_pause(seconds: float) -> None:
            in_flight.set()
            try:
                await pause(3600.0)
                ended.append("cut short")  # the sandbox's close() ended it
            except anyio.get_cancelled_exc_class():
                ended.append("cancelled")  # only the grace period's fallback
                raise

        sb.state.pause = hour_long_pause  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(buildinfo, sb, "alpha")
            await in_flight.wait()
            tg.cancel_scope.cancel()
    assert ended == ["cut short"]  # shutdown ended the answer at once instead of waiting for it


@pytest.mark.anyio
async def test_overlay_resolves_into_valid_settings_pointing_at_the_sandbox() -> None:
    async with serve("happy") as sb:
        settings = resolve("deploy-production", {}, {}, overlay=sb.overlay)
        assert settings.gitea_url == sb.gitea_url
        assert settings.cp_url == settings.prod_cp_url == sb.cp_url  # the URL guard stays live
        assert settings.gitea_token is not None and settings.gitea_token.reveal() == sb.state.gitea_token
        assert settings.cp_token is not None and settings.cp_token.reveal() == sb.state.cp_token
        assert settings.sha == sb.state.deploy_sha
        assert settings.target_tag in sb.state.registry
        assert settings.tenant_url("alpha") == sb.tenant_url_template.format(slug="alpha")
        assert settings.soak_seconds == TIMINGS["soak_seconds"]
    placeholder = resolve("deploy-production", {}, {}, overlay=placeholder_overlay())
    assert set(placeholder_overlay()) == set(sb.overlay)
    assert placeholder.required_contexts == settings.required_contexts


@pytest.mark.anyio
async def test_env_resolves_to_the_same_settings_as_the_overlay() -> None:
    # `eval "$(fleetgate sandbox)"` must rehearse exactly what `--sandbox` does, own ledger included.
    async with serve("happy") as sb:
        from_env = resolve("deploy-production", {}, sb.env())
        from_overlay = resolve("deploy-production", {}, {}, overlay=sb.overlay)
    assert repr(from_env) == repr(from_overlay)
    for token in ("gitea_token", "cp_token"):
        assert getattr(from_env, token).reveal() == getattr(from_overlay, token).reveal()
    assert from_env.ledger == from_overlay.ledger != resolve("deploy-production", {}, {}, overlay={
        k: v for k, v in sb.overlay.items() if k != "ledger"}).ledger


def test_every_scenario_builds_a_world_and_lists_with_a_doc(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.sandbox.scenarios import build_world

    required = set("""happy gates-pending gate-failure gate-error gate-warning gate-skipped gate-cancelled
        sentinel-green-concrete-red many-contexts gate-missing gitea-5xx gitea-rate-limited gitea-unauthorized
        kill-switch-engaged kill-switch-unreadable kill-switch-flips read-only-token stuck-tenant stuck-canary
        slow-tenants cp-5xx cp-refuses hostile-slug tenant-on-descendant newer-head-green newer-head-pending
        head-moves-mid-run lease-held lease-expired partially-deployed redirecting-tenant
        row-failure-but-verified leaky-errors""".split())
    assert required <= set(SCENARIOS)
    for name in SCENARIOS:
        world = build_world(name)
        assert world.deploy_sha in world.commits
        assert world.tenants
    assert sandbox_main("list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(SCENARIOS)
    for line, scenario in zip(listed, SCENARIOS.values(), strict=True):
        assert line.split()[0] == scenario.name and scenario.doc in line


def test_cli_refuses_bad_input_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert sandbox_main("no-such-scenario") == 2
    assert sandbox_main("happy", port=65535) == 2
    assert sandbox_main("happy", tenants=-1) == 2
    assert sandbox_main("stuck-tenant", tenants=0) == 2  # the scenario shapes a tenant it would not have
    err = capsys.readouterr().err
    assert "unknown scenario" in err and "at least one tenant" in err


def test_cli_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert sandbox_main("happy", port=port) == 1  # Gitea's port is taken
        assert sandbox_main("happy", port=port - 1) == 1  # the CP's (N+1) is taken
        assert sandbox_main("happy", port=port - 3) == 1  # the registry's (N+3) is taken
    assert "cannot listen" in capsys.readouterr().err
    assert sandbox_main("happy", port=65533) == 2  # N+3 would be past 65535


@pytest.mark.anyio
async def test_the_banner_counts_the_tenants_it_serves(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.sandbox.cli import announce

    async with serve("happy", tenants=200) as sb:
        announce(sb, "happy")
    captured = capsys.readouterr()
    assert "scenario 'happy', 200 tenants:" in captured.err and "(200 tenants)" in captured.err
    assert "seven" not in captured.err
    assert f"registry       {sb.registry_url}" in captured.err
    assert f"export FLEETGATE_IMAGE={sb.image}" in captured.out.splitlines()


def test_cli_serves_until_interrupted_and_prints_the_env() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "sandbox", "--scenario", "stuck-canary",
                             "--tenants", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        exported: dict[str, str] = {}
        while "FLEETGATE_LEASE_WAIT_SECONDS" not in exported:
            line = proc.stdout.readline()
            assert line, "sandbox exited before printing its environment"
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exported[name] = value.strip("'")
        for name in ("GITEA_URL", "GITEA_TOKEN", "CP_URL", "PROD_CP_URL", "CP_ADMIN_API_TOKEN",
                     "GITHUB_REPOSITORY", "GITHUB_SHA", "PROD_TENANT_URL_TEMPLATE",
                     "PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS"):
            assert exported[name], name
        assert exported["CP_URL"] == exported["PROD_CP_URL"]
        url = exported["PROD_TENANT_URL_TEMPLATE"].format(slug="alpha") + "/buildinfo"
        assert httpx.get(url, timeout=5).json()["git_sha"] != exported["GITHUB_SHA"]
        branch_url = f"{exported['GITEA_URL']}/api/v1/repos/{exported['GITHUB_REPOSITORY']}/branches/main"
        answer = httpx.get(branch_url, timeout=5,
                           headers={"Authorization": f"token {exported['GITEA_TOKEN']}"})
        assert answer.json()["commit"]["id"] == exported["GITHUB_SHA"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr is not None and "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- Gitea


@pytest.mark.anyio
async def test_gitea_requires_a_known_token_and_logs_every_request() -> None:
    async with serve("happy") as sb, httpx.AsyncClient(base_url=sb.gitea_url, timeout=5) as client:
        path = f"/api/v1/repos/acme/fleet/commits/{sb.state.deploy_sha}/status"
        missing = await client.get(path)
        wrong = await client.get(path, headers={"Authorization": "token nope-nope"})
        query_token = await client.get(path, params={"token": sb.state.gitea_token})
        bearer = await client.get(path, headers={"Authorization": f"Bearer {sb.state.gitea_token}"})
        ok = await client.get(path, headers={"Authorization": f"token {sb.state.gitea_token}"})
    for answer in (missing, wrong, query_token, bearer):
        assert answer.status_code == 401
        assert set(answer.json()) == {"message", "url"}
    assert ok.status_code == 200
    logged = sb.state.requests_to("gitea", "GET", "/status")
    assert len(logged) == 5 and logged[-1].headers["authorization"] == f"token {sb.state.gitea_token}"


@pytest.mark.anyio
async def test_variables_crud_case_insensitive_with_409_on_duplicate() -> None:
    async with serve("happy") as sb, gitea(sb) as client:
        assert (await client.get(f"{VARS}/{LEASE_VARIABLE}")).status_code == 404
        assert (await client.put(f"{VARS}/{LEASE_VARIABLE}", json={"value": "x"})).status_code == 404
        assert (await client.post(f"{VARS}/fleetgate_lease", json={"value": "one"})).status_code in (201, 204)
        duplicate = await client.post(f"{VARS}/{LEASE_VARIABLE}", json={"value": "two"})
        assert duplicate.status_code == 409 and "message" in duplicate.json()
        got = (await client.get(f"{VARS}/Fleetgate_Lease")).json()
        assert got["name"] == LEASE_VARIABLE and got["data"] == "one" and got["repo_id"] == sb.state.repo_id
        assert (await client.put(f"{VARS}/{LEASE_VARIABLE}", json={"value": "three"})).status_code == 204
        assert sb.state.get_variable(LEASE_VARIABLE) == "three"
        assert (await client.delete(f"{VARS}/{LEASE_VARIABLE}")).status_code == 204
        assert (await client.delete(f"{VARS}/{LEASE_VARIABLE}")).status_code == 404
        assert LEASE_VARIABLE not in sb.state.variables
        sb.state.gitea_faults.post_race_500 = True
        await client.post(f"{VARS}/{LEASE_VARIABLE}", json={"value": "mine"})
        raced = await client.post(f"{VARS}/{LEASE_VARIABLE}", json={"value": "theirs"})
        assert raced.status_code == 500 and sb.state.get_variable(LEASE_VARIABLE) == "mine"


@pytest.mark.anyio
async def test_read_only_token_reads_but_gets_403_on_every_variable_write() -> None:
    async with serve("read-only-token") as sb, gitea(sb) as client:
        assert sb.state.gitea_tokens[sb.state.gitea_token] == {READ}
        assert (await client.get(f"{VARS}/{KILL_SWITCH_VARIABLE}")).status_code == 404
        for method in ("POST", "PUT", "DELETE"):
            answer = await client.request(method, f"{VARS}/ABSENT_PROBE", json={"value": "x"})
            assert answer.status_code == 403, method
            assert "write" in answer.json()["message"]
        assert sb.state.variables == {}


@pytest.mark.anyio
async def test_kill_switch_scenarios_shape_the_variable() -> None:
    async with serve("kill-switch-engaged") as sb, gitea(sb) as client:
        assert (await client.get(f"{VARS}/{KILL_SWITCH_VARIABLE.lower()}")).json()["data"] == "true"
    async with serve("kill-switch-unreadable") as sb, gitea(sb) as client:
        assert (await client.get(f"{VARS}/{KILL_SWITCH_VARIABLE}")).status_code == 500
        assert (await client.get(f"{VARS}/{LEASE_VARIABLE}")).status_code == 404  # only the switch is broken


@pytest.mark.anyio
async def test_status_flips_after_the_nth_read_of_the_sha() -> None:
    async with serve("gates-pending") as sb, gitea(sb) as client:
        path = f"/api/v1/repos/acme/fleet/commits/{sb.state.deploy_sha}/status"
        seen = []
        for _ in range(4):
            body = (await client.get(path, params={"limit": 50})).json()
            seen.append({s["context"]: s["status"] for s in body["statuses"]}["CI / test (push)"])
        assert seen == ["pending", "pending", "pending", "success"]
        sb.state.set_status(sb.state.deploy_sha, "CI / lint (push)", "failure", after_reads=1)
        assert (await client.get(path)).json()["state"] == "success"
        assert (await client.get(path)).json()["state"] == "failure"


@pytest.mark.anyio
async def test_gitea_faults_5xx_then_429_with_retry_after_then_recovery() -> None:
    async with serve("gitea-5xx") as sb, gitea(sb) as client:
        sb.state.gitea_faults.rate_limit_next = 1
        codes = [(await client.get("/api/v1/repos/acme/fleet/branches/main")) for _ in range(4)]
    assert [a.status_code for a in codes] == [503, 503, 429, 200]
    assert codes[2].headers["retry-after"] == "1"


@pytest.mark.anyio
async def test_unauthorized_scenario_rejects_the_overlay_token() -> None:
    async with serve("gitea-unauthorized") as sb, gitea(sb) as client:
        assert (await client.get("/api/v1/repos/acme/fleet/branches/main")).status_code == 401


@pytest.mark.anyio
async def test_ancestry_scenarios_move_main_and_tenants() -> None:
    async with serve("newer-head-green") as sb, gitea(sb) as client:
        head = (await client.get("/api/v1/repos/acme/fleet/branches/main")).json()["commit"]["id"]
        assert head != sb.state.deploy_sha
        ahead = (await client.get(f"/api/v1/repos/acme/fleet/compare/{sb.state.deploy_sha}...{head}")).json()
        assert [c["sha"] for c in ahead["commits"]] == [head] and ahead["total_commits"] == 1
        behind = (await client.get(f"/api/v1/repos/acme/fleet/compare/{head}...{sb.state.deploy_sha}")).json()
        assert behind["total_commits"] == 0
        statuses = (await client.get(f"/api/v1/repos/acme/fleet/commits/{head}/status")).json()
        assert statuses["state"] == "success"
    async with serve("tenant-on-descendant") as sb:
        shas = set(sb.state.tenant_shas().values())
        newer = [s for s in shas if sb.state.deploy_sha in sb.state.ancestors(s) and s != sb.state.deploy_sha]
        assert len(newer) == 1


@pytest.mark.anyio
async def test_head_moves_after_the_first_write() -> None:
    async with serve("head-moves-mid-run") as sb, cp(sb) as client:
        assert sb.state.branches["main"] == sb.state.deploy_sha
        assert (await client.post(REDEPLOY, json=wave(sb, ["alpha"]))).json()["ok"] is True
        head = sb.state.branches["main"]
        assert head != sb.state.deploy_sha and sb.state.deploy_sha in sb.state.commits[head].parents


@pytest.mark.anyio
async def test_lease_scenarios_hold_a_json_lease_with_rfc3339_expiry() -> None:
    import json
    from datetime import UTC, datetime

    for name, in_future in (("lease-held", True), ("lease-expired", False)):
        async with serve(name) as sb:
            lease = json.loads(sb.state.variables[LEASE_VARIABLE])
            assert set(lease) == {"run", "sha", "expires"}
            expires = datetime.strptime(lease["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert (expires > datetime.now(UTC)) is in_future


# ---------------------------------------------------------------- control plane


@pytest.mark.anyio
async def test_cp_requires_bearer_and_confirm() -> None:
    async with serve("happy") as sb:
        async with httpx.AsyncClient(base_url=sb.cp_url, timeout=5) as anon:
            assert (await anon.post(REDEPLOY, json=wave(sb, dry_run=True))).status_code == 401
            token_scheme = await anon.post(REDEPLOY, json=wave(sb, dry_run=True),
                                           headers={"Authorization": f"token {sb.state.cp_token}"})
            assert token_scheme.status_code == 401
        async with cp(sb) as client:
            no_confirm = wave(sb, ["alpha"])
            del no_confirm["confirm"]
            assert (await client.post(REDEPLOY, json=no_confirm)).status_code == 400
            assert (await client.post(REDEPLOY, json={**no_confirm, "confirm": "true"})).status_code == 400
    assert sb.state.writes == []
    assert set(sb.state.tenant_shas().values()) == {sb.state.commits[sb.state.deploy_sha].parents[0]}


@pytest.mark.anyio
async def test_dry_run_lists_every_tenant_and_writes_nothing() -> None:
    async with serve("happy") as sb, cp(sb) as client:
        before = sb.state.tenant_shas()
        answer = (await client.post(REDEPLOY, json=wave(sb, dry_run=True))).json()
        wave_dry = (await client.post(REDEPLOY, json=wave(sb, ["alpha", "bravo"], dry_run=True))).json()
    assert answer["ok"] is True
    assert [r["slug"] for r in answer["results"]] == sorted(before)
    assert {r["phase"] for r in answer["results"]} == {"dry_run"}
    assert [r["slug"] for r in wave_dry["results"]] == ["alpha", "bravo"]
    assert sb.state.writes == [] and sb.state.tenant_shas() == before
    assert len(sb.state.cp_calls) == 2 and sb.state.cp_calls[0].body["dry_run"] is True


@pytest.mark.anyio
async def test_wave_answers_when_its_slowest_tenant_is_done() -> None:
    async with serve("happy") as sb, cp(sb) as client:
        for slug, latency in (("alpha", 0.3), ("bravo", 0.5), ("charlie", 0.4)):
            sb.state.tenants[slug].latency = latency
        asked: list[float] = []
        clock = [0.0]  # a fake clock: the sandbox's pauses advance it, nothing waits for real
        done_at: dict[str, float] = {}
        redeploy = sb.state.redeploy

        async def fake_pause(seconds: float) -> None:
            asked.append(seconds)
            clock[0] += max(seconds, 0.0)

        def redeployed(tenant: Any, sha: str) -> None:
            done_at[tenant.slug] = clock[0]
            redeploy(tenant, sha)

        sb.state.now = lambda: clock[0]  # type: ignore[method-assign]
        sb.state.pause = fake_pause  # type: ignore[method-assign]
        sb.state.redeploy = redeployed  # type: ignore[method-assign]
        answer = (await client.post(REDEPLOY, json=wave(sb, ["alpha", "bravo", "charlie"]))).json()
    call = sb.state.cp_calls[-1]
    assert call.end is not None
    assert done_at == {"alpha": pytest.approx(0.3), "charlie": pytest.approx(0.4), "bravo": pytest.approx(0.5)}
    assert clock[0] == pytest.approx(0.5)  # concurrent: the wave takes its slowest tenant's time, not the sum
    assert answer["ok"] is True
    assert [r["slug"] for r in answer["results"]] == ["alpha", "bravo", "charlie"]
    for row in answer["results"]:
        assert set(row) == {"slug", "phase", "ssm_status", "ssm_exit_code", "healthz_ok", "error",
                            "verified_on_target"}
        assert row["ssm_exit_code"] == 0 and row["healthz_ok"] is True and row["verified_on_target"] is True
    assert [w.slugs for w in sb.state.writes] == [["alpha", "bravo", "charlie"]]
    assert {s for s, sha in sb.state.tenant_shas().items() if sha == sb.state.deploy_sha} == \
        {"alpha", "bravo", "charlie"}


@pytest.mark.anyio
async def test_unknown_tag_and_unknown_slug() -> None:
    async with serve("happy") as sb, cp(sb) as client:
        unknown_tag = (await client.post(REDEPLOY, json=wave(sb, ["alpha"],
                                                             target_tag="staging-0000000"))).json()
        unknown_slug = (await client.post(REDEPLOY, json=wave(sb, ["alpha", "zz-nobody"]))).json()
    assert unknown_tag["ok"] is False and "staging-0000000" in unknown_tag["error"]
    rows = {r["slug"]: r for r in unknown_slug["results"]}
    assert rows["zz-nobody"]["error"] == "unknown tenant" and rows["alpha"]["error"] == ""
    assert [w.slugs for w in sb.state.writes] == [["alpha"]]


@pytest.mark.anyio
async def test_cp_5xx_after_redeploying_part_of_the_wave() -> None:
    async with serve("cp-5xx") as sb, cp(sb) as client:
        first = await client.post(REDEPLOY, json=wave(sb, ["bravo", "charlie", "delta"]))
        assert first.status_code == 502
        assert sb.state.tenants["bravo"].sha == sb.state.deploy_sha
        assert sb.state.tenants["charlie"].sha != sb.state.deploy_sha
        second = await client.post(REDEPLOY, json=wave(sb, ["charlie", "delta"]))
        assert second.status_code == 502
        third = await client.post(REDEPLOY, json=wave(sb, ["delta"]))
        assert third.status_code == 200 and third.json()["ok"] is True
    assert [w.slugs for w in sb.state.writes] == [["bravo"], ["charlie"], ["delta"]]
    assert [c.status for c in sb.state.cp_calls] == [502, 502, 200]


@pytest.mark.anyio
async def test_refusal_leaky_errors_and_hostile_listing() -> None:
    async with serve("cp-refuses") as sb, cp(sb) as client:
        listing = (await client.post(REDEPLOY, json=wave(sb, dry_run=True))).json()
        refused = (await client.post(REDEPLOY, json=wave(sb, ["alpha"]))).json()
    assert listing["ok"] is True
    assert refused["ok"] is False and "maintenance" in refused["error"] and sb.state.writes == []
    async with serve("leaky-errors") as sb, cp(sb) as client:
        failed = await client.post(REDEPLOY, json=wave(sb, ["alpha"]))
        rows = (await client.post(REDEPLOY, json=wave(sb, ["alpha", "bravo"]))).json()
    assert failed.status_code == 502 and sb.state.cp_token in failed.text
    assert rows["ok"] is True
    leaky = {r["slug"]: r["error"] for r in rows["results"]}["bravo"]
    assert sb.state.cp_token in leaky and sb.state.gitea_token in leaky
    assert "\x1b" in leaky and ":hunter2" in leaky
    assert sb.state.tenants["bravo"].sha == sb.state.deploy_sha  # the row says failure; the tenant moved
    async with serve("hostile-slug") as sb, cp(sb) as client:
        answer = (await client.post(REDEPLOY, json=wave(sb, dry_run=True))).json()
        listed = [r["slug"] for r in answer["results"]]
    assert {"../x", "Evil.Example", "a" * 80} <= set(listed)
    assert any("\x1b" in s for s in listed)


@pytest.mark.anyio
async def test_stuck_and_failing_rows() -> None:
    async with serve("stuck-canary") as sb, cp(sb) as client:
        row = (await client.post(REDEPLOY, json=wave(sb, ["alpha"]))).json()["results"][0]
        assert row["ssm_status"] == "Success" and row["verified_on_target"] is False
        assert sb.state.tenants["alpha"].sha != sb.state.deploy_sha
        assert (await buildinfo(sb, "alpha")).json()["git_sha"] != sb.state.deploy_sha
    async with serve("row-failure-but-verified") as sb, cp(sb) as client:
        row = (await client.post(REDEPLOY, json=wave(sb, ["bravo"]))).json()["results"][0]
        assert row["phase"] == "failed" and row["ssm_exit_code"] == 1 and row["error"]
        assert (await buildinfo(sb, "bravo")).json()["git_sha"] == sb.state.deploy_sha


@pytest.mark.anyio
async def test_kill_switch_engages_when_the_second_write_arrives() -> None:
    async with serve("kill-switch-flips") as sb, cp(sb) as client:
        await client.post(REDEPLOY, json=wave(sb, ["alpha"]))
        assert sb.state.get_variable(KILL_SWITCH_VARIABLE) is None
        await client.post(REDEPLOY, json=wave(sb, ["alpha"], dry_run=True))  # a dry run is no write
        assert sb.state.get_variable(KILL_SWITCH_VARIABLE) is None
        await client.post(REDEPLOY, json=wave(sb, ["bravo", "charlie"]))
        assert sb.state.get_variable(KILL_SWITCH_VARIABLE) == "true"


# ---------------------------------------------------------------- tenants


@pytest.mark.anyio
async def test_buildinfo_modes_and_read_log() -> None:
    async with serve("happy") as sb:
        w = sb.state
        old = w.tenants["alpha"].sha
        ok = await buildinfo(sb, "alpha")
        assert ok.json()["git_sha"] == old
        w.tenants["bravo"].buildinfo = "unreachable"
        w.tenants["charlie"].buildinfo = "non-json"
        w.tenants["delta"].buildinfo = "bad-shape"
        assert (await buildinfo(sb, "bravo")).status_code == 502
        non_json = await buildinfo(sb, "charlie")
        with pytest.raises(ValueError):
            non_json.json()
        assert not isinstance((await buildinfo(sb, "delta")).json().get("git_sha"), str)
        assert (await buildinfo(sb, "nobody")).status_code == 404
        w.tenants["echo"].buildinfo = "slow"
        w.tenants["echo"].slow_seconds = 5
        with pytest.raises(httpx.ReadTimeout):
            async with httpx.AsyncClient(timeout=0.2) as client:
                await client.get(sb.tenant_url_template.format(slug="echo") + "/buildinfo")
    assert [r.slug for r in w.buildinfo_reads] == ["alpha", "bravo", "charlie", "delta", "nobody", "echo"]
    assert all("authorization" not in r.headers for r in w.buildinfo_reads)


@pytest.mark.anyio
async def test_redirecting_tenant_points_at_another_origin_that_would_falsely_verify() -> None:
    async with serve("redirecting-tenant") as sb:
        slug = sorted(sb.state.tenants)[2]
        answer = await buildinfo(sb, slug)
        assert answer.status_code == 302
        target = answer.headers["location"]
        assert target.startswith(sb.cp_url)
        assert sb.state.requests_to("cp", contains="/redirected/") == []
        async with httpx.AsyncClient(timeout=5) as client:
            followed = (await client.get(target)).json()
        assert followed["git_sha"] == sb.state.deploy_sha  # why following it would be a bug
        assert len(sb.state.requests_to("cp", contains="/redirected/")) == 1


@pytest.mark.anyio
async def test_boot_delay_reports_the_new_sha_only_after_n_more_reads() -> None:
    async with serve("happy") as sb, cp(sb) as client:
        sb.state.tenants["alpha"].boot_reads = 2
        row = (await client.post(REDEPLOY, json=wave(sb, ["alpha"]))).json()["results"][0]
        assert row["verified_on_target"] is False
        seen = [(await buildinfo(sb, "alpha")).json()["git_sha"] == sb.state.deploy_sha for _ in range(3)]
    assert seen == [False, False, True]


@pytest.mark.anyio
async def test_partially_deployed_and_tenant_count() -> None:
    async with serve("partially-deployed", tenants=4) as sb:
        on_target = [s for s, sha in sb.state.tenant_shas().items() if sha == sb.state.deploy_sha]
        assert on_target == ["alpha", "bravo"] and len(sb.state.tenants) == 4
    async with serve("happy", tenants=30) as sb:
        assert len(sb.state.tenants) == 30 and "tenant-029" in sb.state.tenants
