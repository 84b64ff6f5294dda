"""`deploy-production` (the main job) and `redeploy` (manual redeploy / rollback).

deploy-production = plan (settings already validated; live preflights) → wait-gates →
assert-enabled → rollout (lease, stand-down, canary, verified waves) → final verify of the whole
fleet — one run: every step lands in the ledger under one run id, and every ending (a gate
failure, the kill switch, SIGTERM while waiting for the gates, …) is one `done`, the step summary
and the `--json` object, through `pipelines.rollout.result.finish`.

redeploy goes to an explicit known-good tag: it ignores the *auto*-deploy kill switch and the
stand-down rule (it exists to go back, during an incident, while auto-deploys are frozen) and
keeps the URL guard, lease, canary, waves and verification. Where its tag comes from, in order:
`--target-tag` / `PROD_AUTO_DEPLOY_TARGET_TAG`; else the Gitea Actions variable
`PROD_MANUAL_REDEPLOY_TARGET_TAG` (Gitea 1.22 drops workflow_dispatch inputs, so a workflow hands
the tag over this way); else `--tag-template` applied to `--sha`. Verification always checks that
the tenants report `--sha`, so a tag that does not hold that SHA fails at the canary.
"""

from __future__ import annotations

import re
from typing import Any

from pipelines import killswitch
from pipelines.errors import Disabled, Failed, UsageError
from pipelines.gates import gitea_for_gates, wait_gates
from pipelines.gitea import GiteaClient
from pipelines.ledger import Ledger
from pipelines.output import Output
from pipelines.plan import preflight
from pipelines.redact import redact
from pipelines.rollout import Phase, new_state, rollout
from pipelines.settings import Settings

MANUAL_TAG_VARIABLE = "PROD_MANUAL_REDEPLOY_TARGET_TAG"
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # an OCI tag


def describe_plan(plan: dict[str, Any]) -> str:
    canary = plan.get("canary") or "first tenant"
    return (f"plan: deploy {plan['target_tag']} ({plan['short_sha']}) of {plan['repo']} "
            f"via {plan['cp_url']}; "
            f"canary {canary}, then waves of {plan['batch_size']}, soak {plan['soak_seconds']:g}s, "
            f"max stragglers {plan['max_stragglers']}, on failure {plan['on_failure']}; "
            f"lease {'on' if plan['lease'] else 'OFF (--no-lease)'}; "
            f"live kill switch {'on' if plan['live_kill_switch'] else 'OFF'}"
            f"{'; DRY RUN' if plan['dry_run'] else ''}")


async def deploy_production(settings: Settings, out: Output) -> dict[str, Any]:
    """The main job, as ONE run: its gates are the run's first phase, so a gate failure, a kill switch,
    a signal while waiting or any later ending writes exactly one `done` (`pipelines.rollout.result`)."""
    if settings.gitea_token is None:
        raise UsageError("--gitea-token (GITEA_TOKEN) is required: deploy-production reads the gates, "
                         "the kill switch and the lease in Gitea")
    if settings.cp_token is None:
        raise UsageError("--cp-token (CP_ADMIN_API_TOKEN) is required: deploy-production calls the "
                         "control plane")
    state = new_state(settings, verb="deploy-production", manual=False)
    ledger = Ledger(settings.ledger, state.run_id)

    async def gates() -> None:
        state.enter(Phase.GATES)
        state.step = "plan"
        killswitch.check_plan_time(settings)  # exit 3 before anything is contacted
        plan = await preflight(settings, out)
        out.info(describe_plan(plan))
        ledger.record("plan", verb="deploy-production", **plan)
        if not plan["enabled"]:
            raise Disabled(f"kill switch engaged: {plan['disabled_reason']}",
                           details={"disabled_reason": plan["disabled_reason"]})
        state.step = "wait-gates"
        async with gitea_for_gates(settings) as gitea:
            try:
                result = await wait_gates(settings, gitea, out)
            except Failed as exc:
                ledger.record("gate", sha=settings.sha, ok=False, error=exc.message)
                raise
            state.gates = dict(result.get("contexts", {}))
            ledger.record("gate", sha=settings.sha, ok=True, contexts=state.gates)
            state.step = "assert-enabled"
            if settings.live_kill_switch:
                reason = await killswitch.live_reason(gitea)
                ledger.record("kill_switch", before="rollout", engaged=reason is not None, reason=reason)
                if reason:
                    raise Disabled(f"kill switch engaged: {reason}", details={"disabled_reason": reason})
                out.ok("kill switch off")
        state.step = "rollout"

    return await rollout(settings, out, final_verify=True, verb="deploy-production", state=state, before=gates)


async def manual_target_tag(settings: Settings, out: Output) -> tuple[str, str]:
    """(tag, where it came from) for redeploy: flag/env, else the Gitea variable, else the template."""
    if settings.target_tag:
        return settings.target_tag, "--target-tag"
    if settings.gitea_token is not None:
        async with GiteaClient.for_settings(settings) as gitea:
            value = await gitea.get_variable(MANUAL_TAG_VARIABLE)
        if value is not None and value.strip():
            tag = value.strip()
            if not TAG_RE.match(tag):
                raise Failed(f"Gitea variable {MANUAL_TAG_VARIABLE} is not an image tag: "
                             f"{redact(repr(tag), limit=80)}")
            if tag != settings.tag_for(settings.sha):
                out.warn(f"{MANUAL_TAG_VARIABLE}={tag} is not the --tag-template tag of --sha "
                         f"{settings.short_sha} ({settings.tag_for(settings.sha)}); the canary must report "
                         f"{settings.short_sha} or the run stops")
            return tag, f"Gitea variable {MANUAL_TAG_VARIABLE}"
    return settings.tag_for(settings.sha), "--tag-template"


async def redeploy(settings: Settings, out: Output, break_lease: bool = False) -> dict[str, Any]:
    """The `redeploy` verb: a canaried, verified rollout of an explicit tag that must report --sha."""
    if settings.cp_token is None:
        raise UsageError("--cp-token (CP_ADMIN_API_TOKEN) is required: redeploy calls the control plane")
    if break_lease and not settings.lease:
        raise UsageError("--break-lease makes no sense with --no-lease")
    tag, source = await manual_target_tag(settings, out)
    out.info(f"redeploy: {tag} (from {source}) must report {settings.short_sha}; the auto-deploy kill switch "
             "and the stand-down rule do not apply")
    if break_lease:
        out.warn("--break-lease: another run's lease will be broken (recorded in the ledger)")
    return await rollout(settings.with_(target_tag=tag), out, manual=True, break_lease=break_lease,
                         final_verify=True, verb="redeploy")


run = deploy_production

__all__ = ["MANUAL_TAG_VARIABLE", "deploy_production", "manual_target_tag", "redeploy"]
