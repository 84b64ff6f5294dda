"""A real OCI registry on loopback for the promote tests: Debian's `docker-registry` (distribution 2.8).

`start_registry` writes a config (filesystem storage in a temp dir, 127.0.0.1:<free port>), optionally
with htpasswd (bcrypt through the system's libcrypt) or token auth (a tiny token service on loopback
that signs RS256 JWTs with a throwaway key made by `openssl`), starts the binary, waits until `/v2/`
answers, and stops it afterwards. A missing binary FAILS the tests with the install command: CI
installs it (`apt-get install docker-registry`), so a skip would hide a broken CI.

`push_image` pushes a small image itself through the distribution API (config blob, one layer blob,
a manifest of the Docker or OCI media type), so the tests own every byte they promote.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.loopback import stop_process

BINARY = "docker-registry"
INSTALL_HINT = "apt-get install -y docker-registry (CI: .ci/run installs it)"
STARTUP_DEADLINE = 20.0  # seconds for the registry to answer /v2/
ISSUER = "fleetgate-test-issuer"
SERVICE = "fleetgate-test-registry"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd (the registry accepts only bcrypt), from libcrypt (libxcrypt)."""
    path = ctypes.util.find_library("crypt")
    if path is None:
        pytest.fail("libcrypt not found; htpasswd needs bcrypt hashes (Debian: libcrypt1)")
    lib = ctypes.CDLL(path)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)  # cost 5: fast tests, still real bcrypt
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2y$"):
        pytest.fail("libcrypt cannot make bcrypt hashes; htpasswd auth cannot be tested")
    return str(hashed.decode())


# ---------------------------------------------------------------- token service (Docker token flow)


@dataclass
class TokenService:
    """Issues registry JWTs (RS256, x5c header) to a known user; records what it was asked."""

    key_path: Path
    cert_der: bytes
    username: str
    password: str
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_path)],
            input=signing_input.encode(), capture_output=True, check=True, timeout=30,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def answer(self, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.requests.append({"query": query, "authorization": authorization})
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if authorization is not None and authorization != expected:
            return 401, {"details": "bad credentials"}
        access = []
        if authorization == expected:  # anonymous callers get a token that grants nothing
            for scope in query.get("scope", []):
                kind, name, actions = scope.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": self.username if authorization else "", "aud": SERVICE,
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8),
                  "access": access}
        return 200, {"token": self.sign(claims), "expires_in": 300}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextmanager
def serve_token_service(workdir: Path, username: str, password: str) -> Iterator[TokenService]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found; the token-auth registry needs it (apt-get install -y openssl)")
    key, cert = workdir / "token-key.pem", workdir / "token-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=fleetgate-test-token"],
                   capture_output=True, check=True, timeout=60)
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"],
                         capture_output=True, check=True, timeout=30).stdout
    service = TokenService(key_path=key, cert_der=der, username=username, password=password)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, body = service.answer(parse_qs(parts.query), self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- the registry process


@dataclass
class Registry:
    """A running registry: `image_host` is what goes before the repository in --image."""

    url: str
    image_host: str
    auth: str  # "none" | "basic" | "token"
    username: str = ""
    password: str = ""
    token_service: TokenService | None = None
    log_path: Path | None = None
    _http: httpx.Client | None = None

    def image(self, repository: str) -> str:
        return f"{self.image_host}/{repository}"

    def client(self) -> httpx.Client:
        """A plain HTTP client for test set-up and checks (not the code under test); one per registry."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def auth_headers(self, repository: str) -> dict[str, str]:
        if self.auth == "basic":
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if self.auth == "token":
            assert self.token_service is not None
            basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            status, body = self.token_service.answer({"scope": [f"repository:{repository}:pull,push"]}, basic)
            assert status == 200
            return {"Authorization": f"Bearer {body['token']}"}
        return {}


def _config(root: Path, port: int, auth: dict[str, Any] | None) -> str:
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth:
        config["auth"] = auth
    return json.dumps(config)  # JSON is YAML


@contextmanager
def start_registry(root: Path, auth: str = "none", *, username: str = "promoter",
                   password: str = "") -> Iterator[Registry]:
    binary = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").is_file() else None)
    if binary is None:
        pytest.fail(f"{BINARY} is not installed; the promote tests need a real registry: {INSTALL_HINT}")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with _auth_config(root, auth, username, password) as (auth_config, token_service):
        config_path = root / "config.yml"
        config_path.write_text(_config(root, port, auth_config), encoding="utf-8")
        log_path = root / "registry.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", "")})
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_answering(url, proc, log_path)
            registry = Registry(url=url, image_host=f"127.0.0.1:{port}", auth=auth, username=username,
                                password=password, token_service=token_service, log_path=log_path)
            yield registry
            registry.close()
        finally:
            stop_process(proc)


@contextmanager
def _auth_config(root: Path, auth: str, username: str,
                 password: str) -> Iterator[tuple[dict[str, Any] | None, TokenService | None]]:
    if auth == "none":
        yield None, None
    elif auth == "basic":
        htpasswd = root / "htpasswd"
        htpasswd.write_text(f"{username}:{bcrypt_hash(password)}\n", encoding="utf-8")
        yield {"htpasswd": {"realm": "fleetgate-test", "path": str(htpasswd)}}, None
    elif auth == "token":
        with serve_token_service(root, username, password) as service:
            bundle = root / "token-cert.pem"
            yield {"token": {"realm": service.url, "service": SERVICE, "issuer": ISSUER,
                             "rootcertbundle": str(bundle)}}, service
    else:
        raise ValueError(f"unknown auth {auth!r}")


def _wait_until_answering(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll `/v2/` until the registry answers (200, or 401 with auth) — readiness, not a timing crutch."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{BINARY} exited with {proc.returncode} at start-up: "
                        f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            status = httpx.get(f"{url}/v2/", timeout=1.0, trust_env=False).status_code
            if status in (200, 401):
                return
            last = f"HTTP {status}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    pytest.fail(f"{BINARY} did not answer {url}/v2/ within {STARTUP_DEADLINE}s ({last}): "
                f"{log_path.read_text(errors='replace')[-2000:]}")


# ---------------------------------------------------------------- pushing a small image


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str
    media_type: str
    body: bytes


def _push_blob(client: httpx.Client, repository: str, headers: dict[str, str], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = client.post(f"/v2/{repository}/blobs/uploads/", headers=headers)
    assert start.status_code == 202, (start.status_code, start.text)
    location = start.headers["Location"]
    sep = "&" if "?" in location else "?"
    put = client.put(f"{location}{sep}digest={digest}", content=data,
                     headers={**headers, "Content-Type": "application/octet-stream"})
    assert put.status_code == 201, (put.status_code, put.text)
    return digest


def put_manifest(registry: Registry, repository: str, reference: str, body: bytes, media_type: str) -> str:
    resp = registry.client().put(f"/v2/{repository}/manifests/{reference}", content=body,
                                 headers={**registry.auth_headers(repository), "Content-Type": media_type})
    assert resp.status_code == 201, (resp.status_code, resp.text)
    return str(resp.headers["Docker-Content-Digest"])


def push_image(registry: Registry, repository: str, tag: str, *, kind: str = "docker",
               revision: str | None = None, salt: str = "") -> Pushed:
    """Push a config blob + one layer blob + a manifest (`kind`: docker, oci, or oci-index) under `tag`."""
    headers = registry.auth_headers(repository)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"salt": salt}},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = f"fleetgate test layer {repository} {tag} {salt}".encode()
    config_digest = _push_blob(registry.client(), repository, headers, config)
    layer_digest = _push_blob(registry.client(), repository, headers, layer)
    oci = kind.startswith("oci")
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": len(config),
                   "digest": config_digest},
        "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "size": len(layer),
                    "digest": layer_digest}],
    }
    if revision is not None:
        manifest["annotations"] = {"org.opencontainers.image.revision": revision}
    # Unusual indentation: promote must copy these bytes, not re-serialise the JSON.
    body = json.dumps(manifest, indent=3).encode()
    media_type = str(manifest["mediaType"])
    if kind == "oci-index":
        child = put_manifest(registry, repository, f"{tag}-amd64", body, media_type)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": media_type, "size": len(body), "digest": child,
             "platform": {"architecture": "amd64", "os": "linux"}}]}
        body, media_type = json.dumps(index, indent=1).encode(), OCI_INDEX
    digest = put_manifest(registry, repository, tag, body, media_type)
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    return Pushed(repository=repository, tag=tag, digest=digest, media_type=media_type, body=body)


def resolve(registry: Registry, repository: str, reference: str) -> tuple[int, str, str]:
    """(status, digest, content-type) of a manifest, read independently of the code under test."""
    accept = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST,
                        "application/vnd.docker.distribution.manifest.list.v2+json"])
    resp = registry.client().get(f"/v2/{repository}/manifests/{reference}",
                                 headers={**registry.auth_headers(repository), "Accept": accept})
    if resp.status_code != 200:
        return resp.status_code, "", ""
    return 200, "sha256:" + hashlib.sha256(resp.content).hexdigest(), resp.headers.get("Content-Type", "")
