"""The progressive rollout (CONTRACT §1 "Rollout rules"): lease, stand-down, canary, verified waves.

The order of one run, and why:
1. lease (nobody else writes while we do); 2. the tenant list from the CP's dry-run listing,
sorted; 3. one `/buildinfo` read of every tenant — it decides the stand-down rule, which tenants
are already done (decided live, so a re-run finishes a killed run) and, on rollback, the SHA each
tenant goes back to; 4. stand-down checks (auto-deploys only) before the first write; 5. the
canary alone, which must verify whatever the straggler budget; 6. waves of `--batch-size`.
Before every write the lease is renewed and the kill switch re-read; after every write exactly
that wave is verified on `/buildinfo` before the soak and the next wave. Once the first write is
made the run completes (kill switch and failures aside) — a moved branch head does not stop it.

The soak runs between waves, not after the last one: it exists to protect the next wave.
A rollback (`--on-failure rollback`) renews the lease before each of its writes but does not stop
for the kill switch: it goes back to what ran before, which is what a freeze wants anyway.
A dry run takes no lease (it writes nothing, not even to Gitea) and verifies nothing: its CP calls
carry `dry_run: true`.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio

from pipelines import killswitch
from pipelines.analysis import Analysis
from pipelines.cp import CPAnswer, CPClient, row_facts
from pipelines.errors import Disabled, ExitCode, Failed, FleetgateError, HaltedMixed, StoodDown, UsageError
from pipelines.gates import SUCCESS, judge
from pipelines.gitea import GiteaClient
from pipelines.lease import Lease
from pipelines.ledger import Ledger, new_run_id
from pipelines.notify import WAITING, Notice, approve_command, notify, notify_ending, run_url
from pipelines.output import Output, cut_list
from pipelines.settings import SHA_RE, Settings
from pipelines.summary import write_step_summary
from pipelines.verify import BuildinfoReader, Reading, drift_report, render_table, request_timeout
from pipelines.watch import Approval, HealthCheckedReader, SoakWatch, Tick, wait_for_approval

VERIFIED = "verified"


@dataclass
class Wave:
    index: int  # 0 = the canary wave when there is one
    slugs: list[str]
    canary: bool
    status: str = "planned"  # planned | verified | failed | dry-run
    stragglers: list[str] = field(default_factory=list)
    cp_attempts: int = 0
    seconds: float = 0.0
    readings: dict[str, Reading] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "canary" if self.canary else f"wave {self.index}"

    def facts(self) -> dict[str, Any]:
        """The wave as `summary.write_step_summary` reads it."""
        return {"index": self.index, "kind": "canary" if self.canary else "wave", "slugs": list(self.slugs),
                "skipped": [], "verified": [s for s, r in self.readings.items() if r.verdict == VERIFIED],
                "stragglers": list(self.stragglers), "status": self.status, "cp_attempts": self.cp_attempts,
                "seconds": round(self.seconds, 3)}


def plan_waves(todo: Sequence[str], canary: str | None, batch_size: int) -> list[Wave]:
    """The canary alone (when it still needs the SHA), then the rest in order, `batch_size` at a time."""
    waves: list[Wave] = []
    if canary is not None and canary in todo:
        waves.append(Wave(index=0, slugs=[canary], canary=True))
    rest = [s for s in todo if s != canary]
    for n, start in enumerate(range(0, len(rest), batch_size), start=1):
        waves.append(Wave(index=n, slugs=list(rest[start:start + batch_size]), canary=False))
    return waves


def choose_canary(setting: str, tenants: Sequence[str]) -> str | None:
    """`--canary`: a slug from the listing, `none`, or (unset) the first tenant."""
    if setting == "none":
        return None
    if setting:
        if setting not in tenants:
            raise Failed(f"canary {setting!r} is not in the control plane's tenant listing "
                         f"({len(tenants)} tenants); refusing to pick another one")
        return setting
    return tenants[0] if tenants else None


def counts_by_sha(readings: dict[str, Reading]) -> dict[str, int]:
    """How many tenants report each SHA (or why they report none)."""
    return dict(Counter((r.seen[:12] if r.seen else f"<{r.verdict}>") for r in readings.values()))


def describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} on {sha}" for sha, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class Rollout:
    """One run: the state a failure report and a rollback need."""

    def __init__(self, settings: Settings, out: Output, *, verb: str, manual: bool, break_lease: bool,
                 final_verify: bool, run_id: str | None = None) -> None:
        self.s = settings
        self.out = out
        self.verb = verb
        self.manual = manual
        self.break_lease = break_lease
        self.final_verify = final_verify
        self.run_id = run_id or new_run_id()
        self.joined = run_id is not None
        self.ledger = Ledger(settings.ledger, self.run_id)
        self.tenants: list[str] = []
        self.before: dict[str, Reading] = {}
        self.skipped: list[str] = []
        self.waves: list[Wave] = []
        self.changed: list[str] = []  # every tenant a write was sent for, in order
        self.stragglers: list[str] = []
        self.lease_state = "off" if not settings.lease else ("skipped (dry run)" if settings.dry_run else "")
        self.rollback_report: dict[str, Any] | None = None
        self.canary: str | None = None
        self.final: dict[str, Reading] | None = None
        self.approval: Approval | None = None
        # set inside run()
        self.gitea: GiteaClient
        self.cp: CPClient
        self.reader: BuildinfoReader | HealthCheckedReader
        self.watch: SoakWatch
        self.lease: Lease | None = None

    # ------------------------------------------------------------------ entry
    def preflight(self) -> None:
        """Everything decidable before contacting anything."""
        if self.s.cp_token is None:
            raise UsageError("--cp-token (CP_ADMIN_API_TOKEN) is required for a rollout")
        if not self.manual:
            killswitch.check_plan_time(self.s)
        s = self.s
        needs_gitea_token = (s.lease and not s.dry_run) or (s.live_kill_switch and not self.manual)
        if needs_gitea_token and s.gitea_token is None:
            raise UsageError("--gitea-token (GITEA_TOKEN) is required: the lease and the live kill switch "
                             "live in Gitea (or pass --no-lease and --no-live-kill-switch)")

    async def run(self) -> dict[str, Any]:
        self.preflight()
        s = self.s
        assert s.cp_token is not None
        if not self.joined:  # deploy-production recorded its plan under the same run id already
            self.ledger.record("plan", verb=self.verb, sha=s.sha, tag=s.target_tag, manual=self.manual,
                               dry_run=s.dry_run, batch_size=s.batch_size,
                               canary=s.canary or "(first tenant)", max_stragglers=s.max_stragglers,
                               on_failure=s.on_failure, lease=s.lease)
        async with AsyncExitStack() as stack:
            self.gitea = await stack.enter_async_context(GiteaClient.for_settings(s))
            self.cp = await stack.enter_async_context(CPClient(
                s.cp_url, s.cp_token, read_timeout=s.cp_timeout, retry_backoff=s.cp_retry_backoff))
            self.reader = await stack.enter_async_context(BuildinfoReader.for_settings(s))  # one session per run
            if s.health_path:  # wherever /buildinfo is read, the health URL must answer 2xx too
                self.reader = HealthCheckedReader(self.reader, s.tenant_url, s.health_path,
                                                  timeout=request_timeout(s))
            analysis = None
            if s.analysis_query:
                analysis = Analysis(s.prometheus_url, s.analysis_query, s.analysis_max, s.analysis_inconclusive_limit)
                stack.push_async_callback(analysis.aclose)
            self.watch = SoakWatch(self.reader, s.sha, s.verify_interval, analysis)
            try:
                try:
                    outcome = await self._run_leased()
                finally:
                    # Released first, so the run's last words (ledger `done`, summary) come after it.
                    if self.lease is not None:
                        await self.lease.release()  # shielded and bounded inside
                        if self.lease_state == "taken":
                            self.lease_state = "released"
            except FleetgateError as exc:
                self._finish_failed(exc)
                await notify_ending(s.notify, exc.details, ledger=self.ledger, out=self.out)
                raise
            except anyio.get_cancelled_exc_class():
                # A signal (or the caller) cancelled us: say so in the ledger (the lease is released).
                self.ledger.record("halt", reason="interrupted", changed=list(dict.fromkeys(self.changed)))
                self.ledger.record("done", sha=s.sha, tag=s.target_tag, verified=False, dry_run=s.dry_run,
                                   exit_code=int(ExitCode.FAILED), error="interrupted")
                raise
        result = self._finish_ok(outcome)
        await notify_ending(s.notify, result, ledger=self.ledger, out=self.out)
        return result

    async def _run_leased(self) -> str:
        """Everything under the lease; returns the outcome message of a successful run."""
        s = self.s
        if s.lease and not s.dry_run:
            self.lease = Lease(self.gitea, run_id=self.run_id, sha=s.sha, ttl=s.lease_ttl, wait=s.lease_wait,
                               poll_interval=s.poll_interval, out=self.out, ledger=self.ledger)
            wave_budget = s.cp_timeout + s.verify_timeout + s.soak_seconds
            if s.lease_ttl < wave_budget:
                self.out.warn(f"--lease-ttl {s.lease_ttl:g}s is shorter than one wave may take "
                              f"(--cp-timeout + --verify-timeout + --soak-seconds = {wave_budget:g}s): another "
                              "run could break the lease mid-wave; this run would then stop at its next renewal")
            await self.lease.acquire(break_held=self.break_lease)
            self.lease_state = "taken"
        elif not s.lease:
            self.out.warn("no lease (--no-lease): nothing stops another run from writing at the same time")

        self.tenants = await self.cp.list_tenants(s.target_tag)
        if not self.tenants:
            raise Failed("the control plane listed no tenants; refusing to call that a deploy")
        canary = self.canary = choose_canary(s.canary, self.tenants)
        self.out.info(f"{len(self.tenants)} tenants from the control plane; target {s.target_tag} "
                      f"= {s.sha[:12]}; canary {canary or 'none'}; batch size {s.batch_size}")

        self.before = await self.reader.read(self.tenants, s.sha)
        self.out.info(f"before: {describe_counts(counts_by_sha(self.before))}")
        if not self.manual:
            await self._stand_down_checks()

        todo = [t for t in self.tenants if self.before[t].verdict != VERIFIED]
        self.skipped = [t for t in self.tenants if t not in todo]
        if self.skipped:
            self.out.info(f"already on {s.sha[:12]}, skipped {len(self.skipped)}: {cut_list(self.skipped)}")
        if canary is not None and canary in self.skipped:
            self.out.ok(f"canary {canary} already reports {s.sha[:12]}: counts as verified")
        self.waves = plan_waves(todo, canary, s.batch_size)
        if not self.waves:
            return "nothing to do: every tenant already reports the SHA"

        for wave in self.waves:
            if not wave.canary and s.approve_after_canary and not s.dry_run and self.approval is None:
                await self._wait_for_approval()
            await self._before_write(wave)
            await self._write_and_verify(wave)
            if s.dry_run:
                continue
            if s.soak_seconds > 0:  # after the last wave too: the last chance to see it fail before promote
                await self._soak(wave)

        if s.dry_run:
            return "dry run planned: nothing changed"
        if self.final_verify:
            await self._final_verify()
        outcome = "done: every tenant verified on the SHA"
        if self.stragglers:
            outcome = (f"done with {len(self.stragglers)} straggler(s) within --max-stragglers: "
                       f"{', '.join(self.stragglers)}")
        return outcome

    # ------------------------------------------------------------------ stand-down
    async def _stand_down_checks(self) -> None:
        s = self.s
        newer: dict[str, list[str]] = {}
        for slug in self.tenants:
            seen = self.before[slug].seen
            if seen and seen != s.sha and SHA_RE.match(seen):
                newer.setdefault(seen, []).append(slug)
        for seen, slugs in sorted(newer.items()):
            if await self.gitea.is_descendant(seen, of=s.sha):
                self.ledger.record("superseded", reason="tenant", sha=s.sha, newer_sha=seen, slugs=slugs)
                raise StoodDown(f"stood down: {', '.join(slugs)} already run {seen[:12]}, a descendant of "
                                f"{s.sha[:12]}; nothing written", details={"newer_sha": seen, "slugs": slugs})
        head = await self.gitea.branch_head(s.branch)
        if head != s.sha and await self.gitea.is_descendant(head, of=s.sha):
            statuses = await self.gitea.combined_status(head)
            not_green = [c for c, state in judge(s.required_contexts, statuses).items() if state != SUCCESS]
            if not not_green:
                self.ledger.record("superseded", reason="branch-head", sha=s.sha, newer_sha=head,
                                   branch=s.branch)
                raise StoodDown(f"stood down: {s.branch} head {head[:12]} is a descendant of {s.sha[:12]} "
                                "with every required context success (its own run deploys it); nothing "
                                "written",
                                details={"newer_sha": head})
            self.out.info(f"{s.branch} head {head[:12]} is newer but not green yet "
                          f"({', '.join(not_green)}); deploying {s.sha[:12]}")

    # ------------------------------------------------------------------ waves
    async def _before_write(self, wave: Wave) -> None:
        await self._guard(wave.label)

    async def _guard(self, label: str) -> None:
        """Renew the lease, re-read the kill switch: no write without both (and no approval poll)."""
        if self.lease is not None:
            await self.lease.renew()
        if self.manual or not self.s.live_kill_switch:
            return
        reason = await killswitch.live_reason(self.gitea)  # Failed (exit 1) when unreadable
        self.ledger.record("kill_switch", before=label, engaged=reason is not None, reason=reason)
        if reason is None:
            return
        if self.changed:
            drift = await self._drift()
            self.ledger.record("halt", reason="kill switch", detail=reason, before=label)
            raise HaltedMixed(f"halted by the kill switch before {label} ({reason}); the fleet is "
                              f"mixed: {describe_counts(counts_by_sha(drift))}",
                              details=self._report(drift))
        raise Disabled(f"kill switch engaged before the first write ({reason}); nothing written",
                       details={"disabled_reason": reason})

    # ------------------------------------------------------------------ approval and the soak watch
    async def _wait_for_approval(self) -> None:
        """Pause until a person approves (CONTRACT §1 "Approval"); lease renewed and the switch re-read
        at every poll; rejected or unanswered fails (halt or rollback, as --on-failure says)."""
        s = self.s
        command = approve_command(s.repo, s.sha, s.approval_context)
        self.ledger.record("approval", action="waiting", context=s.approval_context, timeout=s.approval_timeout)
        self.out.warn(f"waiting for approval (up to {s.approval_timeout:g}s): run `{command}` to go on, "
                      "or add --reject to stop")
        known = {**self.before, **{slug: r for w in self.waves for slug, r in w.readings.items()}}
        await notify(s.notify, Notice(verb=self.verb, sha=s.sha, outcome=WAITING, exit_code=None, repo=s.repo,
                                      target_tag=s.target_tag, fleet=counts_by_sha(known),
                                      stragglers=self.stragglers, approve_command=command, run_url=run_url()),
                     ledger=self.ledger, out=self.out)
        try:
            approval = await wait_for_approval(self.gitea, s.sha, s.approval_context, timeout=s.approval_timeout,
                                               interval=s.poll_interval,
                                               keep_alive=lambda: self._guard("approval poll"))
        except Failed as exc:
            self.ledger.record("approval", action="failed", context=s.approval_context, error=exc.message)
            await self._fail(f"approval: {exc.message}")
        self.approval = approval
        self.ledger.record("approval", action="approved" if approval.approved else "rejected",
                           context=s.approval_context, **approval.facts())
        who = approval.approver or "an unknown user"
        if not approval.approved:
            self.out.error(f"rejected by {who}: {s.approval_context} = {approval.state}")
            await self._fail(f"rejected by {who} ({s.approval_context} = {approval.state}"
                             f"{': ' + approval.description if approval.description else ''})")
        self.out.ok(f"approved by {who} after {approval.waited:.1f}s")

    def _watched(self) -> list[str]:
        """The tenants verified so far (this run's waves, and those already on the SHA), stragglers aside."""
        verified = [*self.skipped, *(slug for w in self.waves if w.status == "verified"
                                     for slug, r in w.readings.items() if r.verdict == VERIFIED)]
        return [slug for slug in dict.fromkeys(verified) if slug not in self.stragglers]

    async def _soak(self, wave: Wave) -> None:
        s = self.s
        watched = self._watched()
        self.ledger.record("soak", after=wave.label, seconds=s.soak_seconds, watched=len(watched),
                           interval=s.verify_interval, analysis=bool(s.analysis_query))
        self.out.info(f"soak: {s.soak_seconds:g}s after {wave.label} ({self._of(wave)}), re-reading "
                      f"{len(watched)} verified tenant(s) every {s.verify_interval:g}s"
                      f"{' with the analysis' if s.analysis_query else ''}")

        async def on_tick(tick: Tick) -> None:
            for slug, reading in tick.regressed.items():
                await self._regressed(wave, slug, reading)
            if tick.analysis_failure:
                self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=tick.analysis_failure,
                                   analysis=tick.analysis.facts() if tick.analysis else None)
                self.out.error(f"soak after {wave.label}: {tick.analysis_failure}")
                await self._fail(f"soak after {wave.label}: {tick.analysis_failure}")

        with self.out.progress(f"soaking after {wave.label} ({self._of(wave)})", seconds=s.soak_seconds):
            ticks = await self.watch.soak(s.soak_seconds, self._watched, on_tick)
        self.ledger.record("soak", after=wave.label, action="watched", ticks=ticks, stragglers=self.stragglers)

    async def _regressed(self, wave: Wave, slug: str, reading: Reading) -> None:
        """A verified tenant stopped reporting the SHA (or its health check): a straggler within the budget,
        the canary never."""
        s = self.s
        why = f"{slug} regressed during the soak after {wave.label} ({reading.verdict}: " \
              f"{reading.detail or (reading.seen or '-')[:12]})"
        for w in self.waves:
            if slug in w.readings:
                w.readings[slug] = reading
        budget_left = s.max_stragglers - len(self.stragglers)
        if slug == self.canary or budget_left <= 0:
            rule = ("the canary must stay verified" if slug == self.canary else
                    "no straggler left in the budget")
            self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=f"{why}; {rule}",
                               stragglers=[slug])
            self.out.error(f"soak: {why}; {rule}")
            await self._fail(f"soak: {why}; {rule}")
        self.stragglers.append(slug)
        owner = next((w for w in self.waves if slug in w.slugs), wave)
        owner.stragglers.append(slug)
        self.ledger.record("soak", after=wave.label, action="regressed", slug=slug, verdict=reading.verdict,
                           seen=reading.seen, straggler=True)
        self.out.warn(f"soak: {why}: a straggler within the budget ({budget_left - 1} left)")

    def _of(self, wave: Wave) -> str:
        """`wave 4 of 20`: where this wave stands among the run's waves (the canary counts as one)."""
        return f"{self.waves.index(wave) + 1} of {len(self.waves)}"

    async def _still_needed(self, slugs: list[str]) -> list[str]:
        readings = await self.reader.read(slugs, self.s.sha)
        return [slug for slug in slugs if readings[slug].verdict != VERIFIED]

    async def _write_and_verify(self, wave: Wave) -> None:
        s = self.s
        kind = " (dry run)" if s.dry_run else ""
        self.ledger.record("wave_start", wave=wave.index, label=wave.label, canary=wave.canary,
                           slugs=wave.slugs, tag=s.target_tag, sha=s.sha, dry_run=s.dry_run)
        self.out.info(f"{wave.label}{kind}: start — {cut_list(wave.slugs)} ({self._of(wave)})")
        started = anyio.current_time()
        if not s.dry_run:
            self.changed.extend(wave.slugs)  # before the call: a failed call may still have changed them
        try:
            with self.out.progress(f"{wave.label} ({self._of(wave)}): CP call", seconds=s.cp_timeout):
                answer: CPAnswer = await self.cp.redeploy_wave(s.target_tag, wave.slugs, dry_run=s.dry_run,
                                                               still_needed=self._still_needed)
        except Failed as exc:
            self.ledger.record("cp_call", wave=wave.index, ok=False, error=exc.message, slugs=wave.slugs)
            wave.status = "failed"
            self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=exc.message)
            await self._fail(f"{wave.label}: {exc.message}")
        wave.cp_attempts = answer.attempts
        failing_rows = [r.slug for r in answer.rows if r.error or r.healthz_ok is False]
        self.ledger.record("cp_call", wave=wave.index, ok=answer.ok, attempts=answer.attempts,
                           sent=[list(x) for x in answer.sent], rows=[row_facts(r) for r in answer.rows])
        retried = f" after {answer.attempts} attempts" if answer.attempts > 1 else ""
        noted = (f"; rows reporting trouble (judged by /buildinfo): {', '.join(failing_rows)}"
                 if failing_rows else "")
        self.out.info(f"{wave.label}: CP call ok{retried}{kind}{noted}")
        if s.dry_run:
            wave.status = "dry-run"
            return

        with self.out.progress(f"{wave.label} ({self._of(wave)}): verifying", total=len(wave.slugs),
                               seconds=s.verify_timeout) as bar:
            readings = await self.reader.wait_verified(wave.slugs, s.sha, timeout=s.verify_timeout,
                                                       interval=s.verify_interval,
                                                       on_progress=lambda n: bar.update(done=n))
        wave.readings = readings
        wave.seconds = anyio.current_time() - started
        unverified = [slug for slug in wave.slugs if readings[slug].verdict != VERIFIED]
        tenants = {slug: {"before": self.before[slug].seen, "after": readings[slug].seen,
                          "verdict": readings[slug].verdict} for slug in wave.slugs}
        budget_left = s.max_stragglers - len(self.stragglers)
        if unverified and (wave.canary or len(unverified) > budget_left):
            wave.status = "failed"
            wave.stragglers = unverified
            why = ("canary did not verify (the canary must, whatever --max-stragglers)" if wave.canary else
                   f"{len(unverified)} unverified tenant(s), {max(budget_left, 0)} straggler(s) left in the "
                   "budget")
            named = ", ".join(f"{slug} ({readings[slug].verdict}: {(readings[slug].seen or '-')[:12]})"
                              for slug in unverified)
            self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=why,
                               stragglers=unverified, tenants=tenants)
            self.out.error(f"{wave.label}: {why}: {named}")
            await self._fail(f"{wave.label} failed within {s.verify_timeout:g}s: {why}: {named}")
        wave.status = "verified"
        wave.stragglers = unverified
        self.stragglers.extend(unverified)
        self.ledger.record("wave_verified", wave=wave.index, label=wave.label, slugs=wave.slugs,
                           stragglers=unverified, tenants=tenants)
        if unverified:
            self.out.warn(f"{wave.label}: verified except straggler(s) within budget: "
                          f"{', '.join(unverified)}")
        else:
            self.out.ok(f"{wave.label}: verified — {cut_list(wave.slugs)} report {s.sha[:12]}")

    async def _final_verify(self) -> None:
        s = self.s
        listing = await self.cp.list_tenants(s.target_tag)
        if not listing:
            raise Failed("final verify: the control plane listed no tenants")
        readings = await self.reader.read(listing, s.sha)
        self.final = readings
        unverified = [slug for slug in listing if readings[slug].verdict != VERIFIED]
        if len(unverified) > s.max_stragglers:
            self.ledger.record("halt", reason="final verify", unverified=unverified)
            raise Failed(f"final verify: {len(unverified)} tenant(s) do not report {s.sha[:12]} "
                         f"(allowed {s.max_stragglers}): {', '.join(unverified)}",
                         details=self._report(readings))
        self.stragglers = unverified
        stragglers = f"; stragglers: {', '.join(unverified)}" if unverified else ""
        self.out.ok(f"final verify: {len(listing) - len(unverified)}/{len(listing)} tenants report "
                    f"{s.sha[:12]}{stragglers}")

    # ------------------------------------------------------------------ failure and rollback
    async def _fail(self, message: str) -> NoReturn:
        """A wave failed: halt, or roll back what this run changed; exit 1 either way."""
        if self.s.on_failure == "rollback" and self.changed:
            self.rollback_report = await self._rollback()
            restored: list[str] = self.rollback_report["restored"]
            failed: list[str] = self.rollback_report["not_restored"]
            message += (f"; rolled back {len(restored)} tenant(s) to their previous SHA, verified"
                        if not failed else f"; rollback INCOMPLETE: not restored: {', '.join(failed)}")
        drift = await self._drift()
        self.ledger.record("halt", reason="wave failed", detail=message, on_failure=self.s.on_failure)
        raise Failed(f"{message}; fleet now: {describe_counts(counts_by_sha(drift))}",
                     details=self._report(drift))

    async def _rollback(self) -> dict[str, Any]:
        s = self.s
        groups: dict[str, list[str]] = {}
        not_restored: list[str] = []
        for slug in dict.fromkeys(self.changed):
            prior = self.before[slug].seen
            if prior is None or not SHA_RE.match(prior):
                not_restored.append(slug)  # we never knew what it ran: nothing to go back to
                continue
            groups.setdefault(prior, []).append(slug)
        restored: list[str] = []
        self.out.warn(f"rollback: {sum(len(v) for v in groups.values())} tenant(s) back to the SHA they had")
        for prior, slugs in sorted(groups.items()):
            tag = s.tag_for(prior)

            async def not_on_prior(batch: list[str], prior: str = prior) -> list[str]:
                readings = await self.reader.read(batch, prior)
                return [slug for slug in batch if readings[slug].verdict != VERIFIED]

            for start in range(0, len(slugs), s.batch_size):
                chunk = slugs[start:start + s.batch_size]
                batch = await not_on_prior(chunk)  # a tenant that never moved needs no write back
                restored.extend(slug for slug in chunk if slug not in batch)
                if not batch:
                    continue
                if self.lease is not None:
                    await self.lease.renew()
                self.ledger.record("rollback", action="wave_start", slugs=batch, tag=tag, sha=prior)
                self.out.info(f"rollback: {', '.join(batch)} → {tag} ({prior[:12]})")
                try:
                    await self.cp.redeploy_wave(tag, batch, dry_run=False, still_needed=not_on_prior)
                except Failed as exc:
                    self.ledger.record("rollback", action="cp_failed", slugs=batch, error=exc.message)
                    not_restored.extend(batch)
                    continue
                readings = await self.reader.wait_verified(batch, prior, timeout=s.verify_timeout,
                                                           interval=s.verify_interval)
                ok = [slug for slug in batch if readings[slug].verdict == VERIFIED]
                bad = [slug for slug in batch if slug not in ok]
                restored.extend(ok)
                not_restored.extend(bad)
                self.ledger.record("rollback", action="wave_verified" if not bad else "wave_failed",
                                   slugs=batch, sha=prior, restored=ok, not_restored=bad,
                                   tenants={slug: {"after": readings[slug].seen,
                                                   "verdict": readings[slug].verdict} for slug in batch})
        self.ledger.record("rollback", action="done", restored=restored, not_restored=not_restored)
        if not_restored:
            self.out.error(f"rollback incomplete: {', '.join(not_restored)} not restored")
        else:
            self.out.ok(f"rollback: {len(restored)} tenant(s) restored and verified")
        tags = sorted({s.tag_for(prior) for prior in groups})
        return {"tag": ", ".join(tags), "tenants": restored + not_restored, "verified": not not_restored,
                "restored": restored, "not_restored": not_restored}

    async def _drift(self) -> dict[str, Reading]:
        """Which tenant runs which SHA now (one read of every known tenant), shown as a table."""
        if not self.tenants:
            return {}
        readings = await self.reader.read(self.tenants, self.s.sha)
        self.out.info(f"fleet now (expecting {self.s.sha[:7]}):")
        for line in render_table(readings):
            self.out.info(line)
        return readings

    # ------------------------------------------------------------------ results
    def _report(self, readings: dict[str, Reading] | None, *, exit_code: ExitCode | None = None,
                outcome: str = "", message: str = "") -> dict[str, Any]:
        """The result (`--json`, the step summary, an error's details), shaped as `summary` documents."""
        s = self.s
        report: dict[str, Any] = {
            "verb": self.verb, "run_id": self.run_id, "sha": s.sha, "repo": s.repo, "target_tag": s.target_tag,
            "manual": self.manual, "dry_run": s.dry_run, "canary": self.canary,
            "waves": [w.facts() for w in self.waves], "skipped": list(self.skipped),
            "stragglers": list(self.stragglers), "changed": list(dict.fromkeys(self.changed)),
            "lease": self.lease_state, "ledger": s.ledger,
        }
        if outcome:
            report["outcome"] = outcome
        if message:
            report["message"] = message
        if readings:
            report["drift"] = drift_report(readings)["by_sha"]
            report["tenants"] = {slug: {"before": self.before[slug].seen if slug in self.before else None,
                                        "after": r.seen, "verdict": r.verdict}
                                 for slug, r in sorted(readings.items())}
        if self.rollback_report is not None:
            report["rollback"] = self.rollback_report
        if self.approval is not None:
            report["approval"] = self.approval.facts()
        if exit_code is not None:
            report["exit_code"] = int(exit_code)
        return report

    def _finish_ok(self, outcome: str) -> dict[str, Any]:
        s = self.s
        readings = self.final
        if readings is None and not s.dry_run:
            readings = {**self.before, **{slug: r for w in self.waves for slug, r in w.readings.items()}}
        word = "dry run" if s.dry_run else ("nothing to do" if not self.waves else "done")
        result = {"ok": True, **self._report(readings, exit_code=ExitCode.OK, outcome=word, message=outcome)}
        self.ledger.record("done", sha=s.sha, tag=s.target_tag, verified=not s.dry_run, dry_run=s.dry_run,
                           exit_code=0, outcome=outcome, stragglers=self.stragglers,
                           tenants=result.get("tenants", {}))
        write_step_summary(result)  # never raises: an unwritable summary does not change the outcome
        self.out.ok(f"{self.verb}: {outcome}")
        self.out.result(result)
        return result

    def _finish_failed(self, exc: FleetgateError) -> None:
        word = {ExitCode.DISABLED: "disabled", ExitCode.HALTED_MIXED: "halted",
                ExitCode.STOOD_DOWN: "stood down"}.get(exc.exit_code, "failed")
        if word == "failed" and self.rollback_report is not None:
            word = "rolled back" if self.rollback_report.get("verified") else "failed"
        report = self._report(None, exit_code=exc.exit_code, outcome=word, message=exc.message)
        report.update(exc.details)
        exc.details = report
        self.ledger.record("done", sha=self.s.sha, tag=self.s.target_tag, verified=False,
                           dry_run=self.s.dry_run, exit_code=int(exc.exit_code), outcome=word,
                           error=exc.message, tenants=report.get("tenants", {}))
        write_step_summary({"ok": False, **report})


# ---------------------------------------------------------------------- signals
async def _cancel_on_signals(scope: anyio.CancelScope, received: list[int]) -> None:
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                received.append(signum)
                scope.cancel()
                return
    except (NotImplementedError, RuntimeError, ValueError):
        return  # not the main thread (or no signals here): the caller's own cancellation still applies


async def with_signal_cleanup(body: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run `body`; SIGTERM/SIGINT cancel it, so its `finally` (the lease release) runs, then exit 1."""
    received: list[int] = []
    outcome: dict[str, Any] = {}
    error: list[FleetgateError] = []
    async with anyio.create_task_group() as tg:
        async def main() -> None:
            try:
                outcome.update(await body())
            except FleetgateError as exc:
                error.append(exc)
            finally:
                tg.cancel_scope.cancel()  # stop the signal watcher

        tg.start_soon(_cancel_on_signals, tg.cancel_scope, received)
        tg.start_soon(main)
    if received:
        raise Failed(f"interrupted by {signal.Signals(received[0]).name}; the lease was released, "
                     "tenants may be mixed: re-run to finish (done tenants are skipped)")
    if error:
        raise error[0]
    return outcome


async def rollout(settings: Settings, out: Output, *, manual: bool = False, break_lease: bool = False,
                  final_verify: bool = False, verb: str = "rollout",
                  run_id: str | None = None) -> dict[str, Any]:
    """Run the rollout; returns the result dict or raises a FleetgateError carrying the report.

    `final_verify` (deploy-production, redeploy) re-reads the whole fleet after the last wave.
    `run_id` joins the rollout's ledger lines to the caller's (deploy-production's gate events).
    """
    run = Rollout(settings, out, verb=verb, manual=manual, break_lease=break_lease, final_verify=final_verify,
                  run_id=run_id)
    return await with_signal_cleanup(run.run)


async def run(settings: Settings, out: Output) -> dict[str, Any]:
    """The `rollout` verb."""
    return await rollout(settings, out)


__all__ = ["Rollout", "Wave", "choose_canary", "plan_waves", "rollout", "run"]
