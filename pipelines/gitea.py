"""The Gitea API v1 client fleetgate needs (CONTRACT §4; shapes in shared/contracts/).

Built on the one client factory (`pipelines.http.client`): the `Authorization: token …` header
goes only to the Gitea origin (relative paths, no redirects, no proxy from the environment);
reads are retried on 429 (honouring `Retry-After`), 5xx and transport errors within
`retry_deadline`, writes never; 401/403 fail at once naming the permission the token lacks;
anything unparseable fails. Every failure is a one-line, redacted `Failed`.

A 404 is believed ("the variable is absent") only once the repository itself has answered 200
through this client: on a misspelt repository, or a base URL that already ends in `/api/v1`,
every path is 404, and reading that as "off" would open the kill switch. Path segments are
percent-encoded and `.`/`..` are refused, so no path is ever folded onto another one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from pipelines.errors import Failed
from pipelines.http.client import Answer, Limits, RetryPolicy, make_client, read, send
from pipelines.redact import Secret, redact
from pipelines.settings import Settings

PAGE_LIMIT = 50  # Gitea caps `limit` at 50 (shared/contracts/README.md, fact 4)
MAX_PAGES = 200  # 10,000 contexts: beyond that something is wrong, not merely big
MAX_BODY_BYTES = 4 * 1024 * 1024
READ_PERMISSION = "read:repository"
WRITE_STATUS_PERMISSION = "write:repository (commit statuses)"
STATUS_STATES = frozenset({"pending", "success", "error", "failure", "warning"})
WRITE_VARIABLES_PERMISSION = "write:repository / Actions variables"
CONFLICTING = "conflicting"  # our word: one context reported twice, states differ, no way to tell newer
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class CommitStatus:
    """The latest status of one context on one commit."""

    context: str
    state: str  # from the JSON field "status" (Gitea's per-status state), lower-cased; or CONFLICTING
    target_url: str
    description: str
    id: int = 0  # Gitea's status id: the higher one is newer when a context shows up twice
    creator: str = ""  # who posted it (`creator.login`): the approver of `fleetgate/approve`


def segment(value: str, what: str) -> str:
    """One path segment, percent-encoded; empty, `.` and `..` are refused (they would fold the path)."""
    if value in ("", ".", ".."):
        raise Failed(f"Gitea: {what} {value!r} cannot be a path segment")
    return quote(value, safe="")


def _error_detail(answer: Answer) -> str:
    """Gitea answers errors as {"message": …}; fall back to a bit of the body. Redacted, short."""
    try:
        body = answer.json("error")
    except Failed:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return redact(body["message"], limit=160)
    return answer.text(limit=160)


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
        self._repo_path = f"/api/v1/repos/{segment(owner, 'owner')}/{segment(name, 'repository name')}"
        self._repo_confirmed = False  # GET /repos/{owner}/{repo} answered 200 through this client
        self._has_token = token is not None
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.retry_wait_initial = retry_wait_initial
        # One exchange may take the whole retry deadline, but never more than a few timeouts.
        self._limits = Limits(connect=timeout, read=timeout, write=timeout, pool=timeout,
                              deadline=min(retry_deadline, 3 * timeout), max_body=MAX_BODY_BYTES)
        self._policy = RetryPolicy(deadline=retry_deadline, wait_initial=retry_wait_initial,
                                   wait_max=max(retry_wait_initial, 5.0))
        headers = {"Accept": "application/json", "User-Agent": "fleetgate"}
        if token is not None:
            headers["Authorization"] = f"token {token.reveal()}"
        self._client = make_client(self.base_url, headers=headers, limits=self._limits, transport=transport)

    async def __aenter__(self) -> GiteaClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ transport

    async def _request(self, method: str, path: str, *, what: str, permission: str,
                       accept: frozenset[int] = frozenset(), params: dict[str, Any] | None = None,
                       json: Any = None, repo_relative: bool = True) -> Answer:
        """One logical request: 2xx or a status in `accept` is returned; anything else is Failed.

        Reads go through the retrying `read`; writes are one `send` (never retried here)."""
        url = f"{self._repo_path}{path}" if repo_relative else path
        label = f"Gitea {what}"
        if method in ("GET", "HEAD"):
            answer = await read(self._client, method, url, what=label, limits=self._limits,
                                policy=self._policy, params=params)
        else:
            answer = await send(self._client, method, url, what=label, limits=self._limits,
                                params=params, json=json)
        code = answer.status
        if 200 <= code < 300 or code in accept:
            return answer
        if code in (401, 403):
            why = "no Gitea token was given" if not self._has_token else (
                "the token was rejected" if code == 401 else "the token is not allowed")
            raise Failed(f"{label}: HTTP {code}, {why}; the token needs {permission} on {self.repo}")
        detail = _error_detail(answer)
        retried = " after retries" if method in ("GET", "HEAD") and code in self._policy.statuses else ""
        raise Failed(f"{label}: HTTP {code}{retried}{': ' + detail if detail else ''}")

    async def _believe_404(self, what: str) -> None:
        """A 404 means "absent" only once the repository has answered 200 (contracts fact 12)."""
        if not self._repo_confirmed:
            await self.repository()

    # ------------------------------------------------------------------ the repository and the user

    async def repository(self) -> dict[str, Any]:
        """`GET /repos/{owner}/{repo}` (must be 200); afterwards a 404 elsewhere may be believed."""
        what = f"repository {self.repo}"
        answer = await self._request("GET", "", what=what, permission=READ_PERMISSION,
                                     accept=frozenset({404}))
        if answer.status == 404:
            raise Failed(f"Gitea {what}: HTTP 404, no such repository, or the token cannot see it; check "
                         f"--repo and --gitea-url (the Gitea origin, without /api/v1: {self.base_url})")
        body = answer.json(f"Gitea {what}")
        full_name = body.get("full_name") if isinstance(body, dict) else None
        if not isinstance(full_name, str) or full_name.lower() != self.repo.lower():
            shown = redact(str(full_name), limit=80)
            raise Failed(f"Gitea {what}: the answer is about another repository ({shown!r})")
        self._repo_confirmed = True
        repo: dict[str, Any] = body
        return repo

    async def current_user(self) -> str:
        """The login of the token's owner (`GET /user`)."""
        what = "current user"
        answer = await self._request("GET", "/api/v1/user", what=what, permission="read:user",
                                     repo_relative=False)
        body = answer.json(f"Gitea {what}")
        login = body.get("login") if isinstance(body, dict) else None
        if not isinstance(login, str) or not login.strip():
            raise Failed(f"Gitea {what}: no login in the answer")
        return login

    # ------------------------------------------------------------------ statuses

    async def combined_status(self, sha: str) -> dict[str, CommitStatus]:
        """Every context's latest status on `sha`, all pages read (never the combined `state`).

        Paging ends at an empty page, or at a short page once `X-Total-Count` (if sent) is reached:
        a full page always asks for the next one, so a lying total cannot hide a page. A context
        reported twice with different states and equal (or no) ids is CONFLICTING: which one is
        newer cannot be told, and a gate must not guess success.
        """
        what = f"status of {sha[:12]}"
        latest: dict[str, CommitStatus] = {}
        seen_entries = 0
        for page in range(1, MAX_PAGES + 1):
            answer = await self._request("GET", f"/commits/{segment(sha, 'commit')}/status", what=what,
                                         permission=READ_PERMISSION,
                                         params={"page": page, "limit": PAGE_LIMIT})
            body = answer.json(f"Gitea {what}")
            if not isinstance(body, dict):
                raise Failed(f"Gitea {what}: expected a combined-status object")
            answered_sha = body.get("sha")
            if isinstance(answered_sha, str) and answered_sha and answered_sha.lower() != sha.lower():
                raise Failed(f"Gitea {what}: the answer is about another commit "
                             f"{redact(answered_sha, limit=12)!r}")
            entries = body.get("statuses")
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise Failed(f"Gitea {what}: 'statuses' is not a list")
            for entry in entries:
                status = self._parse_status(entry, what)
                held = latest.get(status.context)
                if held is None or status.id > held.id:
                    latest[status.context] = status
                elif status.id == held.id and status.state != held.state:
                    states = sorted({held.state, status.state} - {CONFLICTING})
                    latest[status.context] = CommitStatus(
                        context=status.context, state=CONFLICTING, target_url=held.target_url,
                        description=f"reported as {' and '.join(states)} with the same id {status.id}",
                        id=status.id)
            seen_entries += len(entries)
            total = self._total_count(answer, what)
            if not entries or (len(entries) < PAGE_LIMIT and (total is None or seen_entries >= total)):
                return latest
        raise Failed(f"Gitea {what}: more than {MAX_PAGES} pages of statuses; refusing to guess")

    @staticmethod
    def _total_count(answer: Answer, what: str) -> int | None:
        raw = answer.headers.get("X-Total-Count")
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
        # A write: one `send`, never retried by the transport.
        answer = await self._request("POST", f"/statuses/{segment(sha, 'commit')}", what=what,
                                     permission=WRITE_STATUS_PERMISSION, json=body)
        return self._parse_status(answer.json(f"Gitea {what}"), what)

    # ------------------------------------------------------------------ Actions variables

    def _variable_path(self, name: str) -> str:
        return f"/actions/variables/{segment(name, 'variable name')}"

    async def get_variable(self, name: str) -> str | None:
        """The variable's value (`data`), or None when it does not exist (404, the repository being there)."""
        what = f"variable {name}"
        answer = await self._request("GET", self._variable_path(name), what=what,
                                     permission=f"{READ_PERMISSION} (Actions variables)",
                                     accept=frozenset({404}))
        if answer.status == 404:
            await self._believe_404(what)
            return None
        body = answer.json(f"Gitea {what}")
        if not isinstance(body, dict) or not isinstance(body.get("data"), str):
            raise Failed(f"Gitea {what}: expected an object with a string 'data'")
        data: str = body["data"]
        return data

    async def create_variable(self, name: str, value: str) -> bool:
        """True when created; False on 409 (exists) or 500 (a lost create race): re-read to learn more."""
        answer = await self._request("POST", self._variable_path(name), what=f"create variable {name}",
                                     permission=WRITE_VARIABLES_PERMISSION, accept=frozenset({409, 500}),
                                     json={"value": value})
        return 200 <= answer.status < 300

    async def update_variable(self, name: str, value: str) -> None:
        await self._request("PUT", self._variable_path(name), what=f"update variable {name}",
                            permission=WRITE_VARIABLES_PERMISSION, json={"name": name, "value": value})

    async def delete_variable(self, name: str) -> None:
        """Delete; a 404 means it is already gone (the repository being there), which is what we wanted."""
        what = f"delete variable {name}"
        answer = await self._request("DELETE", self._variable_path(name), what=what,
                                     permission=WRITE_VARIABLES_PERMISSION, accept=frozenset({404}))
        if answer.status == 404:
            await self._believe_404(what)

    async def can_write_variables(self) -> bool:
        """Probe write access with a PUT of a variable that does not exist: 404 = may write, 403 = not."""
        name = f"FLEETGATE_WRITE_PROBE_{secrets.token_hex(6).upper()}"
        answer = await self._request("PUT", self._variable_path(name), what="write-access probe",
                                     permission=WRITE_VARIABLES_PERMISSION, accept=frozenset({403, 404}),
                                     json={"name": name, "value": "probe"})
        if answer.status == 403:
            return False
        if answer.status == 404:
            await self._believe_404("write-access probe")
        else:
            # A 2xx means the server made something of our probe: remove it, and we may write.
            await self.delete_variable(name)
        return True

    # ------------------------------------------------------------------ branches and ancestry

    async def branch_head(self, branch: str) -> str:
        """The SHA at the head of `branch` (`commit.id`)."""
        what = f"branch {branch}"
        answer = await self._request("GET", f"/branches/{segment(branch, 'branch')}", what=what,
                                     permission=READ_PERMISSION)
        body = answer.json(f"Gitea {what}")
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
        answer = await self._request("GET", f"/compare/{segment(candidate, 'commit')}...{segment(of, 'commit')}",
                                     what=what, permission=READ_PERMISSION)
        body = answer.json(f"Gitea {what}")
        if not isinstance(body, dict):
            raise Failed(f"Gitea {what}: expected a compare object")
        total = body.get("total_commits")
        commits = body.get("commits")
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            return total == 0
        if isinstance(commits, list):
            return len(commits) == 0
        raise Failed(f"Gitea {what}: neither total_commits nor commits in the answer")


__all__ = ["CONFLICTING", "PAGE_LIMIT", "CommitStatus", "GiteaClient", "segment"]
