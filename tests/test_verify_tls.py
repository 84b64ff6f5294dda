"""The `/buildinfo` reader over TLS: the system's trust store by default (a certificate nobody vouches
for is unreachable, never verified), and a given context when there is one (a local CA)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from pipelines.verify import VERIFIED, BuildinfoReader

SHA = "0123456789abcdef0123456789abcdef01234567"
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found (tests/system-packages.txt installs it)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@asynccontextmanager
async def tls_tenant(cert: Path, key: Path) -> AsyncIterator[str]:
    async def buildinfo(request: web.Request) -> web.Response:
        return web.json_response({"git_sha": SHA})

    app = web.Application()
    app.router.add_get("/t/{slug}/buildinfo", buildinfo)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_by_default_a_certificate_nobody_vouches_for_is_unreachable(self_signed: tuple[Path, Path]) -> None:
    async with tls_tenant(*self_signed) as base:
        async with BuildinfoReader(lambda slug: f"{base}/t/{slug}") as reader:
            readings = await reader.read(["alpha"], SHA)
    assert readings["alpha"].verdict == "unreachable"
    assert "Certificate" in readings["alpha"].detail or "SSL" in readings["alpha"].detail


async def test_a_given_context_is_the_one_trusted(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    trusted = ssl.create_default_context(cafile=str(cert))
    async with tls_tenant(*self_signed) as base:
        async with BuildinfoReader(lambda slug: f"{base}/t/{slug}", ssl_context=trusted) as reader:
            readings = await reader.read(["alpha", "bravo"], SHA)
    assert {r.verdict for r in readings.values()} == {VERIFIED}
