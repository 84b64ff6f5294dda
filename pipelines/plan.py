"""`plan`: the resolved settings and every preflight, printed as one JSON object on stdout.

The URL guard and every validation already ran in `settings.resolve` (exit 2, nothing contacted).
Here: the plan-time kill switch (no network), then — with a Gitea token — the live kill switch
(a token that cannot read it fails now, exit 1, not at the first write) and, unless a dry run (it
takes no lease), the lease write probe.
With a token it also names who holds the deploy lease (`lease_holder`; read-only, a plan never
takes it). `settings` holds every resolved setting the verb uses except secrets (those are only
`set`/`missing`): URLs, the URL guard's inputs, timeouts, lease settings.
The plan is printed whatever `--json` says (it *is* the output), once; a disabled plan is printed
too, with `enabled: false` and the reason, and then exits 3.
"""

from __future__ import annotations

from typing import Any

from pipelines.errors import ExitCode, Failed
from pipelines.gitea import GiteaClient
from pipelines.killswitch import live_reason, plan_time_reason
from pipelines.leasecmd import holder_facts
from pipelines.output import Output, redact_json
from pipelines.settings import Kind, Settings, options_for


def _presence(value: object) -> str:
    return "set" if value is not None and value != () else "missing"  # () : no --notify target


def resolved_settings(settings: Settings, verb: str = "plan") -> dict[str, Any]:
    """Every setting `verb` uses as resolved, by name; a secret only as `set` or `missing`."""
    values: dict[str, Any] = {}
    for option in options_for(verb):
        value = getattr(settings, option.name)
        if option.kind is Kind.SECRET:
            values[option.name] = _presence(value)
        else:
            values[option.name] = list(value) if isinstance(value, tuple) else value
    return values


def build_plan(settings: Settings) -> dict[str, Any]:
    """The plan from settings alone (no network): what would be deployed, where, and how."""
    reason = plan_time_reason(settings)
    return {
        "sha": settings.sha,
        "short_sha": settings.short_sha,
        "target_tag": settings.target_tag,
        "repo": settings.repo,
        "branch": settings.branch,
        "cp_url": settings.cp_url,
        "required_contexts": list(settings.required_contexts),
        "canary": settings.canary or None,  # None: the first tenant of the CP listing
        "batch_size": settings.batch_size,
        "soak_seconds": settings.soak_seconds,
        "max_stragglers": settings.max_stragglers,
        "on_failure": settings.on_failure,
        "dry_run": settings.dry_run,
        "enabled": reason is None,
        "disabled_reason": reason,
        "live_kill_switch": settings.live_kill_switch,
        "lease": settings.lease,
        "gitea_token": _presence(settings.gitea_token),
        "cp_token": _presence(settings.cp_token),
        "settings": resolved_settings(settings),
    }


async def preflight(settings: Settings, out: Output) -> dict[str, Any]:
    """The plan with the live preflights done. Raises Failed when Gitea cannot answer what it must.

    A plan disabled at plan time contacts nothing; the caller decides what `enabled: false` means.
    """
    plan = build_plan(settings)
    if not plan["enabled"]:
        return plan
    if settings.gitea_token is None:
        if settings.live_kill_switch:
            out.warn("no --gitea-token: the live kill switch is not read now (assert-enabled will need it)")
        return plan
    async with GiteaClient.for_settings(settings) as gitea:
        reason = await live_reason(gitea) if settings.live_kill_switch else None
        plan["lease_holder"] = await holder_facts(gitea, settings, out)
        if settings.live_kill_switch:
            if reason:
                plan.update(enabled=False, disabled_reason=reason)
                return plan
            out.ok("live kill switch is off")
        if settings.lease and not settings.dry_run:  # a dry run takes no lease (pipelines/rollout.py)
            if not await gitea.can_write_variables():
                raise Failed("the Gitea token cannot write Actions variables, which the deploy lease needs "
                             "(write:repository / Actions variables); grant it, or pass --no-lease")
            out.ok("the Gitea token can write the lease variable")
    return plan


async def run(settings: Settings, out: Output) -> dict[str, Any]:
    """The `plan` verb: print the plan (always JSON, exactly once); exit 3 when disabled."""
    plan = await preflight(settings, out)
    print(redact_json(plan), file=out.stdout, flush=True)
    if not plan["enabled"]:
        out.error(f"fleetgate plan: kill switch engaged: {plan['disabled_reason']}")
        return {**plan, "exit_code": int(ExitCode.DISABLED)}
    out.ok(f"plan: {settings.target_tag} ({settings.short_sha}) for {settings.repo} via {settings.cp_url}")
    return plan


__all__ = ["build_plan", "preflight", "run"]
