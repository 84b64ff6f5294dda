"""`fleetgate approve --sha SHA [--reject] [--comment TEXT]`: approve (or reject) a run paused after its canary.

Posts the commit status `--approval-context` (default `fleetgate/approve`) on the SHA as `success`
(or `failure` with `--reject`) with the caller's own Gitea token, so Gitea records who approved
(the status's `creator`, shown next to the commit) — the paused run reads that login into its
ledger. One POST, never retried by the transport (a write); the answer names the approver.
"""

from __future__ import annotations

import os
from typing import Any

from pipelines.errors import Failed, UsageError
from pipelines.gitea import GiteaClient
from pipelines.notify import run_url
from pipelines.output import Output
from pipelines.redact import redact
from pipelines.settings import Settings

COMMENT_LIMIT = 140  # Gitea keeps a status description short; say why in a line
APPROVED, REJECTED = "success", "failure"


def check_comment(comment: str) -> str:
    text = comment.strip()
    if len(text) > COMMENT_LIMIT:
        raise UsageError(f"--comment: at most {COMMENT_LIMIT} characters, got {len(text)}")
    if text != redact(text, limit=COMMENT_LIMIT + 1):
        raise UsageError("--comment: control characters, URL credentials or tokens are not allowed")
    return text


async def run(settings: Settings, out: Output, reject: bool = False, comment: str | None = None) -> dict[str, Any]:
    """The `approve` verb."""
    note = check_comment(comment or "")
    if settings.gitea_token is None:
        raise UsageError("--gitea-token (GITEA_TOKEN) is required: approve posts a commit status as you")
    state = REJECTED if reject else APPROVED
    word = "rejected" if reject else "approved"
    description = note or f"{word} with fleetgate approve"
    async with GiteaClient.for_settings(settings) as gitea:
        status = await gitea.create_status(settings.sha, state, settings.approval_context, description,
                                           target_url=run_url(os.environ) or None)
    if status.context != settings.approval_context or status.state != state:
        raise Failed(f"Gitea answered a status {status.context!r} = {status.state!r}, not the one posted")
    who = status.creator or "an unknown user"
    out.ok(f"{word} {settings.sha[:12]} as {who}: {settings.approval_context} = {state} on {settings.repo}")
    result: dict[str, Any] = {"ok": True, "verb": "approve", "sha": settings.sha, "repo": settings.repo,
                              "context": settings.approval_context, "state": state, "approver": status.creator,
                              "description": description, "exit_code": 0}
    out.result(result)
    return result


__all__ = ["APPROVED", "REJECTED", "run"]
