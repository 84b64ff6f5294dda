"""`fleetgate approve`: one commit status posted as the caller, over real HTTP to the sandbox's Gitea."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from pipelines.approve import run as approve
from pipelines.errors import Failed, UsageError
from pipelines.output import Output
from pipelines.sandbox import serve
from pipelines.sandbox.world import GITEA_TOKEN, READ
from pipelines.settings import resolve

pytestmark = pytest.mark.anyio


async def call(sb: Any, **extra: Any) -> tuple[dict[str, Any], str]:
    settings = resolve("approve", {}, {}, overlay=sb.overlay)
    stderr, stdout = io.StringIO(), io.StringIO()
    result = await approve(settings, Output(json_mode=True, stream=stderr, stdout=stdout), **extra)
    assert json.loads(stdout.getvalue()) == result
    return result, stderr.getvalue()


async def test_approve_posts_success_and_names_who() -> None:
    async with serve() as sb:
        sb.state.gitea_tokens["alice-token-1234"] = {READ, "write:status"}
        sb.state.gitea_users["alice-token-1234"] = "alice"
        settings = resolve("approve", {"gitea_token": "alice-token-1234"}, {}, overlay=sb.overlay)
        stderr = io.StringIO()
        result = await approve(settings, Output(json_mode=True, stream=stderr, stdout=io.StringIO()),
                               comment="canary looks good")
        posts = sb.state.requests_to("gitea", "POST", "/statuses/")
        status = sb.state.statuses[sb.state.deploy_sha]["fleetgate/approve"]
    assert (result["state"], result["approver"], result["context"]) == ("success", "alice", "fleetgate/approve")
    assert (status.state, status.creator, status.description) == ("success", "alice", "canary looks good")
    assert len(posts) == 1 and posts[0].headers["authorization"] == "token alice-token-1234"
    assert "approved" in stderr.getvalue() and "as alice" in stderr.getvalue()


async def test_reject_posts_failure_on_the_configured_context() -> None:
    async with serve() as sb:
        settings = resolve("approve", {"approval_context": "ops/go-no-go"}, {}, overlay=sb.overlay)
        result = await approve(settings, Output(json_mode=True, stream=io.StringIO(), stdout=io.StringIO()),
                               reject=True)
        status = sb.state.statuses[sb.state.deploy_sha]["ops/go-no-go"]
    assert result["state"] == "failure" == status.state and status.creator == "gitea-actions"


async def test_a_token_that_may_not_write_statuses_fails_once_without_retry() -> None:
    async with serve() as sb:
        sb.state.gitea_tokens[GITEA_TOKEN] = {READ}
        with pytest.raises(Failed, match="HTTP 403"):
            await call(sb)
        assert len(sb.state.requests_to("gitea", "POST", "/statuses/")) == 1


async def test_a_5xx_on_the_write_is_not_retried_by_the_transport() -> None:
    async with serve() as sb:
        sb.state.gitea_faults.fail_next = 1
        with pytest.raises(Failed, match="503"):
            await call(sb)
        assert len(sb.state.requests_to("gitea", "POST", "/statuses/")) == 1


@pytest.mark.parametrize("comment", ["x" * 141, "bad\x1b[31m", "see https://u:p@host/x"])
async def test_a_bad_comment_is_a_usage_error_before_anything_is_contacted(comment: str) -> None:
    async with serve() as sb:
        with pytest.raises(UsageError, match="--comment"):
            await call(sb, comment=comment)
        assert sb.state.requests_to("gitea") == []


def test_approve_through_the_cli_needs_a_token_and_a_sha(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from tests.loopback import run_main

    code, _, err = run_main(monkeypatch, capsys, "approve", "--repo", "acme/fleet", "--gitea-url", "http://127.0.0.1:1")
    assert code == 2 and "--sha" in err
    code, _, err = run_main(monkeypatch, capsys, "approve", "--repo", "acme/fleet", "--gitea-url",
                            "http://127.0.0.1:1", "--sha", "0" * 40)
    assert code == 2 and "--gitea-token" in err


def test_approve_sandbox_through_the_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.loopback import run_main

    code, out, err = run_main(monkeypatch, capsys, "approve", "--sandbox", "--reject", "--json",
                              "--comment", "error budget burnt")
    assert code == 0, err
    result = json.loads(out)
    assert result["state"] == "failure" and result["approver"] == "gitea-actions"
