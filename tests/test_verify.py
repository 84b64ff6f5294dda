"""Verification: /buildinfo verdicts, no auth to tenants, bounded concurrency, the drift report, `verify`."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from pipelines.errors import Failed, UsageError
from pipelines.output import Output
from pipelines.sandbox import serve
from pipelines.settings import Settings, resolve
from pipelines.verify import BuildinfoReader, Reading, drift_report, only_slugs, run
from tests.loopback import point_proxies_at

ROOT = Path(__file__).resolve().parent.parent
SHA = "c" * 40
OLD = "0" * 40
NEWER = "ABCDEF" + "1" * 34  # a valid SHA, in upper case


def settings_for(overlay: dict[str, Any], **flags: Any) -> Settings:
    return resolve("verify", flags, {}, overlay=overlay)


def quiet(json_mode: bool = False) -> tuple[Output, io.StringIO, io.StringIO]:
    err, std = io.StringIO(), io.StringIO()
    return Output(json_mode=json_mode, stream=err, stdout=std), err, std


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------- over the sandbox (real loopback sockets)


@pytest.mark.anyio
async def test_every_verdict_over_real_sockets_and_no_redirect_followed() -> None:
    async with serve("happy") as sb:
        w = sb.state
        target = w.deploy_sha
        modes = {"alpha": "ok", "charlie": "non-json", "delta": "bad-shape", "echo": "redirect",
                 "foxtrot": "unreachable", "golf": "slow"}
        for slug, mode in modes.items():
            w.tenants[slug].buildinfo = mode
        w.tenants["alpha"].sha = target  # bravo stays on the previous release
        gone = closed_port()

        def tenant_url(slug: str) -> str:
            return f"http://127.0.0.1:{gone}" if slug == "hotel" else sb.tenant_url_template.format(slug=slug)

        reader = BuildinfoReader(tenant_url, timeout=0.3)
        readings = await reader.read([*sorted(w.tenants), "hotel"], target)
        verdicts = {slug: r.verdict for slug, r in readings.items()}
        assert verdicts == {"alpha": "verified", "bravo": "stale", "charlie": "invalid", "delta": "invalid",
                            "echo": "redirect", "foxtrot": "unreachable", "golf": "unreachable",
                            "hotel": "unreachable"}
        assert readings["bravo"].seen == w.tenants["bravo"].sha and readings["alpha"].seen == target
        assert "timed out" in readings["golf"].detail and readings["golf"].latency_ms >= 250
        assert "connection error" in readings["hotel"].detail
        # The redirect's far end (which would "verify" echo) was never asked.
        assert w.requests_to("cp", contains="/redirected/") == []
        assert all(r.expected == target for r in readings.values())


@pytest.mark.anyio
async def test_no_authorization_header_ever_reaches_a_tenant() -> None:
    async with serve("happy") as sb:
        settings = settings_for(sb.overlay)
        out, _, _ = quiet()
        with pytest.raises(Failed):  # the fleet is on the previous release: drift
            await run(settings, out)
        tenant_requests = sb.state.requests_to("tenants")
        assert len(tenant_requests) == len(sb.state.tenants) == len(sb.state.buildinfo_reads)
        secrets = (sb.state.cp_token, sb.state.gitea_token)
        for record in tenant_requests:
            assert "authorization" not in record.headers and "proxy-authorization" not in record.headers
            assert not any(s in v for v in record.headers.values() for s in secrets)
        # The CP, and only the CP, got the bearer token.
        (cp_request,) = sb.state.requests_to("cp")
        assert cp_request.headers["authorization"] == f"Bearer {sb.state.cp_token}"


@pytest.mark.anyio
async def test_verify_reports_drift_by_sha_and_fails() -> None:
    async with serve("partially-deployed") as sb:
        w = sb.state
        previous = w.tenants["golf"].sha
        out, err, std = quiet(json_mode=True)
        with pytest.raises(Failed, match=r"3 of 7 tenant\(s\) not on .*: echo, foxtrot, golf") as caught:
            await run(settings_for(sb.overlay), out)
        details = caught.value.details
        assert details["by_sha"] == {w.deploy_sha: 4, previous: 3}
        assert details["drift"] == 3 and details["verified"] == 4 and details["total"] == 7
        golf = details["tenants"]["golf"]
        assert golf["verdict"] == "stale" and golf["seen"] == previous
        table = err.getvalue()
        assert re.search(rf"^  golf +stale +{previous[:7]} ", table, re.M) and f"{previous[:7]} × 3" in table
        assert std.getvalue() == ""  # the CLI prints the failure JSON (with these details) itself


@pytest.mark.anyio
async def test_verify_passes_when_every_tenant_runs_the_sha_and_prints_json() -> None:
    async with serve("happy") as sb:
        for tenant in sb.state.tenants.values():
            tenant.sha = sb.state.deploy_sha
        out, _, std = quiet(json_mode=True)
        result = await run(settings_for(sb.overlay), out)
        assert result["ok"] is True and result["verified"] == 7 and result["drift"] == 0
        printed = json.loads(std.getvalue())
        assert printed["by_sha"] == {sb.state.deploy_sha: 7}
        assert sorted(printed["tenants"]) == sorted(sb.state.tenants)


@pytest.mark.anyio
async def test_only_slugs_skip_the_cp() -> None:
    async with serve("happy") as sb:
        sb.state.tenants["bravo"].sha = sb.state.deploy_sha
        out, _, _ = quiet()
        result = await run(settings_for(sb.overlay), out, only=("bravo",))
        assert result["total"] == 1 and result["ok"]
        assert sb.state.requests_to("cp") == []
        assert [r.slug for r in sb.state.buildinfo_reads] == ["bravo"]


@pytest.mark.anyio
async def test_a_bad_only_slug_is_a_usage_error_before_any_request() -> None:
    async with serve("happy") as sb:
        out, _, _ = quiet()
        with pytest.raises(UsageError, match="not a tenant slug"):
            await run(settings_for(sb.overlay), out, only=("alpha", "../etc"))
        assert sb.state.requests == []


def test_only_slugs_accept_repeats_and_commas() -> None:
    assert only_slugs(("b,a", "a", " c ")) == ["a", "b", "c"]


@pytest.mark.anyio
async def test_hostile_slugs_from_the_cp_fail_and_no_tenant_is_read() -> None:
    async with serve("hostile-slug") as sb:
        out, _, _ = quiet()
        with pytest.raises(Failed, match="rejected tenant slug") as caught:
            await run(settings_for(sb.overlay), out)
        assert "\x1b" not in caught.value.message and "\n" not in caught.value.message
        assert sb.state.buildinfo_reads == [] and sb.state.requests_to("tenants") == []


@pytest.mark.anyio
async def test_zero_tenants_is_a_failure() -> None:
    async with serve("happy") as sb:
        sb.state.tenants.clear()
        out, _, _ = quiet()
        with pytest.raises(Failed, match="zero tenants"):
            await run(settings_for(sb.overlay), out)


@pytest.mark.anyio
async def test_listing_needs_the_cp_token() -> None:
    async with serve("happy") as sb:
        overlay = {**sb.overlay, "cp_token": None}
        out, _, _ = quiet()
        with pytest.raises(UsageError, match="--cp-token"):
            await run(settings_for(overlay), out)
        assert sb.state.requests == []


@pytest.mark.anyio
async def test_the_verify_verb_uses_a_short_per_request_deadline_for_slow_tenants() -> None:
    async with serve("happy") as sb:
        for tenant in sb.state.tenants.values():
            tenant.sha = sb.state.deploy_sha
        sb.state.tenants["delta"].buildinfo = "slow"
        out, _, _ = quiet()
        with pytest.raises(Failed, match=r"1 of 7 .*: delta") as caught:
            await run(settings_for(sb.overlay, verify_timeout="0.2"), out)
        assert caught.value.details["tenants"]["delta"]["detail"] == "timed out after 0.2s"
        assert caught.value.details["by_sha"] == {sb.state.deploy_sha: 6, "unreachable": 1}


# ---------------------------------------------------------------- the reader over a real aiohttp server on loopback


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    peer: tuple[str, int]


@dataclass
class TenantServer:
    base: str
    seen: list[Seen] = field(default_factory=list)

    def url(self, slug: str) -> str:
        return f"{self.base}/t/{slug}"

    def reader(self, **kwargs: Any) -> BuildinfoReader:
        return BuildinfoReader(self.url, **kwargs)

    def slugs_seen(self) -> list[str]:
        return [s.path.split("/")[2] for s in self.seen]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def tenants(handler: Handler) -> AsyncIterator[TenantServer]:
    """A real HTTP server on 127.0.0.1 answering every path with `handler`, recording what it was asked."""
    server = TenantServer(base="")

    async def entry(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        server.seen.append(Seen(path=request.path, headers={k.lower(): v for k, v in request.headers.items()},
                                peer=tuple(peer[:2])))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", entry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def answer(status: int = 200, body: bytes | str | Any = b"", headers: dict[str, str] | None = None) -> Handler:
    if not isinstance(body, bytes | str):
        body = json.dumps(body)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body.encode() if isinstance(body, str) else body,
                            headers=headers)

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize("handler, verdict", [
    (answer(body={"git_sha": SHA}), "verified"),
    (answer(body={"git_sha": OLD}), "stale"),
    (answer(body={"git_sha": SHA.upper()}), "invalid"),  # exactly the SHA, not a look-alike
    (answer(body={"git_sha": SHA[:7]}), "invalid"),
    (answer(body={"git_sha": 42}), "invalid"),
    (answer(body=[SHA]), "invalid"),
    (answer(body="ok"), "invalid"),
    (answer(body=b"\xff\xfe"), "invalid"),
    (answer(body=b"{" + b" " * 70_000 + b"}"), "invalid"),  # over the body cap
    (answer(body=gzip.compress(json.dumps({"git_sha": SHA}).encode()), headers={"Content-Encoding": "gzip"}),
     "invalid"),  # never decompressed: no bomb can be inflated
    (answer(body="[" * 100_000 + "]" * 100_000), "invalid"),  # nested past the depth limit: a verdict, no crash
    (answer(body='{"git_sha": ' + "[" * 200 + "]" * 200 + "}"), "invalid"),
    (answer(301, headers={"Location": "http://127.0.0.1:9/elsewhere"}), "redirect"),
    (answer(308, headers={"Location": "/t/acme/buildinfo"}), "redirect"),  # not even to the same origin
    (answer(404), "http-404"),
    (answer(500), "http-500"),
    (answer(503), "unreachable"),
])
async def test_verdicts(handler: Handler, verdict: str) -> None:
    async with tenants(handler) as server:
        readings = await server.reader().read(["acme"], SHA)
    assert readings["acme"].verdict == verdict
    assert [s.path for s in server.seen] == ["/t/acme/buildinfo"]  # one request: nothing followed


@pytest.mark.anyio
async def test_a_body_over_the_cap_without_content_length_is_cut_off() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(100):  # 100 × 8 KiB, no Content-Length
            await response.write(b" " * 8192)
        await response.write_eof()
        return response

    async with tenants(chunked) as server:
        readings = await server.reader().read(["acme"], SHA)
    assert readings["acme"].verdict == "invalid" and "larger than" in readings["acme"].detail


@pytest.mark.anyio
async def test_a_dripping_tenant_meets_the_whole_exchange_deadline() -> None:
    """Each byte arrives well within any per-read socket timeout; the whole answer never does."""
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for byte in json.dumps({"git_sha": SHA}).encode():
                await response.write(bytes([byte]))
                await anyio.sleep(0.05)
        return response

    async with tenants(drip) as server:
        readings = await server.reader(timeout=0.3).read(["acme"], SHA)
    reading = readings["acme"]
    assert reading.verdict == "unreachable" and reading.detail == "timed out after 0.3s"
    assert reading.latency_ms >= 300


@pytest.mark.anyio
async def test_no_authorization_even_with_netrc_and_proxies_in_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with tenants(answer(200, {"wrong": "the proxy answered"})) as proxy, \
            tenants(answer(body={"git_sha": SHA})) as server:
        point_proxies_at(monkeypatch, proxy.base.replace("http://", "http://user:secret@"))
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login user password secret\ndefault login user password secret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        readings = await server.reader().read(["acme", "bravo"], SHA)
    assert all(r.verified for r in readings.values())
    assert proxy.seen == []
    for seen in server.seen:
        assert "authorization" not in seen.headers and "proxy-authorization" not in seen.headers
        assert not any("secret" in v for v in seen.headers.values())
        assert "cookie" not in seen.headers


@pytest.mark.anyio
async def test_cookies_set_by_one_tenant_never_reach_another() -> None:
    async with tenants(answer(body={"git_sha": SHA}, headers={"Set-Cookie": "session=stolen; Path=/"})) as server:
        by_name = server.base.replace("127.0.0.1", "localhost")  # a host name: cookie jars refuse IP hosts
        async with BuildinfoReader(lambda slug: f"{by_name}/t/{slug}", concurrency=1) as reader:
            await reader.read(["acme"], SHA)
            await reader.read(["bravo"], SHA)
    assert [s.headers.get("cookie") for s in server.seen] == [None, None]


@pytest.mark.anyio
async def test_hostile_slugs_are_never_requested() -> None:
    async with tenants(answer(body={"git_sha": SHA})) as server:
        with pytest.raises(Failed, match=r"rejected tenant slug 'evil\.example/x'"):
            await server.reader().read(["fine", "evil.example/x"], SHA)
    assert server.seen == []


@pytest.mark.anyio
@pytest.mark.parametrize("template, message", [
    ("http://user:pw@127.0.0.1:9/{slug}", "carries credentials"),
    ("http://:pw@127.0.0.1:9/{slug}", "carries credentials"),
    ("ftp://127.0.0.1/{slug}", "not a valid http"),
    ("http://127.0.0.1:99999/{slug}", "not a valid URL"),
])
async def test_a_bad_tenant_url_is_refused_before_any_request(template: str, message: str) -> None:
    reader = BuildinfoReader(lambda slug: template.format(slug=slug))
    with pytest.raises(Failed, match=message):
        await reader.read(["a"], SHA)
    assert reader.sessions_opened == 0


@pytest.mark.anyio
async def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.02)
        in_flight -= 1
        return web.json_response({"git_sha": SHA})

    async with tenants(handler) as server:
        readings = await server.reader(concurrency=3).read([f"t{i}" for i in range(12)], SHA)
    assert len(readings) == 12 and all(r.verified for r in readings.values())
    assert peak == 3
    assert sorted(server.slugs_seen()) == sorted(f"t{i}" for i in range(12))  # each exactly once


@pytest.mark.anyio
async def test_one_session_and_its_connections_serve_every_read_of_a_run() -> None:
    async with tenants(answer(body={"git_sha": SHA})) as server:
        async with server.reader(concurrency=1) as reader:
            for _ in range(3):
                await reader.read(["acme"], SHA)
            await reader.wait_verified(["acme", "bravo"], SHA, timeout=1.0, interval=0.01)
        assert reader.sessions_opened == 1
        assert len({s.peer for s in server.seen}) == 1 and len(server.seen) == 5  # one keep-alive connection
        server.seen.clear()
        unentered = server.reader(concurrency=1)
        for _ in range(3):
            await unentered.read(["acme"], SHA)
        assert unentered.sessions_opened == 3 and len({s.peer for s in server.seen}) == 3


def test_the_verify_concurrency_setting_reaches_the_reader() -> None:
    overlay = {"cp_url": "http://127.0.0.1:9", "allow_non_prod_cp_url": True,
               "tenant_url_template": "http://127.0.0.1:9/{slug}"}
    assert BuildinfoReader.for_settings(settings_for(overlay, sha=SHA)).concurrency == 64
    settings = resolve("verify", {"sha": SHA}, {"FLEETGATE_VERIFY_CONCURRENCY": "7"}, overlay=overlay)
    assert BuildinfoReader.for_settings(settings).concurrency == 7
    with pytest.raises(UsageError, match="verify-concurrency"):
        resolve("verify", {"sha": SHA, "verify_concurrency": "0"}, {}, overlay=overlay)


@pytest.mark.anyio
async def test_a_reading_without_expectation_records_the_sha() -> None:
    async with tenants(answer(body={"git_sha": OLD})) as server:
        readings = await server.reader().read(["a"], None)
    assert readings["a"].verdict == "read" and readings["a"].seen == OLD


@pytest.mark.anyio
async def test_wait_verified_rereads_only_the_unverified_until_they_boot() -> None:
    reads: dict[str, int] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        slug = request.path.split("/")[2]
        reads[slug] = reads.get(slug, 0) + 1
        booted = slug == "fast" or reads[slug] > 2
        return web.json_response({"git_sha": SHA if booted else OLD})

    async with tenants(handler) as server, server.reader() as reader:
        readings = await reader.wait_verified(["fast", "slow"], SHA, timeout=5.0, interval=0.01)
    assert all(r.verified for r in readings.values())
    assert reads == {"fast": 1, "slow": 3}


@pytest.mark.anyio
async def test_wait_verified_gives_up_at_the_timeout() -> None:
    async with tenants(answer(body={"git_sha": OLD})) as server, server.reader() as reader:
        start = anyio.current_time()
        readings = await reader.wait_verified(["stuck"], SHA, timeout=0.15, interval=0.05)
        elapsed = anyio.current_time() - start
    assert readings["stuck"].verdict == "stale"
    assert elapsed >= 0.15 and len(server.seen) >= 2


@pytest.mark.anyio
async def test_wait_verified_reads_once_with_a_zero_timeout() -> None:
    async with tenants(answer(body={"git_sha": OLD})) as server:
        readings = await server.reader().wait_verified(["a"], SHA, timeout=0, interval=1.0)
    assert readings["a"].verdict == "stale" and len(server.seen) == 1


def test_drift_report_counts_by_sha_and_verdict() -> None:
    def reading(slug: str, verdict: str, seen: str | None) -> Reading:
        return Reading(slug=slug, expected=SHA, seen=seen, verdict=verdict, latency_ms=1.0, detail="")

    report = drift_report({"a": reading("a", "verified", SHA), "b": reading("b", "stale", OLD),
                           "c": reading("c", "verified", SHA), "d": reading("d", "unreachable", None)})
    assert report["by_sha"] == {SHA: 2, OLD: 1, "unreachable": 1}
    assert (report["ok"], report["total"], report["verified"], report["drift"]) == (False, 4, 2, 2)
    assert list(report["tenants"]) == ["a", "b", "c", "d"]
    assert drift_report({})["ok"] is False  # zero tenants prove nothing


@pytest.mark.anyio
async def test_an_upper_case_sha_is_never_verified_but_is_kept_for_the_stand_down_rule() -> None:
    async with tenants(answer(body={"git_sha": NEWER})) as server:
        reading = (await server.reader().read(["acme"], SHA))["acme"]
    assert reading.verdict == "invalid" and not reading.verified
    assert reading.seen == NEWER  # policy.normal_sha lowers it; a newer commit there stands the run down


# ---------------------------------------------------------------- start-up: what `verify --only` imports

# The CLI's HTTP stack for Gitea and the CP (httpx through pipelines.cp, stamina), the Dagger SDK, the
# sandbox, rich: none is needed to read tenants' /buildinfo (aiohttp, when a reader opens).
NOT_ON_VERIFY_PATH = ("httpx", "rich", "dagger", "pipelines.sandbox", "pipelines.cp", "stamina", "aiohttp")


def test_importing_verify_pulls_in_no_http_client_stack() -> None:
    code = f"import sys, pipelines.verify; print(sorted(m for m in {NOT_ON_VERIFY_PATH!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.anyio
async def test_verify_only_reads_a_tenant_without_loading_the_cp_client(tmp_path: Path) -> None:
    async with tenants(answer(body={"git_sha": SHA})) as server:
        proc = await anyio.run_process(
            [sys.executable, "-X", "importtime", "-m", "pipelines", "verify", "--only", "alpha", "--sha", SHA,
             "--tenant-url-template", f"{server.base}/t/{{slug}}"],
            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr[-2000:]
    assert [s.path for s in server.seen] == ["/t/alpha/buildinfo"]
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    # httpx itself is still imported here: the settings check normalises the tenant URL with httpx.URL.
    assert "aiohttp" in imported  # the reader did open
    assert imported.isdisjoint({"pipelines.cp", "pipelines.http.client", "stamina", "dagger", "pipelines.sandbox"})
