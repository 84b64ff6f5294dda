"""The kill switch: plan-time values, the live Gitea variable, and fail-closed reads."""

from __future__ import annotations

import io
from typing import Any

import pytest
from loopback import run_main

from pipelines.errors import Disabled, ExitCode, Failed, UsageError
from pipelines.gitea import GiteaClient
from pipelines.killswitch import VARIABLE, check_plan_time, live_reason, run
from pipelines.output import Output
from pipelines.sandbox import Sandbox, serve
from pipelines.settings import Settings, resolve

pytestmark = pytest.mark.anyio


def settings_for(sb: Sandbox | None = None, **changes: Any) -> Settings:
    overlay = sb.overlay if sb is not None else {"repo": "acme/fleet", "gitea_url": "http://127.0.0.1:9"}
    return resolve("assert-enabled", {}, {}, overlay=overlay).with_(**changes)


def quiet() -> Output:
    return Output(stream=io.StringIO(), stdout=io.StringIO())


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "on", "disabled", "Disable"])
def test_truthy_plan_time_values_disable(value: str) -> None:
    with pytest.raises(Disabled) as info:
        check_plan_time(settings_for(disabled=value))
    assert info.value.exit_code == ExitCode.DISABLED


@pytest.mark.parametrize("value", ["", "0", "false", "No", "off", "enabled"])
def test_falsy_plan_time_values_pass(value: str) -> None:
    check_plan_time(settings_for(disabled=value))


@pytest.mark.parametrize("value", ["maybe", "ture", "2", "disabled please"])
def test_unrecognised_plan_time_values_disable(value: str) -> None:
    with pytest.raises(Disabled, match="unrecognised value"):
        check_plan_time(settings_for(disabled=value))


async def test_absent_variable_means_off() -> None:
    async with serve("happy") as sb:
        result = await run(settings_for(sb), quiet())
        reads = sb.state.requests_to("gitea", "GET", f"/actions/variables/{VARIABLE}")
    assert result["enabled"] is True and result["live_kill_switch"] == "off"
    assert len(reads) == 1


@pytest.mark.parametrize("value, engaged", [
    ("true", True), ("1", True), ("Disabled", True), ("maybe", True),  # unrecognised: engaged
    ("false", False), ("0", False), ("", False),
])
async def test_live_variable_values(value: str, engaged: bool) -> None:
    async with serve("happy") as sb:
        sb.state.engage_kill_switch(value)
        if engaged:
            with pytest.raises(Disabled, match=VARIABLE) as info:
                await run(settings_for(sb), quiet())
            assert info.value.exit_code == ExitCode.DISABLED
        else:
            assert (await run(settings_for(sb), quiet()))["enabled"] is True


async def test_plan_time_switch_wins_before_any_request() -> None:
    async with serve("happy") as sb:
        with pytest.raises(Disabled, match="--disabled"):
            await run(settings_for(sb, disabled="yes"), quiet())
        assert sb.state.requests == []


async def test_an_unreadable_variable_fails_closed() -> None:
    async with serve("kill-switch-unreadable") as sb:
        s = settings_for(sb)
        async with GiteaClient(s.gitea_url, s.repo, s.gitea_token, retry_deadline=0.3,
                               retry_wait_initial=0.01) as gitea:
            with pytest.raises(Failed, match=f"variable {VARIABLE}") as info:
                await live_reason(gitea)
        assert len(sb.state.requests) >= 2  # 500 was retried before giving up
    assert info.value.exit_code == ExitCode.FAILED


@pytest.mark.parametrize("body", ["not json", '{"name": "X"}', '{"data": 1}'])
async def test_an_invalid_answer_fails_closed(body: str) -> None:
    from loopback import serve_app
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = Starlette(routes=[Route("/{p:path}", lambda r: PlainTextResponse(body))])
    async with serve_app(app) as url, GiteaClient(url, "acme/fleet", None) as gitea:
        with pytest.raises(Failed):
            await live_reason(gitea)


async def test_a_rejected_token_fails_closed() -> None:
    async with serve("gitea-unauthorized") as sb:
        with pytest.raises(Failed, match="HTTP 401"):
            await run(settings_for(sb), quiet())


async def test_missing_token_is_a_usage_error_without_contacting_gitea() -> None:
    async with serve("kill-switch-engaged") as sb:
        with pytest.raises(UsageError, match="--no-live-kill-switch"):
            await run(settings_for(sb, gitea_token=None), quiet())
        assert sb.state.requests == []
        result = await run(settings_for(sb, gitea_token=None, live_kill_switch=False), quiet())
        assert result["live_kill_switch"] == "skipped"
        assert sb.state.requests == []


# ---------------------------------------------------------------- through the real CLI


@pytest.mark.parametrize("scenario, env, code", [
    ("happy", {}, 0),
    ("kill-switch-engaged", {}, 3),
    ("gitea-unauthorized", {}, 1),
    ("happy", {"PROD_AUTO_DEPLOY_DISABLED": "perhaps"}, 3),
])
def test_cli_assert_enabled(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scenario: str,
                            env: dict[str, str], code: int) -> None:
    exit_code, stdout, stderr = run_main(monkeypatch, capsys, "assert-enabled", "--sandbox", "--scenario", scenario,
                                         env=env)
    assert exit_code == code, stderr
    assert stdout == ""  # no --json: nothing on stdout
    errors = [line for line in stderr.splitlines() if "fleetgate assert-enabled:" in line]
    assert len(errors) == (0 if code == 0 else 1)


# ---------------------------------------------------------------- a 404 is believed only for a repository that answered


@pytest.mark.parametrize("change", ["misspelt repo", "base URL with /api/v1", "repo of another owner"])
async def test_a_404_from_a_repository_that_is_not_there_fails_closed(change: str) -> None:
    async with serve("kill-switch-engaged") as sb:
        s = settings_for(sb)
        s = {"misspelt repo": s.with_(repo="acme/flet"),
             "base URL with /api/v1": s.with_(gitea_url=f"{sb.gitea_url}/api/v1"),
             "repo of another owner": s.with_(repo="acme-corp/fleet")}[change]
        with pytest.raises(Failed, match="no such repository, or the token cannot see it") as info:
            await run(s, quiet())
    assert info.value.exit_code == ExitCode.FAILED  # never "kill switch off"


async def test_the_repository_is_read_once_before_the_first_404_is_believed() -> None:
    async with serve("happy") as sb:
        s = settings_for(sb)
        async with GiteaClient.for_settings(s) as gitea:
            assert await live_reason(gitea) is None
            assert await live_reason(gitea) is None
        repo_reads = [r for r in sb.state.requests if r.path == f"/api/v1/repos/{sb.state.repo}"]
    assert len(repo_reads) == 1


@pytest.mark.parametrize("repo", ["acme/..", "acme/.", "../fleet", "./fleet"])
def test_a_repository_with_dot_segments_is_refused_before_any_request(repo: str) -> None:
    with pytest.raises(Failed, match="cannot be a path segment"):
        GiteaClient("http://127.0.0.1:9", repo, None)


def test_cli_assert_enabled_on_a_misspelt_repository_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    exit_code, _, stderr = run_main(monkeypatch, capsys, "assert-enabled", "--sandbox", "--scenario",
                                    "kill-switch-engaged", "--repo", "acme/flet")
    assert exit_code == 1, stderr
    assert "kill switch off" not in stderr
    assert "no such repository" in stderr
