"""The sandbox's OCI registry: the manifest half of the distribution API, in memory, on loopback.

Enough for `promote --sandbox`: `GET /v2/`, `HEAD`/`GET /v2/<name>/manifests/<tag or digest>` and
`PUT /v2/<name>/manifests/<tag>`, with `Docker-Content-Digest`, the stored media type, and the spec's
error bodies. Blobs are never asked for (promote copies a manifest byte for byte). Each world is seeded
with its image: `staging-<sha7>` of every commit, annotated with that commit, and `latest` on the SHA
the fleet runs now — so a rehearsal re-points `latest`, and never a real registry's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REPOSITORY = "acme/app"  # the sandbox image: <registry host>/acme/app
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_MANIFEST_TYPES = frozenset({
    OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class Stored:
    media_type: str
    body: bytes


@dataclass
class Registry:
    """Manifests by digest and tags by name, per repository; every PUT is kept in `pushes`."""

    manifests: dict[str, dict[str, Stored]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    pushes: list[tuple[str, str, str]] = field(default_factory=list)  # (repository, tag, digest)

    def store(self, repository: str, tag: str | None, media_type: str, body: bytes) -> str:
        digest = digest_of(body)
        self.manifests.setdefault(repository, {})[digest] = Stored(media_type, body)
        if tag is not None:
            self.tags.setdefault(repository, {})[tag] = digest
        return digest

    def lookup(self, repository: str, reference: str) -> tuple[str, Stored] | None:
        digest = reference if _DIGEST.match(reference) else self.tags.get(repository, {}).get(reference)
        stored = self.manifests.get(repository, {}).get(digest or "")
        return (digest, stored) if digest is not None and stored is not None else None

    def tag_digest(self, tag: str, repository: str = REPOSITORY) -> str | None:
        return self.tags.get(repository, {}).get(tag)


def image_manifest(sha: str) -> bytes:
    """A small, valid OCI image manifest for the build of `sha` (its layers are never fetched)."""
    config = digest_of(f"config {sha}".encode())
    layer = digest_of(f"layer {sha}".encode())
    document = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 32}],
        "annotations": {"org.opencontainers.image.revision": sha},
    }
    return json.dumps(document, indent=2, sort_keys=True).encode()


def seeded(shas: list[str], latest: str | None) -> Registry:
    """`staging-<sha7>` and `<sha>` of each commit; `latest` on `latest` (the fleet's SHA) when given."""
    registry = Registry()
    for sha in shas:
        body = image_manifest(sha)
        registry.store(REPOSITORY, f"staging-{sha[:7]}", OCI_MANIFEST, body)
        registry.store(REPOSITORY, sha, OCI_MANIFEST, body)
        if sha == latest:
            registry.store(REPOSITORY, "latest", OCI_MANIFEST, body)
    return registry


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "message": message, "detail": None}]}, status_code=status)


def build_app(registry: Registry) -> Starlette:
    async def base(request: Request) -> Response:
        return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def manifests(request: Request) -> Response:
        repository, reference = request.path_params["name"], request.path_params["reference"]
        if not _NAME.match(repository):
            return _error(400, "NAME_INVALID", "invalid repository name")
        if request.method in ("GET", "HEAD"):
            found = registry.lookup(repository, reference)
            if found is None:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            digest, stored = found
            headers = {"Docker-Content-Digest": digest, "Content-Type": stored.media_type,
                       "Content-Length": str(len(stored.body))}
            body = b"" if request.method == "HEAD" else stored.body
            return Response(body, headers=headers)
        # PUT: by tag only here (promote never pushes by digest); the bytes are stored as sent.
        if not _TAG.match(reference):
            return _error(400, "TAG_INVALID", "manifest tag did not match")
        media_type = request.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in _MANIFEST_TYPES:
            return _error(400, "MANIFEST_INVALID", "unsupported manifest media type")
        body = await request.body()
        if len(body) > MAX_MANIFEST_BYTES:
            return _error(413, "SIZE_INVALID", "manifest too large")
        try:
            document = json.loads(body)
        except ValueError:
            return _error(400, "MANIFEST_INVALID", "manifest invalid")
        if not isinstance(document, dict) or document.get("mediaType", media_type) != media_type:
            return _error(400, "MANIFEST_INVALID", "manifest invalid")
        digest = registry.store(repository, reference, media_type, body)
        registry.pushes.append((repository, reference, digest))
        return Response(status_code=201, headers={"Docker-Content-Digest": digest,
                                                  "Location": f"/v2/{repository}/manifests/{digest}"})

    async def unknown(request: Request) -> Response:
        return _error(404, "UNSUPPORTED", "the sandbox registry serves manifests only")

    return Starlette(routes=[
        Route("/v2/", base, methods=["GET"]),
        Route("/v2/{name:path}/manifests/{reference}", manifests, methods=["GET", "HEAD", "PUT"]),
        Route("/{rest:path}", unknown, methods=["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
    ])
