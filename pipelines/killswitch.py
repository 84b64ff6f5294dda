"""The kill switch: at plan time from `--disabled`/env, live from the Gitea Actions variable.

Fail closed in both places: an unrecognised value engages the switch, and a live read that gets
anything but 404 (off) or a readable value is a failure (exit 1), never "probably off".
"""

from __future__ import annotations

from typing import Any

from pipelines.errors import Disabled, UsageError
from pipelines.gitea import GiteaClient
from pipelines.output import Output
from pipelines.settings import Settings, switch_engaged

VARIABLE = "PROD_AUTO_DEPLOY_DISABLED"


def plan_time_reason(settings: Settings) -> str | None:
    """Why `--disabled`/PROD_AUTO_DEPLOY_DISABLED engages the switch, or None when it is off."""
    why = switch_engaged(settings.disabled)
    return f"--disabled / {VARIABLE} is set ({why})" if why else None


def check_plan_time(settings: Settings) -> None:
    """Raise Disabled (exit 3) when the plan-time switch is engaged; nothing has been contacted."""
    reason = plan_time_reason(settings)
    if reason:
        raise Disabled(f"kill switch engaged: {reason}", details={"disabled_reason": reason})


async def live_reason(gitea: GiteaClient) -> str | None:
    """Why the live switch is engaged, or None when it is off (variable absent or falsy).

    Anything unreadable raises Failed (from the client): an unknown switch is not an open one.
    """
    value = await gitea.get_variable(VARIABLE)
    if value is None:
        return None
    why = switch_engaged(value)
    return f"Gitea Actions variable {VARIABLE} is set ({why})" if why else None


def require_live_token(settings: Settings) -> None:
    """The live read needs a Gitea token; without one it cannot happen, and we do not guess.
    A missing token is configuration (exit 2, like every verb that needs one); a token Gitea rejects is exit 1."""
    if settings.live_kill_switch and settings.gitea_token is None:
        raise UsageError(f"--gitea-token (GITEA_TOKEN) is missing, so the live kill switch ({VARIABLE}) cannot "
                     "be read; give a token that can read Actions variables, or pass --no-live-kill-switch")


async def run(settings: Settings, out: Output) -> dict[str, Any]:
    """`assert-enabled`: exit 0 when the switch is off, 3 when engaged, 1 when it cannot be read,
    2 when there is no token to read it with."""
    check_plan_time(settings)
    if not settings.live_kill_switch:
        out.warn(f"live kill switch not read (--no-live-kill-switch); {VARIABLE} from the environment is off")
        result: dict[str, Any] = {"enabled": True, "live_kill_switch": "skipped", "disabled_reason": None}
        out.result(result)
        return result
    require_live_token(settings)
    async with GiteaClient.for_settings(settings) as gitea:
        reason = await live_reason(gitea)
        from pipelines.leasecmd import holder_facts  # who deploys now, named beside the switch

        lease = await holder_facts(gitea, settings, out)
    if reason:
        raise Disabled(f"kill switch engaged: {reason}", details={"disabled_reason": reason})
    out.ok(f"kill switch off: {VARIABLE} is absent or falsy on {settings.repo}")
    result = {"enabled": True, "live_kill_switch": "off", "disabled_reason": None, "lease": lease}
    out.result(result)
    return result


__all__ = ["VARIABLE", "check_plan_time", "live_reason", "plan_time_reason", "require_live_token", "run"]
