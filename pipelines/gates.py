"""`wait-gates`: every required status context must be `success` on the exact SHA.

Each required context is judged on its own — an aggregate sentinel such as
`CI / all-required (push)` is just one more required context, and the combined `state` is never
read. A failing state fails at once, and so does a context Gitea reports twice with different
states and no way to tell the newer (`gitea.CONFLICTING`); pending or absent contexts are waited
for until the deadline (monotonic), which then fails listing what was still missing.
"""

from __future__ import annotations

import math
from typing import Any

import anyio

from pipelines.errors import Failed, UsageError
from pipelines.gitea import CONFLICTING, CommitStatus, GiteaClient
from pipelines.output import Output
from pipelines.settings import Settings

SUCCESS = "success"
PENDING = "pending"
ABSENT = "absent"  # our word for a context with no status yet
FAILING = frozenset({"error", "failure", "warning", "skipped", "cancelled", "canceled"})


def judge(required: tuple[str, ...], statuses: dict[str, CommitStatus]) -> dict[str, str]:
    """The state of every required context: success, pending, absent, or the failing state as read."""
    return {name: statuses[name].state if name in statuses else ABSENT for name in required}


def _first_failure(states: dict[str, str]) -> str | None:
    """The first required context that can never become success (failing or unknown state)."""
    for name, state in states.items():
        if state in FAILING or state not in (SUCCESS, PENDING, ABSENT):
            return name
    return None


LAST_LOOK = 5.0  # seconds the read at the gate deadline may take


async def wait_gates(settings: Settings, gitea: GiteaClient, out: Output) -> dict[str, Any]:
    """Poll until every required context is success (dict), or raise Failed."""
    sha, required = settings.sha, settings.required_contexts
    started = anyio.current_time()
    deadline = started + settings.gate_timeout
    shown: dict[str, str] = {}
    states: dict[str, str] = dict.fromkeys(required, ABSENT)
    out.info(f"gates: waiting for {len(required)} required context(s) on {sha[:12]} "
             f"(timeout {settings.gate_timeout:g}s, every {settings.poll_interval:g}s)")
    first = True
    while True:
        # The first read always completes (a zero timeout still gets one look); later reads are cut
        # off at the gate deadline, so Gitea retries never outlive it — but the look at the deadline
        # itself gets LAST_LOOK seconds: a timeout is judged on an answer, not on a read never made.
        budget = math.inf if first else max(LAST_LOOK, deadline - anyio.current_time())
        statuses: dict[str, CommitStatus] | None = None
        with anyio.move_on_after(budget):
            statuses = await gitea.combined_status(sha)
        first = False
        if statuses is not None:
            states = judge(required, statuses)
            for name, state in states.items():
                if shown.get(name) != state:
                    was = shown.get(name)
                    out.info(f"gate {name!r}: {state}" if was is None else f"gate {name!r}: {was} → {state}")
                    shown[name] = state
            failed = _first_failure(states)
            if failed is not None:
                status = statuses[failed]
                where = f" ({status.target_url})" if status.target_url else ""
                if status.state == CONFLICTING:  # which report is newer cannot be told: never success
                    raise Failed(f"required context {failed!r} is ambiguous on {sha[:12]}: "
                                 f"{status.description}", details={"sha": sha, "contexts": states})
                kind = "failed" if status.state in FAILING else "has an unrecognised state"
                raise Failed(f"required context {failed!r} {kind}: {status.state}{where} on {sha[:12]}",
                             details={"sha": sha, "contexts": states})
            if all(state == SUCCESS for state in states.values()):
                waited = round(anyio.current_time() - started, 3)
                out.ok(f"gates: all {len(required)} required context(s) are success on {sha[:12]}")
                return {"sha": sha, "contexts": states, "waited_seconds": waited}
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            waiting = [f"{name} ({state})" for name, state in states.items() if state != SUCCESS]
            cut = "" if statuses is not None else " (the last read of Gitea did not finish in time)"
            raise Failed(f"gates timed out after {settings.gate_timeout:g}s on {sha[:12]}; "
                         f"still waiting for: {', '.join(waiting)}{cut}",
                         details={"sha": sha, "contexts": states})
        await out.pause(min(settings.poll_interval, remaining), "waiting for gates")


def gitea_for_gates(settings: Settings) -> GiteaClient:
    """A client whose retry deadline fits inside the gate deadline."""
    return GiteaClient.for_settings(settings, retry_deadline=max(1.0, min(settings.gitea_retry_deadline,
                                                                         settings.gate_timeout)))


async def run(settings: Settings, out: Output) -> dict[str, Any]:
    """The `wait-gates` verb."""
    if settings.gitea_token is None:
        raise UsageError("--gitea-token (GITEA_TOKEN) is required to read the status contexts of the SHA")
    async with gitea_for_gates(settings) as gitea:
        result = await wait_gates(settings, gitea, out)
    out.result(result, human=None)
    return result


__all__ = ["FAILING", "judge", "run", "wait_gates"]
