"""How settings and verb extras become Dagger function arguments (ci/_verbs.py is generated from this).

A setting's argument is named after its CLI flag (`--required-context` → `required_context`, which
`dagger call` shows as `--required-context`), so one name works in both front doors. Every setting
argument is optional with no Dagger default: an argument not given falls through to `fleetgate.toml`
and then to the table's default, the precedence the CLI has (without the environment, which a
function cannot see).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar, cast

import dagger
from dagger import DefaultPath, Doc, Ignore, function

from pipelines.settings import Kind, Option

F = TypeVar("F", bound=Callable[..., Any])

# The source directory: the module's context (the repository root) unless --source is given.
# Only fleetgate.toml is read from it by the verb functions, so only that is uploaded.
CONFIG_ONLY: tuple[str, ...] = ("*", "!fleetgate.toml")
# What a build or a test run never needs (and what would make every upload slow or uncacheable).
BUILD_IGNORE: tuple[str, ...] = (
    ".git", ".venv", "**/__pycache__", "**/.pytest_cache", "**/.mypy_cache", "**/.ruff_cache",
    "sdk", "build", "dist", "*.egg-info", "fleetgate-ledger.jsonl",
)
CONFIG_SOURCE_DOC = "Project folder whose fleetgate.toml supplies settings not given as arguments."
FULL_SOURCE_DOC = "Project folder (the repository root by default): Dockerfile, tests, fleetgate.toml."

ConfigSource = Annotated[dagger.Directory, DefaultPath("/"), Ignore(list(CONFIG_ONLY)), Doc(CONFIG_SOURCE_DOC)]
BuildSource = Annotated[dagger.Directory, DefaultPath("/"), Ignore(list(BUILD_IGNORE)), Doc(FULL_SOURCE_DOC)]


def never_cached(func: F) -> F:
    """`@function(cache="never")` with its type kept (the SDK's overloads omit `cache`)."""
    decorate: Any = function
    return cast(F, decorate(cache="never")(func))


def arg_name(o: Option) -> str:
    """The Python parameter name for a setting: its CLI flag in snake_case."""
    return o.flag.removeprefix("--").replace("-", "_")


def arg_doc(o: Option) -> str:
    if o.kind is Kind.SECRET:
        return f"{o.doc} A Dagger secret, e.g. env://NAME; never from fleetgate.toml. CLI: {o.flag}."
    how = " A list (repeat the flag or separate with commas)." if o.kind is Kind.LIST else ""
    return f"{o.doc}{how} Default: {o.default_text} (or fleetgate.toml: {o.name}). CLI: {o.flag}."


def settings_flags(options: Sequence[Option], values: dict[str, Any]) -> dict[str, Any]:
    """The `flags` mapping `pipelines.settings.resolve` expects, from argument values (secrets excluded)."""
    flags: dict[str, Any] = {}
    for o in options:
        value = values.get(arg_name(o))
        if value is None or o.kind is Kind.SECRET:
            continue
        # Arguments stand in for the environment here, and an empty environment variable is "not set":
        # a workflow passing `--image "$UNSET_VAR"` falls through to fleetgate.toml, as the CLI's env would.
        # The kill switch is the exception, as in the CLI: present and empty means off.
        if o.kind is Kind.LIST:
            value = tuple(v for v in value if v.strip())
            if not value:
                continue
        elif isinstance(value, str) and not value.strip() and o.kind is not Kind.SWITCH:
            continue
        flags[o.name] = value
    return flags


async def secret_flags(options: Sequence[Option], values: dict[str, Any]) -> dict[str, Any]:
    """Secret arguments as plaintext for `resolve`, which wraps them in `pipelines.redact.Secret` at once."""
    flags: dict[str, Any] = {}
    for o in options:
        secret = values.get(arg_name(o))
        if o.kind is not Kind.SECRET or secret is None:
            continue
        if isinstance(secret, list):  # a repeatable secret (--notify)
            flags[o.name] = tuple([await s.plaintext() for s in secret])
        else:
            flags[o.name] = await secret.plaintext()
    return flags
