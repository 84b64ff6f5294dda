"""One run, shaped for every rendering: the summary-shaped result and the timeline.

The result is the run's own: its `done` event's `result` when it carries one (the object the step
summary and `--json` were rendered from). An older `done` without one is filled in from the events'
own facts (each wave's stragglers and verdicts as the run recorded them) — copied, never re-judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipelines.report.runs import RunRecord, describe_event

VERIFIED = "verified"


def _seconds(ts: Any) -> float | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def summary_result(record: RunRecord) -> dict[str, Any]:
    """The result as `summary.render` reads it."""
    if record.result is not None:
        return dict(record.result)
    done = record.done or {}
    plan = record.plan
    ends = {e.get("wave"): e for e in record.events if e.get("event") in ("wave_verified", "wave_failed")}
    waves: list[dict[str, Any]] = []
    for start in record.of("wave_start"):
        end = ends.get(start.get("wave"), {})
        raw_tenants = end.get("tenants")
        tenants: dict[str, Any] = raw_tenants if isinstance(raw_tenants, dict) else {}
        began, ended = _seconds(start.get("ts")), _seconds(end.get("ts"))
        waves.append({
            "index": start.get("wave"), "kind": "canary" if start.get("canary") else "wave",
            "slugs": _strings(start.get("slugs")), "skipped": [],
            "verified": sorted(s for s, row in tenants.items()
                               if isinstance(row, dict) and row.get("verdict") == VERIFIED),
            "stragglers": _strings(end.get("stragglers")),
            "status": {"wave_verified": "verified", "wave_failed": "failed"}.get(str(end.get("event")), "started"),
            "seconds": round(ended - began, 3) if began is not None and ended is not None else None,
        })
    result: dict[str, Any] = {
        "verb": record.verb, "run_id": record.run_id, "sha": record.sha,
        "target_tag": done.get("tag") or plan.get("tag") or plan.get("target_tag"),
        "dry_run": bool(done.get("dry_run", plan.get("dry_run", False))), "outcome": record.outcome,
        "exit_code": record.exit_code if record.exit_code is not None else 1, "waves": waves,
    }
    if isinstance(done.get("error"), str):
        result["message"] = done["error"]
    if isinstance(done.get("stragglers"), list):
        result["stragglers"] = _strings(done["stragglers"])
    if isinstance(done.get("tenants"), dict):
        result["tenants"] = done["tenants"]
    return result


@dataclass(frozen=True)
class Span:
    lane: str
    start: float  # seconds since the run's first event
    end: float
    kind: str  # ok | fail | wait | call | info
    label: str


@dataclass(frozen=True)
class Mark:
    lane: str
    at: float
    kind: str  # ok | fail | info
    label: str


@dataclass
class Timeline:
    duration: float
    lanes: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def lane(self, name: str) -> str:
        if name not in self.lanes:
            self.lanes.append(name)
        return name


def timeline(record: RunRecord) -> Timeline:
    """Gates, lease, each wave's CP call and verification, soaks, approval waits and halts, in seconds."""
    times = [t for t in (_seconds(e.get("ts")) for e in record.events) if t is not None]
    t0 = min(times) if times else 0.0
    end = max(times) if times else 0.0
    line = Timeline(duration=max(end - t0, 0.001))

    def at(event: dict[str, Any]) -> float:
        t = _seconds(event.get("ts"))
        return (t - t0) if t is not None else 0.0

    plan_at = at(record.plan) if record.plan else 0.0
    for gate in record.of("gate"):
        line.spans.append(Span(line.lane("gates"), plan_at, at(gate), "ok" if gate.get("ok") else "fail",
                               "gates green" if gate.get("ok") else "gates failed"))
    taken: float | None = None
    for lease in record.of("lease"):
        action = str(lease.get("action"))
        if action == "taken":
            taken = at(lease)
        elif action == "released" and taken is not None:
            line.spans.append(Span(line.lane("lease"), taken, at(lease), "info", "lease held"))
            taken = None
        elif action == "broken":
            line.marks.append(Mark(line.lane("lease"), at(lease), "fail", "lease broken"))
    if taken is not None:
        line.spans.append(Span(line.lane("lease"), taken, line.duration, "wait", "lease held (never released)"))
    for switch in record.of("kill_switch"):
        line.marks.append(Mark(line.lane("kill switch"), at(switch), "fail" if switch.get("engaged") else "ok",
                               "ENGAGED" if switch.get("engaged") else "off"))
    waves: dict[Any, dict[str, Any]] = {}
    for event in record.events:
        name = event.get("event")
        if name == "wave_start":
            waves[event.get("wave")] = {"label": str(event.get("label") or f"wave {event.get('wave')}"),
                                        "start": at(event)}
        elif name == "cp_call" and event.get("wave") in waves:
            waves[event.get("wave")]["cp"] = (at(event), bool(event.get("ok")))
        elif name in ("wave_verified", "wave_failed") and event.get("wave") in waves:
            waves[event.get("wave")]["end"] = (at(event), name == "wave_verified")
    for wave in waves.values():
        lane = line.lane(wave["label"])
        cp_at, cp_ok = wave.get("cp", (None, False))
        end_at, verified = wave.get("end", (None, False))
        if cp_at is None:
            line.spans.append(Span(lane, wave["start"], end_at if end_at is not None else line.duration,
                                   "fail" if end_at is not None else "wait", "CP call (no answer recorded)"))
            continue
        line.spans.append(Span(lane, wave["start"], cp_at, "call" if cp_ok else "fail",
                               "CP call " + ("ok" if cp_ok else "failed")))
        if end_at is not None:
            line.spans.append(Span(lane, cp_at, end_at, "ok" if verified else "fail",
                                   "verified" if verified else "verification failed"))
        else:
            line.spans.append(Span(lane, cp_at, line.duration, "wait", "verifying (no end recorded)"))
    for soak in record.of("soak"):
        soak_action = soak.get("action")
        if soak_action == "regressed":  # a verified tenant fell back during the watch
            line.marks.append(Mark(line.lane("soak"), at(soak), "fail", f"{soak.get('slug')} regressed"))
            continue
        if soak_action is not None:  # the watch's closing record ("watched"): the span is drawn from its start
            continue
        seconds = soak.get("seconds")
        length = float(seconds) if isinstance(seconds, int | float) else 0.0
        start = at(soak)
        line.spans.append(Span(line.lane("soak"), start, min(start + length, line.duration), "wait",
                               f"soak after {soak.get('after')} ({length:g}s)"))
    approvals = record.of("approval")
    if approvals:
        first, last = at(approvals[0]), at(approvals[-1])
        line.spans.append(Span(line.lane("approval"), first, max(last, first), "wait", "approval wait"))
    for event in record.events:
        if event.get("event") in ("halt", "superseded", "rollback"):
            line.marks.append(Mark(line.lane("halts"), at(event), "fail", describe_event(event)))
    if record.done is not None:
        ok = record.exit_code == 0
        line.marks.append(Mark(line.lane("outcome"), at(record.done), "ok" if ok else "fail", record.outcome))
    return line


def events_table(record: RunRecord) -> list[tuple[float, str]]:
    """Every event as (seconds since start, phrase)."""
    times = [_seconds(e.get("ts")) for e in record.events]
    t0 = min((t for t in times if t is not None), default=0.0)
    labels = {e.get("wave"): e.get("label") for e in record.of("wave_start")}  # cp_call names only its index

    def named(e: dict[str, Any]) -> dict[str, Any]:
        return {**e, "label": labels.get(e.get("wave"))} if e.get("event") == "cp_call" and not e.get("label") else e

    return [((t - t0) if t is not None else 0.0, describe_event(named(e)))
            for t, e in zip(times, record.events, strict=True)]
