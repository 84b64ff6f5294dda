"""Named scenarios: each shapes a fresh `World` for one story (a gate that fails, a stuck canary, …).

The base world: repo acme/fleet, history c0 ← c1 ← c2, `main` at c2 (the SHA to deploy, every
required context `success`), seven tenants on c1 (the previous release), one CP token, one Gitea
token that may read and write Actions variables. A scenario then changes what its name says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.redact import Secret
from pipelines.sandbox.world import KILL_SWITCH_VARIABLE, READ, Approver, World

REQUIRED_CONTEXTS = ("CI / test (push)", "CI / lint (push)", "CI / all-required (push)")
OPTIONAL_CONTEXT = "Security / scan (push)"
DEFAULT_TENANTS = 7
NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
         "uniform", "victor", "whiskey", "xray", "yankee", "zulu")

# Fast enough that `deploy-production --sandbox` takes seconds, slow enough to watch.
# Rehearsals keep their own ledger: `promote` trusts the real one.
SANDBOX_LEDGER = "fleetgate-sandbox-ledger.jsonl"

TIMINGS: dict[str, float] = {
    "poll_interval": 0.1,
    "gate_timeout": 10.0,
    "soak_seconds": 0.5,
    "verify_interval": 0.1,
    "verify_timeout": 3.0,
    "cp_retry_backoff": 0.05,
    "lease_wait": 3.0,
    "gitea_retry_deadline": 2.0,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    shape: Callable[[World], None]


def slug_name(i: int) -> str:
    return NAMES[i] if i < len(NAMES) else f"tenant-{i:03d}"


def base_world(tenants: int | None = None) -> World:
    w = World(required_contexts=REQUIRED_CONTEXTS)
    c0 = w.add_commit(label="c0", message="initial import")
    c1 = w.add_commit(c0, label="c1", message="previous release")
    c2 = w.add_commit(c1, label="c2", message="the change to deploy", branch="main")
    w.deploy_sha = c2
    for sha in (c0, c1, c2):
        w.set_statuses(sha, "success", (*REQUIRED_CONTEXTS, OPTIONAL_CONTEXT))
    count = DEFAULT_TENANTS if tenants is None else tenants
    for i in range(count):
        w.add_tenant(slug_name(i), c1, latency=0.05 + 0.01 * (i % 5))
    return w


def _slug(w: World, i: int) -> str:
    """The i-th tenant in listing order (wraps around small fleets)."""
    slugs = sorted(w.tenants)
    if not slugs:
        raise ValueError("this scenario needs at least one tenant")
    return slugs[i % len(slugs)]


def _child_of_deploy(w: World, state: str, *, branch: str | None = "main") -> str:
    c3 = w.add_commit(w.deploy_sha, label="c3", message="a newer change", branch=branch)
    w.set_statuses(c3, state)
    return c3


def _set_required(state: str, context: str = "CI / test (push)") -> Callable[[World], None]:
    def shape(w: World) -> None:
        w.set_status(w.deploy_sha, context, state)

    return shape


def _gates_pending(w: World) -> None:
    for context in w.required_contexts:
        w.set_status(w.deploy_sha, context, "pending")
        w.set_status(w.deploy_sha, context, "success", after_reads=3)


def _gate_failure(w: World) -> None:
    w.set_status(w.deploy_sha, "CI / test (push)", "failure")
    w.set_status(w.deploy_sha, "CI / all-required (push)", "failure")


def _sentinel_green_concrete_red(w: World) -> None:
    w.set_status(w.deploy_sha, "CI / test (push)", "failure")
    w.set_status(w.deploy_sha, "CI / all-required (push)", "success")


def _many_contexts(w: World) -> None:
    # 56 other contexts first, then the required ones re-posted last: 60 contexts, and the
    # required ones sort after position 50, i.e. only on page 2 at limit=50.
    for i in range(56):
        w.set_status(w.deploy_sha, f"Matrix / shard-{i:02d} (push)", "success")
    w.set_statuses(w.deploy_sha, "success")


def _gate_missing(w: World) -> None:
    w.statuses[w.deploy_sha].pop("CI / all-required (push)")


def _gitea_5xx(w: World) -> None:
    w.gitea_faults.fail_next = 2
    w.gitea_faults.fail_status = 503


def _gitea_rate_limited(w: World) -> None:
    w.gitea_faults.rate_limit_next = 1
    w.gitea_faults.retry_after = "1"


def _gitea_unauthorized(w: World) -> None:
    w.gitea_tokens.pop(w.gitea_token, None)


def _kill_switch_engaged(w: World) -> None:
    w.engage_kill_switch("true")


def _kill_switch_unreadable(w: World) -> None:
    w.gitea_faults.unreadable_variables.add(KILL_SWITCH_VARIABLE)


def _kill_switch_flips(w: World) -> None:
    w.on_write(2, lambda world: world.engage_kill_switch("true"))


def _read_only_token(w: World) -> None:
    w.gitea_tokens[w.gitea_token] = {READ}


def _stuck(i: int) -> Callable[[World], None]:
    def shape(w: World) -> None:
        w.tenants[_slug(w, i)].stuck = True

    return shape


def _slow_tenants(w: World) -> None:
    for i, slug in enumerate(sorted(w.tenants)):
        tenant = w.tenants[slug]
        tenant.latency = 0.2 + 0.1 * (i % 6)
        tenant.boot_reads = 2 if i % 2 else 0


def _cp_5xx(w: World) -> None:
    # The first two wave calls redeploy their first tenant, then answer 502: the canary wave's retry
    # has nothing left to send; the next wave's retry must re-send only the rest.
    w.cp_faults.fail_next = 2
    w.cp_faults.fail_status = 502
    w.cp_faults.fail_after_slugs = 1


def _cp_refuses(w: World) -> None:
    w.cp_faults.refuse = "refusing redeploy: the fleet is in a maintenance window"


def _hostile_slug(w: World) -> None:
    w.cp_faults.hostile_slugs = ["../x", "Evil.Example", "a" * 80, "ok\x1b[31m-slug\r\ninjected"]


def _tenant_on_descendant(w: World) -> None:
    c3 = _child_of_deploy(w, "pending")
    w.tenants[_slug(w, 4)].sha = c3


def _newer_head_green(w: World) -> None:
    _child_of_deploy(w, "success")


def _newer_head_pending(w: World) -> None:
    _child_of_deploy(w, "pending")


def _head_moves_mid_run(w: World) -> None:
    def move_head(world: World) -> None:
        _child_of_deploy(world, "success")

    w.on_write(1, move_head)


def _lease_held(w: World) -> None:
    w.hold_lease(run="other-run-7", expires_in=3600)


def _lease_expired(w: World) -> None:
    w.hold_lease(run="crashed-run-3", expires_in=-600)


CRASHED_RUN = "crashed-run-9"


def _lease_interrupted(w: World) -> None:
    """A run of this SHA was interrupted after its canary and could not release its lease."""
    canary = _slug(w, 0)
    before = w.tenants[canary].sha
    w.tenants[canary].sha = w.deploy_sha
    w.hold_lease(run=CRASHED_RUN, sha=w.deploy_sha, expires_in=900)
    tag = f"staging-{w.deploy_sha[:7]}"
    row = {canary: {"before": before, "after": w.deploy_sha, "verdict": "verified"}}
    w.ledger_history += [
        (CRASHED_RUN, "plan", {"verb": "deploy-production", "sha": w.deploy_sha, "tag": tag}),
        (CRASHED_RUN, "gate", {"sha": w.deploy_sha, "ok": True}),
        (CRASHED_RUN, "lease", {"action": "taken", "run": CRASHED_RUN, "sha": w.deploy_sha}),
        (CRASHED_RUN, "wave_start", {"wave": 0, "label": "canary", "canary": True, "slugs": [canary],
                                     "tag": tag, "sha": w.deploy_sha}),
        (CRASHED_RUN, "cp_call", {"wave": 0, "ok": True, "attempts": 1}),
        (CRASHED_RUN, "wave_verified", {"wave": 0, "label": "canary", "slugs": [canary], "stragglers": [],
                                        "tenants": row}),
        (CRASHED_RUN, "halt", {"reason": "interrupted", "changed": [canary]}),
        (CRASHED_RUN, "done", {"sha": w.deploy_sha, "tag": tag, "verified": False, "dry_run": False,
                               "exit_code": 1, "outcome": "interrupted", "tenants": row}),
    ]


def seed_ledger(w: World, path: str) -> None:
    """Write the scenario's past runs into the rehearsal ledger, once (a run id already there is kept)."""
    if not w.ledger_history:
        return
    from pipelines.ledger import Ledger, read_ledger

    present = {e.get("run_id") for e in read_ledger(path)}
    for run_id, event, facts in w.ledger_history:
        if run_id not in present:
            Ledger(path, run_id).record(event, **facts)


def _partially_deployed(w: World) -> None:
    slugs = sorted(w.tenants)
    for slug in slugs[: (len(slugs) + 1) // 2]:
        w.tenants[slug].sha = w.deploy_sha


def _redirecting_tenant(w: World) -> None:
    w.tenants[_slug(w, 2)].buildinfo = "redirect"


def _row_failure_but_verified(w: World) -> None:
    w.tenants[_slug(w, 1)].reports_failure = True


def leaky_text(w: World) -> str:
    """An error text no log may show as-is: both tokens, URL credentials, control characters."""
    return (f"ssm: Authorization: Bearer {w.cp_token} failed for https://deploy:hunter2-pass@cp.internal/x "
            f"?token={w.gitea_token} \x1b[31mERROR\x1b[0m\r\nforged: log line\x00")


def _leaky_errors(w: World) -> None:
    text = leaky_text(w)
    w.cp_faults.row_error = text
    w.tenants[_slug(w, 1)].reports_failure = True
    w.cp_faults.fail_next = 1
    w.cp_faults.fail_body = text


def _unreachable_tenant(w: World) -> None:
    w.tenants[_slug(w, 3)].buildinfo = "unreachable"


def _approver(state: str, after_seconds: float) -> Callable[[World], None]:
    def shape(w: World) -> None:
        w.approver = Approver(state=state, after_seconds=after_seconds)

    return shape


def _regresses(i: int) -> Callable[[World], None]:
    def shape(w: World) -> None:
        w.tenants[_slug(w, i)].regress_after_reads = 1  # verified once, then back on its old SHA

    return shape


def _unhealthy_after_deploy(w: World) -> None:
    w.tenants[_slug(w, 2)].health_on_deploy = 503


def _errors_after_deploy(w: World) -> None:
    for tenant in w.tenants.values():
        tenant.errors_per_scrape = 1.0


_ALL: list[Scenario] = [
    Scenario("happy", "all gates green, the whole fleet on the previous release; a clean deploy",
             lambda w: None),
    Scenario("gates-pending", "required contexts pending for the first 3 reads, then success",
             _gates_pending),
    Scenario("gate-failure", "'CI / test (push)' and the sentinel are failure", _gate_failure),
    Scenario("gate-error", "'CI / test (push)' is error", _set_required("error")),
    Scenario("gate-warning", "'CI / test (push)' is warning", _set_required("warning")),
    Scenario("gate-skipped", "'CI / test (push)' is skipped (newer Gitea)", _set_required("skipped")),
    Scenario("gate-cancelled", "'CI / test (push)' is cancelled", _set_required("cancelled")),
    Scenario("sentinel-green-concrete-red",
             "'CI / all-required (push)' success while 'CI / test (push)' is failure",
             _sentinel_green_concrete_red),
    Scenario("many-contexts", "60 contexts on the SHA; the required ones only on page 2 (limit 50)",
             _many_contexts),
    Scenario("gate-missing", "'CI / all-required (push)' never reported on the SHA", _gate_missing),
    Scenario("gitea-5xx", "the first 2 Gitea requests answer 503, then Gitea recovers", _gitea_5xx),
    Scenario("gitea-rate-limited", "the first Gitea request answers 429 with Retry-After: 1",
             _gitea_rate_limited),
    Scenario("gitea-unauthorized", "Gitea does not know the token: 401 on every request",
             _gitea_unauthorized),
    Scenario("kill-switch-engaged", "Actions variable PROD_AUTO_DEPLOY_DISABLED=true", _kill_switch_engaged),
    Scenario("kill-switch-unreadable", "reading PROD_AUTO_DEPLOY_DISABLED answers 500, always (retried, then exit 1)",
             _kill_switch_unreadable),
    Scenario("kill-switch-flips", "the CP engages the kill switch when its 2nd wave write arrives",
             _kill_switch_flips),
    Scenario("read-only-token", "the Gitea token may read but not write Actions variables (403)",
             _read_only_token),
    Scenario("stuck-tenant", "the 4th tenant stays on its old SHA although the CP says ok", _stuck(3)),
    Scenario("stuck-canary", "the canary (first tenant) stays on its old SHA although the CP says ok",
             _stuck(0)),
    Scenario("slow-tenants", "redeploys take 0.2-0.7 s; every other tenant reports the new SHA 2 reads late",
             _slow_tenants),
    Scenario("cp-5xx", "the first 2 wave calls redeploy one tenant, then answer 502", _cp_5xx),
    Scenario("cp-refuses", "wave calls answer ok:false (maintenance window)", _cp_refuses),
    Scenario("hostile-slug", "the CP's listing holds slugs like '../x' and 'Evil.Example'", _hostile_slug),
    Scenario("tenant-on-descendant", "a tenant already runs a descendant of the SHA (stand down, exit 5)",
             _tenant_on_descendant),
    Scenario("newer-head-green", "main moved to a green descendant of the SHA (stand down, exit 5)",
             _newer_head_green),
    Scenario("newer-head-pending", "main moved to a descendant whose gates are pending (deploy goes on)",
             _newer_head_pending),
    Scenario("head-moves-mid-run", "main moves to a green descendant right after the first write",
             _head_moves_mid_run),
    Scenario("lease-held", "another run holds an unexpired deploy lease", _lease_held),
    Scenario("lease-expired", "a crashed run left an expired deploy lease", _lease_expired),
    Scenario("lease-interrupted", "a run of this SHA was interrupted after its canary and left its lease "
             "(and its record in the sandbox ledger)", _lease_interrupted),
    Scenario("partially-deployed", "the first half of the fleet already runs the SHA (a killed run)",
             _partially_deployed),
    Scenario("redirecting-tenant", "the 3rd tenant's /buildinfo redirects to another origin",
             _redirecting_tenant),
    Scenario("row-failure-but-verified", "the CP row of the 2nd tenant says failure, yet it runs the SHA",
             _row_failure_but_verified),
    Scenario("leaky-errors", "CP error texts carry tokens, URL credentials and control characters",
             _leaky_errors),
    Scenario("unreachable-tenant", "the 4th tenant's /buildinfo answers 502 (a dead instance)",
             _unreachable_tenant),
    Scenario("canary-approved", "with --approve-after-canary: release-manager approves 1 s after the run starts "
             "waiting", _approver("success", 1.0)),
    Scenario("canary-rejected", "with --approve-after-canary: release-manager rejects 0.5 s after the run starts "
             "waiting", _approver("failure", 0.5)),
    Scenario("canary-unanswered", "with --approve-after-canary: nobody answers (try --approval-timeout 2)",
             lambda w: None),
    Scenario("tenant-regresses", "the 2nd tenant verifies, then falls back to its old SHA during the soak",
             _regresses(1)),
    Scenario("canary-regresses", "the canary verifies, then falls back to its old SHA during the soak",
             _regresses(0)),
    Scenario("unhealthy-after-deploy", "the 3rd tenant's /healthz answers 503 once it runs the SHA "
             "(try --health-path /healthz)", _unhealthy_after_deploy),
    Scenario("errors-after-deploy", "every tenant's error counter on /metrics climbs once it runs the SHA "
             "(a Prometheus scraping it fails --analysis-query)", _errors_after_deploy),
]
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}


def build_world(scenario: str | Scenario = "happy", *, tenants: int | None = None) -> World:
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise KeyError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        scenario = SCENARIOS[scenario]
    world = base_world(tenants)
    scenario.shape(world)
    return world


def overlay(w: World, gitea_url: str, cp_url: str, tenant_url_template: str) -> dict[str, Any]:
    """Settings overlay pointing fleetgate at a world served on these URLs (flags still win over it)."""
    return {
        "gitea_url": gitea_url,
        "gitea_token": Secret(w.gitea_token),
        "repo": w.repo,
        "sha": w.deploy_sha,
        "branch": "main",
        "required_contexts": tuple(w.required_contexts),
        "cp_url": cp_url,
        "prod_cp_url": cp_url,  # the sandbox is "production" here, so the URL guard stays live
        "cp_token": Secret(w.cp_token),
        "tenant_url_template": tenant_url_template,
        "ledger": SANDBOX_LEDGER,  # rehearsals keep their own ledger: `promote` trusts the real one
        **TIMINGS,
    }


def placeholder_overlay() -> dict[str, Any]:
    """Overlay-shaped valid values, to validate settings before the sandbox starts."""
    from pipelines.sandbox.registry_app import REPOSITORY

    return {**overlay(base_world(0), "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3/tenants/{slug}"),
            "image": f"127.0.0.1:4/{REPOSITORY}"}


def describe() -> str:
    width = max(len(n) for n in SCENARIOS)
    return "\n".join(f"{s.name:<{width}}  {s.doc}" for s in SCENARIOS.values())
