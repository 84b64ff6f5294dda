"""The `fleetgate` console script: commands derived from the verb table, options from the settings table.

Thin by design: parse, resolve settings (exit 2 before any network), run the verb's coroutine,
map its exception to an exit code. Heavy imports (httpx, starlette) happen only in the verb.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipelines.errors import ExitCode, FleetgateError, UsageError
from pipelines.lint.cli import DEFAULT_GITEA_VERSION
from pipelines.lint.cli import FORMATS as LINT_FORMATS

if TYPE_CHECKING:
    from pipelines.settings import Option
    from pipelines.verbs import Extra, Verb


def _verbs() -> dict[str, Verb]:
    from pipelines.verbs import VERBS

    return VERBS


def _click_option(o: Option) -> Callable[[Any], Any]:
    from pipelines.settings import Kind

    help_text = f"{o.doc} [env: {', '.join(o.env) or '—'}; default: {o.default_text}]"
    if o.kind is Kind.BOOL:
        if o.negatable:
            return click.option(f"{o.flag}/--no-{o.flag[2:]}", o.name, default=None, help=help_text)
        return click.option(o.flag, o.name, is_flag=True, flag_value=True, default=None, help=help_text)
    return click.option(o.flag, o.name, multiple=o.multiple, default=None, help=help_text, metavar=o.kind.metavar)


def _click_extra(e: Extra) -> Callable[[Any], Any]:
    from pipelines.settings import Kind

    if e.kind is Kind.BOOL:
        return click.option(e.flag, e.name, is_flag=True, default=False, help=e.doc)
    return click.option(e.flag, e.name, multiple=e.kind is Kind.LIST, default=None, help=e.doc,
                        metavar=e.kind.metavar)


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Settings file (default: ./fleetgate.toml when present).")(f)
    f = click.option("--json", "json_mode", is_flag=True, default=False,
                     help="Final result as one JSON object on stdout; progress goes to stderr.")(f)
    f = click.option("--sandbox", is_flag=True, default=False,
                     help="Start a simulated Gitea + control plane + fleet on 127.0.0.1 and point every URL at it.")(f)
    f = click.option("--scenario", default="happy", show_default=True,
                     help="Sandbox scenario (with --sandbox); `fleetgate sandbox --scenario list` lists them.")(f)
    return f


def _make_command(verb: Verb) -> click.Command:
    def callback(**params: Any) -> None:
        sys.exit(run_verb(verb.name, params))

    cmd: Callable[..., Any] = callback
    for o in reversed(verb.options):
        cmd = _click_option(o)(cmd)
    for extra in verb.extras:
        cmd = _click_extra(extra)(cmd)
    cmd = _common(cmd)
    return click.command(verb.name, help=verb.help)(cmd)


def run_verb(verb: str, params: dict[str, Any], env: dict[str, str] | None = None,
             func: Callable[..., Any] | None = None) -> int:
    """Resolve, run, map errors to exit codes. Returns the exit code. `func` replaces the row's function."""
    from pipelines.output import Output

    env = dict(os.environ) if env is None else env
    json_mode = bool(params.pop("json_mode", False))
    out = Output(json_mode=json_mode)
    try:
        import anyio

        from pipelines.runner import run_with_settings

        row = _verbs()[verb]
        params = {**params, **{e.name: e.value(params.get(e.name)) for e in row.extras}}
        result: dict[str, Any] = anyio.run(run_with_settings, verb, func or row.load(), params, env, out)
    except FleetgateError as exc:
        out.verb_ended(verb, exc)
        out.result({"ok": False, "verb": verb, "exit_code": int(exc.exit_code), "error": exc.message, **exc.details})
        return int(exc.exit_code)
    except KeyboardInterrupt:
        out.error(f"fleetgate {verb}: interrupted")
        return int(ExitCode.FAILED)
    except OSError as exc:  # a full disk or a vanished ledger folder mid-run: one line, fail closed
        out.error(f"fleetgate {verb}: {exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "))
        return int(ExitCode.FAILED)
    return int(result.get("exit_code", ExitCode.OK))


class VerbGroup(click.Group):
    """Builds a verb's command (its options derived from the settings table) only when asked for:
    `lint-workflows`, which runs in every pipeline, never pays for the settings table."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*_verbs(), *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in (verbs := _verbs()):
            self.add_command(_make_command(verbs[cmd_name]))
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from pipelines.verbs import suggestion

            raise click.UsageError(f"no such verb {name[:60]!r}{suggestion(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)


@click.group(cls=VerbGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="fleetgate")
def cli() -> None:
    """fleetgate: from green main to a verified production fleet, fail-closed.

    Exit codes: 0 done, 1 failed (fail-closed), 2 usage, 3 disabled by the kill switch,
    4 halted by the kill switch after writes, 5 stood down for a newer commit.
    """


@cli.command("lint-workflows", context_settings={"ignore_unknown_options": False})
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(LINT_FORMATS), default="human",
              show_default=True, help="Output format.")
@click.option("--gitea-version", default=DEFAULT_GITEA_VERSION, show_default=True,
              help="Target Gitea version (decides G8).")
@click.option("--allow-empty", is_flag=True, default=False, help="A folder with no workflow files is not an error.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="fleetgate.toml with a [lint] table (default: ./fleetgate.toml when present).")
def lint_workflows(dirs: tuple[Path, ...], fmt: str, gitea_version: str, allow_empty: bool,
                   config_path: Path | None) -> None:
    """Lint Gitea/GitHub Actions workflow files (default folder: .gitea/workflows)."""
    from pipelines.lint.cli import main as lint_main

    sys.exit(lint_main(dirs, fmt=fmt, gitea_version=gitea_version, allow_empty=allow_empty,
                       config_path=config_path))


@cli.command("self-test")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Project folder to test.")
def self_test(source: Path) -> None:
    """The project's own tests plus lint-workflows (under Dagger: in a container)."""
    from pipelines.selftest import run_self_test

    sys.exit(run_self_test(source))


@cli.command("sandbox")
@click.option("--scenario", default="happy", show_default=True, help="Scenario name, or `list`.")
@click.option("--port", type=int, default=0, show_default=True, help="Port to bind on 127.0.0.1 (0: any free port).")
@click.option("--tenants", type=int, default=None, help="Number of tenants (default: the scenario's).")
def sandbox(scenario: str, port: int, tenants: int | None) -> None:
    """Serve a simulated Gitea + control plane + tenant fleet on 127.0.0.1 for rehearsal."""
    from pipelines.sandbox.cli import main as sandbox_main

    sys.exit(sandbox_main(scenario=scenario, port=port, tenants=tenants))


def main() -> None:
    try:
        cli.main(prog_name="fleetgate", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(int(ExitCode.FAILED))
    except click.ClickException as exc:
        # Usage errors are one line and exit 2, like every other configuration error.
        message = exc.format_message().splitlines()[0] if exc.format_message() else str(exc)
        print(f"fleetgate: {message}", file=sys.stderr)
        sys.exit(int(ExitCode.USAGE))


__all__ = ["UsageError", "cli", "main", "run_verb"]


if __name__ == "__main__":
    main()
