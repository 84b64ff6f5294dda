"""The one client factory: no redirects, no proxy from the environment, a deadline over the whole
exchange, bounded bodies, depth-limited JSON, reads retried (Retry-After in both forms), writes not."""

from __future__ import annotations

import ast
import email.utils
import logging
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import stamina
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipelines.errors import Failed
from pipelines.http.client import (
    Limits,
    RetryPolicy,
    TimedOut,
    make_client,
    read,
    retry_after_seconds,
    send,
)
from pipelines.redact import Secret
from tests.loopback import ConnectionRecorder, connection_recorder, point_proxies_at, serve_app

pytestmark = pytest.mark.anyio
TOKEN = "tok3n-for-the-client-factory-tests"


def _app(hits: list[Request], answers: list[Response]) -> Starlette:
    """Answers in order (the last one repeats); every request is recorded."""

    async def endpoint(request: Request) -> Response:
        hits.append(request)
        return answers[min(len(hits), len(answers)) - 1]

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "HEAD", "POST", "PUT"])])


@asynccontextmanager
async def served(answers: list[Response]) -> AsyncIterator[tuple[str, list[Request]]]:
    hits: list[Request] = []
    async with serve_app(_app(hits, answers)) as url:
        yield url, hits


async def test_a_redirect_is_refused_and_never_followed() -> None:
    with connection_recorder() as elsewhere:
        redirect = Response(status_code=302, headers={"Location": f"{elsewhere.url}/steal"})
        async with served([redirect]) as (url, hits), \
                make_client(url, headers={"Authorization": f"token {TOKEN}"}) as client:
            with pytest.raises(Failed, match=r"redirect .* not followed"):
                await read(client, "GET", "/api", what="probe")
        assert len(hits) == 1
        assert elsewhere.settle() == 0


async def test_a_proxy_from_the_environment_never_sees_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with connection_recorder() as proxy:
        point_proxies_at(monkeypatch, proxy.url)
        async with served([JSONResponse({"ok": True})]) as (url, hits), \
                make_client(url, headers={"Authorization": f"token {TOKEN}"}) as client:
            answer = await read(client, "GET", "/api", what="probe")
        assert answer.json("probe") == {"ok": True}
        assert hits[0].headers["authorization"] == f"token {TOKEN}"
        assert proxy.settle() == 0


async def _drip(stream: anyio.abc.ByteStream) -> None:
    """Headers promising a body, then one byte per tick, forever (until the client hangs up)."""
    async with stream:
        try:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while True:
                await stream.send(b" ")
                await anyio.sleep(0.01)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            return


async def test_a_dripping_server_is_cut_off_by_the_exchange_deadline() -> None:
    # Each byte arrives well inside the read timeout: only the deadline over the whole exchange ends it.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _drip)
        async with make_client(f"http://127.0.0.1:{port}", limits=Limits(read=30.0, deadline=0.3)) as client:
            with pytest.raises(TimedOut, match=r"no complete answer .* within 0\.3s"):
                await send(client, "GET", "/buildinfo", what="drip", limits=Limits(read=30.0, deadline=0.3))
        tg.cancel_scope.cancel()


async def test_bodies_are_bounded_declared_or_not() -> None:
    big = b"x" * 5000

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    from starlette.responses import StreamingResponse

    async with served([Response(big), StreamingResponse(chunks())]) as (url, _), make_client(url) as client:
        with pytest.raises(Failed, match="larger than 1024"):
            await send(client, "GET", "/a", what="big", limits=Limits(max_body=1024))
        with pytest.raises(Failed, match="larger than 1024"):
            await send(client, "GET", "/b", what="streamed", limits=Limits(max_body=1024))


async def test_deeply_nested_json_is_a_one_line_failure() -> None:
    nested = "[" * 5000 + "]" * 5000
    async with served([PlainTextResponse(nested)]) as (url, _), make_client(url) as client:
        answer = await read(client, "GET", "/x", what="Gitea status")
    with pytest.raises(Failed, match="Gitea status: the answer is not JSON we can read: nested deeper"):
        answer.json("Gitea status")


def test_retry_after_both_forms() -> None:
    now = 1_800_000_000.0
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert retry_after_seconds("7", now=lambda: now) == 7.0
    assert retry_after_seconds(in_ten, now=lambda: now) == pytest.approx(10.0)
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=lambda: now) == 0.0
    assert retry_after_seconds("soon", now=lambda: now) is None
    assert retry_after_seconds("-3", now=lambda: now) == 0.0
    assert retry_after_seconds("nan", now=lambda: now) is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize("retry_after", ["1", "HTTP-DATE"])
async def test_a_read_honours_retry_after_within_the_deadline(retry_after: str) -> None:
    import time

    value = email.utils.formatdate(time.time() + 2, usegmt=True) if retry_after == "HTTP-DATE" else retry_after
    busy = PlainTextResponse("busy", status_code=429, headers={"Retry-After": value})
    with stamina.set_testing(True, attempts=3):
        async with served([busy, JSONResponse({"ok": 1})]) as (url, hits), make_client(url) as client:
            answer = await read(client, "GET", "/x", what="read", policy=RetryPolicy(deadline=60))
    assert answer.status == 200
    assert len(hits) == 2


@pytest.mark.parametrize("retry_after", ["3600", "HTTP-DATE"])
async def test_a_retry_after_beyond_the_deadline_stops_at_once(retry_after: str) -> None:
    import time

    value = email.utils.formatdate(time.time() + 3600, usegmt=True) if retry_after == "HTTP-DATE" else retry_after
    busy = PlainTextResponse("busy", status_code=503, headers={"Retry-After": value})
    with stamina.set_testing(True, attempts=5):
        async with served([busy, JSONResponse({"ok": 1})]) as (url, hits), make_client(url) as client:
            answer = await read(client, "GET", "/x", what="read", policy=RetryPolicy(deadline=60))
    assert answer.status == 503  # the caller fails on it with its own words
    assert len(hits) == 1


async def test_writes_are_never_retried_by_the_transport() -> None:
    with stamina.set_testing(True, attempts=5):
        async with served([PlainTextResponse("down", status_code=503), JSONResponse({})]) as (url, hits), \
                make_client(url) as client:
            answer = await send(client, "POST", "/w", what="write", json={"a": 1})
            with pytest.raises(ValueError, match="reads only"):
                await read(client, "PUT", "/w", what="write")
    assert answer.status == 503
    assert len(hits) == 1


async def test_failures_are_one_line_and_redacted(caplog: pytest.LogCaptureFixture) -> None:
    Secret(TOKEN)
    refused = ConnectionRecorder()
    port = refused.port
    refused.sock.close()  # nothing listens there now
    caplog.set_level(logging.DEBUG)
    with stamina.set_testing(True, attempts=3):
        async with make_client(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(Failed) as caught:
                await read(client, "GET", f"/x?token={TOKEN}", what="read")
    assert "\n" not in caught.value.message
    assert TOKEN not in caught.value.message
    assert "cannot reach http://127.0.0.1" in caught.value.message
    assert not [r for r in caplog.records if r.name.startswith("stamina")]  # no stray stamina lines


async def test_an_overall_read_deadline_bounds_the_retries() -> None:
    failing = PlainTextResponse("down", status_code=502)
    async with served([failing]) as (url, hits), make_client(url) as client:
        answer = await read(client, "GET", "/x", what="read",
                            policy=RetryPolicy(deadline=0.2, wait_initial=0.01, wait_max=0.02))
    assert answer.status == 502  # whether the deadline ended a backoff or stamina gave up
    assert hits


def test_the_client_is_built_the_one_way() -> None:
    client = make_client("http://127.0.0.1:1", limits=Limits(connect=1, read=2, write=3, pool=4))
    assert client.follow_redirects is False
    assert client.trust_env is False
    assert client.timeout == httpx.Timeout(connect=1, read=2, write=3, pool=4)


def test_no_engine_module_builds_an_httpx_client_but_the_factory() -> None:
    # A client built elsewhere is one that may follow a redirect with a token or take a proxy from the env.
    engine = Path(__file__).resolve().parent.parent / "pipelines"
    built: list[str] = []
    for path in sorted(engine.rglob("*.py")):
        if path == engine / "http" / "client.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "httpx":
                built += [f"{path.name}: imports {a.name}" for a in node.names if a.name in ("AsyncClient", "Client")]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("AsyncClient", "Client") and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "httpx":
                built.append(f"{path.name}:{node.lineno}")
    assert built == []


def test_every_client_verifies_tls_with_one_shared_context() -> None:
    """The trust store is loaded once per process (a run opens Gitea, CP and registry clients), and
    sharing it never loosens it: certificates and host names are checked."""
    contexts = [make_client(url)._transport._pool._ssl_context  # type: ignore[attr-defined]
                for url in ("https://gitea.example", "https://cp.example")]
    assert contexts[0] is contexts[1]
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED
    assert contexts[0].check_hostname is True


@pytest.mark.parametrize("token", ["tok-with\nnewline-91", "tok-with-é-accent-91", "tok\x00nul-91", "tok\u202eflip-91"])
def test_a_token_httpx_cannot_send_is_one_line_without_the_token(token: str) -> None:
    with pytest.raises(Failed) as caught:
        make_client("http://127.0.0.1:1", headers={"Authorization": f"token {token}"})
    assert "Authorization header cannot be sent" in caught.value.message
    assert "tok" not in caught.value.message.replace("the token", "")


@pytest.mark.parametrize("url", ["http://\u0080host/x", "http://ho\x00st/x", "http://xn--zz/x"])
async def test_a_url_httpx_refuses_is_one_line_and_never_contacted(url: str) -> None:
    async with make_client() as client:
        with pytest.raises(Failed, match="the request cannot be built"):
            await send(client, "GET", url, what="probe")


async def test_a_header_value_a_server_handed_us_cannot_split_a_request() -> None:
    # e.g. a registry token service answering a "token" with a newline: refused, never retried.
    async with served([JSONResponse({})]) as (url, hits), make_client(url) as client:
        with pytest.raises(Failed, match="cannot be"):
            await read(client, "GET", "/x", what="probe", headers={"Authorization": "Bearer a\r\nX-Evil: 1"})
    assert hits == []


async def test_httpcore_finds_sniffio_so_no_request_pays_for_a_failing_import() -> None:
    """httpcore imports sniffio on every request; when it is missing, that failed import (a search of
    sys.path each time) costs about as much as the rest of a loopback call (encode/httpx#3215)."""
    async with served([JSONResponse({})]) as (url, _), make_client(url) as client:
        await read(client, "GET", "/x", what="probe")
    assert "sniffio" in sys.modules
