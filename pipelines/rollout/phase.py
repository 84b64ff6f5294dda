"""Where a run is, and everything it knows: the `Phase` enum and the typed `RunState`.

In the spirit of Argo Rollouts' steps + status phase: a run moves forward through
gates (deploy-production only) → lease → list → read-before → stand-down → canary → approval
(after a verified canary, when asked for) → waves → final-verify, and ends in exactly one terminal
phase, which is also the outcome word of its `done` (CONTRACT §5). Every change is kept in
`RunState.history`, so `done` says how far a run got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from pipelines.verify import Reading


class Phase(StrEnum):
    GATES = "gates"
    LEASE = "lease"
    LIST = "list"
    READ_BEFORE = "read-before"
    STAND_DOWN = "stand-down"
    CANARY = "canary"
    APPROVAL = "approval"  # the pause after a verified canary (--approve-after-canary)
    WAVES = "waves"
    FINAL_VERIFY = "final-verify"
    # terminal: each is the outcome word of the run's `done`
    DONE = "deployed"
    NOTHING_TO_DO = "nothing-to-do"
    DRY_RUN = "dry-run"
    DISABLED = "disabled"
    STOOD_DOWN = "stood-down"
    HALTED = "halted"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Phase.DONE, Phase.NOTHING_TO_DO, Phase.DRY_RUN, Phase.DISABLED, Phase.STOOD_DOWN,
                      Phase.HALTED, Phase.FAILED, Phase.ROLLED_BACK, Phase.INTERRUPTED})

NOT_STARTED = "not started"


@dataclass
class WaveState:
    index: int  # 0 = the canary wave when there is one
    slugs: list[str]
    canary: bool
    status: str = NOT_STARTED  # not started | writing | verified | failed | dry-run
    stragglers: list[str] = field(default_factory=list)
    sent: list[list[str]] = field(default_factory=list)  # only_slugs of every CP call (retries too)
    seconds: float = 0.0
    readings: dict[str, Reading] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "canary" if self.canary else f"wave {self.index}"

    @property
    def cp_attempts(self) -> int:
        return len(self.sent)


@dataclass
class Rollback:
    tag: str = ""
    restored: list[str] = field(default_factory=list)
    not_restored: list[str] = field(default_factory=list)
    stopped: str = ""  # why it stopped early (a guard said no), else empty

    @property
    def verified(self) -> bool:
        return not self.not_restored and not self.stopped


@dataclass
class RunState:
    """One run. Built by the engine, read by `result.build_result`; nothing else keeps run state."""

    verb: str
    run_id: str
    sha: str
    tag: str
    manual: bool
    dry_run: bool
    phase: Phase = Phase.LEASE
    history: list[tuple[str, float]] = field(default_factory=list)  # (phase, anyio time) in order
    step: str = ""  # deploy-production's step (plan, wait-gates, assert-enabled, rollout)
    tenants: list[str] = field(default_factory=list)
    canary: str | None = None
    before: dict[str, Reading] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    waves: list[WaveState] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # every tenant a write was sent for, in order
    stragglers: list[str] = field(default_factory=list)
    latest: dict[str, Reading] = field(default_factory=dict)  # the newest reading of each tenant
    final_unlisted: list[str] = field(default_factory=list)  # written, missing from the final listing
    lease: str = "off"  # off | skipped (dry run) | not taken | taken | released | lost | release failed
    rollback: Rollback | None = None
    gates: dict[str, str] = field(default_factory=dict)
    approval: dict[str, Any] | None = None  # `watch.Approval.facts()` once answered
    repo: str = ""
    message: str = ""

    def enter(self, phase: Phase) -> None:
        """Move to `phase` (recorded; a terminal phase is final)."""
        if self.phase.terminal:
            return
        self.phase = phase
        self.history.append((phase.value, round(anyio.current_time(), 3)))

    def wrote(self, slugs: list[str]) -> None:
        self.written.extend(s for s in slugs if s not in self.written)

    def observe(self, readings: dict[str, Reading]) -> None:
        self.latest.update(readings)
