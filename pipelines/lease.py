"""The deploy lease (CONTRACT §4): one run writes to production at a time.

The lease is the Gitea Actions variable `FLEETGATE_LEASE` holding `{"run","sha","expires"}`.
Gitea has no compare-and-swap, so the protocol leans on what it does guarantee: `POST` of an
existing variable answers 409 (or 500 when two creates race), so exactly one creator wins;
everybody else re-reads to learn who holds it.

Decisions (fail-closed):
- A lease whose value is not the JSON we write (unparseable, no `expires`, naive time) is treated
  as held by an unknown run that never expires: we wait up to `--lease-wait` for its writer to
  delete it, then fail naming the raw (redacted) value. Only an operator clears it — delete the
  variable, or `redeploy --break-lease`.
- Before every renewal and before the release the variable is re-read: if another run holds it now
  (ours expired and was broken) or it is gone, the lease is *lost* and the run stops (`Failed`);
  a lost lease is never renewed over or deleted, so we cannot clobber the new holder.
- Waiting polls every `poll_interval` seconds (the gate polling interval).
- A lease of the same SHA whose holder's ledger ends `interrupted` (or with no `done`: killed) is
  named as such at once, with the command that breaks it; we still only wait — it expires on its
  own, and breaking a lease is an operator's decision (`fleetgate lease --break --yes`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from pipelines.errors import Failed
from pipelines.redact import redact

if TYPE_CHECKING:
    from pipelines.gitea import GiteaClient
    from pipelines.output import Output

LEASE_VARIABLE = "FLEETGATE_LEASE"
BREAK_COMMAND = "fleetgate lease --break --yes"
MAX_QUICK_RETRIES = 5
RELEASE_TIMEOUT = 30.0  # a shielded release must still end: the lease expires on its own anyway


class LedgerLike(Protocol):
    def record(self, event: str, **facts: Any) -> object: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    """RFC 3339 with an offset (`Z` or `+hh:mm`); a time without one is not accepted."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


@dataclass(frozen=True)
class LeaseValue:
    run: str
    sha: str
    expires: datetime

    def to_json(self) -> str:
        return json.dumps({"run": self.run, "sha": self.sha, "expires": format_time(self.expires)},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> LeaseValue | None:
        """The lease in `text`, or None when it is not one we can trust (see the module doc)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        run, sha, expires = data.get("run"), data.get("sha"), data.get("expires")
        if not isinstance(run, str) or not run or not isinstance(sha, str) or not isinstance(expires, str):
            return None
        when = parse_time(expires)
        return None if when is None else cls(run=run, sha=sha, expires=when)

    def describe(self) -> str:
        return f"run {self.run} (sha {self.sha[:12]}, expires {format_time(self.expires)})"


def holder_note(current: LeaseValue | None, sha: str, ledger_path: str | Path | None) -> str:
    """What our ledger knows about the holder of a lease of the same SHA: that it ended `interrupted`
    (or never wrote `done`), and how to take over. Empty when the ledger says nothing useful."""
    if current is None or current.sha != sha or ledger_path is None:
        return ""
    from pipelines.report.runs import UNFINISHED, find_run

    record = find_run(ledger_path, current.run)
    if record is None or record.run_id != current.run:
        return ""
    if record.outcome == "interrupted":
        ended = "ended `interrupted`"
    elif record.outcome == UNFINISHED:
        ended = f"has no `done` (last: {record.last_phase}; killed, or still running elsewhere)"
    else:
        return ""
    return (f"the holder {current.run} deploys this same SHA and its ledger {ended}, yet it still holds the "
            f"lease (expires {format_time(current.expires)}); if that run is gone, take over with "
            f"`{BREAK_COMMAND}`")


async def read_lease(gitea: GiteaClient) -> tuple[str | None, LeaseValue | None]:
    """The raw lease value (None: no lease) and its parse (None: absent or not ours to trust)."""
    raw = await gitea.get_variable(LEASE_VARIABLE)
    return raw, (LeaseValue.parse(raw) if raw is not None else None)


class Lease:
    """Take, renew, release (and in an emergency break) the deploy lease."""

    def __init__(self, gitea: GiteaClient, *, run_id: str, sha: str, ttl: float, wait: float,
                 poll_interval: float, out: Output, ledger: LedgerLike | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.gitea = gitea
        self.run_id = run_id
        self.sha = sha
        self.ttl = ttl
        self.wait = wait
        self.poll_interval = poll_interval
        self.out = out
        self.ledger = ledger
        self.clock = clock
        self.held = False

    # ------------------------------------------------------------------ helpers
    def _value(self) -> str:
        expires = self.clock() + timedelta(seconds=self.ttl)
        return LeaseValue(run=self.run_id, sha=self.sha, expires=expires).to_json()

    def _record(self, action: str, **facts: Any) -> None:
        if self.ledger is not None:
            self.ledger.record("lease", action=action, variable=LEASE_VARIABLE, **facts)

    def _is_ours(self, current: LeaseValue | None) -> bool:
        return current is not None and current.run == self.run_id

    async def _read(self) -> tuple[str | None, LeaseValue | None]:
        return await read_lease(self.gitea)

    def _ledger_path(self) -> Path | None:
        path = getattr(self.ledger, "path", None)
        return path if isinstance(path, Path) else None

    # ------------------------------------------------------------------ protocol
    async def acquire(self, *, break_held: bool = False) -> None:
        """Create the lease; wait for another run's valid lease up to `wait`; break an expired one.

        `break_held` (redeploy --break-lease) breaks a valid lease at once instead of waiting.
        """
        deadline = anyio.current_time() + self.wait
        announced = ""
        note = ""
        quick_retries = 0  # create refused without a holder to wait for: bounded, never a tight loop
        while True:
            if quick_retries > MAX_QUICK_RETRIES:
                raise Failed(f"lease {LEASE_VARIABLE}: Gitea refused to create it {quick_retries} times "
                             "without anyone holding it; giving up")
            try:
                created = await self.gitea.create_variable(LEASE_VARIABLE, self._value())
            except anyio.get_cancelled_exc_class():
                # Cancelled (a signal) with the create in flight: it may have landed. `release` re-reads
                # the variable and deletes it only if it is ours.
                self.held = True
                raise
            if created:
                self.held = True
                self._record("taken", run=self.run_id, sha=self.sha, ttl_seconds=self.ttl)
                self.out.ok(f"lease {LEASE_VARIABLE} taken by run {self.run_id} (ttl {self.ttl:g}s)")
                return
            # 409 (exists) or 500 (lost race): learn who holds it.
            raw, current = await self._read()
            if raw is None:
                quick_retries += 1  # released between our create and our read: try again at once
                continue
            if self._is_ours(current):
                # Left by this very run (same run id, e.g. a retried step): it is ours to renew.
                await self.gitea.update_variable(LEASE_VARIABLE, self._value())
                self.held = True
                self._record("taken", run=self.run_id, sha=self.sha, ttl_seconds=self.ttl, reused=True)
                self.out.ok(f"lease {LEASE_VARIABLE} already held by this run {self.run_id}; renewed")
                return
            if current is not None and current.expires <= self.clock():
                await self._break(current, raw, reason="expired")
                quick_retries += 1
                continue
            if break_held:
                await self._break(current, raw, reason="--break-lease")
                quick_retries += 1
                continue
            holder = current.describe() if current is not None else \
                f"an unparseable value {redact(raw, limit=120)!r} (treated as held, never expiring)"
            remaining = deadline - anyio.current_time()
            if holder != announced:
                note = holder_note(current, self.sha, self._ledger_path())
            if remaining <= 0:
                hint = f"; {note}" if note else "" if current is not None else \
                    f"; an operator must delete the variable {LEASE_VARIABLE} or run `{BREAK_COMMAND}`"
                raise Failed(f"lease {LEASE_VARIABLE} is held by {holder}; gave up after waiting "
                             f"{self.wait:g}s (--lease-wait){hint}",
                             details={"lease_holder": current.run if current is not None else None})
            if holder != announced:
                self.out.info(f"lease {LEASE_VARIABLE} is held by {holder}; waiting up to {remaining:.0f}s")
                if note:
                    self.out.warn(note)
                announced = holder
            await self.out.pause(min(self.poll_interval, remaining), f"waiting for {holder} to release the lease")

    async def _break(self, current: LeaseValue | None, raw: str, *, reason: str) -> None:
        holder = current.run if current is not None else None
        self.out.warn(f"lease {LEASE_VARIABLE}: breaking "
                      f"{current.describe() if current is not None else 'an unparseable lease'} ({reason})")
        await self.gitea.delete_variable(LEASE_VARIABLE)
        self._record("broken", holder=holder, holder_value=redact(raw, limit=300), reason=reason,
                     run=self.run_id)

    async def renew(self) -> None:
        """Extend our lease by `ttl`; `Failed` when it is no longer ours."""
        if not self.held:
            raise Failed(f"lease {LEASE_VARIABLE}: not held by run {self.run_id}; refusing to write")
        raw, current = await self._read()
        if not self._is_ours(current):
            self.held = False
            who = current.describe() if current is not None else ("nobody (deleted)" if raw is None
                                                                  else "an unparseable value")
            if self.ledger is not None:
                self.ledger.record("halt", reason="lease lost", variable=LEASE_VARIABLE,
                                   holder=current.run if current is not None else None, run=self.run_id)
            raise Failed(f"lease {LEASE_VARIABLE} lost: now held by {who}; stopping before the next write")
        await self.gitea.update_variable(LEASE_VARIABLE, self._value())
        self._record("renewed", run=self.run_id, ttl_seconds=self.ttl)

    async def release(self) -> None:
        """Delete our lease. Shielded and bounded: it runs on every path, cancellation included."""
        if not self.held:
            return
        with anyio.move_on_after(RELEASE_TIMEOUT, shield=True) as scope:
            try:
                _raw, current = await self._read()
                if self._is_ours(current):
                    await self.gitea.delete_variable(LEASE_VARIABLE)
                    self._record("released", run=self.run_id)
                    self.out.info(f"lease {LEASE_VARIABLE} released")
                else:
                    self._record("released", run=self.run_id, ok=False, note="no longer ours; left alone",
                                 holder=current.run if current is not None else None)
                    self.out.warn(f"lease {LEASE_VARIABLE} was no longer ours at release; left alone")
            except Failed as exc:
                # The release must not hide the run's own outcome; the lease expires on its own.
                self._record("released", run=self.run_id, ok=False, error=exc.message)
                self.out.warn(f"lease {LEASE_VARIABLE}: release failed ({exc.message}); it expires after "
                              f"{self.ttl:g}s")
            finally:
                self.held = False
        if scope.cancelled_caught:
            self._record("released", run=self.run_id, ok=False, error="timed out")
            self.out.warn(f"lease {LEASE_VARIABLE}: release timed out; it expires after {self.ttl:g}s")
