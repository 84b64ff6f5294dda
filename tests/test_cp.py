"""The CP client: request shape, bounded retries of unfinished tenants, defensive parsing, redaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from pipelines.cp import CPClient, row_facts
from pipelines.errors import Failed
from pipelines.redact import Secret, redact

CP = "http://cp.test"
TOKEN = "cp-token-7f3a9c2e41"


class FakeCP:
    """A scripted CP behind httpx.MockTransport: records every request, answers from a list."""

    def __init__(self, *answers: Callable[[dict[str, Any]], httpx.Response] | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        self.bodies.append(body)
        self.times.append(anyio.current_time())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(body) if callable(answer) else answer


def rows_for(body: dict[str, Any], **extra: Any) -> httpx.Response:
    slugs = body.get("only_slugs") or ["zeta", "alpha", "mid-1", "alpha"]
    results = [{"slug": s, "phase": "done", "ssm_status": "Success", "ssm_exit_code": 0, "healthz_ok": True,
                "error": "", **extra} for s in slugs]
    return httpx.Response(200, json={"ok": True, "results": results})


@asynccontextmanager
async def client(fake: FakeCP, *, backoff: float = 0.0, read_timeout: float = 5.0) -> AsyncIterator[CPClient]:
    async with CPClient(CP, Secret(TOKEN), read_timeout=read_timeout, retry_backoff=backoff,
                        transport=httpx.MockTransport(fake)) as cp:
        yield cp


async def all_needed(slugs: list[str]) -> list[str]:
    return slugs


@pytest.mark.anyio
async def test_listing_is_a_confirmed_dry_run_sorted_and_deduplicated() -> None:
    fake = FakeCP(rows_for)
    async with client(fake) as cp:
        assert await cp.list_tenants("staging-abc1234") == ["alpha", "mid-1", "zeta"]
    (request,) = fake.requests
    assert request.method == "POST"
    assert str(request.url) == f"{CP}/cp/admin/tenants/redeploy-fleet"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    body = fake.bodies[0]
    assert body["confirm"] is True and body["dry_run"] is True and body["target_tag"] == "staging-abc1234"
    assert "only_slugs" not in body and "canary_slug" not in body


@pytest.mark.anyio
@pytest.mark.parametrize("dry_run", [False, True])
async def test_a_wave_is_one_scoped_call(dry_run: bool) -> None:
    fake = FakeCP(rows_for)
    async with client(fake) as cp:
        answer = await cp.redeploy_wave("t1", ["b", "a"], dry_run=dry_run, still_needed=all_needed)
    assert answer.ok and [r.slug for r in answer.rows] == ["b", "a"] and answer.attempts == 1
    (body,) = fake.bodies
    assert body == {"target_tag": "t1", "confirm": True, "dry_run": dry_run, "soak_seconds": 0,
                    "only_slugs": ["b", "a"], "batch_size": 2}


@pytest.mark.anyio
async def test_502_is_retried_for_the_unfinished_tenants_only_with_doubling_backoff() -> None:
    fake = FakeCP(httpx.Response(502), httpx.Response(504), httpx.Response(503), rows_for)
    done: set[str] = set()
    asked: list[list[str]] = []

    async def still_needed(slugs: list[str]) -> list[str]:
        asked.append(list(slugs))
        done.add(next(s for s in slugs if s not in done))  # one more tenant finishes between attempts
        return [s for s in slugs if s not in done]

    async with client(fake, backoff=0.02) as cp:
        answer = await cp.redeploy_wave("t1", ["a", "b", "c", "d"], dry_run=False, still_needed=still_needed)
    sent = [b["only_slugs"] for b in fake.bodies]
    assert sent == [["a", "b", "c", "d"], ["b", "c", "d"], ["c", "d"], ["d"]]
    assert [b["batch_size"] for b in fake.bodies] == [4, 3, 2, 1]
    assert answer.attempts == 4 and [r.slug for r in answer.rows] == ["d"]
    assert asked == [["a", "b", "c", "d"]] * 3  # asked about the whole wave, each retry
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    for gap, factor in zip(gaps, (1, 2, 4), strict=True):
        assert gap >= 0.02 * factor * 0.95


@pytest.mark.anyio
async def test_a_retry_never_widens_the_wave() -> None:
    fake = FakeCP(httpx.Response(503), rows_for)

    async def still_needed(slugs: list[str]) -> list[str]:
        return ["intruder", "b"]

    async with client(fake) as cp:
        await cp.redeploy_wave("t1", ["a", "b"], dry_run=False, still_needed=still_needed)
    assert fake.bodies[1]["only_slugs"] == ["b"]


@pytest.mark.anyio
async def test_no_retry_when_every_tenant_already_reports_the_sha() -> None:
    fake = FakeCP(httpx.Response(502), rows_for)

    async def nothing_left(slugs: list[str]) -> list[str]:
        return []

    async with client(fake) as cp:
        answer = await cp.redeploy_wave("t1", ["a", "b"], dry_run=False, still_needed=nothing_left)
    assert len(fake.requests) == 1
    assert answer.ok and answer.rows == []


@pytest.mark.anyio
async def test_retries_are_bounded_then_fail_naming_the_status() -> None:
    fake = FakeCP(httpx.Response(503))
    async with client(fake) as cp:
        with pytest.raises(Failed, match=r"HTTP 503 after 4 attempts"):
            await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)
    assert len(fake.requests) == 4


@pytest.mark.anyio
async def test_connection_errors_are_retried() -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return rows_for(json.loads(request.content))

    async with CPClient(CP, Secret(TOKEN), read_timeout=5, retry_backoff=0,
                        transport=httpx.MockTransport(flaky)) as cp:
        answer = await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)
    assert calls == 2 and answer.attempts == 2


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
async def test_other_non_2xx_fail_at_once_naming_the_status(status: int) -> None:
    fake = FakeCP(httpx.Response(status, json={"error": f"no way, Bearer {TOKEN}"}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match=rf"HTTP {status}") as caught:
            await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)
    assert len(fake.requests) == 1
    assert TOKEN not in caught.value.message


@pytest.mark.anyio
async def test_ok_false_is_a_refusal_naming_the_redacted_error() -> None:
    leaky = f"tag unknown; retry with {TOKEN} at https://admin:hunter2@cp.internal/x"
    fake = FakeCP(httpx.Response(200, json={"ok": False, "error": leaky, "results": []}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match="ok: false — tag unknown") as caught:
            await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)
    assert len(fake.requests) == 1
    assert TOKEN not in caught.value.message and "hunter2" not in caught.value.message


@pytest.mark.anyio
async def test_a_redirect_is_not_followed() -> None:
    fake = FakeCP(httpx.Response(307, headers={"Location": "http://elsewhere.test/steal"}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match="redirect not followed"):
            await cp.list_tenants("t1")
    assert [r.url.host for r in fake.requests] == ["cp.test"]


@pytest.mark.anyio
@pytest.mark.parametrize("body, why", [
    (b"<html>bad gateway</html>", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"results": []}', "no boolean `ok`"),
    (b'{"ok": "yes", "results": []}', "no boolean `ok`"),
    (b'{"ok": true}', "no `results` list"),
    (b'{"ok": true, "results": {"slug": "a"}}', "no `results` list"),
    (b'{"ok": true, "results": ["a"]}', r"results\[0\] is not an object"),
    (b'{"ok": true, "results": [{"phase": "done"}]}', "rejected tenant slug None"),
    (b'{"ok": true, "results": [{"slug": "a", "ssm_exit_code": "0"}]}', "ssm_exit_code is not an integer"),
    (b'{"ok": true, "results": [{"slug": "a", "ssm_exit_code": true}]}', "ssm_exit_code is not an integer"),
    (b'{"ok": true, "results": [{"slug": "a", "healthz_ok": "yes"}]}', "healthz_ok is not a boolean"),
    (b'{"ok": true, "results": [{"slug": "a", "error": 42}]}', "error is not a string"),
    (b'{"ok": true, "error": ["x"], "results": []}', "`error` is not a string"),
    (b'\xff\xfe not utf-8', "not a JSON object"),
])
async def test_malformed_answers_fail_never_crash(body: bytes, why: str) -> None:
    fake = FakeCP(httpx.Response(200, content=body))
    async with client(fake) as cp:
        with pytest.raises(Failed, match=why):
            await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)


@pytest.mark.anyio
async def test_rows_for_tenants_outside_the_wave_fail() -> None:
    fake = FakeCP(httpx.Response(200, json={"ok": True, "results": [{"slug": "a"}, {"slug": "other"}]}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match="outside the wave: other"):
            await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)


HOSTILE = ["../../admin", "UPPER", "a b", "-lead", "evil\x1b[2Jslug", "x" * 64, "", "a.b", "ok\nnext"]


@pytest.mark.anyio
@pytest.mark.parametrize("slug", HOSTILE)
async def test_a_hostile_slug_in_the_listing_fails_the_run_escaped(slug: str) -> None:
    fake = FakeCP(httpx.Response(200, json={"ok": True, "results": [{"slug": "fine"}, {"slug": slug}]}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match="rejected tenant slug") as caught:
            await cp.list_tenants("t1")
    message = caught.value.message
    assert "\x1b" not in message and "\n" not in message
    assert repr(slug)[:40] in message


@pytest.mark.anyio
@pytest.mark.parametrize("slug", HOSTILE)
async def test_a_hostile_slug_is_never_sent(slug: str) -> None:
    fake = FakeCP(rows_for)
    async with client(fake) as cp:
        with pytest.raises(Failed, match="rejected tenant slug"):
            await cp.redeploy_wave("t1", ["fine", slug], dry_run=False, still_needed=all_needed)
    assert fake.requests == []


@pytest.mark.anyio
async def test_a_leaky_error_row_is_redacted_and_truncated() -> None:
    leak = (f"ssm failed: Authorization: Bearer {TOKEN} "
            "pulling https://deploy:s3cr3t-pw@registry.internal/img "
            "\x1b[31mRED\x1b[0m \x1b]0;title\x07 ghp_" + "A" * 36 + " " + "padding " * 80)
    fake = FakeCP(lambda body: rows_for(body, error=leak, healthz_ok=False, ssm_exit_code=1))
    async with client(fake) as cp:
        answer = await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)
    (row,) = answer.rows
    for secret in (TOKEN, "s3cr3t-pw", "deploy:", "ghp_AAAA", "\x1b", "[31m", "]0;title", "\x07"):
        assert secret not in row.error
    assert "ssm failed" in row.error and "RED" in row.error
    assert len(row.error) <= 200
    # failure rows under ok:true are kept (verification judges them), not fatal
    assert row.healthz_ok is False and row.ssm_exit_code == 1
    assert row_facts(row)["error"] == row.error


def test_untrusted_text_loses_escape_sequences_before_redacting() -> None:
    assert redact("a\x1b[1;31mb\x1b[0mc\r\nd") == "abc d"


async def _silent_server(listener: anyio.abc.SocketListener, connections: list[int]) -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        connections.append(1)
        async with stream:
            await stream.receive()  # read the request, then never answer
            await anyio.sleep_forever()

    await listener.serve(handle)


@pytest.mark.anyio
async def test_a_wave_that_outlives_the_read_timeout_is_retried_then_fails() -> None:
    connections: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 -- anyio, not Django
    async with anyio.create_task_group() as tg:
        tg.start_soon(_silent_server, listener, connections)
        start = anyio.current_time()
        async with CPClient(f"http://127.0.0.1:{port}", Secret(TOKEN), read_timeout=0.1,
                            retry_backoff=0.001) as cp:
            with pytest.raises(Failed, match=r"timed out \(ReadTimeout\) after 4 attempts"):
                await cp.redeploy_wave("t1", ["a"], dry_run=False, still_needed=all_needed)
        elapsed = anyio.current_time() - start
        tg.cancel_scope.cancel()
    assert len(connections) == 4
    assert elapsed >= 0.4  # four read timeouts of 0.1 s (which budget ran out: the ReadTimeout above)


# ------------------------------------------------------------ over the sandbox's CP (real loopback sockets)


@pytest.mark.anyio
async def test_sandbox_502_mid_wave_resends_only_the_tenants_not_yet_on_the_sha() -> None:
    from pipelines.sandbox import serve
    from pipelines.verify import BuildinfoReader

    async with serve("cp-5xx") as sb:
        w = sb.state
        settings = sb.overlay
        reader = BuildinfoReader(lambda slug: sb.tenant_url_template.format(slug=slug), timeout=2.0)

        async def still_needed(slugs: list[str]) -> list[str]:
            readings = await reader.read(slugs, w.deploy_sha)
            return [s for s in slugs if not readings[s].verified]

        tag = f"staging-{w.deploy_sha[:7]}"
        async with CPClient(sb.cp_url, settings["cp_token"], read_timeout=5.0,
                            retry_backoff=settings["cp_retry_backoff"]) as cp:
            assert await cp.list_tenants(tag) == sorted(w.tenants)
            answer = await cp.redeploy_wave(tag, ["alpha", "bravo", "charlie"], dry_run=False,
                                            still_needed=still_needed)
        # Each 502 came after the CP redeployed one tenant; each retry carried only the rest.
        wave_bodies = [c.body for c in w.cp_calls if not c.body.get("dry_run")]
        assert [b["only_slugs"] for b in wave_bodies] == [["alpha", "bravo", "charlie"], ["bravo", "charlie"],
                                                          ["charlie"]]
        assert [b["batch_size"] for b in wave_bodies] == [3, 2, 1]
        assert [wr.slugs for wr in w.writes] == [["alpha"], ["bravo"], ["charlie"]]
        assert answer.attempts == 3 and [r.slug for r in answer.rows] == ["charlie"]
        assert {s: w.tenants[s].sha for s in ("alpha", "bravo", "charlie")} == dict.fromkeys(
            ("alpha", "bravo", "charlie"), w.deploy_sha)


@pytest.mark.anyio
async def test_sandbox_refusal_fails_without_a_write() -> None:
    from pipelines.sandbox import serve

    async with serve("cp-refuses") as sb:
        tag = f"staging-{sb.state.deploy_sha[:7]}"
        async with CPClient(sb.cp_url, sb.overlay["cp_token"], read_timeout=5.0, retry_backoff=0) as cp:
            with pytest.raises(Failed, match="ok: false — refusing redeploy: the fleet is in a maintenance"):
                await cp.redeploy_wave(tag, ["alpha"], dry_run=False, still_needed=all_needed)
        assert len(sb.state.cp_calls) == 1 and sb.state.writes == []


@pytest.mark.anyio
async def test_sandbox_leaky_error_rows_and_bodies_never_leave_unredacted() -> None:
    from pipelines.sandbox import serve
    from pipelines.sandbox.scenarios import leaky_text

    async with serve("leaky-errors") as sb:
        w = sb.state
        overlay = sb.overlay  # the run's settings hold both tokens as Secrets
        tag = f"staging-{w.deploy_sha[:7]}"
        async with CPClient(sb.cp_url, overlay["cp_token"], read_timeout=5.0, retry_backoff=0) as cp:
            answer = await cp.redeploy_wave(tag, ["alpha", "bravo"], dry_run=False, still_needed=all_needed)
        assert answer.attempts == 2  # the leaky 502 body was retried past, never parsed or shown
        bravo = next(r for r in answer.rows if r.slug == "bravo")
        assert bravo.healthz_ok is False and bravo.error
        everything = repr(answer)
        assert leaky_text(w) not in everything
        for secret in (w.cp_token, w.gitea_token, "hunter2-pass", "deploy:", "\x1b", "\r", "\n", "\x00"):
            assert secret not in bravo.error
            assert secret not in json.dumps(row_facts(bravo), ensure_ascii=False)
        assert "ERROR" in bravo.error and "forged: log line" in bravo.error  # readable, on one line
