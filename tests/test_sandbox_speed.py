"""The sandbox at fleet size: its sockets answer without Nagle's wait, and the fast `/buildinfo` path
answers exactly what the routed one does."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from pipelines.sandbox import _bind, serve

pytestmark = pytest.mark.anyio


async def test_accepted_sandbox_sockets_have_tcp_nodelay() -> None:
    """Without it, every keep-alive answer written in two parts waited for the peer's delayed ACK."""
    listening = _bind(0)
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=listening)
    try:
        reader, writer = await asyncio.open_connection(*listening.getsockname()[:2])
        await reader.read()
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert len(seen) == 1 and seen[0] != 0


async def test_the_fast_buildinfo_path_answers_as_the_routed_one_and_is_recorded() -> None:
    async with serve("happy") as sb, httpx.AsyncClient() as client:
        w = sb.state
        w.tenants["alpha"].sha = w.deploy_sha
        w.tenants["bravo"].buildinfo = "bad-shape"  # a scripted fault: the routed handler answers it
        fast = await client.get(sb.tenant_url_template.format(slug="alpha") + "/buildinfo",
                                headers={"X-Probe": "1"})
        routed = await client.get(sb.tenant_url_template.format(slug="bravo") + "/buildinfo")
        missing = await client.get(sb.tenant_url_template.format(slug="nobody") + "/buildinfo")
        nested = await client.get(sb.tenant_url_template.format(slug="alpha/x") + "/buildinfo")
    assert fast.status_code == 200 and fast.headers["content-type"] == "application/json"
    assert fast.content == b'{"git_sha":"' + w.deploy_sha.encode() + b'","built_at":"2026-01-01T00:00:00Z"}'
    assert routed.json() == {"sha": w.tenants["bravo"].sha, "git_sha": None}
    assert missing.status_code == 404 and nested.status_code == 404
    assert [r.slug for r in w.buildinfo_reads] == ["alpha", "bravo", "nobody"]
    assert w.buildinfo_reads[0].headers["x-probe"] == "1"
    assert w.buildinfo_reads[0].headers is w.requests_to("tenants")[0].headers  # one dict, not two copies
