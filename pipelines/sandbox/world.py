"""The simulated world behind the sandbox: one repo on Gitea, a control plane, a tenant fleet.

Everything the three apps answer comes from one mutable `World`, so a test shapes it before (or
while) fleetgate runs, then asserts on the logs it keeps (`requests`, `cp_calls`, `writes`,
`buildinfo_reads`). The apps and the tests share one event loop, so no locking is needed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

# Gitea stores and matches Actions variable names case-insensitively (it upper-cases them).
KILL_SWITCH_VARIABLE = "PROD_AUTO_DEPLOY_DISABLED"
LEASE_VARIABLE = "FLEETGATE_LEASE"

GITEA_TOKEN = "sandbox-gitea-token-0123456789abcdef"  # noqa: S105 - sandbox-only, printed on purpose
CP_TOKEN = "sandbox-cp-token-fedcba9876543210"  # noqa: S105 - sandbox-only, printed on purpose

READ = "read"
WRITE_VARIABLES = "write:variables"
WRITE_STATUS = "write:status"
APPROVER_LOGIN = "release-manager"  # who the sandbox's scripted approver is

# Buildinfo behaviours of a tenant (`Tenant.buildinfo`).
BUILDINFO_MODES = ("ok", "unreachable", "non-json", "bad-shape", "slow", "redirect")

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def fake_sha(label: str) -> str:
    """A deterministic 40-hex SHA for a label, so scenarios are reproducible."""
    return hashlib.sha1(f"fleetgate-sandbox:{label}".encode(), usedforsecurity=False).hexdigest()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Commit:
    sha: str
    parents: list[str]
    message: str
    timestamp: datetime


@dataclass
class Status:
    id: int
    sha: str
    context: str
    state: str
    description: str
    target_url: str
    created_at: datetime
    creator: str = ""  # login of who posted it ("" = the Actions user)


@dataclass
class StatusFlip:
    """`context` on `sha` becomes `state` once the SHA's combined status was read `after_reads` times
    in all (`World.set_status` counts from the reads made so far)."""

    sha: str
    context: str
    state: str
    after_reads: int


@dataclass
class Tenant:
    slug: str
    sha: str  # what /buildinfo reports
    latency: float = 0.05  # seconds a redeploy of this tenant takes
    stuck: bool = False  # a redeploy leaves it on its old SHA
    reports_failure: bool = False  # its CP row says failure (whether or not it moved)
    boot_reads: int = 0  # after a redeploy, /buildinfo reports the old SHA for this many more reads
    buildinfo: str = "ok"  # one of BUILDINFO_MODES
    slow_seconds: float = 30.0  # how long a "slow" /buildinfo takes to answer
    health: int = 200  # what its health path (e.g. /healthz) answers
    health_on_deploy: int = 200  # ... once it runs the deploy SHA
    regress_after_reads: int = 0  # > 0: after that many /buildinfo reads on the deploy SHA, it falls back
    previous_sha: str = ""
    reads_on_deploy: int = 0
    errors_per_scrape: float = 0.0  # once it runs the deploy SHA, /metrics's error counter climbs this much per read
    errors_total: float = 0.0
    # internal: a redeploy that has not booted yet
    pending_sha: str | None = None
    reads_until_boot: int = 0
    redeploys: int = 0


@dataclass(slots=True)  # one per request: tens of thousands at fleet size
class RequestRecord:
    time: float  # time.monotonic()
    service: str  # "gitea" | "cp" | "tenants"
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class CPCall:
    start: float
    body: Any
    end: float | None = None
    status: int | None = None
    answer: Any = None


@dataclass
class Write:
    """One tenant redeploy the CP performed (a non-dry-run wave call)."""

    time: float
    slugs: list[str]
    tag: str
    sha: str


@dataclass(slots=True)  # one per request: tens of thousands at fleet size
class BuildinfoRead:
    time: float
    slug: str
    headers: dict[str, str]


@dataclass
class WriteTrigger:
    """Run `action(world)` when the CP's `after_writes`-th wave write arrives."""

    after_writes: int
    action: Callable[[World], None]
    fired: bool = False


@dataclass
class Approver:
    """A person who answers `--approve-after-canary`: posts `state` on `context` `after_seconds` after the
    run first looks for it (a look after the first write: the canary's)."""

    state: str
    after_seconds: float
    context: str = "fleetgate/approve"
    login: str = APPROVER_LOGIN
    first_look: float | None = None
    answered: bool = False


@dataclass
class GiteaFaults:
    fail_next: int = 0  # the next N Gitea requests answer `fail_status`
    fail_status: int = 503
    rate_limit_next: int = 0  # the next N Gitea requests answer 429 with Retry-After
    retry_after: str = "1"
    latency: float = 0.0  # added to every Gitea answer
    unreadable_variables: set[str] = field(default_factory=set)  # GET of these names answers 500
    post_race_500: bool = False  # POST of an existing variable answers 500 (lost check-then-insert race)


@dataclass
class CPFaults:
    fail_next: int = 0  # the next N wave calls answer `fail_status`
    fail_status: int = 502
    fail_after_slugs: int = 0  # ... after having redeployed this many of the wave's slugs first
    fail_body: str = "<html><body>502 Bad Gateway</body></html>"
    refuse: str | None = None  # wave calls answer ok:false with this error
    refuse_dry_run: str | None = None  # the dry-run listing answers ok:false with this error
    row_error: str = "ssm command failed: exit status 1"  # error text of a failing row
    hostile_slugs: list[str] = field(default_factory=list)  # extra slugs in the dry-run listing
    latency: float = 0.0  # added to every CP answer


@dataclass
class World:
    owner: str = "acme"
    name: str = "fleet"
    repo_id: int = 42
    owner_id: int = 7
    commits: dict[str, Commit] = field(default_factory=dict)  # insertion order = history order
    branches: dict[str, str] = field(default_factory=dict)
    deploy_sha: str = ""
    required_contexts: tuple[str, ...] = ()
    # (run_id, event, facts) a scenario's past runs left in the rehearsal ledger (`scenarios.seed_ledger`)
    ledger_history: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    statuses: dict[str, dict[str, Status]] = field(default_factory=dict)  # sha -> context -> latest
    status_history: list[Status] = field(default_factory=list)  # every status ever posted
    flips: list[StatusFlip] = field(default_factory=list)
    status_reads: dict[str, int] = field(default_factory=dict)  # sha -> combined-status reads (page 1)
    variables: dict[str, str] = field(default_factory=dict)  # NAME (upper-case) -> data
    tenants: dict[str, Tenant] = field(default_factory=dict)
    registry: dict[str, str] = field(default_factory=dict)  # tag -> sha
    gitea_token: str = GITEA_TOKEN  # the token the overlay hands to fleetgate
    gitea_tokens: dict[str, set[str]] = field(
        default_factory=lambda: {GITEA_TOKEN: {READ, WRITE_VARIABLES, WRITE_STATUS}})
    gitea_users: dict[str, str] = field(default_factory=lambda: {GITEA_TOKEN: "gitea-actions"})  # token -> login
    approver: Approver | None = None
    cp_token: str = CP_TOKEN
    gitea_faults: GiteaFaults = field(default_factory=GiteaFaults)
    cp_faults: CPFaults = field(default_factory=CPFaults)
    triggers: list[WriteTrigger] = field(default_factory=list)
    # logs tests assert on
    requests: list[RequestRecord] = field(default_factory=list)
    cp_calls: list[CPCall] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    buildinfo_reads: list[BuildinfoRead] = field(default_factory=list)
    # set by `serve` once the ports are bound
    gitea_url: str = ""
    cp_url: str = ""
    tenants_url: str = ""
    _next_status_id: int = 1
    _closing: anyio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def _closing_event(self) -> anyio.Event:
        if self._closing is None:
            self._closing = anyio.Event()
        return self._closing

    def now(self) -> float:
        """The clock scripted latencies are measured on (tests replace it along with `pause`)."""
        return anyio.current_time()

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds` (scripted latency), cut short when the sandbox shuts down."""
        if seconds <= 0:
            return
        with anyio.move_on_after(seconds):
            await self._closing_event().wait()

    def close(self) -> None:
        self._closing_event().set()

    # ------------------------------------------------------------------ history

    @property
    def repo(self) -> str:
        return f"{self.owner}/{self.name}"

    def add_commit(self, parent: str | None = None, *, label: str | None = None, message: str = "",
                   branch: str | None = None, parents: list[str] | None = None) -> str:
        """Add a commit (child of `parent`, or of the given `parents`); move `branch` to it if given."""
        parent_list = list(parents) if parents is not None else ([parent] if parent else [])
        for p in parent_list:
            if p not in self.commits:
                raise KeyError(f"unknown parent commit {p}")
        sha = fake_sha(label or f"commit-{len(self.commits)}")
        moment = EPOCH + timedelta(minutes=len(self.commits))
        self.commits[sha] = Commit(sha=sha, parents=parent_list, timestamp=moment,
                                   message=message or f"commit {len(self.commits)}")
        self.registry[f"staging-{sha[:7]}"] = sha
        if branch is not None:
            self.branches[branch] = sha
        return sha

    def ancestors(self, sha: str) -> set[str]:
        """`sha` and every commit reachable from it."""
        seen: set[str] = set()
        todo = [sha]
        while todo:
            current = todo.pop()
            if current in seen or current not in self.commits:
                continue
            seen.add(current)
            todo.extend(self.commits[current].parents)
        return seen

    def resolve_ref(self, ref: str) -> str | None:
        """A branch name, a full SHA, or an unambiguous SHA prefix (≥ 7) → full SHA."""
        if ref in self.branches:
            return self.branches[ref]
        if ref in self.commits:
            return ref
        if len(ref) >= 7:
            matches = [s for s in self.commits if s.startswith(ref.lower())]
            if len(matches) == 1:
                return matches[0]
        return None

    # ------------------------------------------------------------------ statuses

    def set_status(self, sha: str, context: str, state: str, *, after_reads: int = 0,
                   description: str = "", target_url: str = "", creator: str = "") -> Status | None:
        """Post a status now, or (after_reads > 0) once the SHA's combined status was read that many
        more times."""
        if after_reads > 0:
            self.flips.append(StatusFlip(sha=sha, context=context, state=state,
                                         after_reads=self.status_reads.get(sha, 0) + after_reads))
            return None
        status = Status(id=self._next_status_id, sha=sha, context=context, state=state,
                        description=description or f"{context}: {state}",
                        target_url=target_url,  # "" → the run page on this sandbox's Gitea, once it has a port
                        created_at=EPOCH + timedelta(seconds=self._next_status_id), creator=creator)
        self._next_status_id += 1
        self.statuses.setdefault(sha, {})[context] = status
        self.status_history.append(status)
        return status

    def set_statuses(self, sha: str, state: str, contexts: tuple[str, ...] | None = None) -> None:
        for context in contexts if contexts is not None else self.required_contexts:
            self.set_status(sha, context, state)

    def read_combined(self, sha: str, *, count_read: bool) -> list[Status]:
        """The latest status per context (ordered by id), applying scripted flips first."""
        if count_read:
            self.status_reads[sha] = self.status_reads.get(sha, 0) + 1
        self._approve(sha)
        reads = self.status_reads.get(sha, 0)
        due = [f for f in self.flips if f.sha == sha and reads > f.after_reads]
        for flip in due:
            self.flips.remove(flip)
            self.set_status(flip.sha, flip.context, flip.state)
        return sorted(self.statuses.get(sha, {}).values(), key=lambda s: s.id)

    def _approve(self, sha: str) -> None:
        """The scripted approver answers once the run has looked long enough (after the canary's write)."""
        a = self.approver
        if a is None or a.answered or sha != self.deploy_sha or not self.writes:
            return
        now = time.monotonic()
        if a.first_look is None:
            a.first_look = now
        if now - a.first_look >= a.after_seconds:
            a.answered = True
            word = "approved" if a.state == "success" else "rejected"
            self.set_status(sha, a.context, a.state, creator=a.login, description=f"{word} in the sandbox")

    # ------------------------------------------------------------------ variables

    def set_variable(self, name: str, value: str) -> None:
        self.variables[name.upper()] = value

    def get_variable(self, name: str) -> str | None:
        return self.variables.get(name.upper())

    def delete_variable(self, name: str) -> None:
        self.variables.pop(name.upper(), None)

    def engage_kill_switch(self, value: str = "true") -> None:
        self.set_variable(KILL_SWITCH_VARIABLE, value)

    def hold_lease(self, *, run: str = "other-run-1", sha: str | None = None,
                   expires_in: float = 3600.0) -> None:
        """Another run holds the deploy lease (expired when `expires_in` < 0)."""
        expires = datetime.now(UTC) + timedelta(seconds=expires_in)
        self.set_variable(LEASE_VARIABLE, json.dumps({"run": run, "sha": sha or self.deploy_sha,
                                                      "expires": rfc3339(expires)}))

    # ------------------------------------------------------------------ tenants

    def add_tenant(self, slug: str, sha: str, **traits: Any) -> Tenant:
        tenant = Tenant(slug=slug, sha=sha, **traits)
        self.tenants[slug] = tenant
        return tenant

    def tenant_shas(self) -> dict[str, str]:
        """What every tenant runs right now (its booted SHA), for assertions."""
        return {slug: t.sha for slug, t in sorted(self.tenants.items())}

    def redeploy(self, tenant: Tenant, sha: str) -> None:
        tenant.redeploys += 1
        if tenant.stuck:
            return
        if sha != tenant.sha:
            tenant.previous_sha = tenant.sha
        if tenant.boot_reads > 0 and sha != tenant.sha:
            tenant.pending_sha = sha
            tenant.reads_until_boot = tenant.boot_reads
        else:
            tenant.sha = sha
            tenant.pending_sha = None

    def buildinfo_sha(self, tenant: Tenant) -> str:
        """The SHA a /buildinfo read reports; a booting tenant reports the old one a few more times."""
        if tenant.pending_sha is not None:
            if tenant.reads_until_boot > 0:
                tenant.reads_until_boot -= 1
            else:
                tenant.sha = tenant.pending_sha
                tenant.pending_sha = None
        if tenant.regress_after_reads and tenant.sha == self.deploy_sha and tenant.previous_sha:
            tenant.reads_on_deploy += 1
            if tenant.reads_on_deploy > tenant.regress_after_reads:  # it crashed; its platform brought back the old one
                tenant.sha = tenant.previous_sha
        return tenant.sha

    def health_status(self, tenant: Tenant) -> int:
        return tenant.health_on_deploy if tenant.sha == self.deploy_sha else tenant.health

    def on_write(self, after_writes: int, action: Callable[[World], None]) -> None:
        self.triggers.append(WriteTrigger(after_writes=after_writes, action=action))

    def record_write(self, slugs: list[str], tag: str, sha: str) -> None:
        self.writes.append(Write(time=time.monotonic(), slugs=list(slugs), tag=tag, sha=sha))
        for trigger in self.triggers:
            if not trigger.fired and len(self.writes) >= trigger.after_writes:
                trigger.fired = True
                trigger.action(self)

    # ------------------------------------------------------------------ convenience for tests

    def requests_to(self, service: str, method: str | None = None, contains: str = "") -> list[RequestRecord]:
        return [r for r in self.requests if r.service == service and (method is None or r.method == method)
                and contains in r.path]

    @property
    def written_slugs(self) -> list[str]:
        return [slug for w in self.writes for slug in w.slugs]
