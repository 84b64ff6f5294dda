"""`fleetgate promote`: re-point a moving tag (e.g. `latest`) to the image of a verified SHA.

The image is the one the control plane deployed: `--target-tag` (`staging-<sha7>` by default) in the
repository `--image`. Promotion copies that tag's manifest, byte for byte, under `--promote-tag`
through the OCI distribution API, and checks that the new tag resolves to the same digest:

    HEAD/GET  /v2/<repo>/manifests/<source-tag>     -> digest (Docker-Content-Digest, checked)
    GET       /v2/<repo>/manifests/<digest>          -> the exact bytes (sha256 checked)
    PUT       /v2/<repo>/manifests/<promote-tag>     <- the same bytes, the same Content-Type
    HEAD/GET  /v2/<repo>/manifests/<promote-tag>     -> must be the same digest

Nothing is written unless the SHA's rollout verified: the ledger holds a `done` event for it with
verified=true and dry_run=false, or else a live read of every tenant's /buildinfo (tenants from the
CP's dry-run listing) finds all of them on the SHA. The result says which evidence was used.

`--image` is `[http://|https://]host[:port]/repository`, without tag or digest. Without a scheme,
a loopback host (localhost, 127.0.0.0/8, ::1) is spoken to over http (like Docker's built-in
insecure-registry rule) and every other host over https; `http://` must be written out to use plain
http elsewhere. `docker.io` means Docker Hub (`registry-1.docker.io`, `library/` for one-part names).

Auth, as a registry asks for it (nothing is sent before a 401): anonymous; `Basic` with
`--registry-username` / `--registry-password`; or the Docker token flow (`WWW-Authenticate: Bearer
realm=…,service=…,scope=…` → GET the realm with the basic credentials, if any → `Bearer <token>`).
Credentials go only to the registry origin and to the token realm, and to a realm only over https
(or http on loopback, or http to the registry's own host when http was chosen for it).
Redirects are never followed.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.errors import Failed, UsageError
from pipelines.http.body import BadJSON, parse_json
from pipelines.http.client import Answer, Limits, RetryPolicy, make_client, read, send
from pipelines.output import Output
from pipelines.redact import Secret, redact
from pipelines.settings import Settings

# Manifest media types promote accepts (schema 1 is deprecated and not content-addressable as sent).
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's limit; a bigger answer is not a manifest

REQUEST_TIMEOUT = 30.0  # seconds, per request (connect, read, write, pool)
CONNECT_TIMEOUT = 10.0
RETRY_DEADLINE = 60.0  # seconds of retrying a read on 429/5xx/connection errors before giving up
RETRY_ATTEMPTS = 6

# The distribution spec's grammar for repository names and tags.
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
REVISION_ANNOTATION = "org.opencontainers.image.revision"


# ---------------------------------------------------------------- the image reference


@dataclass(frozen=True)
class ImageRef:
    """A repository in a registry: where to speak, and which repository."""

    scheme: str  # "https" or "http"
    netloc: str  # host[:port], IPv6 in brackets
    hostname: str  # without port or brackets
    repository: str  # e.g. org/app

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def display(self) -> str:
        return f"{self.netloc}/{self.repository}"

    def manifest_url(self, reference: str) -> str:
        return f"{self.origin}/v2/{self.repository}/manifests/{reference}"


def is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def parse_image(text: str, where: str = "--image") -> ImageRef:
    """`[scheme://]host[:port]/repository` → ImageRef, or UsageError (nothing contacted)."""
    raw = text.strip()
    explicit_scheme: str | None = None
    rest = raw
    if "://" in raw:
        explicit_scheme, _, rest = raw.partition("://")
        if explicit_scheme not in ("http", "https"):
            raise UsageError(f"{where}: only http:// or https:// may prefix the image, got {raw[:100]!r}")
    netloc, slash, path = rest.partition("/")
    path = path.rstrip("/")
    if not slash or not path or not netloc:
        raise UsageError(f"{where}: expected host[:port]/repository (e.g. registry.example.com/org/app), "
                         f"got {raw[:100]!r}")
    if "@" in netloc:
        raise UsageError(f"{where}: credentials in the image are not allowed; use --registry-username "
                         "and REGISTRY_PASSWORD")
    if "@" in path:
        raise UsageError(f"{where}: give the repository without a digest, got {raw[:100]!r}")
    try:
        parts = urlsplit(f"//{netloc}")
        hostname = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UsageError(f"{where}: malformed host or port in {raw[:100]!r}") from None
    is_ip = True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        is_ip = False
    if not hostname or not (is_ip or _HOSTNAME.match(hostname)):
        raise UsageError(f"{where}: malformed registry host in {raw[:100]!r}")
    if explicit_scheme is None and not (is_ip or "." in hostname or ":" in netloc or hostname == "localhost"):
        # Docker would read `org/app` as Docker Hub; here the registry host is always written out.
        raise UsageError(f"{where}: the first part must be the registry host (e.g. docker.io/{raw[:60]}), "
                         f"got {raw[:100]!r}")
    if hostname == "docker.io" or hostname == "index.docker.io":
        netloc, hostname = "registry-1.docker.io", "registry-1.docker.io"
        if "/" not in path:
            path = f"library/{path}"
    components = path.split("/")
    if ":" in components[-1]:
        raise UsageError(f"{where}: give the repository without a tag (the tags are --target-tag and "
                         f"--promote-tag), got {raw[:100]!r}")
    if len(path) > 255 or not all(_PATH_COMPONENT.match(c) for c in components):
        raise UsageError(f"{where}: {path[:100]!r} is not a valid repository name (lowercase letters, "
                         "digits, separators . _ __ -, parts joined by /)")
    scheme = explicit_scheme or ("http" if is_loopback(hostname) else "https")
    return ImageRef(scheme=scheme, netloc=netloc.lower(), hostname=hostname.lower(), repository=path)


def check_tag(tag: str, where: str) -> str:
    if not _TAG.match(tag):
        raise UsageError(f"{where}: {tag[:140]!r} is not a valid tag (letters, digits, _ . -; at most 128; "
                         "not starting with . or -)")
    return tag


# ---------------------------------------------------------------- the registry client


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes


def digest_of(body: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…"` → ("bearer", {realm, service, …})."""
    scheme, _, params = header.strip().partition(" ")
    found = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
             for m in _CHALLENGE_PARAM.finditer(params)}
    return scheme.lower(), found


def _registry_error(answer: Answer) -> str:
    """The registry's own words (`{"errors": [{"code", "message"}]}`), short and redacted."""
    try:
        errors = answer.json("registry error").get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}"
                         for e in errors if isinstance(e, dict))
    except (Failed, AttributeError, TypeError):
        text = ""
    return redact(text, limit=200) if text else f"HTTP {answer.status}"


class RegistryClient:
    """One repository in one registry; one httpx.AsyncClient; auth answered per challenge."""

    def __init__(self, ref: ImageRef, username: str = "", password: Secret | None = None, *,
                 timeout: float = REQUEST_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                 retry_deadline: float = RETRY_DEADLINE, retry_attempts: int = RETRY_ATTEMPTS,
                 retry_wait: float = 0.5) -> None:
        self.ref = ref
        self._username = username
        self._password = password
        self._retry_deadline = retry_deadline
        # One exchange (a manifest GET or PUT) within twice the request timeout and the retry deadline.
        self._limits = Limits(connect=min(connect_timeout, timeout), read=timeout, write=timeout, pool=timeout,
                              deadline=min(retry_deadline, 2 * timeout), max_body=MAX_MANIFEST_BYTES + 1)
        self._policy = RetryPolicy(deadline=retry_deadline, attempts=retry_attempts, wait_initial=retry_wait,
                                   wait_max=max(retry_wait, 5.0))
        self._http = make_client(headers={"User-Agent": "fleetgate-promote"}, limits=self._limits)
        # Authorization per scope ("pull" / "pull,push"): Basic is one header; Bearer tokens differ by scope.
        self._auth: dict[str, Secret] = {}
        self._basic_for_all: Secret | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._http.aclose()

    # -- transport

    async def _send(self, method: str, url: str, headers: Mapping[str, str],
                    content: bytes | None = None) -> Answer:
        """One request: a read retried on 429/5xx/connection errors within the deadline, a write
        (PUT) sent once — the transport never repeats a write. Failed after."""
        parts = urlsplit(url)
        what = f"registry {parts.netloc}: {method} {redact(parts.path, limit=120)}"
        if method in ("GET", "HEAD"):
            answer = await read(self._http, method, url, what=what, limits=self._limits,
                                policy=self._policy, headers=headers)
            if answer.status in self._policy.statuses:
                raise Failed(f"registry {parts.netloc}: {method} answered HTTP {answer.status} "
                             f"after retrying for up to {self._retry_deadline:g}s")
            return answer
        return await send(self._http, method, url, what=what, limits=self._limits, headers=headers,
                          content=content)

    async def _request(self, method: str, url: str, *, actions: str, headers: Mapping[str, str] | None = None,
                       content: bytes | None = None) -> Answer:
        """A request to the registry origin, answering one auth challenge if it comes."""
        resp = await self._send(method, url, {**(headers or {}), **self._auth_header(actions)}, content)
        if resp.status == 401:
            await self._authenticate(resp, actions)
            resp = await self._send(method, url, {**(headers or {}), **self._auth_header(actions)}, content)
            if resp.status == 401:
                who = "credentials refused" if self._basic() is not None else \
                    "anonymous access refused (set --registry-username and REGISTRY_PASSWORD)"
                raise Failed(f"registry {self.ref.netloc}: {who} for {actions} on {self.ref.repository} "
                             f"({_registry_error(resp)})")
        if resp.status == 403:
            raise Failed(f"registry {self.ref.netloc}: the credentials lack {actions} permission on "
                         f"{self.ref.repository} ({_registry_error(resp)})")
        return resp  # a redirect never gets here: the client factory refuses it (Failed)

    def _auth_header(self, actions: str) -> dict[str, str]:
        secret = self._auth.get(actions) or self._basic_for_all
        return {"Authorization": secret.reveal()} if secret is not None else {}

    def _basic(self) -> Secret | None:
        if not self._username or self._password is None:
            return None
        raw = f"{self._username}:{self._password.reveal()}".encode()
        encoded = Secret(base64.b64encode(raw).decode("ascii"))  # registered, so redact() scrubs it too
        return Secret(f"Basic {encoded.reveal()}")

    async def _authenticate(self, resp: Answer, actions: str) -> None:
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                raise Failed(f"registry {self.ref.netloc} asks for credentials: set --registry-username "
                             "and REGISTRY_PASSWORD")
            if self._basic_for_all is not None:
                raise Failed(f"registry {self.ref.netloc}: credentials refused for {actions} on "
                             f"{self.ref.repository}")
            self._basic_for_all = basic
            return
        if scheme == "bearer" and params.get("realm"):
            self._auth[actions] = await self._fetch_token(params, actions)
            return
        raise Failed(f"registry {self.ref.netloc}: unsupported authentication challenge "
                     f"{redact(challenge, limit=80)!r}")

    async def _fetch_token(self, params: Mapping[str, str], actions: str) -> Secret:
        """The Docker token flow: GET the realm (basic credentials if we have them) → a Bearer token."""
        realm = params["realm"]
        parts = urlsplit(realm)
        host = (parts.hostname or "").lower()
        safe = parts.scheme == "https" or (parts.scheme == "http" and (
            is_loopback(host) or (self.ref.scheme == "http" and host == self.ref.hostname)))
        if not host or not safe:
            raise Failed(f"registry {self.ref.netloc}: token realm {redact(realm, limit=120)!r} is not "
                         "https; refusing to send credentials there")
        query: dict[str, str] = {"scope": f"repository:{self.ref.repository}:{actions}"}
        if params.get("service"):
            query["service"] = params["service"]
        headers: dict[str, str] = {}
        basic = self._basic()
        if basic is not None:
            headers["Authorization"] = basic.reveal()
            query["account"] = self._username
        resp = await self._send("GET", str(httpx.URL(realm, params=query)), headers)
        if resp.status in (401, 403):
            raise Failed(f"registry {self.ref.netloc}: the token service refused "
                         f"{'the credentials' if basic else 'anonymous access'} for {actions} on "
                         f"{self.ref.repository} (HTTP {resp.status})")
        if resp.status != 200:
            raise Failed(f"registry {self.ref.netloc}: the token service answered HTTP {resp.status}")
        try:
            data = resp.json(f"registry {self.ref.netloc}: token service")
            token = data.get("token") or data.get("access_token")
        except (Failed, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise Failed(f"registry {self.ref.netloc}: the token service answered without a token")
        Secret(token)  # registered, so redact() scrubs the bare token wherever it might surface
        return Secret(f"Bearer {token}")

    # -- manifests

    async def resolve_digest(self, reference: str) -> str | None:
        """The digest a tag points at, or None when absent. HEAD first; GET when HEAD names no digest."""
        resp = await self._request("HEAD", self.ref.manifest_url(reference), actions="pull",
                                   headers={"Accept": ACCEPT})
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise Failed(f"registry {self.ref.display}: HEAD manifest {reference!r} answered "
                         f"HTTP {resp.status}")
        header: str = resp.headers.get("Docker-Content-Digest", "").strip()
        if _DIGEST.match(header):
            return header
        manifest = await self.get_manifest(reference)
        return manifest.digest if manifest is not None else None

    async def get_manifest(self, reference: str) -> Manifest | None:
        """The manifest bytes at `reference` (tag or digest), digest checked; None when absent."""
        resp = await self._request("GET", self.ref.manifest_url(reference), actions="pull",
                                   headers={"Accept": ACCEPT})
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise Failed(f"registry {self.ref.display}: GET manifest {reference!r} answered HTTP "
                         f"{resp.status} ({_registry_error(resp)})")
        body = resp.body
        if len(body) > MAX_MANIFEST_BYTES:
            raise Failed(f"registry {self.ref.display}: manifest {reference!r} is larger than 4 MiB")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            raise Failed(f"registry {self.ref.display}: manifest {reference!r} has media type "
                         f"{media_type[:80]!r}; promote handles {', '.join(MANIFEST_TYPES)}")
        try:
            document = parse_json(body)
        except BadJSON:
            raise Failed(f"registry {self.ref.display}: manifest {reference!r} is not JSON") from None
        if not isinstance(document, dict):
            raise Failed(f"registry {self.ref.display}: manifest {reference!r} is not a JSON object")
        declared = document.get("mediaType")
        if declared is not None and declared != media_type:
            raise Failed(f"registry {self.ref.display}: manifest {reference!r} says mediaType "
                         f"{str(declared)[:80]!r} but was served as {media_type!r}")
        header = resp.headers.get("Docker-Content-Digest", "").strip()
        algorithm = header.split(":", 1)[0] if _DIGEST.match(header) else "sha256"
        if _DIGEST.match(reference):
            algorithm = reference.split(":", 1)[0]
        digest = digest_of(body, algorithm)
        if header and header != digest:
            raise Failed(f"registry {self.ref.display}: manifest {reference!r} bytes hash to {digest}, "
                         f"but the registry says {header[:80]}")
        if _DIGEST.match(reference) and reference != digest:
            raise Failed(f"registry {self.ref.display}: asked for {reference}, got bytes hashing to {digest}")
        return Manifest(digest=digest, media_type=media_type, body=body)

    async def put_manifest(self, tag: str, manifest: Manifest) -> None:
        """PUT the exact bytes under `tag`; the registry must agree on the digest."""
        resp = await self._request("PUT", self.ref.manifest_url(tag), actions="pull,push",
                                   headers={"Content-Type": manifest.media_type}, content=manifest.body)
        if not 200 <= resp.status < 300:
            raise Failed(f"registry {self.ref.display}: PUT manifest {tag!r} answered HTTP "
                         f"{resp.status} ({_registry_error(resp)})")
        answered = resp.headers.get("Docker-Content-Digest", "").strip()
        if answered and answered != manifest.digest:
            raise Failed(f"registry {self.ref.display}: PUT {tag!r} stored digest {answered[:80]}, "
                         f"expected {manifest.digest}")


# ---------------------------------------------------------------- evidence that the rollout verified


def ledger_evidence(path: Path, sha: str) -> tuple[bool, str]:
    """Whether the ledger records a verified, non-dry-run rollout of `sha`, and a phrase saying so."""
    if not path.is_file():
        return False, f"no ledger at {path}"
    from pipelines.ledger import verified_shas

    try:
        shas = verified_shas(path)
    except (OSError, ValueError) as exc:
        return False, f"ledger {path} unreadable ({type(exc).__name__})"
    if sha in shas:
        return True, f"ledger {path} records a verified, non-dry-run rollout of {sha[:7]}"
    return False, f"ledger {path} has no verified non-dry-run rollout of {sha[:7]}"


async def rollout_evidence(settings: Settings, out: Output) -> dict[str, Any]:
    """Why promoting this SHA is allowed: the ledger, or a live read of the whole fleet. Failed if neither."""
    ledger_path = Path(settings.ledger)
    in_ledger, ledger_note = ledger_evidence(ledger_path, settings.sha)
    if in_ledger:
        out.ok(f"evidence: {ledger_note}")
        return {"evidence": "ledger", "ledger": str(ledger_path)}
    if "unreadable" in ledger_note:
        out.warn(f"{ledger_note}; trying a live verify instead")
    if settings.cp_token is None:
        raise Failed(f"refusing to promote: {ledger_note}, and no --cp-token (CP_ADMIN_API_TOKEN) for a live "
                     "verify of the fleet")
    out.info(f"{ledger_note}; verifying the whole fleet live")
    from pipelines.verify import BuildinfoReader, list_fleet

    slugs = await list_fleet(settings)
    if not slugs:
        raise Failed(f"refusing to promote: {ledger_note}, and the CP lists no tenants to verify")
    reader = BuildinfoReader.for_settings(settings)
    readings = await reader.read(slugs, settings.sha)
    unverified = sorted(slug for slug in slugs if not readings[slug].verified)
    if unverified:
        shown = ", ".join(f"{s} ({readings[s].verdict})" for s in unverified[:10])
        more = f" and {len(unverified) - 10} more" if len(unverified) > 10 else ""
        raise Failed(f"refusing to promote: {ledger_note}, and {len(unverified)} of {len(slugs)} tenants "
                     f"do not report {settings.short_sha}: {shown}{more}",
                     details={"evidence": "none", "unverified": unverified})
    out.ok(f"evidence: live verify, all {len(slugs)} tenants report {settings.short_sha}")
    return {"evidence": "live-verify", "tenants": len(slugs)}


# ---------------------------------------------------------------- the verb


def _check_revision(manifest: Manifest, sha: str, where: str) -> None:
    """When the image names its source revision, it must be this SHA (a mis-tagged image stops here)."""
    annotations = parse_json(manifest.body).get("annotations")  # already parsed once in get_manifest
    if isinstance(annotations, dict):
        revision = annotations.get(REVISION_ANNOTATION)
        if isinstance(revision, str) and revision and revision.lower() != sha:
            raise Failed(f"refusing to promote: {where} is annotated {REVISION_ANNOTATION}="
                         f"{redact(revision, limit=60)}, not {sha}")


async def promote(settings: Settings, out: Output, *,
                  client_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate, demand evidence, then copy the source tag's manifest under the promote tag and check it."""
    ref = parse_image(settings.image)
    source = check_tag(settings.target_tag, "--target-tag")
    moving = check_tag(settings.promote_tag, "--promote-tag")
    if source == moving:
        raise UsageError(f"--promote-tag {moving!r} is the source tag itself; nothing to re-point")
    if settings.registry_password is not None and not settings.registry_username:
        raise UsageError("REGISTRY_PASSWORD is set but --registry-username (REGISTRY_USERNAME) is not")

    evidence = await rollout_evidence(settings, out)
    where = f"{ref.display}:{source}"
    async with RegistryClient(ref, settings.registry_username, settings.registry_password,
                              **dict(client_options or {})) as registry:
        digest = await registry.resolve_digest(source)
        if digest is None:
            raise Failed(f"refusing to promote: {where} does not exist (was {settings.short_sha} published?)")
        manifest = await registry.get_manifest(digest)
        if manifest is None:
            raise Failed(f"registry {ref.display}: {source!r} points at {digest}, which is not there")
        _check_revision(manifest, settings.sha, where)
        out.info(f"{where} is {digest} ({manifest.media_type})")
        before = await registry.resolve_digest(moving)
        changed = before != digest
        if changed:
            await registry.put_manifest(moving, manifest)
        after = await registry.resolve_digest(moving)
        if after != digest:
            raise Failed(f"registry {ref.display}: after the PUT, {moving!r} resolves to {after}, "
                         f"not {digest}")
    result: dict[str, Any] = {
        "ok": True, "verb": "promote", "sha": settings.sha, "image": ref.display, "source_tag": source,
        "promote_tag": moving, "digest": digest, "media_type": manifest.media_type, "previous_digest": before,
        "changed": changed, **evidence,
    }
    verb = "re-pointed" if changed else "already pointed"
    out.ok(f"{ref.display}:{moving} {verb} to {digest} "
           f"({settings.short_sha}; evidence: {evidence['evidence']})")
    out.result(result, human=f"promote: {ref.display}:{moving} → {digest}")
    return result


async def run(settings: Settings, out: Output) -> dict[str, Any]:
    """The `promote` verb."""
    return await promote(settings, out)
