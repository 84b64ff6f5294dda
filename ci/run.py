"""What a generated verb function (ci/_verbs.py) does with its arguments: the CLI's path, in the module.

Settings resolve as in the CLI (env = {}: a function cannot see the caller's environment), from the
arguments and then `fleetgate.toml` in --source; the verb runs through the same
`pipelines.runner.run_with_settings`; a `FleetgateError` leaves as `VerbFailed` (the CLI's line and code).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagger

from ci.arguments import secret_flags, settings_flags
from ci.errors import VerbFailed
from pipelines.errors import ExitCode, FleetgateError, UsageError
from pipelines.output import Output, redact_json
from pipelines.settings import CONFIG_FILE, Option, Settings, load_config, options_for, resolve
from pipelines.verbs import VERBS

logger = logging.getLogger("fleetgate")


async def read_config(source: dagger.Directory) -> str:
    """fleetgate.toml from `source`, or "" when it has none."""
    if await source.exists(CONFIG_FILE):
        return await source.file(CONFIG_FILE).contents()
    return ""


@contextlib.contextmanager
def config_file(text: str) -> Iterator[Path]:
    """The config as a file `load_config` can read. Always a file, even empty: otherwise the runner
    would fall back to ./fleetgate.toml of the runtime's working directory, not the given --source."""
    with tempfile.TemporaryDirectory(prefix="fleetgate-config-") as folder:
        path = Path(folder) / CONFIG_FILE
        path.write_text(text, encoding="utf-8")
        yield path


def usage_failure(verb: str, exc: UsageError) -> VerbFailed:
    return VerbFailed(verb, exc.message, exc.exit_code)


async def run_verb(verb: str, params: dict[str, Any], config_text: str) -> dict[str, Any]:
    """What `fleetgate VERB` does after parsing: resolve (env = {}), run, map errors. Returns the result."""
    from pipelines.runner import run_with_settings

    out = Output(json_mode=False)  # progress to stderr: the function's log
    try:
        with config_file(config_text) as path:
            params = {**params, "config_path": path}
            result: dict[str, Any] = await run_with_settings(verb, VERBS[verb].load(), params, {}, out)
    except FleetgateError as exc:
        out.verb_ended(verb, exc)
        raise VerbFailed(verb, exc.message, exc.exit_code) from None
    code = int(result.get("exit_code", ExitCode.OK))
    if code != ExitCode.OK:
        raise VerbFailed(verb, str(result.get("error") or result.get("message") or "failed"), code)
    return result


async def verb_params(verb: str, values: dict[str, Any]) -> dict[str, Any]:
    """The runner's params for `verb` from a function's argument values."""
    options = options_for(verb)
    params: dict[str, Any] = {**settings_flags(options, values), **await secret_flags(options, values)}
    params["sandbox"] = bool(values.get("sandbox", False))
    params["scenario"] = str(values.get("scenario") or "happy")
    for extra in VERBS[verb].extras:
        params[extra.name] = extra.value(values.get(extra.name))
    return params


async def run_function(verb: str, values: dict[str, Any]) -> str:
    """The body of every generated verb function: `values` are its arguments (`locals()`)."""
    try:
        params = await verb_params(verb, values)
        result = await run_verb(verb, params, await read_config(values["source"]))
    except VerbFailed:
        raise
    except Exception:
        logger.exception("fleetgate %s: unexpected error", verb)  # the SDK's own traceback log is off
        raise
    return redact_json(result)


# ---------------------------------------------------------------- publish-and-deploy


def publish_and_deploy_options() -> tuple[Option, ...]:
    """deploy-production's settings, then promote's that it lacks (the registry ones)."""
    merged = {o.name: o for o in (*options_for("deploy-production"), *options_for("promote"))}
    return tuple(merged.values())


def validated(verb: str, params: dict[str, Any], config_text: str) -> Settings:
    """`resolve` for `verb` as the runner will do it, raising the CLI's usage error (exit 2)."""
    try:
        with config_file(config_text) as path:
            config, where = load_config(path)
            return resolve(verb, params, {}, config, where)
    except UsageError as exc:
        raise usage_failure(verb, exc) from None


async def publish_and_deploy(fleetgate: Any, values: dict[str, Any]) -> str:
    """build → publish → self-test → deploy-production → promote, every setting validated first."""
    source: dagger.Directory = values["source"]
    config_text = await read_config(source)
    deploy = await verb_params("deploy-production", values)
    promote = await verb_params("promote", values)
    validated("deploy-production", deploy, config_text)
    settings = validated("promote", promote, config_text)
    if values.get("registry_password") is None:
        raise VerbFailed("publish", "--registry-password is required to publish the image", ExitCode.USAGE)
    refs: str = await fleetgate.publish(
        source=source, sha=settings.sha, image=settings.image, registry_password=values["registry_password"],
        registry_username=settings.registry_username, tag_template=settings.tag_template)
    tests: str = await fleetgate.self_test(source=source)
    deployed = await run_verb("deploy-production", deploy, config_text)
    promoted = await run_verb("promote", promote, config_text)
    last_test_line = tests.strip().splitlines()[-1:]
    return redact_json({"ok": True, "published": refs.splitlines(), "self_test": last_test_line,
                        "deploy": deployed, "promote": promoted})
