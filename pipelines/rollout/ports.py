"""What the rollout engine talks to, as Protocols: the sandbox, real servers and in-memory fakes all fit.

- `ControlPlane`: the CP listing (a read) and ONE wave call (`pipelines.cp.CPClient`).
- `Repo`: Gitea reads the run needs: the live kill switch, ancestry, the branch head, statuses.
- `Tenants`: `/buildinfo` reads (`pipelines.verify.BuildinfoReader`, or `watch.HealthCheckedReader`).
- `LeasePort`: take, renew, release (`pipelines.lease.Lease`).
- `Clock`: time and sleep (soak, backoff); a fake clock in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from pipelines import killswitch
from pipelines.cp import CPAnswer
from pipelines.gitea import CommitStatus, GiteaClient
from pipelines.lease import Lease
from pipelines.ledger import Ledger
from pipelines.output import Output
from pipelines.verify import Reading


class ControlPlane(Protocol):
    async def list_tenants(self, target_tag: str) -> list[str]: ...

    async def redeploy_wave(self, target_tag: str, slugs: list[str], *, dry_run: bool) -> CPAnswer: ...


class Repo(Protocol):
    async def kill_switch(self) -> str | None:
        """Why the live switch is engaged, None when off; `Failed` when it cannot be read."""
        ...

    async def is_descendant(self, candidate: str, of: str) -> bool: ...

    async def branch_head(self, branch: str) -> str: ...

    async def combined_status(self, sha: str) -> dict[str, CommitStatus]: ...


class Tenants(Protocol):
    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]: ...

    async def wait_verified(self, slugs: Sequence[str], sha: str, *,
                            timeout: float,  # noqa: ASYNC109 -- a budget, not a cancel
                            interval: float,
                            on_progress: Callable[[int], object] | None = None) -> dict[str, Reading]: ...


class LeasePort(Protocol):
    @property
    def held(self) -> bool: ...

    async def acquire(self, *, break_held: bool = False) -> None: ...

    async def renew(self) -> None: ...

    async def release(self) -> bool:
        """Delete the lease (shielded, bounded); True when it was released cleanly."""
        ...


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass
class Ports:
    cp: ControlPlane
    repo: Repo
    tenants: Tenants
    lease: LeasePort | None  # None: --no-lease, or a dry run
    clock: Clock


class GiteaRepo:
    """`Repo` over a `GiteaClient` (the kill switch read through `pipelines.killswitch`)."""

    def __init__(self, gitea: GiteaClient) -> None:
        self.gitea = gitea

    async def kill_switch(self) -> str | None:
        return await killswitch.live_reason(self.gitea)

    async def is_descendant(self, candidate: str, of: str) -> bool:
        return await self.gitea.is_descendant(candidate, of=of)

    async def branch_head(self, branch: str) -> str:
        return await self.gitea.branch_head(branch)

    async def combined_status(self, sha: str) -> dict[str, CommitStatus]:
        return await self.gitea.combined_status(sha)


class LeaseLedger:
    """The run's ledger as `Lease` writes to it, remembering the last lease record (how the release went)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.last_lease: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        """The ledger's file (the lease reads what it says about a holder)."""
        return self.ledger.path

    def record(self, event: str, **facts: Any) -> object:
        line = self.ledger.record(event, **facts)
        if event == "lease":
            self.last_lease = dict(facts)
        return line


class GiteaLease:
    """`LeasePort` over `pipelines.lease.Lease`: `release` says whether it went cleanly."""

    def __init__(self, lease: Lease, recorder: LeaseLedger) -> None:
        self.lease = lease
        self.recorder = recorder

    @property
    def held(self) -> bool:
        return self.lease.held

    async def acquire(self, *, break_held: bool = False) -> None:
        await self.lease.acquire(break_held=break_held)

    async def renew(self) -> None:
        await self.lease.renew()

    async def release(self) -> bool:
        await self.lease.release()
        last = self.recorder.last_lease
        return last.get("action") == "released" and last.get("ok", True) is not False


class OutputClock:
    """anyio's clock; sleeps through `Output.pause`, so a terminal shows the countdown."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await self.out.pause(seconds, "waiting")
