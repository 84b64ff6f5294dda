"""Runs as the ledger tells them: its events grouped by `run_id`, and how far each run got.

Read-only and judgement-free: a run's outcome, exit code and stragglers are what its `done` event
says (the run decided them once); here they are only looked up and named. A run is a run id with a
`plan` or `done` event — an operator's `lease --break` record stands alone and is not "the last run".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.ledger import read_ledger

UNFINISHED = "unfinished"  # no `done`: still running somewhere, or killed without a word (SIGKILL)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    events: tuple[dict[str, Any], ...]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def done(self) -> dict[str, Any] | None:
        found = self.of("done")
        return found[-1] if found else None

    @property
    def result(self) -> dict[str, Any] | None:
        """The run's result object as its `done` carries it (when it carries one)."""
        done = self.done
        result = done.get("result") if done is not None else None
        return result if isinstance(result, dict) else None

    @property
    def plan(self) -> dict[str, Any]:
        found = self.of("plan")
        return found[0] if found else {}

    @property
    def verb(self) -> str:
        return _text(self.plan.get("verb")) or _text((self.result or {}).get("verb")) or "?"

    @property
    def sha(self) -> str:
        for source in (self.done or {}, self.plan):
            if isinstance(source.get("sha"), str):
                return str(source["sha"])
        return ""

    @property
    def outcome(self) -> str:
        """The `done` event's outcome word; `interrupted` for an older ledger's interrupted `done`."""
        done = self.done
        if done is None:
            return UNFINISHED
        outcome = _text(done.get("outcome"))
        if outcome:
            return outcome
        return "interrupted" if done.get("error") == "interrupted" else "?"

    @property
    def exit_code(self) -> int | None:
        code = (self.done or {}).get("exit_code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def started(self) -> str:
        return _text(self.events[0].get("ts")) if self.events else ""

    @property
    def ended(self) -> str:
        return _text(self.done.get("ts")) if self.done is not None else ""

    @property
    def last_wave(self) -> str | None:
        starts = self.of("wave_start")
        return _text(starts[-1].get("label")) or None if starts else None

    @property
    def waves_verified(self) -> int:
        return len(self.of("wave_verified"))

    @property
    def waves_planned(self) -> int | None:
        """How many waves the run planned, when its result says (a `done` with `waves`)."""
        waves = (self.result or {}).get("waves")
        return len(waves) if isinstance(waves, list) else None

    @property
    def last_phase(self) -> str:
        """The last thing the run did before its `done` (or at all, when it has none)."""
        for event in reversed(self.events):
            name = event.get("event")
            if name != "done":
                return describe_event(event)
        return "done"

    def progress(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "verb": self.verb, "sha": self.sha, "outcome": self.outcome,
                "exit_code": self.exit_code, "started": self.started, "ended": self.ended or None,
                "last_phase": self.last_phase, "last_wave": self.last_wave,
                "waves_verified": self.waves_verified, "waves_planned": self.waves_planned}


def describe_event(event: Mapping[str, Any]) -> str:
    """One event as a short phrase (`canary verified`, `lease taken`, `halted: kill switch`)."""
    name = _text(event.get("event"))
    label = _text(event.get("label")) or (f"wave {event['wave']}" if isinstance(event.get("wave"), int) else "")
    if name == "lease":
        return f"lease {_text(event.get('action'))}"
    if name == "wave_start":
        return f"{label} started"
    if name == "cp_call":
        return f"{label or 'wave'}: CP call {'ok' if event.get('ok') else 'failed'}"
    if name == "wave_verified":
        return f"{label} verified"
    if name == "wave_failed":
        return f"{label} failed"
    if name == "soak":
        action = _text(event.get("action"))
        if action == "regressed":
            return f"soak after {_text(event.get('after'))}: {_text(event.get('slug'))} regressed"
        return f"soak after {_text(event.get('after'))}" + (f" {action}" if action else "")
    if name == "approval":
        return f"approval {_text(event.get('action'))}"
    if name == "halt":
        return f"halted: {_text(event.get('reason'))}"
    if name == "gate":
        return "gates " + ("green" if event.get("ok") else "failed")
    if name == "kill_switch":
        return "kill switch " + ("engaged" if event.get("engaged") else "off")
    if name == "rollback":
        return f"rollback {_text(event.get('action'))}"
    return name or "?"


def group_runs(events: Iterable[Mapping[str, Any]]) -> list[RunRecord]:
    """Runs in the order they last wrote (the last one is the run that wrote last)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        run_id = event.get("run_id")
        if isinstance(run_id, str):
            by_run.setdefault(run_id, []).append(dict(event))
            by_run[run_id] = by_run.pop(run_id)  # move to the end: order by last write
    return [RunRecord(run_id, tuple(evs)) for run_id, evs in by_run.items()
            if any(e.get("event") in ("plan", "done") for e in evs)]


def ledger_runs(path: str | Path) -> list[RunRecord]:
    return group_runs(read_ledger(path))


def find_run(path: str | Path, run_id: str | None = None) -> RunRecord | None:
    """The run `run_id` (a unique prefix will do), else the last run; None when there is none."""
    runs = ledger_runs(path)
    if run_id is None:
        return runs[-1] if runs else None
    exact = [r for r in runs if r.run_id == run_id]
    if exact:
        return exact[-1]
    prefixed = [r for r in runs if r.run_id.startswith(run_id)]
    return prefixed[0] if len(prefixed) == 1 else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
