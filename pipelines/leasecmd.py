"""`fleetgate lease`: show the deploy lease; `--break --yes` deletes another run's lease.

Breaking is an operator's decision for a crashed run (its lease would otherwise block deploys until
it expires): without `--yes` it is refused (exit 2) before anything is contacted — on a terminal the
lease is shown first and the question asked. Gitea has no compare-and-delete, so the holder is read
just before the delete and named in the ledger (`lease`, action `broken`); a lease that changed hands
since it was shown is not broken.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from pipelines.errors import Failed, UsageError
from pipelines.gitea import GiteaClient
from pipelines.lease import LEASE_VARIABLE, LeaseValue, format_time, read_lease, utcnow
from pipelines.ledger import Ledger, new_run_id
from pipelines.output import Output
from pipelines.redact import redact
from pipelines.report.runs import find_run
from pipelines.settings import Settings


def lease_facts(raw: str | None, current: LeaseValue | None, settings: Settings,
                now: datetime | None = None) -> dict[str, Any]:
    """The lease as `status`, `plan` and `lease` show it (with what our ledger knows of its holder)."""
    if raw is None:
        return {"held": False}
    if current is None:
        return {"held": True, "run": None, "sha": None, "expires": None, "expired": False,
                "value": redact(raw, limit=200), "note": "unparseable: treated as held, never expiring"}
    now = now or utcnow()
    facts: dict[str, Any] = {"held": True, "run": current.run, "sha": current.sha,
                             "expires": format_time(current.expires), "expired": current.expires <= now,
                             "expires_in_seconds": round((current.expires - now).total_seconds())}
    record = find_run(settings.ledger, current.run)
    if record is not None and record.run_id == current.run:
        facts["holder_ledger"] = {"outcome": record.outcome, "last_phase": record.last_phase,
                                  "ended": record.ended or None}
    return facts


def describe_lease(facts: dict[str, Any]) -> str:
    if not facts.get("held"):
        return f"lease {LEASE_VARIABLE}: free"
    if facts.get("run") is None:
        return f"lease {LEASE_VARIABLE}: held by an unparseable value {facts.get('value')!r} (never expires)"
    left = int(facts.get("expires_in_seconds", 0))
    when = f"expired {-left}s ago" if facts.get("expired") else f"expires in {left}s"
    text = (f"lease {LEASE_VARIABLE}: held by run {facts['run']} (sha {str(facts['sha'])[:12]}, "
            f"{when}, at {facts['expires']})")
    holder = facts.get("holder_ledger")
    if isinstance(holder, dict):
        text += f"; in this ledger that run is {holder['outcome']} (last: {holder['last_phase']})"
    return text


async def holder_facts(gitea: GiteaClient, settings: Settings, out: Output) -> dict[str, Any]:
    """Read and name the lease holder (for `plan`, `assert-enabled`): a line, and the facts.
    Best effort: these verbs do not depend on the lease, so an unreadable one is a warning."""
    try:
        raw, current = await read_lease(gitea)
    except Failed as exc:
        out.warn(f"lease {LEASE_VARIABLE}: not readable ({exc.message})")
        return {"held": None, "error": exc.message}
    facts = lease_facts(raw, current, settings)
    out.info(describe_lease(facts))
    return facts


def _confirm(out: Output, question: str) -> bool:
    if not (sys.stdin.isatty() and out.tty):
        return False
    import click

    return bool(click.confirm(question, default=False, err=True))


async def run(settings: Settings, out: Output, break_: bool = False, yes: bool = False) -> dict[str, Any]:
    """The `lease` verb."""
    if settings.gitea_token is None:
        raise UsageError("--gitea-token (GITEA_TOKEN) is required: the lease is a Gitea Actions variable")
    interactive = sys.stdin.isatty() and out.tty
    if break_ and not yes and not interactive:
        raise UsageError("lease --break deletes another run's lease: add --yes to confirm")
    async with GiteaClient.for_settings(settings) as gitea:
        raw, current = await read_lease(gitea)
        facts = lease_facts(raw, current, settings)
        out.info(describe_lease(facts))
        result: dict[str, Any] = {"verb": "lease", "lease": facts}
        if not break_:
            out.result(result)
            return result
        if raw is None:
            out.ok("nothing to break: no lease is held")
            result["broken"] = False
            out.result(result)
            return result
        if not yes and not _confirm(out, f"Delete the lease held by {facts.get('run') or 'an unknown run'}?"):
            raise UsageError("lease --break: not confirmed; nothing changed")
        again, _ = await read_lease(gitea)
        if again != raw:
            raise Failed(f"lease {LEASE_VARIABLE} changed while being broken (now "
                         f"{'free' if again is None else 'another value'}); nothing deleted — look again")
        run_id = new_run_id()
        await gitea.delete_variable(LEASE_VARIABLE)
        Ledger(settings.ledger, run_id).record(
            "lease", action="broken", variable=LEASE_VARIABLE, holder=facts.get("run"),
            holder_sha=facts.get("sha"), holder_value=redact(raw, limit=300), reason="lease --break", run=run_id)
    out.warn(f"lease {LEASE_VARIABLE} broken (was {facts.get('run') or 'unparseable'}); recorded in "
             f"{settings.ledger}")
    result["broken"] = True
    out.result(result)
    return result


__all__ = ["describe_lease", "holder_facts", "lease_facts", "run"]
