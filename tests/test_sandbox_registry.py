"""`promote --sandbox` writes only to the registry the sandbox serves; never to a real one on sandbox evidence."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from loopback import connection_recorder, run_main

from pipelines.errors import Failed, UsageError
from pipelines.output import Output
from pipelines.registry import promote
from pipelines.sandbox import serve
from pipelines.sandbox.registry_app import OCI_MANIFEST, REPOSITORY, digest_of, image_manifest
from pipelines.settings import resolve

pytestmark = pytest.mark.anyio


def quiet() -> Output:
    return Output(stream=io.StringIO(), stdout=io.StringIO())


async def test_the_registry_serves_each_commits_image_and_latest_on_the_fleets_sha() -> None:
    async with serve("happy") as sb, httpx.AsyncClient(base_url=sb.registry_url, timeout=10) as client:
        sha = sb.state.deploy_sha
        running = next(iter(sb.state.tenant_shas().values()))
        assert (await client.get("/v2/")).status_code == 200
        head = await client.head(f"/v2/{REPOSITORY}/manifests/staging-{sha[:7]}")
        digest = head.headers["Docker-Content-Digest"]
        assert head.status_code == 200 and head.content == b""
        got = await client.get(f"/v2/{REPOSITORY}/manifests/{digest}")
        assert got.headers["Content-Type"] == OCI_MANIFEST and digest_of(got.content) == digest
        assert json.loads(got.content)["annotations"]["org.opencontainers.image.revision"] == sha
        latest = await client.get(f"/v2/{REPOSITORY}/manifests/latest")
        assert latest.content == image_manifest(running)
        missing = await client.get(f"/v2/{REPOSITORY}/manifests/staging-0000000")
        assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        bad = await client.put(f"/v2/{REPOSITORY}/manifests/latest", content=b"{}",
                               headers={"Content-Type": "text/plain"})
        assert bad.status_code == 400 and sb.registry.pushes == []
        assert (await client.get("/v2/acme/app/blobs/sha256:" + "0" * 64)).status_code == 404


async def test_promote_re_points_latest_in_the_sandbox_registry_on_a_verified_fleet(tmp_path: Path) -> None:
    async with serve("happy") as sb:
        for tenant in sb.state.tenants.values():
            tenant.sha = sb.state.deploy_sha  # the fleet is verified live: evidence without a ledger
        # No ledger at all (a rehearsal ledger left in the working directory must not count here).
        settings = resolve("promote", {}, {}, overlay=sb.overlay).with_(ledger=str(tmp_path / "none.jsonl"))
        assert settings.image == f"{sb.registry_url.removeprefix('http://')}/{REPOSITORY}"
        result = await promote(settings, quiet())
        staging = sb.registry.tag_digest(f"staging-{sb.state.deploy_sha[:7]}")
        assert result["changed"] is True and result["digest"] == staging
        assert result["evidence"] == "live-verify"
        assert sb.registry.pushes == [(REPOSITORY, "latest", staging)]
        assert sb.registry.tag_digest("latest") == staging


async def test_without_evidence_nothing_is_pushed() -> None:
    async with serve("happy") as sb:  # the fleet still runs the previous release, the ledger is empty
        settings = resolve("promote", {}, {}, overlay=sb.overlay).with_(ledger="/nonexistent/ledger.jsonl")
        with pytest.raises(Failed, match="refusing to promote"):
            await promote(settings, quiet())
    assert sb.registry.pushes == []


async def test_a_registry_outside_the_sandbox_is_refused() -> None:
    async with serve("happy") as sb:
        settings = resolve("promote", {"image": "registry.example.com/acme/app"}, {}, overlay=sb.overlay)
        with pytest.raises(UsageError, match="outside the sandbox"):
            sb.confine(settings)
        sb.confine(resolve("promote", {}, {}, overlay=sb.overlay))  # its own registry: fine


def test_cli_promote_sandbox_after_a_sandbox_deploy(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "deploy-production", "--sandbox")
    assert code == 0, err
    code, out, err = run_main(monkeypatch, capsys, "promote", "--sandbox", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["evidence"] == "ledger" and result["ledger"] == "fleetgate-sandbox-ledger.jsonl"
    assert result["image"].startswith("127.0.0.1:") and result["changed"] is True
    assert not (tmp_path / "fleetgate-ledger.jsonl").exists()


def test_cli_promote_sandbox_with_a_real_registry_is_refused_before_contacting_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fleetgate-sandbox-ledger.jsonl").write_text("", encoding="utf-8")
    with connection_recorder() as real:  # a "real" registry on loopback: it must never be spoken to
        code, _, err = run_main(monkeypatch, capsys, "promote", "--sandbox", "--image",
                                  f"127.0.0.1:{real.port}/acme/app")
        assert real.settle() == 0
    assert code == 2
    assert "outside the sandbox" in err and err.strip().count("\n") <= 1
