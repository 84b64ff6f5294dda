"""The ledger (CONTRACT §5): an append-only JSON Lines record of a run, one event per line.

Each `record` opens the file with O_APPEND, writes the whole line with a single `os.write`,
fsyncs and closes. Why fsync: events are few (tens per run) and the ledger is what an operator
reads after a runner was killed mid-deploy, and what `promote` trusts (`verified_shas`); losing the
last lines to a crash would hide which tenants were written. The cost is a few milliseconds per
event, nothing next to a wave. A single O_APPEND write per line keeps lines whole even when two
runs share one ledger file.

Every line: `ts` (RFC 3339 UTC, e.g. `2026-01-01T00:00:00.000Z`), `run_id`, `event`, then the
event's facts. Facts pass through `redact` (strings, recursively); a `Secret` is written as `***`.
No raw CP body belongs here: record parsed, redacted rows (`pipelines.cp.row_facts`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.redact import redact, redact_tree
from pipelines.settings import SHA_RE

EVENTS = frozenset({
    "plan", "gate", "kill_switch", "lease", "wave_start", "cp_call", "wave_verified", "wave_failed",
    "soak", "approval", "rollback", "halt", "superseded", "notify", "done",
})
LEASE_ACTIONS = frozenset({"taken", "renewed", "broken", "released"})
RESERVED = frozenset({"ts", "run_id", "event"})
STRING_LIMIT = 2000


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Ledger:
    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = redact(run_id, limit=100)

    def record(self, event: str, **facts: Any) -> dict[str, Any]:
        """Append one event (and return the line as written). Unknown events are a programming error."""
        if event not in EVENTS:
            raise ValueError(f"unknown ledger event {event!r}; known: {', '.join(sorted(EVENTS))}")
        clash = RESERVED & facts.keys()
        if clash:
            raise ValueError(f"ledger facts may not override {', '.join(sorted(clash))}")
        if event == "lease" and facts.get("action") not in LEASE_ACTIONS:
            raise ValueError(f"lease event needs action in {', '.join(sorted(LEASE_ACTIONS))}")
        line: dict[str, Any] = {"ts": utc_now(), "run_id": self.run_id, "event": event}
        line.update({k: redact_tree(v, limit=STRING_LIMIT) for k, v in facts.items()})
        data = (json.dumps(line, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
        if self.path.parent != Path("."):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write on a regular file means the disk is full
                raise OSError(f"ledger {self.path}: short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return line


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Every event of the ledger, in order. A missing file is an empty ledger; a line that is not a
    JSON object (a torn write from a crash) is skipped — skipping can only lose facts, never invent
    a verified SHA."""
    p = Path(path)
    if not p.exists():
        return []
    events: list[dict[str, Any]] = []
    with p.open(encoding="utf-8", errors="replace") as f:
        for raw in f:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                events.append(item)
    return events


def verified_shas(path: str | Path) -> set[str]:
    """SHAs with a `done` event carrying verified=true and dry_run=false (what `promote` relies on)."""
    return {
        e["sha"] for e in read_ledger(path)
        if e.get("event") == "done" and e.get("verified") is True and e.get("dry_run") is False
        and isinstance(e.get("sha"), str) and SHA_RE.match(e["sha"])
    }


_JOB_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def new_run_id(env: Mapping[str, str] | None = None) -> str:
    """`GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT[-GITHUB_JOB]-<random>` in Actions (attempt defaults to 1), else
    `local-<random>`.

    The run id is also the lease holder's name (the lease value's `run`), so it is unique to the
    process: the random part keeps two jobs with the same GITHUB_RUN_ID/ATTEMPT/JOB (a matrix, a
    re-run, a copy-pasted job name) from sharing a lease and interleaving their writes.
    """
    env = os.environ if env is None else env
    unique = secrets.token_hex(4)
    run = env.get("GITHUB_RUN_ID", "").strip()
    if run and run.isalnum() and len(run) <= 40:
        attempt = env.get("GITHUB_RUN_ATTEMPT", "").strip()
        run_id = f"{run}-{attempt if attempt.isdigit() and len(attempt) <= 6 else '1'}"
        job = env.get("GITHUB_JOB", "").strip()
        return f"{run_id}-{job}-{unique}" if _JOB_RE.match(job) else f"{run_id}-{unique}"
    return f"local-{secrets.token_hex(6)}"
