"""Property: random fault schedules over Gitea, the CP and the tenants, kill-switch flips at every
write, SIGINT at any request, hostile inputs — every run satisfies I1–I5 (see harness.py).

The eight classes of issue 8 are all drawn here: (1) 502s and kill-switch flips at writes, (2) bad
tenant templates, (3) misspelt repositories and base URLs, (4) deep JSON, gzip garbage, signals,
(5) tokens and hosts the HTTP layer refuses, (6) proxies, redirects and echoed tokens, (7) lease
uniqueness and drips (also test_fault_examples.py), (8) lost stragglers, duplicate contexts,
lying totals, upper-case descendants, TOML tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from faults.conftest import fault_profile
from faults.fakes import CONTEXT, GENERIC_FAULTS, Fakes, World
from faults.harness import Case, check, run_in_process

GITEA_KINDS = ("repo", "kill", "lease", "branch", "compare", "status")
CP_WRITE_FAULTS = ("refuse", "refuse-echo", "rows-echo", "applied-502", "lie-ok", "502", "503", "504",
                   "503-retry-after", "echo", "echo-400", "garbage", "gzip", "deep", "close", "redirect")
TENANT_FAULTS = ("500", "502", "404", "garbage", "gzip", "deep", "drip", "close", "redirect", "echo")
HOSTILE_SLUGS = ("../admin", "Evil", "a.b", "x" * 70, "a/b", "-lead", "ok\nx")

sha = st.binary(min_size=20, max_size=20).map(bytes.hex)
token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=32)


def _bad_inputs(port_of: dict[str, str]) -> list[tuple[dict[str, str], str, frozenset[int]]]:
    """(env overrides, fleetgate.toml text, exit codes allowed). Most are usage errors (exit 2)."""
    g, t = port_of["gitea"], port_of["tenants"]
    two = frozenset({2})
    return [
        ({"PROD_TENANT_URL_TEMPLATE": t + "/t/{{slug}}"}, "", two),
        ({"PROD_TENANT_URL_TEMPLATE": t + "/t/{slug}/.."}, "", two),
        ({"PROD_TENANT_URL_TEMPLATE": t + "/t/{slug}/%2e%2e"}, "", two),
        ({"PROD_TENANT_URL_TEMPLATE": t + "/t/x"}, "", two),
        ({"GITEA_TOKEN": "abc\ndef1234567890"}, "", two),
        ({"CP_ADMIN_API_TOKEN": "tökén-1234567890abcdef"}, "", two),
        ({"CP_ADMIN_API_TOKEN": "abc123\r\nX-Evil: 1"}, "", two),
        ({"GITEA_URL": g.replace("127.0.0.1", "127.0.0.1\x07")}, "", two),
        ({"GITEA_URL": g.replace("127.0.0.1", "xn--zz--.localhost")}, "", two),
        ({"GITHUB_REPOSITORY": "acme/.."}, "", two),
        ({"GITHUB_REPOSITORY": "../fleet"}, "", two),
        ({}, "[rollout]\ndry_run = true\n", two),
        ({}, "dryrun = true\n", two),
        ({"GITHUB_REPOSITORY": "acme/flet"}, "", frozenset({1})),  # misspelt: every path 404
        ({"GITEA_URL": g + "/api/v1"}, "", frozenset({1, 2})),
    ]


def sometimes(strategy: st.SearchStrategy[Any], absent: Any) -> st.SearchStrategy[Any]:
    """`strategy` in about a third of the draws, `absent` otherwise (and `absent` is what shrinking seeks)."""
    return st.one_of(st.just(absent), st.just(absent), strategy)


@st.composite
def cases(draw: st.DrawFn, fakes: Fakes) -> Case:
    old, target, newer = draw(st.lists(sha, min_size=3, max_size=3, unique=True))
    n = draw(st.integers(1, 4))
    slugs = [f"t{i}" for i in range(n)]
    initial = {s: draw(st.sampled_from([old, old, old, target])) for s in slugs}
    newer_running: list[str] = []
    if draw(st.integers(0, 9)) == 0:
        victim = draw(st.sampled_from(slugs))
        initial[victim] = newer
        newer_running.append(victim)
    head = draw(st.sampled_from([target, target, target, newer]))
    head_green = draw(st.booleans())
    verb = draw(st.sampled_from(["rollout", "rollout", "rollout", "deploy-production"]))
    # Each kind of fault is present in about a third of the runs, so that many runs get far (to the later
    # waves, the retries, the rollback) instead of nearly all of them failing at their first step.
    gitea_faults = draw(sometimes(st.dictionaries(st.tuples(st.sampled_from(GITEA_KINDS), st.integers(0, 3)),
                                                  st.sampled_from(GENERIC_FAULTS), min_size=1, max_size=3), {}))
    cp_faults = draw(sometimes(st.dictionaries(st.tuples(st.just("cp_list"), st.integers(0, 1)),
                                               st.sampled_from(GENERIC_FAULTS), min_size=1, max_size=1), {}))
    write_faults = draw(sometimes(st.dictionaries(st.tuples(st.just("cp_write"), st.integers(0, 3)),
                                                  st.sampled_from(CP_WRITE_FAULTS), min_size=1, max_size=3), {}))
    tenant_faults = draw(sometimes(st.dictionaries(st.tuples(st.sampled_from(slugs), st.integers(0, 4)),
                                                   st.sampled_from(TENANT_FAULTS), min_size=1, max_size=3), {}))
    statuses: list[dict[str, Any]] = [{"id": 1, "context": CONTEXT, "status": "success"}]
    gate_shape = draw(st.sampled_from(["green"] * 4 + ["duplicate", "duplicate-no-id", "pending", "failure",
                                                       "paged", "paged-lying"]))
    if gate_shape == "duplicate":
        statuses = [{"id": 1, "context": CONTEXT, "status": "failure"},
                    {"id": 1, "context": CONTEXT, "status": "success"}]
    elif gate_shape == "duplicate-no-id":
        statuses = [{"context": CONTEXT, "status": "failure"}, {"context": CONTEXT, "status": "success"}]
    elif gate_shape in ("pending", "failure"):
        statuses = [{"id": 1, "context": CONTEXT, "status": gate_shape}]
    elif gate_shape.startswith("paged"):
        statuses = [{"id": i + 2, "context": f"other/{i}", "status": "success"} for i in range(50)] + \
                   [{"id": 60, "context": CONTEXT, "status": draw(st.sampled_from(["success", "failure"]))}]
    # distinctive prefixes: a shrunk token ("000…") must not be a substring of a SHA or a tag
    gitea_token, cp_token = "gtea" + draw(token), "cpadm" + draw(token)
    world = World(
        tokens={"gitea": gitea_token, "cp": cp_token}, commits=[old, target, newer], target=target,
        tenants=initial, head=head, head_green=head_green,
        kill=draw(st.sampled_from([None] * 10 + ["false", "", "true", "Disabled"])),
        statuses=statuses, lying_total=gate_shape == "paged-lying",
        upper_report=set(draw(sometimes(st.lists(st.sampled_from(slugs), max_size=2), []))),
        stuck=set(draw(sometimes(st.lists(st.sampled_from(slugs), min_size=1, max_size=2), []))),
        lag={s: draw(st.integers(0, 3)) for s in draw(sometimes(st.lists(st.sampled_from(slugs), max_size=2), []))},
        drop_from_second_listing=draw(sometimes(st.sampled_from(slugs), None)),
        hostile_slug=draw(st.sampled_from([None] * 12 + list(HOSTILE_SLUGS))),
        faults={**gitea_faults, **cp_faults, **write_faults}, tenant_faults=tenant_faults,
        flip_after_write=draw(sometimes(st.integers(0, 3), None)),
        flip_at_kill_read=draw(sometimes(st.integers(0, 4), None)),
        signal_at=draw(st.one_of(*[st.none()] * 6, st.sampled_from([("lease", 0), ("cp_list", 0)]), st.tuples(
            st.sampled_from(["cp_write", "kill", "tenant", "status"]), st.integers(0, 2)))),
    )
    if world.drop_from_second_listing is not None and draw(st.booleans()):
        world.stuck.add(world.drop_from_second_listing)  # written, never moved, then no longer listed
    lease_shape = draw(st.sampled_from(["free"] * 8 + ["held", "expired", "garbage"]))
    if lease_shape == "held":  # another run's live lease: this run must not write (lease wait is 0)
        world.lease = json.dumps({"run": "other-run-77", "sha": target, "expires": "2099-01-01T00:00:00Z"})
    elif lease_shape == "expired":  # broken (with a ledger record), then taken
        world.lease = json.dumps({"run": "other-run-77", "sha": old, "expires": "2001-01-01T00:00:00Z"})
    elif lease_shape == "garbage":  # not ours, never expires: treated as held
        world.lease = "{not json"
    world.foreign_lease = lease_shape in ("held", "garbage")
    world.initial_lease = world.lease
    max_stragglers = draw(st.integers(0, 2))
    dry_run = draw(st.integers(0, 9)) == 0
    env = {
        "PROD_AUTO_DEPLOY_BATCH_SIZE": str(draw(st.integers(1, 3))),
        "PROD_AUTO_DEPLOY_MAX_STRAGGLERS": str(max_stragglers),
        "PROD_AUTO_DEPLOY_ON_FAILURE": draw(st.sampled_from(["halt", "rollback"])),
        "PROD_AUTO_DEPLOY_DRY_RUN": "true" if dry_run else "false",
    }
    if draw(st.integers(0, 7)) == 0:
        env["FLEETGATE_USE_LEASE"] = "false"
    if draw(st.integers(0, 5)) == 0:
        env["PROD_AUTO_DEPLOY_CANARY_SLUG"] = "none"
    config, expect = "", None
    if draw(st.integers(0, 7)) == 0:
        ports = {role: fakes.url(role) for role in ("gitea", "tenants")}
        bad_env, config, expect = draw(st.sampled_from(_bad_inputs(ports)))
        env.update(bad_env)
    head_supersedes = head == newer and head_green
    return Case(world=world, verb=verb, env=env, config=config, expect_usage=expect == frozenset({2}),
                max_stragglers=max_stragglers, dry_run=dry_run, expect_codes=expect,
                newer_running=newer_running, head_supersedes=head_supersedes,
                proxies=draw(st.integers(0, 2)) > 0)


@fault_profile()
@given(data=st.data())
def test_every_fault_schedule_keeps_the_five_invariants(fakes: Fakes, scratch: Path, data: st.DataObject) -> None:
    case = data.draw(cases(fakes))
    run = run_in_process(fakes, case, scratch / "run")
    check(run)

