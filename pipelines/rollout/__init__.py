"""The progressive rollout (CONTRACT §1 "Rollout rules") as an explicit state machine.

- `phase`: the `Phase` enum and the typed `RunState`;
- `policy`: pure decisions (stand-down, a wave against the straggler budget, which failures roll
  back, the outcome word and exit code of an ending, what a retry re-sends);
- `ports`: what the engine talks to (CP, Gitea reads, tenants, lease, clock) and the real adapters;
- `guard`: THE one guarded CP write (lease renewed, kill switch re-read, deadline checked);
- `engine`: drives the phases, decides retries, and `drive` ends every run through one `finish`;
- `result`: the one `RunResult` per run and `finish` (the `done` event's shape is documented there).

`rollout(settings, out, …)` wires the real clients to the engine; `run` is the `rollout` verb.
A dry run takes no lease (it writes nothing, not even to Gitea) and verifies nothing: its CP calls
carry `dry_run: true`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from pipelines.analysis import Analysis
from pipelines.cp import CPClient
from pipelines.errors import UsageError
from pipelines.gitea import GiteaClient
from pipelines.lease import Lease
from pipelines.ledger import Ledger, new_run_id
from pipelines.output import Output
from pipelines.rollout.engine import drive
from pipelines.rollout.phase import Phase, RunState
from pipelines.rollout.ports import GiteaLease, GiteaRepo, LeaseLedger, OutputClock, Ports, Tenants
from pipelines.settings import Settings
from pipelines.verify import BuildinfoReader, request_timeout
from pipelines.watch import HealthCheckedReader, SoakWatch


def preflight(settings: Settings, *, manual: bool) -> None:
    """Everything decidable before contacting anything (exit 2)."""
    s = settings
    if s.cp_token is None:
        raise UsageError("--cp-token (CP_ADMIN_API_TOKEN) is required for a rollout")
    needs_gitea_token = (s.lease and not s.dry_run) or (s.live_kill_switch and not manual)
    if needs_gitea_token and s.gitea_token is None:
        raise UsageError("--gitea-token (GITEA_TOKEN) is required: the lease and the live kill switch "
                         "live in Gitea (or pass --no-lease and --no-live-kill-switch)")


def new_state(settings: Settings, *, verb: str, manual: bool, run_id: str | None = None) -> RunState:
    return RunState(verb=verb, run_id=run_id or new_run_id(), sha=settings.sha, tag=settings.target_tag,
                    manual=manual, dry_run=settings.dry_run, repo=settings.repo,
                    lease="off" if not settings.lease else ("skipped (dry run)" if settings.dry_run else "not taken"))


async def rollout(settings: Settings, out: Output, *, manual: bool = False, break_lease: bool = False,
                  final_verify: bool = False, verb: str = "rollout", state: RunState | None = None,
                  before: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Run the rollout; returns the result or raises a FleetgateError carrying it (`details`).

    `final_verify` (deploy-production, redeploy) re-reads the whole fleet after the last wave.
    `state` and `before` let deploy-production run its gates as the first phase of the same run
    (one run id, one `done`).
    """
    preflight(settings, manual=manual)
    s = settings
    assert s.cp_token is not None
    st = state or new_state(s, verb=verb, manual=manual)
    ledger = Ledger(s.ledger, st.run_id)
    if state is None:  # deploy-production recorded its plan under the same run id already
        ledger.record("plan", verb=verb, sha=s.sha, tag=s.target_tag, manual=manual, dry_run=s.dry_run,
                      batch_size=s.batch_size, canary=s.canary or "(first tenant)", max_stragglers=s.max_stragglers,
                      on_failure=s.on_failure, lease=s.lease)
    async with AsyncExitStack() as stack:
        gitea = await stack.enter_async_context(GiteaClient.for_settings(s))
        cp = await stack.enter_async_context(CPClient(s.cp_url, s.cp_token, read_timeout=s.cp_timeout,
                                                      retry_backoff=s.cp_retry_backoff))
        lease = None
        if s.lease and not s.dry_run:
            recorder = LeaseLedger(ledger)
            lease = GiteaLease(Lease(gitea, run_id=st.run_id, sha=s.sha, ttl=s.lease_ttl, wait=s.lease_wait,
                                     poll_interval=s.poll_interval, out=out, ledger=recorder), recorder)
        tenants: Tenants = await stack.enter_async_context(BuildinfoReader.for_settings(s))  # one session per run
        if s.health_path:  # wherever /buildinfo is read, the health URL must answer 2xx too
            tenants = await stack.enter_async_context(  # one health client per run, as for /buildinfo
                HealthCheckedReader(tenants, s.tenant_url, s.health_path, timeout=request_timeout(s)))
        analysis = None
        if s.analysis_query:
            analysis = Analysis(s.prometheus_url, s.analysis_query, s.analysis_max, s.analysis_inconclusive_limit)
            stack.push_async_callback(analysis.aclose)
        clock = OutputClock(out)
        ports = Ports(cp=cp, repo=GiteaRepo(gitea), tenants=tenants, lease=lease, clock=clock)
        watch = SoakWatch(tenants, s.sha, s.verify_interval, analysis, clock=clock)
        return await drive(s, out, ports, st, ledger, break_lease=break_lease, final_verify=final_verify,
                           before=before, watch=watch)


async def run(settings: Settings, out: Output) -> dict[str, Any]:
    """The `rollout` verb."""
    return await rollout(settings, out)


__all__ = ["Phase", "RunState", "new_state", "preflight", "rollout", "run"]
