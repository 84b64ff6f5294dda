"""Dagger function arguments derived from the settings table (`pipelines.settings.OPTIONS`).

A setting's argument is named after its CLI flag (`--required-context` → `required_context`, which
`dagger call` shows as `--required-context`), so one name works in both front doors. Every setting
argument is optional with no Dagger default: an argument not given falls through to `fleetgate.toml`
and then to the table's default, the precedence the CLI has (without the environment, which a
function cannot see).

The SDK reads a function's parameters with `inspect.signature` and `typing.get_type_hints`, so a
generated function carries a real `__signature__` and `__annotations__`; the registration test runs
the SDK's own registration over them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

import dagger
from dagger import DefaultPath, Doc, Ignore, function

from pipelines.settings import Kind, Option

Impl = Callable[[Any, dict[str, Any]], Awaitable[str]]
F = TypeVar("F", bound=Callable[..., Any])

# The source directory: the module's context (the repository root) unless --source is given.
# Only fleetgate.toml is read from it by the verb functions, so only that is uploaded.
CONFIG_ONLY: tuple[str, ...] = ("*", "!fleetgate.toml")
# What a build or a test run never needs (and what would make every upload slow or uncacheable).
BUILD_IGNORE: tuple[str, ...] = (
    ".git", ".venv", "**/__pycache__", "**/.pytest_cache", "**/.mypy_cache", "**/.ruff_cache",
    "sdk", "build", "dist", "*.egg-info", "fleetgate-ledger.jsonl",
)


def never_cached(func: F) -> F:
    """`@function(cache="never")` with its type kept (the SDK's overloads omit `cache`)."""
    decorate: Any = function
    return cast(F, decorate(cache="never")(func))


def arg_name(o: Option) -> str:
    """The Python parameter name for a setting: its CLI flag in snake_case."""
    return o.flag.removeprefix("--").replace("-", "_")


def arg_type(o: Option) -> Any:
    base: Any = {
        Kind.SECRET: dagger.Secret,
        Kind.LIST: list[str],
        Kind.BOOL: bool,
        Kind.INT: int,
        Kind.SECONDS: float,
    }.get(o.kind, str)
    return base | None


def arg_doc(o: Option) -> str:
    how = ""
    if o.kind is Kind.SECRET:
        how = " A Dagger secret, e.g. env://NAME."
    elif o.kind is Kind.LIST:
        how = " Comma-separated list."
    return f"{o.doc}{how} Default: {o.default_text} (or fleetgate.toml: {o.name}). CLI: {o.flag}."


@dataclass(frozen=True)
class ExtraArg:
    """A function argument that is not a setting (e.g. `--only`, `--break-lease`, `--source`)."""

    name: str
    annotation: Any
    default: Any
    doc: str


def setting_parameters(options: Sequence[Option]) -> list[inspect.Parameter]:
    return [
        inspect.Parameter(arg_name(o), inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[arg_type(o), Doc(arg_doc(o))])
        for o in options
    ]


def extra_parameters(extras: Sequence[ExtraArg]) -> list[inspect.Parameter]:
    return [
        inspect.Parameter(e.name, inspect.Parameter.KEYWORD_ONLY, default=e.default,
                          annotation=e.annotation if _is_annotated(e.annotation)
                          else Annotated[e.annotation, Doc(e.doc)])
        for e in extras
    ]


def _is_annotated(annotation: Any) -> bool:
    return getattr(annotation, "__metadata__", None) is not None


def source_arg(ignore: Sequence[str], doc: str) -> ExtraArg:
    """`--source`: a directory defaulting to the module's context root."""
    return ExtraArg("source", Annotated[dagger.Directory, DefaultPath("/"), Ignore(list(ignore)), Doc(doc)],
                    inspect.Parameter.empty, doc)


def generated_method(name: str, doc: str, options: Sequence[Option], extras: Sequence[ExtraArg],
                     impl: Impl) -> Callable[..., Awaitable[str]]:
    """A method `name(self, *, <source/extras>, <settings>) -> str` that hands its arguments to `impl`."""

    async def method(self: Any, **values: Any) -> str:
        return await impl(self, values)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              *extra_parameters(extras), *setting_parameters(options)]
    seen: set[str] = set()
    for p in params:
        if p.name in seen:  # a setting and an extra with one name would shadow each other
            raise ValueError(f"{name}: argument {p.name!r} defined twice")
        seen.add(p.name)
    method.__name__ = name
    method.__qualname__ = f"Fleetgate.{name}"
    method.__doc__ = doc
    method.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = {p.name: p.annotation for p in params[1:]} | {"return": str}
    return method


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
        if o.kind is Kind.SECRET and secret is not None:
            flags[o.name] = await secret.plaintext()
    return flags
