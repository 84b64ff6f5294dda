"""wait-gates against the sandbox: each required context on its own, fail fast, time out closed."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from fakeclock import FakeClock
from loopback import run_main

import pipelines.gates
import pipelines.output
from pipelines.errors import Failed, UsageError
from pipelines.gates import gitea_for_gates, judge, run, wait_gates
from pipelines.gitea import CommitStatus, GiteaClient
from pipelines.output import Output
from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.scenarios import REQUIRED_CONTEXTS
from pipelines.settings import Settings, resolve

pytestmark = pytest.mark.anyio
TEST, LINT, SENTINEL = REQUIRED_CONTEXTS


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Gate waits and polls on virtual time (the reads themselves are real)."""
    return FakeClock().install(monkeypatch, pipelines.gates, pipelines.output)


def settings_for(sb: Sandbox, **changes: Any) -> Settings:
    return resolve("wait-gates", {}, {}, overlay=sb.overlay).with_(**changes)


def quiet() -> tuple[Output, io.StringIO]:
    stream = io.StringIO()
    return Output(stream=stream, stdout=io.StringIO()), stream


async def gates(sb: Sandbox, **changes: Any) -> tuple[dict[str, Any], str]:
    settings = settings_for(sb, **changes)
    out, stream = quiet()
    async with gitea_for_gates(settings) as gitea:
        try:
            return await wait_gates(settings, gitea, out), stream.getvalue()
        except Failed as exc:
            exc.add_note(stream.getvalue())
            raise


@pytest.mark.parametrize("scenario", ["happy", "many-contexts", "gitea-5xx", "gitea-rate-limited"])
async def test_green_scenarios_pass(scenario: str) -> None:
    async with serve(scenario) as sb:
        result, _ = await gates(sb)
    assert result["sha"] == sb.state.deploy_sha
    assert result["contexts"] == dict.fromkeys(REQUIRED_CONTEXTS, "success")
    assert result["waited_seconds"] >= 0


async def test_required_context_only_on_page_two_is_found() -> None:
    async with serve("many-contexts") as sb:
        await gates(sb)
        pages = [r.query for r in sb.state.requests_to("gitea", "GET", "/status")]
    assert pages[:2] == ["page=1&limit=50", "page=2&limit=50"]


async def test_sentinel_green_does_not_cover_a_red_concrete_context() -> None:
    async with serve("sentinel-green-concrete-red") as sb:
        with pytest.raises(Failed) as info:
            await gates(sb)
        test_url = sb.state.statuses[sb.state.deploy_sha][TEST].target_url
    assert f"required context {TEST!r} failed: failure" in info.value.message
    assert test_url in info.value.message


@pytest.mark.parametrize("scenario, state", [
    ("gate-failure", "failure"), ("gate-error", "error"), ("gate-warning", "warning"),
    ("gate-skipped", "skipped"), ("gate-cancelled", "cancelled"),
])
async def test_each_failing_state_fails_at_once(scenario: str, state: str, clock: FakeClock) -> None:
    async with serve(scenario) as sb:
        with pytest.raises(Failed, match=re.escape(f"{TEST!r} failed: {state}")):
            await gates(sb, gate_timeout=30.0)
        reads = sb.state.status_reads[sb.state.deploy_sha]
    assert (reads, clock.slept) == (1, [])  # no waiting on a state that can never become success


@pytest.mark.parametrize("state", ["canceled", "CANCELLED", "neutral-ish"])
async def test_american_spelling_and_unknown_states_fail_closed(state: str) -> None:
    async with serve("happy") as sb:
        sb.state.set_status(sb.state.deploy_sha, LINT, state)
        with pytest.raises(Failed, match=re.escape(repr(LINT))):
            await gates(sb)


async def test_a_failing_optional_context_does_not_block() -> None:
    async with serve("happy") as sb:
        sb.state.set_status(sb.state.deploy_sha, "Security / scan (push)", "failure")
        result, _ = await gates(sb)
    assert set(result["contexts"]) == set(REQUIRED_CONTEXTS)


async def test_pending_then_success_prints_one_line_per_change() -> None:
    async with serve("gates-pending") as sb:
        result, log = await gates(sb)
        reads = sb.state.status_reads[sb.state.deploy_sha]
    assert result["contexts"] == dict.fromkeys(REQUIRED_CONTEXTS, "success")
    assert reads >= 4
    gate_lines = [line for line in log.splitlines() if line.startswith("gate ")]
    assert gate_lines == [f"gate {c!r}: pending" for c in REQUIRED_CONTEXTS] + \
        [f"gate {c!r}: pending → success" for c in REQUIRED_CONTEXTS]


async def test_missing_context_times_out_naming_it(clock: FakeClock) -> None:
    async with serve("gate-missing") as sb:
        with pytest.raises(Failed) as info:
            await gates(sb, gate_timeout=40.0, poll_interval=15.0)
        reads = sb.state.status_reads[sb.state.deploy_sha]
    assert "timed out after 40s" in info.value.message
    assert f"{SENTINEL} (absent)" in info.value.message
    assert TEST not in info.value.message  # only what was still missing
    assert clock.slept == [15.0, 15.0, 10.0]  # at the interval, the last wait cut to the deadline
    assert clock.elapsed == 40.0
    assert reads == 4  # one per poll, the last at the deadline itself: the timeout is judged on an answer
    assert "did not finish in time" not in info.value.message  # Gitea answered every read: it is not blamed


async def test_a_hung_gitea_cannot_outlive_the_gate_deadline(clock: FakeClock) -> None:
    async with serve("gates-pending") as sb:
        # One poll on the fake clock leaves 0.05 s of the deadline: that is all a hung read may take.
        settings = settings_for(sb, gate_timeout=15.05, poll_interval=15.0)
        out, _ = quiet()

        class SlowsDown(GiteaClient):
            async def combined_status(self, sha: str) -> dict[str, CommitStatus]:
                answer = await super().combined_status(sha)
                sb.state.gitea_faults.latency = 3600.0  # every later read hangs
                return answer

        async with SlowsDown(settings.gitea_url, settings.repo, settings.gitea_token) as gitea:
            with pytest.raises(Failed, match="did not finish in time"):
                await wait_gates(settings, gitea, out)
        assert clock.elapsed == pytest.approx(15.05)  # the hung read was cut off; nothing waited it out


async def test_a_zero_timeout_still_gets_one_look() -> None:
    async with serve("happy") as sb:
        result, _ = await gates(sb, gate_timeout=0.0)
    assert result["contexts"][SENTINEL] == "success"


async def test_unknown_token_fails_naming_the_permission() -> None:
    async with serve("gitea-unauthorized") as sb:
        with pytest.raises(Failed, match=r"HTTP 401.*read:repository"):
            await gates(sb)


async def test_the_verb_needs_a_token_and_contacts_nothing_without_one() -> None:
    async with serve("happy") as sb:
        out, _ = quiet()
        with pytest.raises(UsageError, match="--gitea-token"):
            await run(settings_for(sb, gitea_token=None), out)
        assert sb.state.requests == []


def test_judge_never_reads_the_combined_state() -> None:
    statuses = {SENTINEL: CommitStatus(SENTINEL, "success", "", "")}
    assert judge(REQUIRED_CONTEXTS, statuses) == {TEST: "absent", LINT: "absent", SENTINEL: "success"}


# ---------------------------------------------------------------- through the real CLI


GREEN = "all 3 required context(s) are success"


@pytest.mark.parametrize("scenario, code, needle", [
    ("happy", 0, GREEN),
    ("gates-pending", 0, GREEN),
    ("many-contexts", 0, GREEN),
    ("gitea-5xx", 0, GREEN),
    ("gate-failure", 1, "'CI / test (push)' failed: failure"),
    ("gate-error", 1, "'CI / test (push)' failed: error"),
    ("gate-warning", 1, "'CI / test (push)' failed: warning"),
    ("gate-skipped", 1, "'CI / test (push)' failed: skipped"),
    ("gate-cancelled", 1, "'CI / test (push)' failed: cancelled"),
    ("sentinel-green-concrete-red", 1, "'CI / test (push)' failed: failure"),
    ("gate-missing", 1, "still waiting for: CI / all-required (push) (absent)"),
    ("gitea-unauthorized", 1, "HTTP 401"),
])
def test_cli_wait_gates_in_the_sandbox(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                       scenario: str, code: int, needle: str) -> None:
    short = ("--gate-timeout", "0.5") if scenario == "gate-missing" else ()  # else the sandbox's 10 s
    exit_code, stdout, stderr = run_main(monkeypatch, capsys, "wait-gates", "--sandbox", "--scenario", scenario,
                                         *short, "--json")
    assert exit_code == code, stderr
    assert needle in stderr
    result = json.loads(stdout)  # one JSON object either way: the result, or the error
    if code == 0:
        assert result["contexts"] == dict.fromkeys(REQUIRED_CONTEXTS, "success")
    else:
        assert result["ok"] is False and result["exit_code"] == 1 and needle in result["error"]
    assert "sandbox-gitea-token" not in stdout + stderr


@pytest.mark.parametrize("entries", [
    [{"id": 4, "context": "ci", "status": "failure"}, {"id": 4, "context": "ci", "status": "success"}],
    [{"context": "ci", "status": "success"}, {"context": "ci", "status": "failure"}],
])
async def test_a_required_context_reported_twice_without_order_fails_closed(entries: list[dict[str, Any]]) -> None:
    from loopback import serve_app
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def status(request: Request) -> Response:
        if request.url.path.endswith("/status"):
            return JSONResponse({"statuses": entries}, headers={"X-Total-Count": "2"})
        return JSONResponse({"message": "not found"}, status_code=404)

    async with serve("happy") as sb, serve_app(Starlette(routes=[Route("/{p:path}", status)])) as rogue:
        with pytest.raises(Failed, match=r"'ci' is ambiguous .* reported as failure and success"):
            await gates(sb, gitea_url=rogue, required_contexts=("ci",), gate_timeout=5.0)


async def test_every_poll_reads_each_page_once() -> None:
    async with serve("many-contexts") as sb:
        sb.state.set_status(sb.state.deploy_sha, SENTINEL, "pending")
        sb.state.set_status(sb.state.deploy_sha, SENTINEL, "success", after_reads=2)
        await gates(sb, poll_interval=0.01, gate_timeout=30.0)
        pages = [r.query for r in sb.state.requests_to("gitea", "GET", "/status")]
    polls = pages.count("page=1&limit=50")
    assert polls == 3  # pending, pending, success
    assert pages == ["page=1&limit=50", "page=2&limit=50"] * polls
