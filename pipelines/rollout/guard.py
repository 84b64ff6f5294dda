"""THE guarded write: the only code that calls the control plane's write (`redeploy_wave`).

Every CP write of a run — a wave, each retry of a wave, each rollback write — is `Guard.write`:
1. renew the lease (a lost lease is `Failed`: another run may be writing);
2. re-read the kill switch (engaged → stop: exit 4 when anything was written, 3 when not;
   unreadable → `Failed`, exit 1) — skipped only for `redeploy` (the *auto*-deploy switch does not
   apply to it) and with `--no-live-kill-switch`;
3. check the run's deadline: the lease, just renewed, must outlive the call (`--cp-timeout`),
   else another run could take the fleet over mid-call;
4. record the tenants as written (before the call: a failed call may still have changed them),
   then make ONE call. The guard never retries; the engine decides that, and comes back here.

`keep_alive` is steps 1–2 without a write, for anything that waits while holding the lease
(the approval pause). An automatic rollback does not override an engaged switch: it stops here too.
"""

from __future__ import annotations

from pipelines.cp import CPAnswer
from pipelines.errors import Disabled, ExitCode, Failed, HaltedMixed
from pipelines.ledger import Ledger
from pipelines.rollout.phase import RunState
from pipelines.rollout.policy import kill_switch_stop
from pipelines.rollout.ports import Ports


class Guard:
    def __init__(self, ports: Ports, state: RunState, ledger: Ledger, *, read_kill_switch: bool,
                 lease_ttl: float, cp_timeout: float) -> None:
        self.ports = ports
        self.state = state
        self.ledger = ledger
        self.read_kill_switch = read_kill_switch
        self.lease_ttl = lease_ttl
        self.cp_timeout = cp_timeout
        self.lease_renewed_at: float | None = None
        self.writes = 0

    async def keep_alive(self, before: str) -> None:
        """Renew the lease and re-read the kill switch; raises to stop the run."""
        if self.ports.lease is not None:
            await self.ports.lease.renew()
            self.lease_renewed_at = self.ports.clock.now()
        if not self.read_kill_switch:
            return
        reason = await self.ports.repo.kill_switch()  # Failed (exit 1) when unreadable
        self.ledger.record("kill_switch", before=before, engaged=reason is not None, reason=reason)
        if reason is None:
            return
        if kill_switch_stop(written=self.state.written) is ExitCode.HALTED_MIXED:
            self.ledger.record("halt", reason="kill switch", detail=reason, before=before)
            raise HaltedMixed(f"halted by the kill switch before {before} ({reason})",
                              details={"disabled_reason": reason})
        raise Disabled(f"kill switch engaged before the first write ({reason}); nothing written",
                       details={"disabled_reason": reason})

    def _check_deadline(self, before: str) -> None:
        if self.lease_renewed_at is None:
            return
        left = self.lease_renewed_at + self.lease_ttl - self.ports.clock.now()
        if left < self.cp_timeout:
            raise Failed(f"refusing {before}: the lease has {max(left, 0):.0f}s left, less than the CP call may "
                         f"take (--cp-timeout {self.cp_timeout:g}s); raise --lease-ttl")

    async def write(self, tag: str, slugs: list[str], *, dry_run: bool, before: str) -> CPAnswer:
        """One guarded CP write (see the module docstring)."""
        await self.keep_alive(before)
        self._check_deadline(before)
        if not dry_run:
            self.state.wrote(slugs)
        self.writes += 1
        return await self.ports.cp.redeploy_wave(tag, slugs, dry_run=dry_run)
