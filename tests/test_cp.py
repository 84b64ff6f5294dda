"""The CP client: request shape, bounded retries of unfinished tenants, defensive parsing, redaction."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import stamina

from pipelines.cp import RETRYABLE, CPClient, CPUnavailable, row_facts
from pipelines.errors import Failed
from pipelines.http.client import TimedOut
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
        answer = await cp.redeploy_wave("t1", ["b", "a"], dry_run=dry_run)
    assert answer.ok and [r.slug for r in answer.rows] == ["b", "a"] and answer.sent == ("b", "a")
    (body,) = fake.bodies
    assert body == {"target_tag": "t1", "confirm": True, "dry_run": dry_run, "soak_seconds": 0,
                    "only_slugs": ["b", "a"], "batch_size": 2}


@pytest.mark.anyio
@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_error_on_a_wave_is_one_call_never_retried_here(status: int) -> None:
    # The retry is the rollout's decision, through its guard (tests/test_engine.py): the client writes once.
    fake = FakeCP(httpx.Response(status), rows_for)
    async with client(fake) as cp:
        with pytest.raises(CPUnavailable, match=rf"HTTP {status}") as caught:
            await cp.redeploy_wave("t1", ["a", "b"], dry_run=False)
    assert len(fake.requests) == 1 and caught.value.status == status


@pytest.mark.anyio
async def test_a_connection_error_on_a_wave_is_one_call_and_retryable() -> None:
    calls = 0

    def refused(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    async with CPClient(CP, Secret(TOKEN), read_timeout=5, retry_backoff=0,
                        transport=httpx.MockTransport(refused)) as cp:
        with pytest.raises(Failed) as caught:
            await cp.redeploy_wave("t1", ["a"], dry_run=False)
    assert calls == 1 and isinstance(caught.value, RETRYABLE)


@pytest.mark.anyio
async def test_the_listing_a_dry_run_is_retried_bounded() -> None:
    stamina.set_testing(True, attempts=10, cap=True)
    try:
        fake = FakeCP(httpx.Response(502), httpx.Response(503), rows_for)
        async with client(fake) as cp:
            assert await cp.list_tenants("t1") == ["alpha", "mid-1", "zeta"]
        assert len(fake.requests) == 3
        always = FakeCP(httpx.Response(504))
        async with client(always) as cp:
            with pytest.raises(CPUnavailable, match="HTTP 504"):
                await cp.list_tenants("t1")
        assert len(always.requests) == 4  # 1 + LIST_RETRIES
    finally:
        stamina.set_testing(False)


def test_the_cp_write_endpoint_is_called_only_by_the_guard() -> None:
    """Grep-able guarantee: `redeploy_wave(` is called in exactly one place, the guard."""
    root = Path(__file__).resolve().parents[1] / "pipelines"
    callers = sorted(str(f.relative_to(root)) for f in root.rglob("*.py")
                     if re.search(r"\.redeploy_wave\(", f.read_text(encoding="utf-8")))
    assert callers == ["rollout/guard.py"]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
async def test_other_non_2xx_fail_at_once_naming_the_status(status: int) -> None:
    fake = FakeCP(httpx.Response(status, json={"error": f"no way, Bearer {TOKEN}"}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match=rf"HTTP {status}") as caught:
            await cp.redeploy_wave("t1", ["a"], dry_run=False)
    assert len(fake.requests) == 1
    assert TOKEN not in caught.value.message


@pytest.mark.anyio
async def test_ok_false_is_a_refusal_naming_the_redacted_error() -> None:
    leaky = f"tag unknown; retry with {TOKEN} at https://admin:hunter2@cp.internal/x"
    fake = FakeCP(httpx.Response(200, json={"ok": False, "error": leaky, "results": []}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match="ok: false — tag unknown") as caught:
            await cp.redeploy_wave("t1", ["a"], dry_run=False)
    assert len(fake.requests) == 1
    assert TOKEN not in caught.value.message and "hunter2" not in caught.value.message


@pytest.mark.anyio
async def test_a_redirect_is_not_followed() -> None:
    fake = FakeCP(httpx.Response(307, headers={"Location": "http://elsewhere.test/steal"}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match=r"redirect to .* not followed"):
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
    (b"[" * 100_000 + b"]" * 100_000, "not a JSON object"),  # deeply nested: a verdict, never RecursionError
    (b'{"ok": true, "results": [' + b'{"a":' * 200 + b"1" + b"}" * 200 + b"]}", "not a JSON object"),
])
async def test_malformed_answers_fail_never_crash(body: bytes, why: str) -> None:
    fake = FakeCP(httpx.Response(200, content=body))
    async with client(fake) as cp:
        with pytest.raises(Failed, match=why):
            await cp.redeploy_wave("t1", ["a"], dry_run=False)


@pytest.mark.anyio
async def test_rows_for_tenants_outside_the_wave_fail() -> None:
    fake = FakeCP(httpx.Response(200, json={"ok": True, "results": [{"slug": "a"}, {"slug": "other"}]}))
    async with client(fake) as cp:
        with pytest.raises(Failed, match="outside the wave: other"):
            await cp.redeploy_wave("t1", ["a"], dry_run=False)


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
            await cp.redeploy_wave("t1", ["fine", slug], dry_run=False)
    assert fake.requests == []


@pytest.mark.anyio
async def test_a_leaky_error_row_is_redacted_and_truncated() -> None:
    leak = (f"ssm failed: Authorization: Bearer {TOKEN} "
            "pulling https://deploy:s3cr3t-pw@registry.internal/img "
            "\x1b[31mRED\x1b[0m \x1b]0;title\x07 ghp_" + "A" * 36 + " " + "padding " * 80)
    fake = FakeCP(lambda body: rows_for(body, error=leak, healthz_ok=False, ssm_exit_code=1))
    async with client(fake) as cp:
        answer = await cp.redeploy_wave("t1", ["a"], dry_run=False)
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


async def _dripping_server(listener: anyio.abc.SocketListener) -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while True:  # one byte at a time, each well inside the read timeout
                await stream.send(b" ")
                await anyio.sleep(0.01)

    await listener.serve(handle)


@pytest.mark.anyio
async def test_a_silent_cp_times_out_once_and_says_so() -> None:
    connections: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 -- anyio, not Django
    async with anyio.create_task_group() as tg:
        tg.start_soon(_silent_server, listener, connections)
        async with CPClient(f"http://127.0.0.1:{port}", Secret(TOKEN), read_timeout=0.1,
                            retry_backoff=0.001) as cp:
            with pytest.raises(TimedOut):
                await cp.redeploy_wave("t1", ["a"], dry_run=False)
        tg.cancel_scope.cancel()
    assert len(connections) == 1


@pytest.mark.anyio
async def test_a_cp_dripping_bytes_cannot_outlive_the_deadline() -> None:
    # Each byte arrives within the read timeout; only a deadline over the whole exchange ends it.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 -- anyio, not Django
    async with anyio.create_task_group() as tg:
        tg.start_soon(_dripping_server, listener)
        async with CPClient(f"http://127.0.0.1:{port}", Secret(TOKEN), read_timeout=0.3, retry_backoff=0) as cp:
            with pytest.raises(TimedOut, match=r"within 0.3s"):
                await cp.redeploy_wave("t1", ["a"], dry_run=False)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_gzip_garbage_body_is_failed_never_a_crash() -> None:
    fake = FakeCP(httpx.Response(200, stream=httpx.ByteStream(b"\x1f\x8b garbage, not gzip"),
                                 headers={"Content-Encoding": "gzip"}))
    async with client(fake) as cp:
        with pytest.raises(Failed):
            await cp.redeploy_wave("t1", ["a"], dry_run=False)


# ------------------------------------------------------------ over the sandbox's CP (real loopback sockets)


@pytest.mark.anyio
async def test_sandbox_502_mid_wave_is_one_call() -> None:
    from pipelines.sandbox import serve

    async with serve("cp-5xx") as sb:
        w = sb.state
        tag = f"staging-{w.deploy_sha[:7]}"
        async with CPClient(sb.cp_url, sb.overlay["cp_token"], read_timeout=5.0, retry_backoff=0) as cp:
            assert await cp.list_tenants(tag) == sorted(w.tenants)
            with pytest.raises(CPUnavailable, match="HTTP 502"):
                await cp.redeploy_wave(tag, ["alpha", "bravo", "charlie"], dry_run=False)
        wave_bodies = [c.body for c in w.cp_calls if not c.body.get("dry_run")]
        assert [b["only_slugs"] for b in wave_bodies] == [["alpha", "bravo", "charlie"]]
        assert [wr.slugs for wr in w.writes] == [["alpha"]]  # the CP did one tenant, then gave up


@pytest.mark.anyio
async def test_sandbox_refusal_fails_without_a_write() -> None:
    from pipelines.sandbox import serve

    async with serve("cp-refuses") as sb:
        tag = f"staging-{sb.state.deploy_sha[:7]}"
        async with CPClient(sb.cp_url, sb.overlay["cp_token"], read_timeout=5.0, retry_backoff=0) as cp:
            with pytest.raises(Failed, match="ok: false — refusing redeploy: the fleet is in a maintenance"):
                await cp.redeploy_wave(tag, ["alpha"], dry_run=False)
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
            with pytest.raises(CPUnavailable) as caught:  # the leaky 502 body is never parsed or shown
                await cp.redeploy_wave(tag, ["alpha", "bravo"], dry_run=False)
            assert leaky_text(w) not in caught.value.message
            answer = await cp.redeploy_wave(tag, ["bravo"], dry_run=False)
        bravo = next(r for r in answer.rows if r.slug == "bravo")
        assert bravo.healthz_ok is False and bravo.error
        everything = repr(answer)
        assert leaky_text(w) not in everything
        for secret in (w.cp_token, w.gitea_token, "hunter2-pass", "deploy:", "\x1b", "\r", "\n", "\x00"):
            assert secret not in bravo.error
            assert secret not in json.dumps(row_facts(bravo), ensure_ascii=False)
        assert "ERROR" in bravo.error and "forged: log line" in bravo.error  # readable, on one line
