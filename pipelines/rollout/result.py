"""ONE result per run (`RunResult`), built in one place (`build_result`), rendered once (`finish`).

`finish` writes exactly one ledger `done`, the step summary and the `--json` object, all from the
same `RunResult`, so they cannot disagree. `fleetgate report` renders a run from its ledger lines:
everything it needs is in `done` (the events before it add the timeline).

The `done` event (and the `--json` object: the same keys, plus `ok` and `ledger`):

    outcome      one word (CONTRACT §5): deployed, nothing-to-do, dry-run, disabled, stood-down,
                 halted, failed, rolled-back, interrupted
    exit_code    CONTRACT §3; `verified` true only for a real run that ended 0 (what `promote` trusts)
    message      one line: why it ended so (`error` too when it failed)
    verb, sha, tag (= target_tag), dry_run, manual, canary, step (deploy-production: plan,
    wait-gates, assert-enabled, rollout), gates {context: state}
    phases       [[phase, anyio time], …] every phase the run entered, the terminal one last
    waves        [{index, kind: canary|wave, label, slugs, status: not started|writing|verified|
                  failed|dry-run, verified, stragglers, cp_attempts, sent: [[slug…] per CP call],
                  seconds}] — every planned wave, "not started" for those that never ran
    tenants      {slug: {before, after, verdict}}: every listed tenant; a tenant never written is
                 "not attempted" (its after is what it last reported), one written but missing
                 from the final listing is "not listed"
    skipped      already on the SHA, not written;  changed: every tenant a write was sent for
    stragglers   unverified at the end, within --max-stragglers (named); caught_up: wave
                 stragglers that reported the SHA later
    drift        {sha or verdict: count} of the fleet as last read
    lease        as it ENDED: off, skipped (dry run), not taken, released, lost,
                 not released (it expires on its own)
    rollback     null, or {tag, restored, not_restored, verified, stopped}
    approval     (when asked for and answered) {approved, state, approver, description, waited_seconds}
    repo
    result       (in `done` only) the whole `--json` object, exactly as printed and summarised
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import Disabled, ExitCode, Failed, FleetgateError, HaltedMixed, StoodDown, UsageError
from pipelines.ledger import Ledger
from pipelines.notify import notify_ending
from pipelines.output import Output
from pipelines.redact import Secret
from pipelines.rollout import policy
from pipelines.rollout.phase import RunState
from pipelines.summary import write_step_summary
from pipelines.verify import VERIFIED

NOT_ATTEMPTED = "not attempted"
_ERRORS: dict[ExitCode, type[FleetgateError]] = {
    ExitCode.FAILED: Failed, ExitCode.USAGE: UsageError, ExitCode.DISABLED: Disabled,
    ExitCode.HALTED_MIXED: HaltedMixed, ExitCode.STOOD_DOWN: StoodDown,
}


@dataclass
class RunResult:
    verb: str
    run_id: str
    sha: str
    tag: str
    outcome: str
    exit_code: int
    message: str
    dry_run: bool
    manual: bool
    canary: str | None = None
    step: str = ""
    phases: list[list[Any]] = field(default_factory=list)
    waves: list[dict[str, Any]] = field(default_factory=list)
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    stragglers: list[str] = field(default_factory=list)
    caught_up: list[str] = field(default_factory=list)
    drift: dict[str, int] = field(default_factory=dict)
    lease: str = "off"
    rollback: dict[str, Any] | None = None
    gates: dict[str, str] = field(default_factory=dict)
    approval: dict[str, Any] | None = None
    repo: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the ending error's details (disabled_reason, …)

    def facts(self) -> dict[str, Any]:
        """The `done` event's facts (see the module docstring)."""
        facts: dict[str, Any] = {
            "verb": self.verb, "sha": self.sha, "tag": self.tag, "target_tag": self.tag,
            "outcome": self.outcome, "exit_code": self.exit_code,
            "verified": self.exit_code == 0 and not self.dry_run, "message": self.message,
            "dry_run": self.dry_run, "manual": self.manual, "canary": self.canary, "step": self.step,
            "phases": self.phases, "waves": self.waves, "tenants": self.tenants, "skipped": self.skipped,
            "changed": self.changed, "stragglers": self.stragglers, "caught_up": self.caught_up,
            "drift": self.drift, "lease": self.lease, "rollback": self.rollback, "gates": self.gates,
            "repo": self.repo,
        }
        if self.approval is not None:
            facts["approval"] = self.approval
        if self.exit_code != 0:
            facts["error"] = self.message
        facts.update({k: v for k, v in self.extra.items() if k not in facts})
        return facts

    def to_json(self, ledger_path: str = "") -> dict[str, Any]:
        return {"ok": self.exit_code == 0, "run_id": self.run_id, **self.facts(), "ledger": ledger_path}


def build_result(state: RunState, error: FleetgateError | None, *, interrupted: bool) -> RunResult:
    """The run's one result, from its state and the error that ended it (None: it ran to its end)."""
    rollback_verified = state.rollback.verified if state.rollback is not None else None
    phase, code = policy.ending(error_code=error.exit_code if error is not None else None,
                                interrupted=interrupted, dry_run=state.dry_run, waves=len(state.waves),
                                rollback_verified=rollback_verified)
    state.enter(phase)
    message = error.message if error is not None else _success_message(state, phase.value)
    if state.message and state.message not in message:
        message = f"{message}; {state.message}"
    rollback: dict[str, Any] | None = None
    if state.rollback is not None:
        rb = state.rollback
        rollback = {"tag": rb.tag, "restored": rb.restored, "not_restored": rb.not_restored,
                    "tenants": rb.restored + rb.not_restored, "verified": rb.verified, "stopped": rb.stopped}
        if error is not None and "rolled back" not in message and "rollback" not in message:
            message += (f"; rolled back {len(rb.restored)} tenant(s) to their previous SHA, verified" if rb.verified
                        else f"; rollback INCOMPLETE: not restored: {', '.join(rb.not_restored) or '—'}")
    wave_stragglers = [s for w in state.waves for s in w.stragglers if w.status == "verified"]
    return RunResult(
        verb=state.verb, run_id=state.run_id, sha=state.sha, tag=state.tag, outcome=phase.value,
        exit_code=int(code), message=message, dry_run=state.dry_run, manual=state.manual, canary=state.canary,
        step=state.step, phases=[[p, t] for p, t in state.history],
        waves=[{"index": w.index, "kind": "canary" if w.canary else "wave", "label": w.label, "slugs": w.slugs,
                "status": w.status, "verified": [s for s, r in w.readings.items() if r.verdict == VERIFIED],
                "stragglers": w.stragglers, "cp_attempts": w.cp_attempts, "sent": w.sent,
                "seconds": round(w.seconds, 3)} for w in state.waves],
        tenants=_tenants(state), skipped=list(state.skipped), changed=list(state.written),
        stragglers=list(state.stragglers),
        caught_up=[s for s in wave_stragglers if s not in state.stragglers],
        drift=_drift(state), lease=state.lease, rollback=rollback, gates=dict(state.gates),
        approval=state.approval, repo=state.repo,
        extra=dict(error.details) if error is not None else {},
    )


def _success_message(state: RunState, word: str) -> str:
    if word == "dry-run":
        return "dry run planned: nothing changed"
    if word == "nothing-to-do":
        return "nothing to do: every tenant already reports the SHA"
    if state.stragglers:
        return (f"deployed with {len(state.stragglers)} straggler(s) within --max-stragglers: "
                f"{', '.join(state.stragglers)}")
    return "deployed: every tenant verified on the SHA"


def _tenants(state: RunState) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    written = set(state.written)
    for slug in sorted(set(state.tenants) | written):
        before = state.before.get(slug)
        latest = state.latest.get(slug, before)
        verdict = latest.verdict if latest is not None else NOT_ATTEMPTED
        if slug not in written and slug not in state.skipped:
            verdict = NOT_ATTEMPTED
        rows[slug] = {"before": before.seen if before is not None else None,
                      "after": latest.seen if latest is not None else None, "verdict": verdict}
    return rows


def _drift(state: RunState) -> dict[str, int]:
    counts = Counter(r.seen if r.seen else r.verdict for slug, r in state.latest.items() if slug in state.tenants)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


async def finish(result: RunResult, ledger: Ledger, out: Output, *,
                 notify_targets: Sequence[Secret] = ()) -> dict[str, Any]:
    """The run's one ending: exactly one `done`, the step summary, the ending's notification and the
    `--json` object. Returns the result when it ended 0, else raises its error carrying the same object."""
    payload = result.to_json(str(ledger.path))
    code = ExitCode(result.exit_code)
    message = result.message
    try:
        # `result`: the object the summary and --json are rendered from (what `fleetgate report` shows)
        ledger.record("done", **result.facts(), result=payload)
    except OSError as exc:  # a full disk: the run cannot be recorded, so it did not end well
        code = ExitCode.FAILED
        message = f"{message}; the ledger could not record the ending ({exc.strerror or type(exc).__name__})"
        payload.update(ok=False, exit_code=int(code), error=message, message=message)
    write_step_summary(payload)  # never raises: an unwritable summary does not change the outcome
    try:
        await notify_ending(notify_targets, payload, ledger=ledger, out=out)  # a warning at worst, never the outcome
    except OSError:
        pass  # the ledger is full: the ending above already says so
    if code == ExitCode.OK:
        out.ok(f"{result.verb}: {message}")
        out.result(payload)
        return payload
    raise _ERRORS.get(code, Failed)(message, details=payload)
