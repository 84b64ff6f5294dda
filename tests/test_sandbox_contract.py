"""The sandbox's Gitea answers agree with Gitea 1.22's own swagger (/work/shared/contracts).

The schemas in the contract use only `type`, `properties`, `items` and `$ref` (no `required`, no
`additionalProperties`), so a small checker does the job without a new dependency, and it is
stricter than a plain JSON Schema validator on purpose: every field the double sends must be one
the swagger declares (a `state` on a CommitStatus, say, is a failure, not an allowed extra).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.world import KILL_SWITCH_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[1]


def contracts_dir(root: Path = REPO_ROOT, env: Mapping[str, str] = os.environ) -> Path:
    """`$FLEETGATE_CONTRACTS`, else `../shared/contracts` beside the clone (as CI lays it out), else
    `/work/shared/contracts`. None found is an error, never a skip: the double must be checked."""
    candidates = [Path(env["FLEETGATE_CONTRACTS"])] if env.get("FLEETGATE_CONTRACTS") else []
    candidates += [root.parent / "shared" / "contracts", Path("/work/shared/contracts")]
    for candidate in candidates:
        if (candidate / "gitea-api-subset.json").is_file():
            return candidate
    raise FileNotFoundError(f"no gitea-api-subset.json in any of {[str(c) for c in candidates]}")


CONTRACT = contracts_dir() / "gitea-api-subset.json"
SWAGGER: dict[str, Any] = json.loads(CONTRACT.read_text(encoding="utf-8"))
DEFS: dict[str, Any] = SWAGGER["definitions"]
API = "/api/v1/repos/acme/fleet"
TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "boolean": (bool,),
                                      "object": (dict,), "array": (list,), "number": (int, float)}


def violations(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Where `value` disagrees with a swagger 2.0 schema (resolving `#/definitions/...`)."""
    if "$ref" in schema:
        return violations(value, DEFS[schema["$ref"].removeprefix("#/definitions/")], where)
    problems: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        allowed = TYPES[kind]
        if not isinstance(value, allowed) or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{where}: expected {kind}, got {type(value).__name__} {value!r:.60}"]
    if kind == "object" or "properties" in schema:
        declared = schema.get("properties", {})
        for key, item in value.items():
            if key not in declared:
                problems.append(f"{where}.{key}: not declared by the swagger")
            else:
                problems.extend(violations(item, declared[key], f"{where}.{key}"))
    if kind == "array":
        for i, item in enumerate(value):
            problems.extend(violations(item, schema.get("items", {}), f"{where}[{i}]"))
    return problems


def response_schema(path: str, status: str = "200", method: str = "get") -> dict[str, Any]:
    ref = SWAGGER["paths"][path][method]["responses"][status]["$ref"].removeprefix("#/responses/")
    schema: dict[str, Any] = SWAGGER["responses"][ref]["schema"]
    return schema


def assert_matches(body: Any, path: str, status: str = "200", method: str = "get") -> None:
    assert violations(body, response_schema(path, status, method)) == []


def gitea(sb: Sandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sb.gitea_url, timeout=5.0,
                             headers={"Authorization": f"token {sb.state.gitea_token}"})


def test_the_checker_catches_what_matters() -> None:
    status = {"id": 1, "context": "c", "status": "success"}
    assert violations(status, {"$ref": "#/definitions/CommitStatus"}) == []
    assert violations({**status, "state": "success"}, {"$ref": "#/definitions/CommitStatus"}) != []
    assert violations({**status, "id": "1"}, {"$ref": "#/definitions/CommitStatus"}) != []
    assert violations({"statuses": None}, {"$ref": "#/definitions/CombinedStatus"}) != []
    assert violations({"commit": {"id": 5}}, {"$ref": "#/definitions/Branch"}) != []


@pytest.mark.anyio
async def test_combined_status_matches_the_swagger_and_carries_status_not_state() -> None:
    async with serve("gate-failure") as sb, gitea(sb) as client:
        answer = await client.get(f"{API}/commits/{sb.state.deploy_sha}/status", params={"limit": 50})
    assert answer.status_code == 200
    body = answer.json()
    assert_matches(body, "/repos/{owner}/{repo}/commits/{ref}/status")
    assert body["sha"] == sb.state.deploy_sha and body["state"] == "failure"
    for entry in body["statuses"]:
        assert "state" not in entry
        assert set(entry) == {"id", "status", "context", "description", "target_url", "url", "creator",
                              "created_at", "updated_at"}
    assert {e["context"]: e["status"] for e in body["statuses"]}["CI / test (push)"] == "failure"


@pytest.mark.anyio
async def test_combined_status_holds_only_the_latest_status_per_context() -> None:
    async with serve("happy") as sb, gitea(sb) as client:
        sha = sb.state.deploy_sha
        sb.state.set_status(sha, "CI / test (push)", "pending")
        sb.state.set_status(sha, "CI / test (push)", "failure")
        combined = (await client.get(f"{API}/commits/{sha}/status")).json()
        history = await client.get(f"{API}/commits/{sha}/statuses", params={"limit": 50})
        by_sha = await client.get(f"{API}/statuses/{sha}", params={"limit": 50})
    contexts = [e["context"] for e in combined["statuses"]]
    assert len(contexts) == len(set(contexts)) == 4
    assert {e["context"]: e["status"] for e in combined["statuses"]}["CI / test (push)"] == "failure"
    for listing in (history, by_sha):
        assert_matches(listing.json(), "/repos/{owner}/{repo}/statuses/{sha}")
        assert [e["status"] for e in listing.json() if e["context"] == "CI / test (push)"] == \
            ["failure", "pending", "success"]  # every status, newest first
        assert listing.headers["x-total-count"] == "6"


@pytest.mark.anyio
async def test_paging_limits_total_count_link_and_the_empty_page() -> None:
    async with serve("many-contexts") as sb, gitea(sb) as client:
        path = f"{API}/commits/{sb.state.deploy_sha}/status"

        async def page(**params: Any) -> httpx.Response:
            return await client.get(path, params=params)

        default, capped, tiny = await page(), await page(limit=500), await page(limit=7, page=2)
        zero, negative = await page(limit=0), await page(limit=-3)
        second, empty = await page(limit=50, page=2), await page(limit=50, page=3)
        page_zero = await page(page=0, limit=50)
    for answer in (default, capped, tiny, zero, negative, second, empty, page_zero):
        assert answer.status_code == 200
        assert answer.headers["x-total-count"] == "60"
        assert_matches(answer.json(), "/repos/{owner}/{repo}/commits/{ref}/status")
    assert len(default.json()["statuses"]) == 30
    assert len(zero.json()["statuses"]) == len(negative.json()["statuses"]) == 30
    assert len(capped.json()["statuses"]) == 50
    assert len(tiny.json()["statuses"]) == 7
    assert len(second.json()["statuses"]) == 10
    assert empty.json()["statuses"] == []
    assert page_zero.json()["statuses"] == capped.json()["statuses"]  # page is 1-based; 0 means 1
    first_page = {e["context"] for e in capped.json()["statuses"]}
    second_page = {e["context"] for e in second.json()["statuses"]}
    assert not first_page & second_page
    assert set(sb.state.required_contexts) <= second_page and not set(sb.state.required_contexts) & first_page
    assert 'rel="next"' in capped.headers["link"] and "page=2" in capped.headers["link"]
    assert 'rel="next"' not in second.headers["link"]
    assert capped.json()["total_count"] == 50  # Gitea counts the page; X-Total-Count has the real total


@pytest.mark.anyio
async def test_a_sha_without_statuses_answers_200_with_an_empty_combined_status() -> None:
    async with serve("happy") as sb, gitea(sb) as client:
        bare = sb.state.add_commit(sb.state.deploy_sha, label="bare")
        answer = await client.get(f"{API}/commits/{bare}/status")
    assert answer.status_code == 200
    body = answer.json()
    assert_matches(body, "/repos/{owner}/{repo}/commits/{ref}/status")
    assert body["state"] == "" and body["statuses"] == [] and answer.headers["x-total-count"] == "0"


@pytest.mark.anyio
async def test_branch_compare_commit_and_variable_match_the_swagger() -> None:
    async with serve("newer-head-pending") as sb, gitea(sb) as client:
        sb.state.engage_kill_switch("yes")
        branch = await client.get(f"{API}/branches/main")
        head = branch.json()["commit"]["id"]
        compare = await client.get(f"{API}/compare/{sb.state.deploy_sha}...{head}")
        commit = await client.get(f"{API}/git/commits/{head}")
        variable = await client.get(f"{API}/actions/variables/{KILL_SWITCH_VARIABLE}")
        missing_branch = await client.get(f"{API}/branches/nope")
        missing_variable = await client.get(f"{API}/actions/variables/NOPE")
        bad_compare = await client.get(f"{API}/compare/{'0' * 40}...{head}")
    assert_matches(branch.json(), "/repos/{owner}/{repo}/branches/{branch}")
    assert "sha" not in branch.json() and head != sb.state.deploy_sha
    assert_matches(compare.json(), "/repos/{owner}/{repo}/compare/{basehead}")
    assert compare.json()["total_commits"] == 1 and compare.json()["commits"][0]["sha"] == head
    assert compare.json()["commits"][0]["parents"][0]["sha"] == sb.state.deploy_sha
    assert_matches(commit.json(), "/repos/{owner}/{repo}/git/commits/{sha}")
    assert_matches(variable.json(), "/repos/{owner}/{repo}/actions/variables/{variablename}")
    assert variable.json()["data"] == "yes" and variable.json()["name"] == KILL_SWITCH_VARIABLE
    for answer in (missing_branch, missing_variable, bad_compare):
        assert answer.status_code == 404
        assert set(answer.json()) == {"message", "url"}


@pytest.mark.anyio
async def test_errors_are_json_message_and_url() -> None:
    async with serve("happy") as sb, httpx.AsyncClient(base_url=sb.gitea_url, timeout=5) as client:
        unauthorized = await client.get(f"{API}/branches/main")
        other_repo = await client.get("/api/v1/repos/acme/other/branches/main",
                                      headers={"Authorization": f"token {sb.state.gitea_token}"})
    for answer in (unauthorized, other_repo):
        assert answer.headers["content-type"].startswith("application/json")
        assert set(answer.json()) == {"message", "url"}
    assert unauthorized.status_code == 401 and other_repo.status_code == 404


def test_the_contracts_are_found_beside_a_fresh_clone(tmp_path: Path) -> None:
    clone, beside, chosen = tmp_path / "fleetgate", tmp_path / "shared" / "contracts", tmp_path / "elsewhere"
    for folder in (clone, beside, chosen):
        folder.mkdir(parents=True)
    for folder in (beside, chosen):
        (folder / "gitea-api-subset.json").write_text("{}", encoding="utf-8")
    assert contracts_dir(clone, {}) == beside
    assert contracts_dir(clone, {"FLEETGATE_CONTRACTS": str(chosen)}) == chosen


@pytest.mark.anyio
async def test_repository_user_and_created_status_match_the_swagger() -> None:
    async with serve("happy") as sb, gitea(sb) as client:
        repo = await client.get(API)
        user = await client.get("/api/v1/user")
        option = {"state": "success", "context": "fleetgate / approve", "description": "approved",
                  "target_url": "http://127.0.0.1:1/runs/1"}
        assert violations(option, {"$ref": "#/definitions/CreateStatusOption"}) == []
        created = await client.post(f"{API}/statuses/{sb.state.deploy_sha}", json=option)
        combined = (await client.get(f"{API}/commits/{sb.state.deploy_sha}/status", params={"limit": 50})).json()
        other_repo = await client.get("/api/v1/repos/acme/flet")
        bad_state = await client.post(f"{API}/statuses/{sb.state.deploy_sha}", json={**option, "state": "ok"})
        unknown_sha = await client.post(f"{API}/statuses/{'0' * 40}", json=option)
    assert repo.status_code == 200
    assert_matches(repo.json(), "/repos/{owner}/{repo}")
    assert repo.json()["full_name"] == sb.state.repo
    assert set(repo.json()["permissions"]) == {"admin", "push", "pull"}
    assert user.status_code == 200
    assert_matches(user.json(), "/user")
    assert isinstance(user.json()["login"], str) and user.json()["login"]
    assert created.status_code == 201
    assert_matches(created.json(), "/repos/{owner}/{repo}/statuses/{sha}", status="201", method="post")
    assert created.json()["creator"]["login"] == user.json()["login"]
    assert created.json()["status"] == "success" and "state" not in created.json()
    assert {e["context"]: e["status"] for e in combined["statuses"]}["fleetgate / approve"] == "success"
    for answer, code in ((other_repo, 404), (bad_state, 400), (unknown_sha, 404)):
        assert answer.status_code == code
        assert set(answer.json()) == {"message", "url"}


@pytest.mark.anyio
async def test_creating_a_status_needs_write_access() -> None:
    from pipelines.sandbox.world import READ

    async with serve("happy") as sb:
        sb.state.gitea_tokens["read-only"] = {READ}
        async with httpx.AsyncClient(base_url=sb.gitea_url, timeout=5.0,
                                     headers={"Authorization": "token read-only"}) as client:
            refused = await client.post(f"{API}/statuses/{sb.state.deploy_sha}",
                                        json={"state": "success", "context": "c"})
            repo = await client.get(API)
    assert refused.status_code == 403 and set(refused.json()) == {"message", "url"}
    assert repo.json()["permissions"]["push"] is False
