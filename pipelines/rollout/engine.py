"""The rollout engine: drives a run through its phases (`phase.Phase`) over its ports.

One run, in order, and why (CONTRACT §1 "Rollout rules"):
1. lease (nobody else writes while we do); 2. the tenant list from the CP's dry-run listing, sorted;
3. one `/buildinfo` read of every tenant — it decides the stand-down rule, which tenants are already
done (decided live, so a re-run finishes a killed run) and, on rollback, the SHA each tenant goes
back to; 4. stand-down checks (auto-deploys only) before the first write; 5. the canary alone, which
must verify whatever the straggler budget; 6. with --approve-after-canary, the approval pause
(`approval`); 7. waves of `--batch-size`, each verified on `/buildinfo`, each followed by a watched
soak (`soak`: verified tenants re-read, the analysis ticked); 8. the final verify (deploy-production,
redeploy) of the listing AND of every tenant the run wrote.

Every CP write goes through `guard.Guard.write`. A wave call that fails with 502/503/504 or a
timeout is retried HERE (stamina, bounded, backing off `--cp-retry-backoff` × 1, 2, 4), each retry
re-sending only the wave's tenants not yet reporting the SHA, each retry through the guard.

`drive` wraps one run: SIGTERM/SIGINT cancel it, the lease is released on every path, and exactly
one `result.finish` ends it (one `done`, the summary, the `--json` object).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import stamina

from pipelines import killswitch
from pipelines.cp import RETRYABLE, CPAnswer, row_facts
from pipelines.errors import Failed, FleetgateError, HaltedMixed, StoodDown
from pipelines.gates import SUCCESS, judge
from pipelines.ledger import Ledger
from pipelines.notify import WAITING, Notice, approve_command, notify, run_url
from pipelines.output import Output, cut_list
from pipelines.rollout import policy
from pipelines.rollout.guard import Guard
from pipelines.rollout.phase import Phase, Rollback, RunState, WaveState
from pipelines.rollout.ports import Ports
from pipelines.rollout.result import build_result, finish
from pipelines.runner import as_failure
from pipelines.settings import Settings
from pipelines.verify import VERIFIED, Reading, render_table
from pipelines.watch import SoakWatch, Tick, wait_for_approval

CP_RETRIES = 3  # after the first call of a write: backoff × 1, 2, 4
NOTIFY_WHEN_CANCELLED = 30.0  # the ending of a cancelled run is still recorded (and told), within this
NOT_LISTED = "not listed"
SHOWN_SLUGS = 10


class RunFailed(Failed):
    """A failure the rollback decision knows (`policy.Failure`)."""

    def __init__(self, message: str, failure: policy.Failure) -> None:
        super().__init__(message)
        self.failure = failure


class CPCallFailed(Failed):
    """The CP call itself failed (not the guard before it); `retryable` per `cp.RETRYABLE`."""

    def __init__(self, cause: Failed) -> None:
        super().__init__(cause.message)
        self.retryable = isinstance(cause, RETRYABLE)


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


def describe_counts(readings: dict[str, Reading]) -> str:
    counts = Counter((r.seen[:12] if r.seen else f"<{r.verdict}>") for r in readings.values())
    return ", ".join(f"{n} on {sha}" for sha, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def shown(slugs: Sequence[str], limit: int = SHOWN_SLUGS) -> str:
    """A slug list for a progress line: cut after `limit` (the ledger and the result keep them all)."""
    return cut_list(list(slugs), limit)


class Engine:
    def __init__(self, settings: Settings, out: Output, ports: Ports, state: RunState, ledger: Ledger, *,
                 break_lease: bool, final_verify: bool, watch: SoakWatch | None = None) -> None:
        self.s = settings
        self.out = out
        self.ports = ports
        self.state = state
        self.ledger = ledger
        self.break_lease = break_lease
        self.final_verify = final_verify
        self.watch = watch or SoakWatch(ports.tenants, settings.sha, settings.verify_interval, clock=ports.clock)
        self.guard = Guard(ports, state, ledger,
                           read_kill_switch=settings.live_kill_switch and not state.manual,
                           lease_ttl=settings.lease_ttl, cp_timeout=settings.cp_timeout)

    # ------------------------------------------------------------------ phases
    async def run(self) -> None:
        s, st = self.s, self.state
        if not st.manual:
            killswitch.check_plan_time(s)  # exit 3, nothing contacted
        lease = self.ports.lease
        if lease is not None:
            st.enter(Phase.LEASE)
            st.lease = "not taken"
            wave_budget = s.cp_timeout + s.verify_timeout + s.soak_seconds
            if s.lease_ttl < wave_budget:
                self.out.warn(f"--lease-ttl {s.lease_ttl:g}s is shorter than one wave may take "
                              f"(--cp-timeout + --verify-timeout + --soak-seconds = {wave_budget:g}s): another "
                              "run could break the lease mid-wave; this run would then stop at its next renewal")
            await lease.acquire(break_held=self.break_lease)
            st.lease = "taken"
        elif not s.lease:
            self.out.warn("no lease (--no-lease): nothing stops another run from writing at the same time")

        st.enter(Phase.LIST)
        st.tenants = await self.ports.cp.list_tenants(st.tag)
        if not st.tenants:
            raise Failed("the control plane listed no tenants; refusing to call that a deploy")
        st.canary = canary = choose_canary(s.canary, st.tenants)
        self.out.info(f"{len(st.tenants)} tenants from the control plane; target {st.tag} = {st.sha[:12]}; "
                      f"canary {canary or 'none'}; batch size {s.batch_size}")

        st.enter(Phase.READ_BEFORE)
        st.before = await self.ports.tenants.read(st.tenants, st.sha)
        st.observe(st.before)
        self.out.info(f"before: {describe_counts(st.before)}")
        if not st.manual:
            st.enter(Phase.STAND_DOWN)
            await self.stand_down()

        todo = [t for t in st.tenants if st.before[t].verdict != VERIFIED]
        st.skipped = [t for t in st.tenants if t not in todo]
        if st.skipped:
            self.out.info(f"already on {st.sha[:12]}, skipped {len(st.skipped)}: {shown(st.skipped)}")
        if canary is not None and canary in st.skipped:
            self.out.ok(f"canary {canary} already reports {st.sha[:12]}: counts as verified")
        st.waves = [WaveState(index=i if canary in todo else i + 1, slugs=slugs, canary=is_canary)
                    for i, (slugs, is_canary) in enumerate(policy.plan_slices(todo, canary, s.batch_size))]
        if not st.waves:
            return

        for position, wave in enumerate(st.waves):
            if not wave.canary and s.approve_after_canary and not s.dry_run and st.approval is None:
                st.enter(Phase.APPROVAL)
                await self.approval()
            st.enter(Phase.CANARY if wave.canary else Phase.WAVES)
            await self.wave(wave, position=position)
            if not s.dry_run and s.soak_seconds > 0:  # after the last wave too: its last chance to fail
                await self.soak(wave)
        if s.dry_run:
            return
        if self.final_verify:
            st.enter(Phase.FINAL_VERIFY)
            await self.final_verify_fleet()

    async def stand_down(self) -> None:
        s, st, repo = self.s, self.state, self.ports.repo
        for seen, slugs in sorted(policy.stand_down_candidates(st.sha, st.before).items()):
            if await repo.is_descendant(seen, of=st.sha):
                self.ledger.record("superseded", reason="tenant", sha=st.sha, newer_sha=seen, slugs=slugs)
                raise StoodDown(f"stood down: {shown(slugs)} already run {seen[:12]}, a descendant of "
                                f"{st.sha[:12]}; nothing written", details={"newer_sha": seen, "slugs": slugs})
        head = (await repo.branch_head(s.branch)).lower()
        if head == st.sha:
            return
        if not await repo.is_descendant(head, of=st.sha):
            return
        statuses = await repo.combined_status(head)
        not_green = [c for c, state in judge(s.required_contexts, statuses).items() if state != SUCCESS]
        if policy.head_stands_down(st.sha, head, True, not_green):
            self.ledger.record("superseded", reason="branch-head", sha=st.sha, newer_sha=head, branch=s.branch)
            raise StoodDown(f"stood down: {s.branch} head {head[:12]} is a descendant of {st.sha[:12]} with every "
                            "required context success (its own run deploys it); nothing written",
                            details={"newer_sha": head})
        self.out.info(f"{s.branch} head {head[:12]} is newer but not green yet ({', '.join(not_green)}); "
                      f"deploying {st.sha[:12]}")

    async def write_with_retries(self, slugs: list[str], *, tag: str, expected: str, dry_run: bool,
                                 before: str, sent: list[list[str]]) -> CPAnswer | None:
        """One wave's write: the first call and its retries, each through the guard.
        Returns None when a retry found nothing left to send (every tenant reports `expected`)."""
        backoff = self.s.cp_retry_backoff
        async for attempt in stamina.retry_context(
            on=lambda exc: isinstance(exc, CPCallFailed) and exc.retryable, attempts=CP_RETRIES + 1,
            timeout=None, wait_initial=backoff, wait_exp_base=2, wait_jitter=0,
            wait_max=backoff * 2 ** (CP_RETRIES - 1),
        ):
            with attempt:
                pending = list(slugs)
                label = before
                if attempt.num > 1:
                    label = f"{before} (retry {attempt.num - 1})"
                    if not dry_run:
                        readings = await self.ports.tenants.read(slugs, expected)
                        if expected == self.state.sha:
                            self.state.observe(readings)
                        pending = policy.still_needed(slugs, readings)
                        if not pending:
                            self.out.info(f"{before}: every tenant reports {expected[:12]} after the failed call; "
                                          "nothing to re-send")
                            return None
                    self.out.warn(f"{label}: re-sending {shown(pending)}")
                sent.append(list(pending))
                return await self._guarded_call(tag, pending, dry_run=dry_run, before=label)
        raise AssertionError("unreachable: stamina either returns an attempt's answer or re-raises")

    async def _guarded_call(self, tag: str, slugs: list[str], *, dry_run: bool, before: str) -> CPAnswer:
        """The guard, then the call; a failure of the call itself becomes `CPCallFailed`."""
        calls = self.guard.writes
        try:
            return await self.guard.write(tag, slugs, dry_run=dry_run, before=before)
        except Failed as exc:
            if self.guard.writes > calls:  # the guard let it through: the CP call failed
                raise CPCallFailed(exc) from None
            raise

    async def wave(self, wave: WaveState, *, position: int) -> None:
        s, st = self.s, self.state
        kind = " (dry run)" if s.dry_run else ""
        counter = f"{position + 1} of {len(st.waves)}"
        self.ledger.record("wave_start", wave=wave.index, label=wave.label, slugs=wave.slugs, canary=wave.canary,
                           tag=st.tag, sha=st.sha, dry_run=s.dry_run, position=counter)
        self.out.info(f"{wave.label}{kind}: start — {shown(wave.slugs)} ({counter})")
        started = self.ports.clock.now()
        wave.status = "writing"
        try:
            with self.out.progress(f"{wave.label} ({counter}): CP call", seconds=s.cp_timeout):
                answer = await self.write_with_retries(wave.slugs, tag=st.tag, expected=st.sha, dry_run=s.dry_run,
                                                       before=wave.label, sent=wave.sent)
        except CPCallFailed as exc:
            wave.status = "failed"
            wave.seconds = self.ports.clock.now() - started
            tries = f" after {wave.cp_attempts} attempts" if wave.cp_attempts > 1 else ""
            self.ledger.record("cp_call", wave=wave.index, ok=False, error=exc.message, sent=wave.sent)
            self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=exc.message)
            raise RunFailed(f"{wave.label}: {exc.message}{tries}", policy.Failure.CP_FAILED) from None
        rows = answer.rows if answer is not None else []
        troubled = [r.slug for r in rows if r.error or r.healthz_ok is False]
        self.ledger.record("cp_call", wave=wave.index, ok=True, attempts=wave.cp_attempts, sent=wave.sent,
                           rows=[row_facts(r) for r in rows])
        retried = f" after {wave.cp_attempts} attempts" if wave.cp_attempts > 1 else ""
        noted = f"; rows reporting trouble (judged by /buildinfo): {shown(troubled)}" if troubled else ""
        self.out.info(f"{wave.label}: CP call ok{retried}{kind}{noted}")
        if s.dry_run:
            wave.status = "dry-run"
            return

        with self.out.progress(f"{wave.label} ({counter}): verifying", total=len(wave.slugs),
                               seconds=s.verify_timeout) as bar:
            readings = await self.ports.tenants.wait_verified(wave.slugs, st.sha, timeout=s.verify_timeout,
                                                              interval=s.verify_interval,
                                                              on_progress=lambda n: bar.update(done=n))
        wave.readings = readings
        st.observe(readings)
        wave.seconds = self.ports.clock.now() - started
        verified = [slug for slug in wave.slugs if readings[slug].verdict == VERIFIED]
        verdict = policy.judge_wave(wave.slugs, verified, canary=wave.canary, stragglers_so_far=len(st.stragglers),
                                    max_stragglers=s.max_stragglers)
        wave.stragglers = verdict.stragglers
        tenants = {slug: {"before": st.before[slug].seen, "after": readings[slug].seen,
                          "verdict": readings[slug].verdict} for slug in wave.slugs}
        if not verdict.ok:
            wave.status = "failed"
            named = ", ".join(f"{slug} ({readings[slug].verdict}: {(readings[slug].seen or '-')[:12]})"
                              for slug in verdict.stragglers)
            self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=verdict.reason,
                               stragglers=verdict.stragglers, tenants=tenants)
            self.out.error(f"{wave.label}: {verdict.reason}: {named}")
            failure = policy.Failure.CANARY_UNVERIFIED if wave.canary else policy.Failure.WAVE_UNVERIFIED
            raise RunFailed(f"{wave.label} failed within {s.verify_timeout:g}s: {verdict.reason}: {named}", failure)
        wave.status = "verified"
        st.stragglers.extend(verdict.stragglers)
        self.ledger.record("wave_verified", wave=wave.index, label=wave.label, slugs=wave.slugs,
                           stragglers=verdict.stragglers, tenants=tenants)
        if verdict.stragglers:
            self.out.warn(f"{wave.label}: verified except straggler(s) within budget: {shown(verdict.stragglers)}")
        else:
            self.out.ok(f"{wave.label}: verified — {shown(wave.slugs)} report {st.sha[:12]}")

    async def approval(self) -> None:
        """Pause after the canary until a person approves (CONTRACT §1 "Approval"): the lease renewed and
        the kill switch re-read at every poll (`guard.keep_alive`); rejected or unanswered fails."""
        s, st = self.s, self.state
        command = approve_command(s.repo, s.sha, s.approval_context)
        self.ledger.record("approval", action="waiting", context=s.approval_context, timeout=s.approval_timeout)
        self.out.warn(f"waiting for approval (up to {s.approval_timeout:g}s): run `{command}` to go on, "
                      "or add --reject to stop")
        fleet = dict(Counter((r.seen or r.verdict) for r in st.latest.values()))
        await notify(s.notify, Notice(verb=st.verb, sha=s.sha, outcome=WAITING, exit_code=None, repo=s.repo,
                                      target_tag=st.tag, fleet=fleet, stragglers=list(st.stragglers),
                                      approve_command=command, run_url=run_url()),
                     ledger=self.ledger, out=self.out)
        try:
            approval = await wait_for_approval(self.ports.repo, s.sha, s.approval_context, timeout=s.approval_timeout,
                                               interval=s.poll_interval, clock=self.ports.clock,
                                               keep_alive=lambda: self.guard.keep_alive("approval poll"))
        except Failed as exc:  # no answer in time, or a status unreadable (the kill switch stops by itself)
            self.ledger.record("approval", action="failed", context=s.approval_context, error=exc.message)
            raise RunFailed(f"approval: {exc.message}", policy.Failure.APPROVAL) from None
        st.approval = approval.facts()
        self.ledger.record("approval", action="approved" if approval.approved else "rejected",
                           context=s.approval_context, **approval.facts())
        who = approval.approver or "an unknown user"
        if not approval.approved:
            self.out.error(f"rejected by {who}: {s.approval_context} = {approval.state}")
            raise RunFailed(f"rejected by {who} ({s.approval_context} = {approval.state}"
                            f"{': ' + approval.description if approval.description else ''})", policy.Failure.APPROVAL)
        self.out.ok(f"approved by {who} after {approval.waited:.1f}s")

    def watched(self) -> list[str]:
        """The tenants verified so far (this run's waves, and those already on the SHA), stragglers aside."""
        st = self.state
        verified = [*st.skipped, *(slug for w in st.waves if w.status == "verified"
                                   for slug, r in w.readings.items() if r.verdict == VERIFIED)]
        return [slug for slug in dict.fromkeys(verified) if slug not in st.stragglers]

    async def soak(self, wave: WaveState) -> None:
        """The soak as a watch (`pipelines.watch.SoakWatch`): the wave's tenants and every verified tenant
        due (last read --verify-interval ago) re-read at each tick (and the analysis ticked); a regression
        is a straggler within the budget or fails."""
        s = self.s
        watched = self.watched()
        self.ledger.record("soak", after=wave.label, seconds=s.soak_seconds, watched=len(watched),
                           interval=s.verify_interval, analysis=bool(s.analysis_query))
        self.out.info(f"soak: {s.soak_seconds:g}s after {wave.label} ({self.of(wave)}), watching "
                      f"{len(watched)} verified tenant(s), each re-read every {s.verify_interval:g}s and "
                      f"{wave.label}'s at the end too"
                      f"{' with the analysis' if s.analysis_query else ''}")

        reads = 0

        async def on_tick(tick: Tick) -> None:
            nonlocal reads
            reads += tick.read
            for slug, reading in tick.regressed.items():
                self.regressed(wave, slug, reading)
            if tick.analysis_failure:
                self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=tick.analysis_failure,
                                   analysis=tick.analysis.facts() if tick.analysis else None)
                self.out.error(f"soak after {wave.label}: {tick.analysis_failure}")
                raise RunFailed(f"soak after {wave.label}: {tick.analysis_failure}", policy.Failure.SOAK_REGRESSED)

        with self.out.progress(f"soaking after {wave.label} ({self.of(wave)})", seconds=s.soak_seconds):
            ticks = await self.watch.soak(s.soak_seconds, self.watched, on_tick,
                                          fresh=[slug for slug, r in wave.readings.items() if r.verdict == VERIFIED])
        self.ledger.record("soak", after=wave.label, action="watched", ticks=ticks, reads=reads,
                           stragglers=self.state.stragglers)

    def of(self, wave: WaveState) -> str:
        """`4 of 20`: where this wave stands among the run's waves (the canary counts as one)."""
        return f"{self.state.waves.index(wave) + 1} of {len(self.state.waves)}"

    def regressed(self, wave: WaveState, slug: str, reading: Reading) -> None:
        """A verified tenant stopped reporting the SHA (or its health check): a straggler within the budget,
        the canary never."""
        s, st = self.s, self.state
        why = (f"{slug} regressed during the soak after {wave.label} ({reading.verdict}: "
               f"{reading.detail or (reading.seen or '-')[:12]})")
        for w in st.waves:
            if slug in w.readings:
                w.readings[slug] = reading
        st.observe({slug: reading})
        verdict = policy.judge_wave([slug], [], canary=slug == st.canary, stragglers_so_far=len(st.stragglers),
                                    max_stragglers=s.max_stragglers)
        if not verdict.ok:
            rule = "the canary must stay verified" if slug == st.canary else "no straggler left in the budget"
            self.ledger.record("wave_failed", wave=wave.index, label=wave.label, reason=f"{why}; {rule}",
                               stragglers=[slug])
            self.out.error(f"soak: {why}; {rule}")
            raise RunFailed(f"soak: {why}; {rule}", policy.Failure.SOAK_REGRESSED)
        st.stragglers.append(slug)
        owner = next((w for w in st.waves if slug in w.slugs), wave)
        owner.stragglers.append(slug)
        self.ledger.record("soak", after=wave.label, action="regressed", slug=slug, verdict=reading.verdict,
                           seen=reading.seen, straggler=True)
        left = s.max_stragglers - len(st.stragglers)
        self.out.warn(f"soak: {why}: a straggler within the budget ({left} left)")

    async def final_verify_fleet(self) -> None:
        s, st = self.s, self.state
        listing = await self.ports.cp.list_tenants(st.tag)
        if not listing:
            raise RunFailed("final verify: the control plane listed no tenants", policy.Failure.FINAL_VERIFY)
        listed = set(listing)
        readings = await self.ports.tenants.read(sorted(listed), st.sha)
        st.observe(readings)
        # Every tenant this run wrote is judged, listed or not: one missing from the listing is unverified.
        st.final_unlisted = [slug for slug in st.written if slug not in listed]
        for slug in st.final_unlisted:
            st.latest[slug] = Reading(slug=slug, expected=st.sha, seen=None, verdict=NOT_LISTED, latency_ms=0.0,
                                      detail="written by this run, missing from the final listing")
        unverified = [slug for slug in sorted(listed) if readings[slug].verdict != VERIFIED] + st.final_unlisted
        if not policy.final_judgement(unverified, s.max_stragglers):
            self.ledger.record("halt", reason="final verify", unverified=unverified)
            raise RunFailed(f"final verify: {len(unverified)} tenant(s) do not report {st.sha[:12]} "
                            f"(allowed {s.max_stragglers}): {shown(unverified)}", policy.Failure.FINAL_VERIFY)
        st.stragglers = unverified
        named = f"; stragglers: {shown(unverified)}" if unverified else ""
        self.out.ok(f"final verify: {len(listed) + len(st.final_unlisted) - len(unverified)}/"
                    f"{len(listed) + len(st.final_unlisted)} tenants report {st.sha[:12]}{named}")

    # ------------------------------------------------------------------ after a failure
    async def rollback(self) -> None:
        """Every tenant this run wrote back to the SHA it had (verified), each write through the guard.
        A guard that says no (kill switch, lease) stops the rollback: the error propagates."""
        s, st = self.s, self.state
        rb = st.rollback = Rollback()
        groups: dict[str, list[str]] = {}
        for slug in list(st.written):
            prior = policy.normal_sha(st.before[slug].seen) if slug in st.before else None
            if prior is None:
                rb.not_restored.append(slug)  # we never knew what it ran: nothing to go back to
                continue
            groups.setdefault(prior, []).append(slug)
        rb.tag = ", ".join(sorted({s.tag_for(prior) for prior in groups}))
        self.out.warn(f"rollback: {sum(len(v) for v in groups.values())} tenant(s) back to the SHA they had")
        pending = [slug for slugs in groups.values() for slug in slugs]
        try:
            for prior, slugs in sorted(groups.items()):
                tag = s.tag_for(prior)
                for start in range(0, len(slugs), s.batch_size):
                    chunk = slugs[start:start + s.batch_size]
                    readings = await self.ports.tenants.read(chunk, prior)
                    batch = policy.still_needed(chunk, readings)  # a tenant that never moved needs no write back
                    moved = [slug for slug in chunk if slug not in batch]
                    rb.restored.extend(moved)
                    pending = [p for p in pending if p not in moved]
                    if not batch:
                        continue
                    self.ledger.record("rollback", action="wave_start", slugs=batch, tag=tag, sha=prior)
                    self.out.info(f"rollback: {shown(batch)} → {tag} ({prior[:12]})")
                    try:
                        await self.write_with_retries(batch, tag=tag, expected=prior, dry_run=False,
                                                      before=f"rollback of {shown(batch, 3)}", sent=[])
                    except CPCallFailed as exc:
                        self.ledger.record("rollback", action="cp_failed", slugs=batch, error=exc.message)
                        rb.not_restored.extend(batch)
                        pending = [p for p in pending if p not in batch]
                        continue
                    after = await self.ports.tenants.wait_verified(batch, prior, timeout=s.verify_timeout,
                                                                   interval=s.verify_interval)
                    st.observe(after)
                    ok = [slug for slug in batch if after[slug].verdict == VERIFIED]
                    bad = [slug for slug in batch if slug not in ok]
                    rb.restored.extend(ok)
                    rb.not_restored.extend(bad)
                    pending = [p for p in pending if p not in batch]
                    self.ledger.record("rollback", action="wave_verified" if not bad else "wave_failed",
                                       slugs=batch, sha=prior, restored=ok, not_restored=bad,
                                       tenants={slug: {"after": after[slug].seen, "verdict": after[slug].verdict}
                                                for slug in batch})
        except FleetgateError as exc:
            rb.stopped = exc.message
            rb.not_restored.extend(pending)
            self.ledger.record("rollback", action="stopped", reason=exc.message, not_restored=pending)
            self.out.error(f"rollback stopped: {exc.message}")
            raise
        self.ledger.record("rollback", action="done", restored=rb.restored, not_restored=rb.not_restored)
        if rb.not_restored:
            self.out.error(f"rollback incomplete: {shown(rb.not_restored)} not restored")
        else:
            self.out.ok(f"rollback: {len(rb.restored)} tenant(s) restored and verified")

    async def read_fleet(self) -> str:
        """Which tenant runs which SHA now (one read of every known tenant), shown as a table."""
        st = self.state
        if not st.tenants:
            return ""
        readings = await self.ports.tenants.read(st.tenants, st.sha)
        st.observe(readings)
        self.out.info(f"fleet now (expecting {st.sha[:7]}):")
        for line in render_table(readings):
            self.out.info(line)
        return describe_counts(readings)


# ---------------------------------------------------------------------- one run, one ending
async def _cancel_on_signals(scope: anyio.CancelScope, received: list[int]) -> None:
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                received.append(signum)
                scope.cancel()
                return
    except (NotImplementedError, RuntimeError, ValueError):
        return  # not the main thread (or no signals here): the caller's own cancellation still applies


async def until_signal(body: Callable[[], Awaitable[None]]) -> str | None:
    """Run `body` (which must not raise); SIGTERM/SIGINT cancel it. Returns the signal's name, or None."""
    received: list[int] = []
    async with anyio.create_task_group() as tg:
        async def main() -> None:
            try:
                await body()
            finally:
                tg.cancel_scope.cancel()  # stop the signal watcher

        tg.start_soon(_cancel_on_signals, tg.cancel_scope, received)
        tg.start_soon(main)
    return signal.Signals(received[0]).name if received else None


async def drive(settings: Settings, out: Output, ports: Ports, state: RunState, ledger: Ledger, *,
                break_lease: bool = False, final_verify: bool = False,
                before: Callable[[], Awaitable[None]] | None = None,
                watch: SoakWatch | None = None) -> dict[str, Any]:
    """One run, start to finish: `before` (deploy-production's gates), the engine, the rollback
    decision, the lease release, then exactly one `finish` (and the ending's notification).
    Returns the result or raises its error."""
    engine = Engine(settings, out, ports, state, ledger, break_lease=break_lease, final_verify=final_verify,
                    watch=watch)
    errors: list[FleetgateError] = []

    async def body() -> None:
        try:
            if before is not None:
                await before()
            await engine.run()
        except Exception as exc:  # every failure becomes an ending, never a traceback
            errors.append(await _after_failure(engine, as_failure(exc)))
        finally:
            await _release(ports, state)

    signal_name: str | None = None
    try:
        signal_name = await until_signal(body)
    except anyio.get_cancelled_exc_class():
        # Cancelled from outside (not by a signal of ours): still one `done`, then go on cancelling.
        with anyio.move_on_after(NOTIFY_WHEN_CANCELLED, shield=True):
            await _finish(settings, out, ledger, state, errors, interrupted="cancelled", swallow=True)
        raise
    return await _finish(settings, out, ledger, state, errors, interrupted=signal_name)


async def _after_failure(engine: Engine, error: FleetgateError) -> FleetgateError:
    """Roll back when the policy says so, then one read of the fleet so the ending can say who runs what.
    Returns the error that ends the run: the first one, unless the rollback was stopped by the kill
    switch (then the run is halted, exit 4, and says both)."""
    st = engine.state
    failure = error.failure if isinstance(error, RunFailed) else policy.Failure.OTHER
    try:
        if policy.rolls_back(failure, on_failure=engine.s.on_failure, written=st.written):
            await engine.rollback()
    except Exception as exc:
        later = as_failure(exc)
        combined = f"{error.message}; then {later.message}"
        error = HaltedMixed(combined) if isinstance(later, HaltedMixed) else Failed(combined)
    try:
        if st.written:
            counts = await engine.read_fleet()
            if counts:
                mixed = "the fleet is mixed" if isinstance(error, HaltedMixed) else "fleet now"
                st.message = f"{mixed}: {counts}"
    except Exception as exc:  # the fleet read is for the report only; the ending stays the error's
        st.message = f"fleet now: unknown ({as_failure(exc).message})"
    return error


async def _release(ports: Ports, state: RunState) -> None:
    lease = ports.lease
    if lease is None:
        return
    if state.lease == "taken" and not lease.held:
        state.lease = "lost"
        return
    if lease.held:
        released = await lease.release()  # shielded and bounded inside
        state.lease = "released" if released else "not released (it expires on its own)"


async def _finish(settings: Settings, out: Output, ledger: Ledger, state: RunState, errors: list[FleetgateError], *,
                  interrupted: str | None, swallow: bool = False) -> dict[str, Any]:
    error = errors[0] if errors else None
    if interrupted:
        error = Failed(f"interrupted by {interrupted}; the lease was released, tenants may be mixed: re-run to "
                       "finish (done tenants are skipped)")
        try:
            ledger.record("halt", reason="interrupted", changed=list(state.written))
        except OSError:
            pass  # finish says the ledger failed
    result = build_result(state, error, interrupted=interrupted is not None)
    try:
        return await finish(result, ledger, out, notify_targets=settings.notify)
    except FleetgateError:
        if swallow:
            return {}
        raise
