"""`fleetgate status`: what is going on now, read-only.

The lease (holder, SHA, expiry — and what our ledger knows of its holder), the kill switch (plan-time
from the environment, live from Gitea), the branch head and its required contexts, the last run of
the ledger (outcome, exit code, when, how far it got) and, with `--fleet`, the fleet by SHA (CP
dry-run listing + `/buildinfo`). Nothing is judged here that a run did not judge itself: the last
run's outcome is its `done` event's word.
"""

from __future__ import annotations

from typing import Any

from pipelines.cp import CPClient
from pipelines.errors import UsageError
from pipelines.gates import SUCCESS, judge
from pipelines.gitea import GiteaClient
from pipelines.killswitch import live_reason, plan_time_reason
from pipelines.lease import read_lease
from pipelines.leasecmd import describe_lease, lease_facts
from pipelines.output import Output, cut_list
from pipelines.report.runs import find_run
from pipelines.settings import SHA_RE, Settings
from pipelines.verify import BuildinfoReader, drift_report


def describe_last_run(last: dict[str, Any] | None) -> str:
    if last is None:
        return "last run: none in the ledger"
    code = last["exit_code"]
    waves = f"{last['waves_verified']}" + (f" of {last['waves_planned']}" if last["waves_planned"] is not None else "")
    return (f"last run: {last['run_id']} ({last['verb']}, sha {str(last['sha'])[:12]}): {last['outcome']}"
            f"{'' if code is None else f' (exit {code})'}, started {last['started']}"
            f"{', ended ' + last['ended'] if last['ended'] else ''}; got as far as: {last['last_phase']}"
            f"{'; last wave: ' + last['last_wave'] if last['last_wave'] else ''}; waves verified: {waves}")


async def fleet_by_sha(settings: Settings, head: str) -> dict[str, Any]:
    """The CP's listing read on `/buildinfo`: tenants counted by the SHA they report."""
    if settings.cp_token is None:
        raise UsageError("status --fleet needs --cp-token (CP_ADMIN_API_TOKEN) to list the tenants")
    tag = settings.target_tag or settings.tag_for(settings.sha or head)
    async with CPClient(settings.cp_url, settings.cp_token, read_timeout=settings.cp_timeout,
                        retry_backoff=settings.cp_retry_backoff) as cp:
        slugs = await cp.list_tenants(tag)
    readings = await BuildinfoReader.for_settings(settings).read(slugs, None)
    report = drift_report(readings)
    by_sha: dict[str, list[str]] = {}
    for slug, reading in sorted(readings.items()):
        by_sha.setdefault(reading.seen or f"<{reading.verdict}>", []).append(slug)
    return {"total": report["total"], "by_sha": report["by_sha"], "tenants_by_sha": by_sha}


async def run(settings: Settings, out: Output, fleet: bool = False) -> dict[str, Any]:
    """The `status` verb: exit 0 when everything could be read; 1 when Gitea (or the CP) cannot answer."""
    if settings.gitea_token is None:
        raise UsageError("--gitea-token (GITEA_TOKEN) is required: status reads the lease, the kill switch "
                         "and the gates in Gitea")
    if fleet and settings.cp_token is None:
        raise UsageError("status --fleet needs --cp-token (CP_ADMIN_API_TOKEN) to list the tenants")
    env_reason = plan_time_reason(settings)
    async with GiteaClient.for_settings(settings) as gitea:
        raw, current = await read_lease(gitea)
        live = await live_reason(gitea) if settings.live_kill_switch else None
        head = await gitea.branch_head(settings.branch)
        statuses = await gitea.combined_status(head)
    lease = lease_facts(raw, current, settings)
    contexts = (judge(settings.required_contexts, statuses) if settings.required_contexts
                else {name: st.state for name, st in sorted(statuses.items())})
    record = find_run(settings.ledger)
    last = record.progress() if record is not None else None
    result: dict[str, Any] = {
        "verb": "status", "repo": settings.repo,
        "lease": lease,
        "kill_switch": {"engaged": env_reason is not None or live is not None, "env": env_reason,
                        "live": "not read (--no-live-kill-switch)" if not settings.live_kill_switch else live,
                        "live_read": settings.live_kill_switch},
        "branch": {"name": settings.branch, "head": head, "contexts": contexts,
                   "required": list(settings.required_contexts),
                   "green": bool(settings.required_contexts) and all(s == SUCCESS for s in contexts.values())},
        "last_run": last, "ledger": settings.ledger,
    }
    if fleet:
        result["fleet"] = await fleet_by_sha(settings, head)

    out.info(describe_lease(lease))
    switch = result["kill_switch"]
    if switch["engaged"]:
        out.warn(f"kill switch ENGAGED: {env_reason or live}")
    else:
        out.ok("kill switch off" + ("" if settings.live_kill_switch else " (env only; live not read)"))
    states = ", ".join(f"{name}: {state}" for name, state in contexts.items()) or "no status contexts"
    required = "required contexts" if settings.required_contexts else "contexts (no --required-context given)"
    out.info(f"{settings.branch} head {head[:12]} — {required}: {states}")
    out.info(describe_last_run(last))
    if fleet:
        for sha, slugs in result["fleet"]["tenants_by_sha"].items():
            name = sha[:12] if SHA_RE.match(sha) else sha
            out.info(f"fleet: {len(slugs)} on {name}: {cut_list(slugs)}")
    out.result(result)
    return result


__all__ = ["describe_last_run", "fleet_by_sha", "run"]
