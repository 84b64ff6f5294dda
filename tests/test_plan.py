"""plan: one JSON object on stdout, the preflights, disabled plans, and no token anywhere."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from loopback import OUR_ENV_PREFIXES, run_main

from pipelines.errors import ExitCode, Failed
from pipelines.output import Output
from pipelines.plan import build_plan, run
from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.world import CP_TOKEN, GITEA_TOKEN
from pipelines.settings import Settings, resolve

pytestmark = pytest.mark.anyio

PLAN_KEYS = sorted([
    "sha", "short_sha", "target_tag", "repo", "branch", "cp_url", "required_contexts", "canary", "batch_size",
    "soak_seconds", "max_stragglers", "on_failure", "dry_run", "enabled", "disabled_reason",
    "live_kill_switch", "lease", "gitea_token", "cp_token", "settings",
])
PREFLIGHT_KEYS = sorted([*PLAN_KEYS, "lease_holder"])  # with a Gitea token the plan names the lease holder


def settings_for(sb: Sandbox, **changes: Any) -> Settings:
    return resolve("plan", {}, {}, overlay=sb.overlay).with_(**changes)


async def plan_in_process(sb: Sandbox, **changes: Any) -> tuple[dict[str, Any], str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    result = await run(settings_for(sb, **changes), Output(stream=stderr, stdout=stdout))
    return result, stdout.getvalue(), stderr.getvalue()


def test_build_plan_needs_no_network_and_hides_tokens() -> None:
    settings = resolve("plan", {"sha": "A" * 40, "repo": "acme/fleet", "gitea_url": "https://git.example.com",
                                "required_contexts": ("ci",), "gitea_token": "tok-abcdef-123"}, {})
    plan = build_plan(settings)
    assert sorted(plan) == PLAN_KEYS
    assert plan["sha"] == "a" * 40 and plan["short_sha"] == "a" * 7
    assert plan["target_tag"] == "staging-aaaaaaa"
    assert plan["gitea_token"] == "set" and plan["cp_token"] == "missing"
    assert plan["canary"] is None and plan["enabled"] is True and plan["disabled_reason"] is None
    assert "tok-abcdef-123" not in json.dumps(plan)


async def test_plan_prints_one_sorted_json_object_and_probes_gitea() -> None:
    async with serve("happy") as sb:
        result, stdout, _ = await plan_in_process(sb)
        gitea = [(r.method, r.path.rsplit("/", 1)[-1]) for r in sb.state.requests]
        other = [r for r in sb.state.requests if r.service != "gitea"]
    assert stdout.count("\n") == 1
    printed = json.loads(stdout)
    assert list(printed) == PREFLIGHT_KEYS  # keys sorted
    assert printed == {k: v for k, v in result.items() if k != "exit_code"}
    assert printed["enabled"] is True and printed["gitea_token"] == "set" and printed["cp_token"] == "set"
    assert printed["lease_holder"] == {"held": False}
    assert gitea[0] == ("GET", "PROD_AUTO_DEPLOY_DISABLED")
    assert gitea[1] == ("GET", sb.state.name)  # the repository, before that 404 is believed
    assert gitea[2] == ("GET", "FLEETGATE_LEASE")  # read only: a plan never takes the lease
    assert gitea[3][0] == "PUT" and gitea[3][1].startswith("FLEETGATE_WRITE_PROBE_")
    assert other == []  # plan never calls the CP or a tenant
    assert sb.state.variables == {}  # the probe wrote nothing


async def test_live_switch_engaged_prints_a_disabled_plan_and_exits_3() -> None:
    async with serve("kill-switch-engaged") as sb:
        result, stdout, stderr = await plan_in_process(sb)
        probes = sb.state.requests_to("gitea", "PUT")
    assert result["exit_code"] == ExitCode.DISABLED
    printed = json.loads(stdout)
    assert printed["enabled"] is False and "PROD_AUTO_DEPLOY_DISABLED" in printed["disabled_reason"]
    assert "kill switch engaged" in stderr
    assert probes == []  # nothing more once disabled


async def test_plan_time_switch_contacts_nothing() -> None:
    async with serve("happy") as sb:
        result, stdout, _ = await plan_in_process(sb, disabled="on")
        assert sb.state.requests == []
    assert result["exit_code"] == ExitCode.DISABLED
    assert json.loads(stdout)["disabled_reason"].startswith("--disabled")


async def test_a_token_that_cannot_write_the_lease_fails_unless_no_lease() -> None:
    async with serve("read-only-token") as sb:
        with pytest.raises(Failed, match="--no-lease"):
            await plan_in_process(sb)
        result, stdout, _ = await plan_in_process(sb, lease=False)
    assert result.get("exit_code", 0) == 0 and json.loads(stdout)["lease"] is False


async def test_a_dry_run_takes_no_lease_so_a_read_only_token_passes_the_plan() -> None:
    async with serve("read-only-token") as sb:
        result, stdout, stderr = await plan_in_process(sb, dry_run=True)
    assert result.get("exit_code", 0) == 0 and json.loads(stdout)["dry_run"] is True
    assert "can write the lease" not in stderr


async def test_a_token_that_cannot_read_the_switch_fails_at_plan_time() -> None:
    async with serve("gitea-unauthorized") as sb:
        with pytest.raises(Failed, match="HTTP 401"):
            await plan_in_process(sb)


async def test_without_a_gitea_token_the_plan_says_missing_and_reads_nothing() -> None:
    async with serve("happy") as sb:
        result, stdout, stderr = await plan_in_process(sb, gitea_token=None)
        assert sb.state.requests == []
    assert json.loads(stdout)["gitea_token"] == "missing"
    assert "live kill switch is not read" in stderr
    assert result.get("exit_code", 0) == 0


# ---------------------------------------------------------------- through the real CLI


def fleetgate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(OUR_ENV_PREFIXES)}
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True,
                          timeout=60, env={**base, **env}, check=False)


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_cli_plan_sandbox_prints_the_plan_once_without_tokens(json_flag: tuple[str, ...]) -> None:
    proc = fleetgate("plan", "--sandbox", *json_flag)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    plan = json.loads(lines[0])
    assert list(plan) == PREFLIGHT_KEYS
    assert plan["gitea_token"] == "set" and plan["cp_token"] == "set"
    for token in (GITEA_TOKEN, CP_TOKEN):
        assert token not in proc.stdout and token not in proc.stderr


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_cli_disabled_plan_prints_once_and_exits_3(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str],
                                                   json_flag: tuple[str, ...]) -> None:
    code, stdout, stderr = run_main(monkeypatch, capsys, "plan", "--sandbox", "--scenario", "kill-switch-engaged",
                                    *json_flag)
    assert code == 3, stderr
    lines = stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["enabled"] is False


def test_cli_plan_flags_beat_the_sandbox_overlay(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = run_main(monkeypatch, capsys, "plan", "--sandbox", "--batch-size", "5", "--canary",
                                    "none", "--no-lease", "--dry-run")
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert (plan["batch_size"], plan["canary"], plan["lease"], plan["dry_run"]) == (5, "none", False, True)


def test_the_plan_shows_every_resolved_setting_but_never_a_secret() -> None:
    from pipelines.settings import Kind, options_for

    settings = resolve("plan", {"sha": "b" * 40, "repo": "acme/fleet", "gitea_url": "https://git.example.com",
                                "required_contexts": ("ci",), "gitea_token": "tok-abcdef-123",
                                "cp_token": "cp-secret-456", "lease_ttl": "1200", "cp_timeout": "300",
                                "notify": ("json://127.0.0.1:1/hook-s3cr3t",)}, {})
    shown = build_plan(settings)["settings"]
    assert set(shown) == {o.name for o in options_for("plan")}
    for name in ("cp_url", "prod_cp_url", "allow_non_prod_cp_url", "gitea_url", "tenant_url_template",
                 "gate_timeout", "verify_timeout", "lease_wait"):
        assert name in shown, name
    assert shown["lease_ttl"] == 1200 and shown["cp_timeout"] == 300
    assert {shown[o.name] for o in options_for("plan") if o.kind is Kind.SECRET} == {"set"}
    text = json.dumps(shown)
    assert "tok-abcdef-123" not in text and "cp-secret-456" not in text and "hook-s3cr3t" not in text


async def test_the_plan_names_who_holds_the_lease() -> None:
    async with serve("lease-held") as sb:
        result, stdout, stderr = await plan_in_process(sb)
    holder = json.loads(stdout)["lease_holder"]
    assert holder["held"] is True and holder["run"] == "other-run-7" and holder["expired"] is False
    assert "held by run other-run-7" in stderr
    assert result.get("exit_code", 0) == 0  # a held lease is news, not a failed plan
