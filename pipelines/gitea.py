"""The Gitea API v1 client fleetgate needs (CONTRACT §4; shapes in shared/contracts/).

One `httpx.AsyncClient` bound to the Gitea origin: the `Authorization: token …` header goes only
there, because every call is a relative path and redirects are never followed (a 3xx is an
answer we cannot use, so it fails). 429 (honouring `Retry-After`), 5xx and transport errors are
retried by stamina within `retry_deadline`; 401/403 fail at once naming the permission the
token lacks; anything unparseable fails. Every failure is a one-line, redacted `Failed`.
"""

from __future__ import annotations

import email.utils
import logging
import re
import secrets
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import stamina

from pipelines.errors import Failed
from pipelines.redact import Secret, redact
from pipelines.settings import Settings

# stamina logs each scheduled retry as a bare warning; without a handler Python's last-resort
# handler would print "stamina.retry_scheduled" into CI logs. Our own messages say what failed.
logging.getLogger("stamina").addHandler(logging.NullHandler())

PAGE_LIMIT = 50  # Gitea caps `limit` at 50 (shared/contracts/README.md, fact 4)
MAX_PAGES = 200  # 10,000 contexts: beyond that something is wrong, not merely big
READ_PERMISSION = "read:repository"
WRITE_STATUS_PERMISSION = "write:repository (commit statuses)"
STATUS_STATES = frozenset({"pending", "success", "error", "failure", "warning"})
WRITE_VARIABLES_PERMISSION = "write:repository / Actions variables"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class CommitStatus:
    """The latest status of one context on one commit."""

    context: str
    state: str  # from the JSON field "status" (Gitea's per-status state), lower-cased
    target_url: str
    description: str
    id: int = 0  # Gitea's status id: the higher one is newer when a context shows up twice
    creator: str = ""  # who posted it (`creator.login`): the approver of `fleetgate/approve`


class _RetryableAnswer(Exception):
    """A 429 or 5xx answer: worth another try while the deadline allows."""

    def __init__(self, status_code: int, retry_after: float | None, detail: str) -> None:
        self.status_code = status_code
        self.retry_after = retry_after
        self.detail = detail
        super().__init__(f"HTTP {status_code}")


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions tolerated) or an HTTP date; None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _error_detail(resp: httpx.Response) -> str:
    """Gitea answers errors as {"message": …}; fall back to a bit of the body. Redacted, short."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return redact(body["message"], limit=160)
    return redact(resp.text, limit=160) if resp.text.strip() else ""


class GiteaClient:
    """Async context manager over the Gitea API of one repository."""

    @classmethod
    def for_settings(cls, settings: Settings, *, retry_deadline: float | None = None) -> GiteaClient:
        """The client every step uses: URL, repo, token and retry deadline from the settings."""
        deadline = settings.gitea_retry_deadline if retry_deadline is None else retry_deadline
        return cls(settings.gitea_url, settings.repo, settings.gitea_token, retry_deadline=deadline)

    def __init__(self, base_url: str, repo: str, token: Secret | None, *, timeout: float = 10.0,
                 retry_deadline: float = 60.0, retry_wait_initial: float = 0.25,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        owner, _, name = repo.partition("/")
        if not owner or not name:
            raise Failed(f"repository {repo!r} is not owner/name")
        self.base_url = base_url.rstrip("/")
        self.repo = repo
        self._repo_path = f"/api/v1/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        self._has_token = token is not None
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.retry_wait_initial = retry_wait_initial
        headers = {"Accept": "application/json", "User-Agent": "fleetgate"}
        if token is not None:
            headers["Authorization"] = f"token {token.reveal()}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # never carry the token to another origin
            transport=transport,
        )

    async def __aenter__(self) -> GiteaClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ transport

    async def _request(self, method: str, path: str, *, what: str, permission: str,
                       accept: frozenset[int] = frozenset(), params: dict[str, Any] | None = None,
                       json: Any = None, retry: bool = True) -> httpx.Response:
        """One logical request: 2xx or a status in `accept` is returned; the rest fails or retries
        (`retry=False`: one attempt, for a write the transport must never repeat on its own)."""
        started = time.monotonic()
        last_problem = "no answer"

        def retry_hook(exc: Exception) -> bool | float:
            if not retry:
                return False
            if isinstance(exc, _RetryableAnswer):
                if exc.retry_after is None:
                    return True
                remaining = self.retry_deadline - (time.monotonic() - started)
                # A Retry-After beyond the deadline cannot be honoured: give up now, closed. A zero
                # one still gets our first backoff, so a confused server is not hammered.
                if exc.retry_after > remaining:
                    return False
                return max(exc.retry_after, self.retry_wait_initial)
            return isinstance(exc, httpx.TransportError)

        url = f"{self._repo_path}{path}"
        try:
            with anyio.fail_after(self.retry_deadline):
                async for attempt in stamina.retry_context(
                    on=retry_hook, attempts=None, timeout=self.retry_deadline,
                    wait_initial=self.retry_wait_initial, wait_max=max(self.retry_wait_initial, 5.0),
                    wait_jitter=self.retry_wait_initial,
                ):
                    with attempt:
                        try:
                            resp = await self._client.request(method, url, params=params, json=json)
                        except httpx.TransportError as exc:
                            last_problem = f"{type(exc).__name__}"
                            raise
                        if resp.status_code == 429 or (resp.status_code >= 500
                                                       and resp.status_code not in accept):
                            last_problem = f"HTTP {resp.status_code}"
                            raise _RetryableAnswer(resp.status_code,
                                                   _retry_after_seconds(resp.headers.get("Retry-After")),
                                                   _error_detail(resp))
        except TimeoutError:
            raise Failed(f"Gitea {what}: no usable answer within {self.retry_deadline:g}s "
                         f"(last: {last_problem})") from None
        except _RetryableAnswer as exc:
            extra = f": {exc.detail}" if exc.detail else ""
            raise Failed(f"Gitea {what}: HTTP {exc.status_code} after retries{extra}") from None
        except httpx.TransportError as exc:
            raise Failed(f"Gitea {what}: cannot reach {self.base_url} ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # e.g. an invalid URL or a decoding error: not retryable
            raise Failed(f"Gitea {what}: {type(exc).__name__}: {redact(str(exc), limit=160)}") from None

        code = resp.status_code
        if 200 <= code < 300 or code in accept:
            return resp
        if code in (401, 403):
            why = "no Gitea token was given" if not self._has_token else (
                "the token was rejected" if code == 401 else "the token is not allowed")
            raise Failed(f"Gitea {what}: HTTP {code}, {why}; the token needs {permission} on {self.repo}")
        if 300 <= code < 400:
            location = redact(resp.headers.get("Location", "?"), limit=120)
            raise Failed(f"Gitea {what}: HTTP {code} redirect to {location} not followed (check --gitea-url)")
        detail = _error_detail(resp)
        raise Failed(f"Gitea {what}: HTTP {code}{': ' + detail if detail else ''}")

    @staticmethod
    def _json(resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise Failed(f"Gitea {what}: the answer is not JSON (HTTP {resp.status_code})") from None

    # ------------------------------------------------------------------ statuses

    async def combined_status(self, sha: str) -> dict[str, CommitStatus]:
        """Every context's latest status on `sha`, all pages read (never the combined `state`)."""
        what = f"status of {sha[:12]}"
        latest: dict[str, CommitStatus] = {}
        seen_entries = 0
        for page in range(1, MAX_PAGES + 1):
            resp = await self._request("GET", f"/commits/{quote(sha, safe='')}/status", what=what,
                                       permission=READ_PERMISSION,
                                       params={"page": page, "limit": PAGE_LIMIT})
            body = self._json(resp, what)
            if not isinstance(body, dict):
                raise Failed(f"Gitea {what}: expected a combined-status object")
            answered_sha = body.get("sha")
            if isinstance(answered_sha, str) and answered_sha and answered_sha.lower() != sha.lower():
                raise Failed(f"Gitea {what}: the answer is about another commit {answered_sha[:12]!r}")
            entries = body.get("statuses")
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise Failed(f"Gitea {what}: 'statuses' is not a list")
            for entry in entries:
                status = self._parse_status(entry, what)
                held = latest.get(status.context)
                if held is None or status.id >= held.id:
                    latest[status.context] = status
            seen_entries += len(entries)
            total = self._total_count(resp, what)
            if not entries or (total is not None and seen_entries >= total):
                return latest
        raise Failed(f"Gitea {what}: more than {MAX_PAGES} pages of statuses; refusing to guess")

    @staticmethod
    def _total_count(resp: httpx.Response, what: str) -> int | None:
        raw = resp.headers.get("X-Total-Count")
        if raw is None:
            return None
        try:
            return int(raw.strip())
        except ValueError:
            raise Failed(f"Gitea {what}: X-Total-Count is not a number: {redact(raw, limit=40)!r}") from None

    @staticmethod
    def _parse_status(entry: Any, what: str) -> CommitStatus:
        if not isinstance(entry, dict):
            raise Failed(f"Gitea {what}: a status entry is not an object")
        context, state = entry.get("context"), entry.get("status")
        if not isinstance(context, str) or not context:
            raise Failed(f"Gitea {what}: a status entry has no context")
        if not isinstance(state, str):
            raise Failed(f"Gitea {what}: status of {redact(context, limit=80)!r} has no 'status' field")
        target_url = entry.get("target_url")
        description = entry.get("description")
        ident = entry.get("id")
        creator = entry.get("creator")
        login = creator.get("login") if isinstance(creator, dict) else None
        return CommitStatus(
            context=context,
            state=state.strip().lower(),
            target_url=target_url if isinstance(target_url, str) else "",
            description=description if isinstance(description, str) else "",
            id=ident if isinstance(ident, int) and not isinstance(ident, bool) else 0,
            creator=redact(login, limit=80) if isinstance(login, str) else "",
        )

    async def create_status(self, sha: str, state: str, context: str, description: str,
                            target_url: str | None = None) -> CommitStatus:
        """Post a commit status (one attempt: a write); the answer says who posted it (`creator`)."""
        if state not in STATUS_STATES:
            raise ValueError(f"unknown commit status state {state!r}")
        what = f"create status {context!r} on {sha[:12]}"
        body: dict[str, Any] = {"state": state, "context": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        resp = await self._request("POST", f"/statuses/{quote(sha, safe='')}", what=what,
                                   permission=WRITE_STATUS_PERMISSION, json=body, retry=False)
        return self._parse_status(self._json(resp, what), what)

    # ------------------------------------------------------------------ Actions variables

    def _variable_path(self, name: str) -> str:
        return f"/actions/variables/{quote(name, safe='')}"

    async def get_variable(self, name: str) -> str | None:
        """The variable's value (`data`), or None when it does not exist (404)."""
        what = f"variable {name}"
        resp = await self._request("GET", self._variable_path(name), what=what,
                                   permission=f"{READ_PERMISSION} (Actions variables)",
                                   accept=frozenset({404}))
        if resp.status_code == 404:
            return None
        body = self._json(resp, what)
        if not isinstance(body, dict) or not isinstance(body.get("data"), str):
            raise Failed(f"Gitea {what}: expected an object with a string 'data'")
        data: str = body["data"]
        return data

    async def create_variable(self, name: str, value: str) -> bool:
        """True when created; False on 409 (exists) or 500 (a lost create race): re-read to learn more."""
        resp = await self._request("POST", self._variable_path(name), what=f"create variable {name}",
                                   permission=WRITE_VARIABLES_PERMISSION, accept=frozenset({409, 500}),
                                   json={"value": value})
        return 200 <= resp.status_code < 300

    async def update_variable(self, name: str, value: str) -> None:
        await self._request("PUT", self._variable_path(name), what=f"update variable {name}",
                            permission=WRITE_VARIABLES_PERMISSION, json={"name": name, "value": value})

    async def delete_variable(self, name: str) -> None:
        """Delete; a 404 means it is already gone, which is what we wanted."""
        await self._request("DELETE", self._variable_path(name), what=f"delete variable {name}",
                            permission=WRITE_VARIABLES_PERMISSION, accept=frozenset({404}))

    async def can_write_variables(self) -> bool:
        """Probe write access with a PUT of a variable that does not exist: 404 = may write, 403 = not."""
        name = f"FLEETGATE_WRITE_PROBE_{secrets.token_hex(6).upper()}"
        resp = await self._request("PUT", self._variable_path(name), what="write-access probe",
                                   permission=WRITE_VARIABLES_PERMISSION, accept=frozenset({403, 404}),
                                   json={"name": name, "value": "probe"})
        if resp.status_code == 403:
            return False
        if resp.status_code != 404:
            # A 2xx means the server made something of our probe: remove it, and we may write.
            await self.delete_variable(name)
        return True

    # ------------------------------------------------------------------ branches and ancestry

    async def branch_head(self, branch: str) -> str:
        """The SHA at the head of `branch` (`commit.id`)."""
        what = f"branch {branch}"
        resp = await self._request("GET", f"/branches/{quote(branch, safe='')}", what=what,
                                   permission=READ_PERMISSION)
        body = self._json(resp, what)
        commit = body.get("commit") if isinstance(body, dict) else None
        head = commit.get("id") if isinstance(commit, dict) else None
        if not isinstance(head, str) or not _SHA_RE.match(head.lower()):
            raise Failed(f"Gitea {what}: no 40-hex commit.id in the answer")
        return head.lower()

    async def is_descendant(self, candidate: str, of: str) -> bool:
        """True when `candidate` is a strict descendant of `of` (`of` is an ancestor, and they differ).

        Asks `compare/{candidate}...{of}`: the commits of `of` not contained in `candidate`. None
        means `of` is reachable from `candidate`. Whether Gitea reads the range from the merge base
        (three dots) or as `candidate..of`, the answer is zero exactly when `of` is an ancestor, so
        divergent histories are never mistaken for descendants. A commit Gitea does not know fails.
        """
        candidate, of = candidate.lower(), of.lower()
        if candidate == of:
            return False
        what = f"compare {of[:12]} with {candidate[:12]}"
        resp = await self._request("GET", f"/compare/{quote(candidate, safe='')}...{quote(of, safe='')}",
                                   what=what, permission=READ_PERMISSION)
        body = self._json(resp, what)
        if not isinstance(body, dict):
            raise Failed(f"Gitea {what}: expected a compare object")
        total = body.get("total_commits")
        commits = body.get("commits")
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            return total == 0
        if isinstance(commits, list):
            return len(commits) == 0
        raise Failed(f"Gitea {what}: neither total_commits nor commits in the answer")


__all__ = ["PAGE_LIMIT", "CommitStatus", "GiteaClient"]
