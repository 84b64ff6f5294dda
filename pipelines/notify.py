"""Tell people how a run ended, and that it waits for approval (`--notify`, CONTRACT §2), via Apprise.

One message per ending (deployed, halted, failed, rolled back, stood down, disabled, …) and one when
a run starts waiting for approval. A notification is a courtesy, never part of the deploy: each
target gets a bounded time (`DEADLINE_SECONDS`, two attempts through stamina), a failure is a
warning, and the ledger records each target's result (`notify` event) by its position, never its
URL — an Apprise URL carries the webhook's secret. Apprise is imported only when there is someone
to tell, with no plugin folders, no persistent storage and its logger silenced (it names hosts).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import stamina

from pipelines.redact import Secret, redact

if TYPE_CHECKING:
    from pipelines.ledger import Ledger
    from pipelines.output import Output

DEADLINE_SECONDS = 6.0  # per target, all attempts together: never delays the deploy beyond this
ATTEMPT_SECONDS = 2.5  # Apprise's own per-service timeout for one attempt
ATTEMPTS = 2
WAITING = "waiting-for-approval"
# Apprise's notification types by outcome word (CONTRACT §5 words; anything else is a failure).
_TYPES = {"deployed": "success", "nothing-to-do": "success", "dry-run": "info", WAITING: "info",
          "stood-down": "warning", "disabled": "warning", "halted": "warning"}


class NotDelivered(Exception):
    """One attempt did not deliver (Apprise said no, or it ran out of time)."""


@dataclass(frozen=True)
class Notice:
    """What one message says."""

    verb: str
    sha: str
    outcome: str  # an ending word (CONTRACT §5) or `WAITING`
    exit_code: int | None  # None while waiting
    repo: str = ""
    target_tag: str = ""
    fleet: Mapping[str, int] = field(default_factory=dict)  # tenants by SHA (or by verdict)
    stragglers: Sequence[str] = ()
    message: str = ""
    approve_command: str = ""  # while waiting
    run_url: str = ""

    @property
    def notify_type(self) -> str:
        return _TYPES.get(self.outcome, "failure")

    def title(self) -> str:
        code = "" if self.exit_code is None else f" (exit {self.exit_code})"
        return redact(f"fleetgate {self.verb}: {self.outcome}{code} — {self.sha[:12]}", limit=200)

    def body(self) -> str:
        lines = [f"outcome: {self.outcome}" + ("" if self.exit_code is None else f", exit code {self.exit_code}"),
                 f"sha: {self.sha}" + (f" ({self.target_tag})" if self.target_tag else "")]
        if self.repo:
            lines.append(f"repository: {self.repo}")
        if self.fleet:
            counts = sorted(self.fleet.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append("fleet: " + ", ".join(f"{n} on {sha[:12]}" for sha, n in counts))
        lines.append("stragglers: " + (", ".join(self.stragglers) if self.stragglers else "none"))
        if self.message:
            lines.append(f"why: {self.message}")
        if self.approve_command:
            lines.append(f"approve: {self.approve_command}")
            lines.append(f"reject: {self.approve_command} --reject")
        if self.run_url:
            lines.append(f"run: {self.run_url}")
        return "\n".join(redact(line, limit=600) for line in lines)


def run_url(env: Mapping[str, str] | None = None) -> str:
    """The Actions run page (`GITHUB_SERVER_URL/GITHUB_REPOSITORY/actions/runs/GITHUB_RUN_ID`), or ""."""
    env = os.environ if env is None else env
    parts = [env.get(name, "").strip() for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if not all(parts) or not parts[2].isalnum():
        return ""
    return f"{parts[0].rstrip('/')}/{parts[1]}/actions/runs/{parts[2]}"


def approve_command(repo: str, sha: str, context: str = "fleetgate/approve") -> str:
    extra = "" if context == "fleetgate/approve" else f" --approval-context {context}"
    return f"fleetgate approve --repo {repo} --sha {sha}{extra}"


def _apprise(target: Secret) -> Any:
    with warnings.catch_warnings():  # its optional PGP support imports the deprecated imghdr
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

    logging.getLogger("apprise").addHandler(logging.NullHandler())
    logging.getLogger("apprise").propagate = False  # its lines name hosts and paths of the webhook
    asset = apprise.AppriseAsset(plugin_paths=[], storage_mode="memory", service_timeout=ATTEMPT_SECONDS)
    box = apprise.Apprise(asset=asset)
    if not box.add(target.reveal()):
        return None
    return box


async def _deliver(target: Secret, notice: Notice) -> tuple[bool, int, str]:
    """(delivered, attempts, why not) for one target, within DEADLINE_SECONDS."""
    box = _apprise(target)
    if box is None:
        return False, 0, "not a URL Apprise can send to"
    attempts = 0

    def send() -> bool:
        return bool(box.notify(body=notice.body(), title=notice.title(), notify_type=notice.notify_type))

    with anyio.move_on_after(DEADLINE_SECONDS):
        try:
            async for attempt in stamina.retry_context(on=NotDelivered, attempts=ATTEMPTS, timeout=DEADLINE_SECONDS,
                                                       wait_initial=0.5, wait_max=1.0):
                with attempt:
                    attempts += 1
                    if not await anyio.to_thread.run_sync(send, abandon_on_cancel=True):
                        raise NotDelivered
            return True, attempts, ""
        except NotDelivered:
            return False, attempts, "not delivered"
    return False, attempts, f"no answer within {DEADLINE_SECONDS:g}s"


async def notify(targets: Sequence[Secret], notice: Notice, *, ledger: Ledger | None = None,
                 out: Output | None = None) -> list[dict[str, Any]]:
    """Send `notice` to every target at once; never raises. Returns each target's result (no URL)."""
    if not targets:
        return []
    results: list[dict[str, Any]] = [{} for _ in targets]

    async def one(n: int, target: Secret) -> None:
        try:
            delivered, attempts, why = await _deliver(target, notice)
        except Exception as exc:  # a plugin's own bug must not end the deploy: a notification is a courtesy
            delivered, attempts, why = False, 0, type(exc).__name__
        results[n] = {"target": n + 1, "outcome": notice.outcome, "delivered": delivered, "attempts": attempts,
                      **({"error": why} if why else {})}

    async with anyio.create_task_group() as tg:
        for n, target in enumerate(targets):
            tg.start_soon(one, n, target)
    for result in results:
        if ledger is not None:
            ledger.record("notify", **result)
        if out is not None and not result["delivered"]:
            out.warn(f"notify: target {result['target']} ({notice.outcome}): {result.get('error', 'failed')} "
                     "— the deploy goes on")
    return results


def ending_word(outcome: str) -> str:
    """A result's outcome as CONTRACT §5's one word ("done" → "deployed", "rolled back" → "rolled-back")."""
    word = outcome.strip().lower()
    return {"done": "deployed", "ok": "deployed"}.get(word, word.replace(" ", "-")) or "failed"


def notice_from_result(report: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> Notice:
    """The ending's message from a run's result (the `--json` object / the error's details)."""
    exit_code = report.get("exit_code")
    fleet = report.get("drift")
    stragglers = report.get("stragglers")
    return Notice(
        verb=str(report.get("verb") or "rollout"), sha=str(report.get("sha") or ""),
        outcome=ending_word(str(report.get("outcome") or ("done" if exit_code == 0 else "failed"))),
        exit_code=exit_code if isinstance(exit_code, int) else 1,
        repo=str(report.get("repo") or ""), target_tag=str(report.get("target_tag") or ""),
        fleet={str(k): int(v) for k, v in fleet.items() if isinstance(v, int)} if isinstance(fleet, dict) else {},
        stragglers=[str(s) for s in stragglers] if isinstance(stragglers, list) else [],
        message=str(report.get("message") or report.get("error") or ""), run_url=run_url(env))


async def notify_ending(targets: Sequence[Secret], report: Mapping[str, Any], *, ledger: Ledger | None,
                        out: Output | None) -> list[dict[str, Any]]:
    """One message for how the run ended (nothing when nobody is to be told)."""
    if not targets:
        return []
    return await notify(targets, notice_from_result(report), ledger=ledger, out=out)


__all__ = ["WAITING", "Notice", "approve_command", "ending_word", "notice_from_result", "notify", "notify_ending",
           "run_url"]
