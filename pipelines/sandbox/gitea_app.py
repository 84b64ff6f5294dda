"""A Gitea 1.22 API double: the endpoints fleetgate calls, shaped as /work/shared/contracts says.

Faithful where clients trip: statuses carry `status` (not `state`), the combined status holds only
the latest per context and pages by `page`/`limit` (≤0 → 30, capped at 50) with `X-Total-Count`
and `Link`; variable names are case-insensitive; errors are JSON `{"message", "url"}`; the
repository answers 404 for any other owner/name (so must every path under it); a created status
answers 201 with its `creator`, the token's user.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.sandbox.world import READ, WRITE_STATUS, WRITE_VARIABLES, Commit, Status, World, rfc3339

API = "/api/v1/repos/{owner}/{repo}"
MAX_LIMIT = 50
DEFAULT_LIMIT = 30


def _error(world: World, status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message, "url": f"{world.gitea_url}/api/swagger"}, status_code=status)


def _user(world: World, login: str = "gitea-actions") -> dict[str, Any]:
    return {
        "id": 1 if login == "gitea-actions" else 2, "login": login, "login_name": "",
        "full_name": "Gitea Actions" if login == "gitea-actions" else login,
        "email": f"{login}@sandbox.invalid", "avatar_url": f"{world.gitea_url}/avatars/1",
        "html_url": f"{world.gitea_url}/{login}", "language": "", "is_admin": False,
        "last_login": "0001-01-01T00:00:00Z", "created": "2026-01-01T00:00:00Z", "restricted": False,
        "active": True, "prohibit_login": False, "location": "", "website": "", "description": "",
        "visibility": "public", "followers_count": 0, "following_count": 0, "starred_repos_count": 0,
    }


def _status_json(world: World, s: Status) -> dict[str, Any]:
    return {
        "id": s.id, "status": s.state, "description": s.description,
        "target_url": s.target_url or f"{world.gitea_url}/{world.repo}/actions/runs/{s.id}",
        "url": f"{world.gitea_url}/api/v1/repos/{world.repo}/statuses/{s.sha}", "context": s.context,
        "creator": _user(world, s.creator or "gitea-actions"),
        "created_at": rfc3339(s.created_at), "updated_at": rfc3339(s.created_at),
    }


def combined_state(states: list[str]) -> str:
    """Gitea's CalcCommitStatus: the worst state wins; no statuses → ""."""
    if not states:
        return ""
    order = ["error", "failure", "warning", "pending", "success"]
    known = [s for s in states if s in order]
    if len(known) < len(states):  # a state this Gitea does not know (e.g. skipped): keep it visible
        return next(s for s in states if s not in order)
    return min(known, key=order.index)


def _page_args(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", "1") or "1")
    except ValueError:
        page = 1
    try:
        limit = int(request.query_params.get("limit", "0") or "0")
    except ValueError:
        limit = 0
    page = max(page, 1)
    if limit <= 0:
        limit = DEFAULT_LIMIT
    return page, min(limit, MAX_LIMIT)


def _paged_headers(request: Request, total: int, page: int, limit: int) -> dict[str, str]:
    headers = {"X-Total-Count": str(total), "Access-Control-Expose-Headers": "X-Total-Count, Link"}
    last = max(1, -(-total // limit))
    links = []
    base = str(request.url.replace(query=""))
    if page < last:
        links.append(f'<{base}?page={page + 1}&limit={limit}>; rel="next"')
        links.append(f'<{base}?page={last}&limit={limit}>; rel="last"')
    if page > 1:
        links.append(f'<{base}?page=1&limit={limit}>; rel="first"')
        links.append(f'<{base}?page={page - 1}&limit={limit}>; rel="prev"')
    if links:
        headers["Link"] = ", ".join(links)
    return headers


def _repo_json(world: World, *, push: bool = False) -> dict[str, Any]:
    """The Repository object (the fields Gitea 1.22 sends that a client may read; all in the swagger)."""
    return {"id": world.repo_id, "name": world.name, "full_name": world.repo, "owner": _user(world),
            "description": "", "empty": False, "private": True, "fork": False, "template": False,
            "mirror": False, "archived": False, "has_actions": True, "default_branch": "main",
            "html_url": f"{world.gitea_url}/{world.repo}", "url": f"{world.gitea_url}/api/v1/repos/{world.repo}",
            "clone_url": f"{world.gitea_url}/{world.repo}.git", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "permissions": {"admin": False, "push": push, "pull": True}}


def _payload_commit(world: World, c: Commit) -> dict[str, Any]:
    who = {"name": "Sandbox Dev", "email": "dev@sandbox.invalid", "username": "dev"}
    return {"id": c.sha, "message": c.message + "\n", "url": f"{world.gitea_url}/{world.repo}/commit/{c.sha}",
            "author": who, "committer": who, "timestamp": rfc3339(c.timestamp),
            "verification": {"verified": False, "reason": "gpg.error.not_signed_commit", "signature": "",
                             "signer": who, "payload": ""},
            "added": [], "removed": [], "modified": []}


def _commit_json(world: World, c: Commit) -> dict[str, Any]:
    who = {"name": "Sandbox Dev", "email": "dev@sandbox.invalid", "date": rfc3339(c.timestamp)}
    api = f"{world.gitea_url}/api/v1/repos/{world.repo}/git/commits"
    return {
        "url": f"{api}/{c.sha}", "sha": c.sha, "created": rfc3339(c.timestamp),
        "html_url": f"{world.gitea_url}/{world.repo}/commit/{c.sha}",
        "commit": {"url": f"{api}/{c.sha}", "author": who, "committer": who, "message": c.message + "\n",
                   "tree": {"url": f"{world.gitea_url}/api/v1/repos/{world.repo}/git/trees/{c.sha}",
                            "sha": c.sha, "created": rfc3339(c.timestamp)},
                   "verification": {"verified": False, "reason": "gpg.error.not_signed_commit",
                                    "signature": "", "payload": "",
                                    "signer": {"name": "", "email": "dev@sandbox.invalid", "username": ""}}},
        "author": _user(world), "committer": _user(world),
        "parents": [{"url": f"{api}/{p}", "sha": p, "created": rfc3339(world.commits[p].timestamp)}
                    for p in c.parents if p in world.commits],
        "files": [], "stats": {"total": 0, "additions": 0, "deletions": 0},
    }


def build_app(world: World) -> ASGIApp:
    def repo_ok(request: Request) -> bool:
        p = request.path_params
        return f"{p['owner']}/{p['repo']}".lower() == world.repo.lower()

    def not_found(request: Request) -> JSONResponse:
        return _error(world, 404, "The target couldn't be found.")

    async def combined_status(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        page, limit = _page_args(request)
        sha = world.resolve_ref(request.path_params["ref"]) or request.path_params["ref"]
        statuses = world.read_combined(sha, count_read=page == 1)
        total = len(statuses)
        chunk = statuses[(page - 1) * limit: page * limit]
        body: dict[str, Any]
        if not statuses:
            body = {"state": "", "sha": sha, "total_count": 0, "statuses": [],
                    "repository": _repo_json(world), "commit_url": "", "url": ""}
        else:
            body = {
                # Gitea computes the combined state over the page it returns.
                "state": combined_state([s.state for s in chunk]) if chunk else "",
                "sha": sha, "total_count": len(chunk),
                "statuses": [_status_json(world, s) for s in chunk],
                "repository": _repo_json(world),
                "commit_url": f"{world.gitea_url}/api/v1/repos/{world.repo}/commits/{sha}",
                "url": f"{world.gitea_url}/api/v1/repos/{world.repo}/commits/{sha}/status",
            }
        return JSONResponse(body, headers=_paged_headers(request, total, page, limit))

    async def status_list(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        ref = request.path_params.get("ref") or request.path_params.get("sha", "")
        sha = world.resolve_ref(ref) or ref
        page, limit = _page_args(request)
        history = [s for s in reversed(world.status_history) if s.sha == sha]  # newest first
        state = request.query_params.get("state")
        if state:
            history = [s for s in history if s.state == state]
        chunk = history[(page - 1) * limit: page * limit]
        return JSONResponse([_status_json(world, s) for s in chunk],
                            headers=_paged_headers(request, len(history), page, limit))

    async def create_status(request: Request) -> Response:
        """`POST …/statuses/{sha}` (CreateStatusOption) → 201 CommitStatus, its creator the token's user."""
        if not repo_ok(request):
            return not_found(request)
        token = _token(request) or ""
        if WRITE_STATUS not in world.gitea_tokens.get(token, set()):
            return _error(world, 403, "user should have write permission on the repository")
        sha = world.resolve_ref(request.path_params["sha"])
        if sha is None:
            return _error(world, 404, "object does not exist")
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("state") not in ("pending", "success", "error", "failure",
                                                                     "warning"):
            return _error(world, 400, "[State]: Required")  # the swagger declares 400 for a bad option
        status = world.set_status(sha, str(body.get("context") or "default"), body["state"],
                                  description=str(body.get("description") or ""),
                                  target_url=str(body.get("target_url") or ""),
                                  creator=world.gitea_users.get(token, "gitea-actions"))
        assert status is not None
        return JSONResponse(_status_json(world, status), status_code=201)

    async def user(request: Request) -> Response:
        return JSONResponse(_user(world, world.gitea_users.get(_token(request) or "", "gitea-actions")))

    async def branch(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        name = request.path_params["branch"]
        if name not in world.branches:
            return _error(world, 404, f"branch does not exist [name: {name}]")
        c = world.commits[world.branches[name]]
        return JSONResponse({
            "name": name, "commit": _payload_commit(world, c), "protected": name == "main",
            "required_approvals": 0, "enable_status_check": True,
            "status_check_contexts": list(world.required_contexts),
            "user_can_push": True, "user_can_merge": True, "effective_branch_protection_name": "main",
        })

    async def compare(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        basehead = request.path_params["basehead"]
        if "..." in basehead:
            base_ref, head_ref = basehead.split("...", 1)
        elif ".." in basehead:
            base_ref, head_ref = basehead.split("..", 1)
        else:
            return _error(world, 404, f"could not parse basehead {basehead!r}")
        base, head = world.resolve_ref(base_ref), world.resolve_ref(head_ref)
        if base is None or head is None:
            return _error(world, 404, "GetRefCommitID: object does not exist")
        ahead = world.ancestors(head) - world.ancestors(base)
        # newest first, like `git log base..head`
        ordered = [c for c in reversed(world.commits.values()) if c.sha in ahead]
        return JSONResponse({"total_commits": len(ordered),
                             "commits": [_commit_json(world, c) for c in ordered]})

    async def git_commit(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        sha = world.resolve_ref(request.path_params["sha"])
        if sha is None:
            return _error(world, 404, "object does not exist")
        return JSONResponse(_commit_json(world, world.commits[sha]))

    def may_write(request: Request) -> bool:
        # Gitea asks write:repository for variable writes and status creation alike.
        return WRITE_VARIABLES in world.gitea_tokens.get(_token(request) or "", set())

    async def repository(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        return JSONResponse(_repo_json(world, push=may_write(request)))

    async def variable(request: Request) -> Response:
        if not repo_ok(request):
            return not_found(request)
        name = request.path_params["name"].upper()
        method = request.method
        if method != "GET" and not may_write(request):
            return _error(world, 403, "token does not have at least one of required scope(s): "
                          "[write:repository]")
        if method == "GET":
            if name in world.gitea_faults.unreadable_variables:
                return _error(world, 500, "internal server error")
            value = world.get_variable(name)
            if value is None:
                return _error(world, 404, "variable not found")
            return JSONResponse({"owner_id": 0, "repo_id": world.repo_id, "name": name, "data": value})
        if method == "DELETE":
            if world.get_variable(name) is None:
                return _error(world, 404, "variable not found")
            world.delete_variable(name)
            return Response(status_code=204)
        value = await _value(request)
        if value is None:
            return _error(world, 422, "[Value]: Required")
        if method == "POST":
            if world.get_variable(name) is not None:
                if world.gitea_faults.post_race_500:
                    return _error(world, 500, "UNIQUE constraint failed: action_variable.owner_id, "
                                  "action_variable.repo_id, action_variable.name")
                return _error(world, 409, "variable name has already been used")
            world.set_variable(name, value)
            return Response(status_code=201)
        # PUT
        if world.get_variable(name) is None:
            return _error(world, 404, "variable not found")
        world.set_variable(name, value)
        return Response(status_code=204)

    routes = [
        Route(API + "/commits/{ref}/status", combined_status, methods=["GET"]),
        Route(API + "/commits/{ref}/statuses", status_list, methods=["GET"]),
        Route(API + "/statuses/{sha}", status_list, methods=["GET"]),
        Route(API + "/statuses/{sha}", create_status, methods=["POST"]),
        Route(API, repository, methods=["GET"]),
        Route("/api/v1/user", user, methods=["GET"]),
        Route(API + "/branches/{branch}", branch, methods=["GET"]),
        Route(API + "/compare/{basehead:path}", compare, methods=["GET"]),
        Route(API + "/git/commits/{sha}", git_commit, methods=["GET"]),
        Route(API + "/actions/variables/{name}", variable, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    return _GiteaFront(app, world)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "token" or not value.strip():
        return None
    return value.strip()


async def _value(request: Request) -> str | None:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("value"), str):
        return None
    value: str = body["value"]
    return value


class _GiteaFront:
    """In front of the routes: latency, injected 5xx/429, then the token check (401 JSON)."""

    def __init__(self, app: ASGIApp, world: World) -> None:
        self.app = app
        self.world = world

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        world = self.world
        faults = world.gitea_faults
        if faults.latency > 0:
            await world.pause(faults.latency)
        response: Response | None = None
        if faults.fail_next > 0:
            faults.fail_next -= 1
            response = Response("<html><body>Service Unavailable</body></html>",
                                status_code=faults.fail_status, media_type="text/html")
        elif faults.rate_limit_next > 0:
            faults.rate_limit_next -= 1
            response = _error(world, 429, "rate limit exceeded")
            response.headers["Retry-After"] = faults.retry_after
        else:
            request = Request(scope)
            token = _token(request)
            if token is None or token not in world.gitea_tokens:
                response = _error(world, 401, "token is required" if token is None else "user does not exist")
            elif READ not in world.gitea_tokens[token]:
                response = _error(world, 403, "token does not have at least one of required scope(s): "
                                  "[read:repository]")
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = ["build_app", "combined_state"]
