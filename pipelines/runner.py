"""Run one verb: settings resolved and validated first, then (optionally) the sandbox, then the verb.

Whatever a verb raises leaves here as a `FleetgateError` (CONTRACT §3): an ExceptionGroup from an
anyio task group is unwrapped to the error inside it, an OS error (a full disk) or any unexpected
error becomes one redacted line with exit 1 — never a traceback — so the CLI and Dagger still
print their one-line error and the `--json` object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from pipelines.errors import Failed, FleetgateError, UsageError
from pipelines.output import Output
from pipelines.redact import redact
from pipelines.settings import OPTIONS, load_config, resolve

VerbFunc = Callable[..., Awaitable[dict[str, Any]]]
_SETTING_NAMES = {o.name for o in OPTIONS}


async def run_with_settings(verb: str, func: VerbFunc, params: dict[str, Any], env: Mapping[str, str],
                            out: Output) -> dict[str, Any]:
    params = dict(params)
    config_path: Path | None = params.pop("config_path", None)
    use_sandbox = bool(params.pop("sandbox", False))
    scenario = str(params.pop("scenario", "happy"))
    flags = {k: v for k, v in params.items() if k in _SETTING_NAMES}
    extras = {k: v for k, v in params.items() if k not in _SETTING_NAMES}
    config, source = load_config(config_path)
    # Validate everything before anything is contacted (or started); with --sandbox, against
    # placeholders shaped like what the sandbox will supply, and again once it has.
    settings = resolve(verb, flags, env, config, source, overlay=_placeholder_overlay() if use_sandbox else None)
    async with AsyncExitStack() as stack:
        if use_sandbox:
            from pipelines.sandbox import serve
            from pipelines.sandbox.scenarios import SCENARIOS

            if scenario not in SCENARIOS:
                raise UsageError(f"--scenario: unknown {scenario!r}; known: {', '.join(sorted(SCENARIOS))}")
            sb = await stack.enter_async_context(serve(scenario))
            out.info(f"sandbox: scenario {scenario!r} on {sb.base_url}")
            settings = resolve(verb, flags, env, config, source, overlay=sb.overlay)
            sb.confine(settings)  # e.g. promote: the sandbox's registry only
            from pipelines.sandbox.scenarios import seed_ledger

            seed_ledger(sb.state, settings.ledger)  # a scenario's past runs (e.g. lease-interrupted)
        try:
            return await func(settings, out, **extras)
        except Exception as exc:  # cancellation and KeyboardInterrupt are BaseExceptions: not caught
            raise as_failure(exc) from None


def unwrap(exc: BaseException) -> BaseException:
    """The error that matters inside an ExceptionGroup (anyio task groups wrap): a FleetgateError first."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        if not leaves:
            break
        exc = next((e for e in leaves if isinstance(e, FleetgateError)), leaves[0])
    return exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for e in group.exceptions:
        found.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return found


def as_failure(exc: BaseException) -> FleetgateError:
    """Any error as a one-line, redacted FleetgateError (never a traceback)."""
    exc = unwrap(exc)
    if isinstance(exc, FleetgateError):
        return exc
    if isinstance(exc, OSError):
        where = f": {redact(str(exc.filename), limit=200)}" if exc.filename else ""
        return Failed(f"{exc.strerror or type(exc).__name__}{where}")
    return Failed(f"unexpected error: {type(exc).__name__}: {redact(str(exc), limit=200)}")


def _placeholder_overlay() -> dict[str, Any]:
    """What the sandbox will supply, shaped validly, so validation can run before it starts."""
    from pipelines.sandbox.scenarios import placeholder_overlay

    return placeholder_overlay()
