"""Verification: /buildinfo verdicts, no auth to tenants, bounded concurrency, the drift report, `verify`."""

from __future__ import annotations

import io
import json
import re
import socket
from typing import Any

import anyio
import httpx
import pytest

from pipelines.errors import Failed, UsageError
from pipelines.output import Output
from pipelines.sandbox import serve
from pipelines.settings import Settings, resolve
from pipelines.verify import BuildinfoReader, Reading, drift_report, only_slugs, run

SHA = "c" * 40
OLD = "0" * 40


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
        start = anyio.current_time()
        readings = await reader.read([*sorted(w.tenants), "hotel"], target)
        elapsed = anyio.current_time() - start
        verdicts = {slug: r.verdict for slug, r in readings.items()}
        assert verdicts == {"alpha": "verified", "bravo": "stale", "charlie": "invalid", "delta": "invalid",
                            "echo": "redirect", "foxtrot": "unreachable", "golf": "unreachable",
                            "hotel": "unreachable"}
        assert readings["bravo"].seen == w.tenants["bravo"].sha and readings["alpha"].seen == target
        assert "timed out" in readings["golf"].detail and readings["golf"].latency_ms >= 250
        assert "connection error" in readings["hotel"].detail
        assert elapsed < 2.0  # the slow tenant cost one timeout, concurrently with the rest
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
        start = anyio.current_time()
        with pytest.raises(Failed, match=r"1 of 7 .*: delta") as caught:
            await run(settings_for(sb.overlay, verify_timeout="0.2"), out)
        assert anyio.current_time() - start < 2.0
        assert caught.value.details["by_sha"] == {sb.state.deploy_sha: 6, "unreachable": 1}


# ---------------------------------------------------------------- unit tests over httpx.MockTransport


def fleet(handler: Any, **kwargs: Any) -> BuildinfoReader:
    return BuildinfoReader(lambda slug: f"http://{slug}.tenants.test", transport=httpx.MockTransport(handler),
                           **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("response, verdict", [
    (httpx.Response(200, json={"git_sha": SHA}), "verified"),
    (httpx.Response(200, json={"git_sha": OLD}), "stale"),
    (httpx.Response(200, json={"git_sha": SHA.upper()}), "invalid"),  # exactly the SHA, not a look-alike
    (httpx.Response(200, json={"git_sha": SHA[:7]}), "invalid"),
    (httpx.Response(200, json={"git_sha": 42}), "invalid"),
    (httpx.Response(200, json=[SHA]), "invalid"),
    (httpx.Response(200, text="ok"), "invalid"),
    (httpx.Response(200, content=b"{" + b" " * 70_000 + b"}"), "invalid"),
    (httpx.Response(301, headers={"Location": "http://elsewhere.test/"}), "redirect"),
    (httpx.Response(404), "http-404"),
    (httpx.Response(500), "http-500"),
    (httpx.Response(503), "unreachable"),
])
async def test_verdicts(response: httpx.Response, verdict: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return response

    readings = await fleet(handler).read(["acme"], SHA)
    assert readings["acme"].verdict == verdict
    assert seen == ["http://acme.tenants.test/buildinfo"]  # one request: nothing followed


@pytest.mark.anyio
async def test_a_reading_without_expectation_records_the_sha() -> None:
    readings = await fleet(lambda r: httpx.Response(200, json={"git_sha": OLD})).read(["a"], None)
    assert readings["a"].verdict == "read" and readings["a"].seen == OLD


@pytest.mark.anyio
async def test_hostile_slugs_are_never_requested() -> None:
    requested: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(request)
        return httpx.Response(200, json={"git_sha": SHA})

    with pytest.raises(Failed, match=r"rejected tenant slug 'evil\.example/x'"):
        await fleet(handler).read(["fine", "evil.example/x"], SHA)
    assert requested == []


@pytest.mark.anyio
async def test_a_tenant_url_with_credentials_is_refused() -> None:
    reader = BuildinfoReader(lambda slug: f"http://user:pw@{slug}.test",
                             transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with pytest.raises(Failed, match="carries credentials"):
        await reader.read(["a"], SHA)


@pytest.mark.anyio
async def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={"git_sha": SHA})

    readings = await fleet(handler, concurrency=3).read([f"t{i}" for i in range(12)], SHA)
    assert len(readings) == 12 and all(r.verified for r in readings.values())
    assert peak == 3


@pytest.mark.anyio
async def test_wait_verified_rereads_only_the_unverified_until_they_boot() -> None:
    reads: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        slug = request.url.host.split(".")[0]
        reads[slug] = reads.get(slug, 0) + 1
        booted = slug == "fast" or reads[slug] > 2
        return httpx.Response(200, json={"git_sha": SHA if booted else OLD})

    readings = await fleet(handler).wait_verified(["fast", "slow"], SHA, timeout=5.0, interval=0.01)
    assert all(r.verified for r in readings.values())
    assert reads == {"fast": 1, "slow": 3}


@pytest.mark.anyio
async def test_wait_verified_gives_up_at_the_timeout() -> None:
    reads = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal reads
        reads += 1
        return httpx.Response(200, json={"git_sha": OLD})

    start = anyio.current_time()
    readings = await fleet(handler).wait_verified(["stuck"], SHA, timeout=0.15, interval=0.05)
    elapsed = anyio.current_time() - start
    assert readings["stuck"].verdict == "stale"
    assert 0.15 <= elapsed < 1.0
    assert 2 <= reads <= 5


@pytest.mark.anyio
async def test_wait_verified_reads_once_with_a_zero_timeout() -> None:
    readings = await fleet(lambda r: httpx.Response(200, json={"git_sha": OLD})).wait_verified(
        ["a"], SHA, timeout=0, interval=1.0)
    assert readings["a"].verdict == "stale"


def test_drift_report_counts_by_sha_and_verdict() -> None:
    def reading(slug: str, verdict: str, seen: str | None) -> Reading:
        return Reading(slug=slug, expected=SHA, seen=seen, verdict=verdict, latency_ms=1.0, detail="")

    report = drift_report({"a": reading("a", "verified", SHA), "b": reading("b", "stale", OLD),
                           "c": reading("c", "verified", SHA), "d": reading("d", "unreachable", None)})
    assert report["by_sha"] == {SHA: 2, OLD: 1, "unreachable": 1}
    assert (report["ok"], report["total"], report["verified"], report["drift"]) == (False, 4, 2, 2)
    assert list(report["tenants"]) == ["a", "b", "c", "d"]
    assert drift_report({})["ok"] is False  # zero tenants prove nothing
