"""Notifications: one message per ending to a real loopback receiver; a dead one is a warning only."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stamina
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.ledger import Ledger, read_ledger
from pipelines.notify import WAITING, Notice, approve_command, notify, run_url
from pipelines.output import Output
from pipelines.redact import Secret
from tests.loopback import serve_app

SHA = "0123456789abcdef0123456789abcdef01234567"
pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    stamina.set_testing(True, attempts=2)
    yield
    stamina.set_testing(False)


class Receiver:
    """A webhook receiver: records every POST body; answers `status` (500 makes Apprise fail)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.paths.append(request.url.path)
            self.bodies.append(json.loads(await request.body()))
            return JSONResponse({"ok": True}, status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


def json_url(base: str, path: str = "hooks/deploy") -> Secret:
    return Secret(base.replace("http://", "json://") + "/" + path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notice(outcome: str = "deployed", exit_code: int | None = 0, **extra: Any) -> Notice:
    return Notice(verb="deploy-production", sha=SHA, outcome=outcome, exit_code=exit_code, repo="acme/fleet",
                  target_tag="staging-0123456", fleet={SHA: 6, "f" * 40: 1}, stragglers=["golf"], **extra)


async def test_one_message_with_every_fact(tmp_path: Path) -> None:
    receiver = Receiver()
    ledger = Ledger(tmp_path / "l.jsonl", "run-1")
    async with serve_app(receiver.app()) as base:
        results = await notify([json_url(base)], notice(run_url="https://git.example.com/acme/fleet/actions/runs/9"),
                               ledger=ledger)
    assert results == [{"target": 1, "outcome": "deployed", "delivered": True, "attempts": 1}]
    assert receiver.paths == ["/hooks/deploy"]
    [body] = receiver.bodies
    assert body["type"] == "success" and "deployed (exit 0)" in body["title"] and SHA[:12] in body["title"]
    text = body["message"]
    for fact in (f"sha: {SHA}", "exit code 0", "6 on 0123456789ab, 1 on ffffffffffff", "stragglers: golf",
                 "run: https://git.example.com/acme/fleet/actions/runs/9", "repository: acme/fleet"):
        assert fact in text
    [event] = [e for e in read_ledger(ledger.path) if e["event"] == "notify"]
    assert event["delivered"] is True and event["target"] == 1
    assert base.split(":")[-1] not in json.dumps(event)  # the URL (its port, its path) is never recorded
    assert "hooks" not in json.dumps(event)


async def test_waiting_for_approval_carries_the_approve_command() -> None:
    receiver = Receiver()
    async with serve_app(receiver.app()) as base:
        await notify([json_url(base)], notice(WAITING, None, approve_command=approve_command("acme/fleet", SHA)))
    [body] = receiver.bodies
    assert body["type"] == "info" and "exit" not in body["title"]
    assert f"approve: fleetgate approve --repo acme/fleet --sha {SHA}" in body["message"]
    assert f"reject: fleetgate approve --repo acme/fleet --sha {SHA} --reject" in body["message"]


@pytest.mark.parametrize("outcome, kind", [("halted", "warning"), ("failed", "failure"), ("rolled-back", "failure"),
                                           ("stood-down", "warning"), ("disabled", "warning")])
async def test_each_ending_has_its_type(outcome: str, kind: str) -> None:
    receiver = Receiver()
    async with serve_app(receiver.app()) as base:
        await notify([json_url(base)], notice(outcome, 1, message="canary did not verify"))
    [body] = receiver.bodies
    assert body["type"] == kind and outcome in body["title"] and "why: canary did not verify" in body["message"]


async def test_a_dead_or_failing_receiver_is_a_warning_recorded_without_its_url(tmp_path: Path) -> None:
    receiver = Receiver(status=500)
    ledger = Ledger(tmp_path / "l.jsonl", "run-2")
    stream = io.StringIO()
    dead = Secret(f"json://127.0.0.1:{free_port()}/secret-path-x1")
    async with serve_app(receiver.app()) as base:
        results = await notify([dead, json_url(base, "secret-path-x2")], notice(), ledger=ledger,
                               out=Output(stream=stream))
    assert [r["delivered"] for r in results] == [False, False]
    assert [r["attempts"] for r in results] == [2, 2]  # retried once each, then given up
    assert len(receiver.bodies) == 2
    logged = stream.getvalue() + (tmp_path / "l.jsonl").read_text()
    assert "target 1" in logged and "deploy goes on" in logged
    assert "secret-path" not in logged and "127.0.0.1" not in logged


async def test_a_url_apprise_does_not_know_is_not_delivered_and_not_echoed() -> None:
    [result] = await notify([Secret("nosuchservice://hunter2@x")], notice())
    assert result["delivered"] is False and "hunter2" not in json.dumps(result)


async def test_nobody_to_tell_imports_nothing() -> None:
    assert await notify([], notice()) == []


def test_run_url_from_the_actions_environment() -> None:
    env = {"GITHUB_SERVER_URL": "https://git.example.com/", "GITHUB_REPOSITORY": "acme/fleet", "GITHUB_RUN_ID": "42"}
    assert run_url(env) == "https://git.example.com/acme/fleet/actions/runs/42"
    assert run_url({**env, "GITHUB_RUN_ID": ""}) == ""
    assert run_url({**env, "GITHUB_RUN_ID": "4/../x"}) == ""
