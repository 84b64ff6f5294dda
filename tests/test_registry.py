"""`fleetgate promote` against a real registry (Debian's docker-registry) on loopback.

Each test pushes its own small image (config blob, one layer blob, manifest) into its own repository,
then promotes through the CLI entry point (`run_verb`, the same path `fleetgate promote` takes) or
`promote()` directly, and checks the registry independently (`resolve`, plain HTTP, not the code
under test).
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import registry_server
from loopback import connection_recorder, serve_app
from registry_server import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    push_image,
    resolve,
    start_registry,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines.cli import run_verb
from pipelines.errors import Failed, UsageError
from pipelines.ledger import Ledger
from pipelines.output import Output
from pipelines.redact import Secret
from pipelines.registry import (
    Manifest,
    RegistryClient,
    digest_of,
    parse_challenge,
    parse_image,
    promote,
)
from pipelines.settings import resolve as resolve_settings

PASSWORD = "pr0mote-Pass-9f3c1"  # what the basic and token registries accept for user "promoter"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry-anon")) as r:
        yield r


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry-basic"), "basic", password=PASSWORD) as r:
        yield r


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry-token"), "token", password=PASSWORD) as r:
        yield r


@pytest.fixture
def repo() -> str:
    return f"fleet/app-{secrets.token_hex(4)}"


@pytest.fixture
def sha() -> str:
    return secrets.token_hex(20)


@pytest.fixture(autouse=True)
def _no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./fleetgate.toml


def verified_ledger(path: Path, sha: str, *, verified: bool = True, dry_run: bool = False) -> Path:
    ledger = Ledger(path, "run-1")
    ledger.record("plan", sha=sha)
    ledger.record("done", sha=sha, verified=verified, dry_run=dry_run)
    return path


def cli_promote(capsys: pytest.CaptureFixture[str], sha: str, image: str, ledger: Path,
                env: dict[str, str] | None = None, **flags: Any) -> tuple[int, dict[str, Any], str]:
    """`fleetgate promote --json …` → (exit code, the JSON result, everything printed)."""
    params: dict[str, Any] = {"sha": sha, "image": image, "ledger": str(ledger), "json_mode": True, **flags}
    code = run_verb("promote", params, env=dict(env or {}))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    result = json.loads(lines[-1]) if lines else {}
    return code, result, captured.out + captured.err


# ---------------------------------------------------------------- --image: usage, decided before any contact


@pytest.mark.parametrize(("text", "origin", "repository"), [
    ("127.0.0.1:5000/org/app", "http://127.0.0.1:5000", "org/app"),
    ("localhost:5000/app", "http://localhost:5000", "app"),
    ("[::1]:5000/org/app", "http://[::1]:5000", "org/app"),
    ("registry.example.com/org/sub/app", "https://registry.example.com", "org/sub/app"),
    ("registry.example.com:8443/org/app", "https://registry.example.com:8443", "org/app"),
    ("http://registry.internal:5000/org/app", "http://registry.internal:5000", "org/app"),
    ("https://127.0.0.1:5000/org/app", "https://127.0.0.1:5000", "org/app"),
    ("docker.io/nginx", "https://registry-1.docker.io", "library/nginx"),
    ("ghcr.io/org/my_app.v2", "https://ghcr.io", "org/my_app.v2"),
])
def test_image_parsing_chooses_origin_and_repository(text: str, origin: str, repository: str) -> None:
    ref = parse_image(text)
    assert (ref.origin, ref.repository) == (origin, repository)


@pytest.mark.parametrize(("text", "why"), [
    ("org/app", "registry host"),
    ("registry.example.com", r"host\[:port\]/repository"),
    ("registry.example.com/org/app:latest", "without a tag"),
    ("registry.example.com/org/app@sha256:" + "0" * 64, "without a digest"),
    ("user:pw@registry.example.com/org/app", "credentials"),
    ("registry.example.com/Org/App", "not a valid repository"),
    ("ftp://registry.example.com/org/app", "http:// or https://"),
    ("registry.example.com:99999/org/app", "malformed"),
])
def test_bad_image_is_a_usage_error(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_image(text)


def test_bad_input_exits_2_and_contacts_nothing(capsys: pytest.CaptureFixture[str], sha: str,
                                                 tmp_path: Path) -> None:
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)
    with connection_recorder() as rec:
        bad = [
            {"image": f"127.0.0.1:{rec.port}/Fleet/App"},
            {"image": f"127.0.0.1:{rec.port}/fleet/app", "promote_tag": "-latest"},
            {"image": f"127.0.0.1:{rec.port}/fleet/app", "promote_tag": f"staging-{sha[:7]}"},
        ]
        for flags in bad:
            image = flags.pop("image")
            code, result, _ = cli_promote(capsys, sha, image, ledger, **flags)
            assert code == 2, flags
            assert result["exit_code"] == 2
        assert rec.settle() == 0


# ---------------------------------------------------------------- promotion on an anonymous registry


def test_promote_docker_manifest_with_ledger_evidence(capsys: pytest.CaptureFixture[str], registry: Registry,
                                                      repo: str, sha: str, tmp_path: Path) -> None:
    pushed = push_image(registry, repo, f"staging-{sha[:7]}", kind="docker")
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)
    assert resolve(registry, repo, "latest")[0] == 404

    code, result, printed = cli_promote(capsys, sha, registry.image(repo), ledger)

    assert code == 0, printed
    assert result["digest"] == pushed.digest
    assert result["media_type"] == DOCKER_MANIFEST
    assert result["evidence"] == "ledger"
    assert result["changed"] is True and result["previous_digest"] is None
    assert resolve(registry, repo, "latest") == (200, pushed.digest, DOCKER_MANIFEST)
    assert "evidence: ledger" in printed

    # Again: nothing to change, still checked.
    code, result, _ = cli_promote(capsys, sha, registry.image(repo), ledger)
    assert code == 0 and result["changed"] is False and result["digest"] == pushed.digest


@pytest.mark.parametrize(("kind", "media_type"), [("oci", OCI_MANIFEST), ("oci-index", OCI_INDEX)])
def test_promote_oci_manifest_and_index_copies_exact_bytes(
        capsys: pytest.CaptureFixture[str], registry: Registry, repo: str, sha: str, tmp_path: Path,
        kind: str, media_type: str) -> None:
    pushed = push_image(registry, repo, f"staging-{sha[:7]}", kind=kind)
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)

    code, result, printed = cli_promote(capsys, sha, registry.image(repo), ledger, promote_tag="stable")

    assert code == 0, printed
    assert (result["digest"], result["media_type"]) == (pushed.digest, media_type)
    assert result["promote_tag"] == "stable"
    assert resolve(registry, repo, "stable") == (200, pushed.digest, media_type)
    served = registry.client().get(f"/v2/{repo}/manifests/stable", headers={"Accept": media_type}).content
    assert served == pushed.body  # byte for byte, not re-serialised


def test_promote_moves_an_existing_tag(capsys: pytest.CaptureFixture[str], registry: Registry, repo: str,
                                       sha: str, tmp_path: Path) -> None:
    old = push_image(registry, repo, "latest", kind="docker", salt="old release")
    new = push_image(registry, repo, f"staging-{sha[:7]}", kind="docker", salt="new release")
    assert old.digest != new.digest
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)

    code, result, printed = cli_promote(capsys, sha, registry.image(repo), ledger)

    assert code == 0, printed
    assert result["previous_digest"] == old.digest and result["digest"] == new.digest
    assert resolve(registry, repo, "latest")[1] == new.digest
    assert resolve(registry, repo, f"staging-{sha[:7]}")[1] == new.digest  # the source tag is untouched


# ---------------------------------------------------------------- refusals: exit 1, nothing written


@pytest.mark.parametrize("ledger_shape", ["absent", "dry-run", "not-verified", "other-sha"])
def test_refuses_without_a_verified_rollout(capsys: pytest.CaptureFixture[str], registry: Registry, repo: str,
                                            sha: str, tmp_path: Path, ledger_shape: str) -> None:
    push_image(registry, repo, f"staging-{sha[:7]}")
    path = tmp_path / "ledger.jsonl"
    if ledger_shape == "dry-run":
        verified_ledger(path, sha, dry_run=True)
    elif ledger_shape == "not-verified":
        verified_ledger(path, sha, verified=False)
    elif ledger_shape == "other-sha":
        verified_ledger(path, secrets.token_hex(20))

    code, result, printed = cli_promote(capsys, sha, registry.image(repo), path)

    assert code == 1, printed
    assert "refusing to promote" in result["error"]
    expected = "no ledger at" if ledger_shape == "absent" else "no verified non-dry-run rollout"
    assert expected in result["error"]
    assert "no --cp-token" in result["error"]
    assert resolve(registry, repo, "latest")[0] == 404


def test_missing_source_tag_exits_1(capsys: pytest.CaptureFixture[str], registry: Registry, repo: str,
                                    sha: str, tmp_path: Path) -> None:
    push_image(registry, repo, "staging-0000000")  # the repository exists, the SHA's tag does not
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)

    code, result, _ = cli_promote(capsys, sha, registry.image(repo), ledger)

    assert code == 1
    assert f"staging-{sha[:7]} does not exist" in result["error"]
    assert resolve(registry, repo, "latest")[0] == 404


def test_image_annotated_with_another_revision_is_refused(capsys: pytest.CaptureFixture[str],
                                                          registry: Registry, repo: str, sha: str,
                                                          tmp_path: Path) -> None:
    push_image(registry, repo, f"staging-{sha[:7]}", kind="oci", revision="f" * 40)
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)

    code, result, _ = cli_promote(capsys, sha, registry.image(repo), ledger)

    assert code == 1 and "org.opencontainers.image.revision" in result["error"]
    assert resolve(registry, repo, "latest")[0] == 404


# ---------------------------------------------------------------- auth: basic and the token flow


def _credential_forms() -> list[str]:
    return [PASSWORD, base64.b64encode(f"promoter:{PASSWORD}".encode()).decode()]


def test_basic_auth(capsys: pytest.CaptureFixture[str], basic_registry: Registry, repo: str, sha: str,
                    tmp_path: Path) -> None:
    pushed = push_image(basic_registry, repo, f"staging-{sha[:7]}")
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)
    image = basic_registry.image(repo)

    code, result, printed = cli_promote(capsys, sha, image, ledger)
    assert code == 1 and "asks for credentials" in result["error"]

    code, result, printed = cli_promote(capsys, sha, image, ledger, registry_username="promoter",
                                        env={"REGISTRY_PASSWORD": "wrong-password-123"})
    assert code == 1 and "credentials refused" in result["error"]
    assert resolve(basic_registry, repo, "latest")[0] == 404

    code, result, printed = cli_promote(capsys, sha, image, ledger, registry_username="promoter",
                                        env={"REGISTRY_PASSWORD": PASSWORD})
    assert code == 0, printed
    assert resolve(basic_registry, repo, "latest")[1] == pushed.digest
    for form in _credential_forms():
        assert form not in printed


def test_token_flow(capsys: pytest.CaptureFixture[str], token_registry: Registry, repo: str, sha: str,
                    tmp_path: Path) -> None:
    pushed = push_image(token_registry, repo, f"staging-{sha[:7]}", kind="oci")
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)
    service = token_registry.token_service
    assert service is not None
    service.requests.clear()

    code, result, printed = cli_promote(capsys, sha, token_registry.image(repo), ledger)
    assert code == 1 and "anonymous access refused" in result["error"]  # an anonymous token grants nothing
    assert all(r["authorization"] is None for r in service.requests)

    service.requests.clear()
    code, result, printed = cli_promote(capsys, sha, token_registry.image(repo), ledger,
                                        registry_username="promoter", env={"REGISTRY_PASSWORD": PASSWORD})
    assert code == 0, printed
    asked = list(service.requests)
    scopes = [r["query"]["scope"][0] for r in asked]
    assert scopes == [f"repository:{repo}:pull", f"repository:{repo}:pull,push"]
    assert all(r["query"]["service"] == ["fleetgate-test-registry"] for r in asked)
    assert all(r["authorization"] == "Basic " + _credential_forms()[1] for r in asked)
    assert resolve(token_registry, repo, "latest") == (200, pushed.digest, OCI_MANIFEST)
    for form in _credential_forms():
        assert form not in printed
    assert "eyJ" not in printed  # no JWT either


# ---------------------------------------------------------------- evidence from a live verify (the sandbox)


def _settings(sandbox_overlay: dict[str, Any], image: str, ledger: Path) -> Any:
    return resolve_settings("promote", {"image": image, "ledger": str(ledger)}, {}, overlay=sandbox_overlay)


@pytest.mark.anyio
async def test_live_verify_of_the_whole_fleet_is_evidence(registry: Registry, repo: str,
                                                           tmp_path: Path) -> None:
    from pipelines.sandbox import serve

    async with serve("happy") as sb:
        world = sb.state
        for tenant in world.tenants.values():
            tenant.sha = world.deploy_sha
        pushed = push_image(registry, repo, f"staging-{world.deploy_sha[:7]}")
        stream = io.StringIO()
        result = await promote(_settings(sb.overlay, registry.image(repo), tmp_path / "none.jsonl"),
                               Output(stream=stream))
        reads = {r.path for r in world.requests_to("tenants")}
    assert result["evidence"] == "live-verify" and result["tenants"] == len(world.tenants)
    assert len(reads) == len(world.tenants)
    assert resolve(registry, repo, "latest")[1] == pushed.digest
    assert "live verify" in stream.getvalue()


@pytest.mark.anyio
async def test_live_verify_with_one_tenant_behind_refuses(registry: Registry, repo: str,
                                                          tmp_path: Path) -> None:
    from pipelines.sandbox import serve

    async with serve("happy") as sb:
        world = sb.state
        slugs = sorted(world.tenants)
        for slug in slugs[1:]:
            world.tenants[slug].sha = world.deploy_sha  # the first one still runs the previous release
        push_image(registry, repo, f"staging-{world.deploy_sha[:7]}")
        with pytest.raises(Failed, match=rf"1 of {len(slugs)} tenants do not report .*{slugs[0]} \(stale\)"):
            await promote(_settings(sb.overlay, registry.image(repo), tmp_path / "none.jsonl"),
                          Output(stream=io.StringIO()))
    assert resolve(registry, repo, "latest")[0] == 404


# ---------------------------------------------------------------- transport: retries, lies, redirects, realms


def _front(upstream: str, answer: Any = None, rewrite: dict[str, str] | None = None) -> Starlette:
    """A loopback front for the real registry: `answer(request, n)` may return a Response, else it
    proxies; `rewrite` replaces response headers on the way back."""
    count = {"n": 0}

    async def handle(request: Request) -> Response:
        count["n"] += 1
        early = answer(request, count["n"]) if answer is not None else None
        if early is not None:
            return early  # type: ignore[no-any-return]
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            resp = await client.request(request.method, upstream + request.url.path, headers=headers,
                                        content=await request.body())
        keep = {k: v for k, v in resp.headers.items()
                if k.lower() in ("content-type", "docker-content-digest", "www-authenticate")}
        keep.update(rewrite or {})
        return Response(resp.content, status_code=resp.status_code, headers=keep)

    app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "HEAD", "PUT"])])
    app.state.count = count
    return app


@pytest.mark.anyio
async def test_5xx_and_429_are_retried_then_it_works(registry: Registry, repo: str) -> None:
    pushed = push_image(registry, repo, "staging-1234567")
    statuses = {1: 503, 2: 429, 3: 502}
    app = _front(registry.url, lambda r, n: Response(status_code=statuses[n], headers={"Retry-After": "0"})
                 if n in statuses else None)
    async with serve_app(app) as url:
        ref = parse_image(f"{url.removeprefix('http://')}/{repo}")
        async with RegistryClient(ref, retry_wait=0.01, retry_deadline=10) as client:
            assert await client.resolve_digest("staging-1234567") == pushed.digest
    assert app.state.count["n"] == 4


@pytest.mark.anyio
async def test_persistent_5xx_fails_closed(registry: Registry, repo: str) -> None:
    app = _front(registry.url, lambda r, n: Response(status_code=500))
    async with serve_app(app) as url:
        ref = parse_image(f"{url.removeprefix('http://')}/{repo}")
        async with RegistryClient(ref, retry_wait=0.01, retry_deadline=10, retry_attempts=3) as client:
            with pytest.raises(Failed, match="HTTP 500 after retrying"):
                await client.resolve_digest("latest")
    assert app.state.count["n"] == 3


@pytest.mark.anyio
async def test_a_manifest_put_is_never_retried_by_the_transport(registry: Registry, repo: str) -> None:
    puts: list[int] = []

    def answer(request: Request, n: int) -> Response | None:
        if request.method == "PUT":
            puts.append(n)
            return Response(status_code=503, headers={"Retry-After": "0"})
        return None

    app = _front(registry.url, answer)
    body = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    manifest = Manifest(digest=digest_of(body), media_type="application/vnd.oci.image.manifest.v1+json", body=body)
    async with serve_app(app) as url:
        ref = parse_image(f"{url.removeprefix('http://')}/{repo}")
        async with RegistryClient(ref, retry_wait=0.01, retry_deadline=10) as client:
            with pytest.raises(Failed, match="PUT manifest 'latest' answered HTTP 503"):
                await client.put_manifest("latest", manifest)
    assert len(puts) == 1


@pytest.mark.anyio
async def test_connection_refused_fails_within_the_deadline() -> None:
    with connection_recorder() as rec:
        port = rec.port
    ref = parse_image(f"127.0.0.1:{port}/fleet/app")  # closed now: connections are refused
    async with RegistryClient(ref, retry_wait=0.01, retry_deadline=0.5, retry_attempts=3) as client:
        with pytest.raises(Failed, match="ConnectError"):
            await client.resolve_digest("latest")


@pytest.mark.anyio
async def test_digest_that_does_not_match_the_bytes_is_refused(registry: Registry, repo: str) -> None:
    push_image(registry, repo, "staging-1234567")
    app = _front(registry.url, rewrite={"Docker-Content-Digest": "sha256:" + "e" * 64})
    async with serve_app(app) as url:
        ref = parse_image(f"{url.removeprefix('http://')}/{repo}")
        async with RegistryClient(ref, retry_wait=0.01) as client:
            with pytest.raises(Failed, match="hash to"):
                await client.get_manifest("staging-1234567")


@pytest.mark.anyio
async def test_redirects_are_not_followed(registry: Registry, repo: str) -> None:
    with connection_recorder() as rec:
        app = _front(registry.url, lambda r, n: Response(status_code=307,
                                                         headers={"Location": f"{rec.url}/elsewhere"}))
        async with serve_app(app) as url:
            ref = parse_image(f"{url.removeprefix('http://')}/{repo}")
            async with RegistryClient(ref, "promoter", Secret(PASSWORD), retry_wait=0.01) as client:
                with pytest.raises(Failed, match="redirect"):
                    await client.resolve_digest("latest")
        assert rec.settle() == 0


@pytest.mark.anyio
async def test_credentials_are_not_sent_to_a_plain_http_realm_elsewhere(registry: Registry,
                                                                         repo: str) -> None:
    challenge = 'Bearer realm="http://auth.example.com/token",service="registry",scope="repository:x:pull"'
    app = _front(registry.url,
                 lambda r, n: Response(status_code=401, headers={"WWW-Authenticate": challenge}))
    async with serve_app(app) as url:
        ref = parse_image(f"{url.removeprefix('http://')}/{repo}")
        async with RegistryClient(ref, "promoter", Secret(PASSWORD), retry_wait=0.01) as client:
            with pytest.raises(Failed, match="not https; refusing to send credentials"):
                await client.resolve_digest("latest")


@pytest.mark.anyio
async def test_a_put_the_registry_did_not_keep_fails_the_check_after(registry: Registry, repo: str, sha: str,
                                                                      tmp_path: Path) -> None:
    push_image(registry, repo, f"staging-{sha[:7]}")
    ledger = verified_ledger(tmp_path / "ledger.jsonl", sha)
    seen: list[tuple[str, str | None]] = []

    def swallow_puts(request: Request, n: int) -> Response | None:
        seen.append((request.method, request.headers.get("authorization")))
        return Response(status_code=201) if request.method == "PUT" else None

    app = _front(registry.url, swallow_puts)
    async with serve_app(app) as url:
        settings = resolve_settings("promote", {"sha": sha, "image": f"{url.removeprefix('http://')}/{repo}",
                                                "ledger": str(ledger)}, {})
        with pytest.raises(Failed, match="after the PUT, 'latest' resolves to None"):
            await promote(settings, Output(stream=io.StringIO()))
    assert ("PUT", None) in seen  # it was sent; no credential goes to a registry that did not ask
    assert all(auth is None for _, auth in seen)


def test_missing_registry_binary_fails_the_tests_not_skips(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_server, "BINARY", "docker-registry-not-installed")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y docker-registry"):
        with start_registry(tmp_path / "never"):
            pass


def test_challenge_parsing() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:org/app:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                      "scope": "repository:org/app:pull,push"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
