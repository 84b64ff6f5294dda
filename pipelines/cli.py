"""The `fleetgate` console script: options derived from the settings table, verbs imported lazily.

Thin by design: parse, resolve settings (exit 2 before any network), run the verb's coroutine,
map its exception to an exit code. Heavy imports (httpx, starlette) happen only in the verb.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipelines.errors import ExitCode, FleetgateError, UsageError
from pipelines.lint.cli import FORMATS as LINT_FORMATS

if TYPE_CHECKING:
    from pipelines.settings import Option

# verb -> (module:function, help). The function is `async def run(settings, out, **extra) -> dict`.
VERBS: dict[str, tuple[str, str]] = {
    "plan": ("pipelines.plan:run", "Resolve settings, run every preflight, print the plan as JSON."),
    "wait-gates": ("pipelines.gates:run", "Block until every required status context on the SHA is success."),
    "assert-enabled": ("pipelines.killswitch:run", "Live re-read of the kill switch (exit 3 when engaged)."),
    "rollout": ("pipelines.rollout:run", "Lease, canary, then verified waves through the control plane."),
    "verify": ("pipelines.verify:run", "Read every tenant's /buildinfo and compare with --sha (drift report)."),
    "deploy-production": ("pipelines.deploy:deploy_production",
                          "The main job: plan, wait-gates, assert-enabled, rollout, final verify."),
    "redeploy": ("pipelines.deploy:redeploy",
                 "Manual redeploy / rollback to an explicit known-good tag and SHA."),
    "promote": ("pipelines.registry:run", "Re-point a moving tag to the verified image (after a verified rollout)."),
    "approve": ("pipelines.approve:run",
                "Approve (or --reject) a run paused after its canary: posts the --approval-context status on --sha."),
}


def _click_option(o: Option) -> Callable[[Any], Any]:
    from pipelines.settings import Kind

    help_text = f"{o.doc} [env: {', '.join(o.env) or '—'}; default: {o.default_text}]"
    if o.kind is Kind.BOOL:
        decl = f"{o.flag}/--no-{o.flag[2:]}" if o.negatable else o.flag
        if o.negatable:
            return click.option(decl, o.name, default=None, help=help_text)
        return click.option(decl, o.name, is_flag=True, flag_value=True, default=None, help=help_text)
    return click.option(o.flag, o.name, multiple=o.multiple, default=None, help=help_text,
                        metavar=o.kind.value.upper().replace(" ", "_") if o.kind is not Kind.SECRET else "TOKEN")


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


VERB_EXTRAS: dict[str, list[Callable[[Any], Any]]] = {
    "verify": [click.option("--only", "only", multiple=True, help="Verify only these tenant slugs (repeatable).")],
    "redeploy": [click.option("--break-lease", "break_lease", is_flag=True, default=False,
                              help="Emergency: take over another run's lease (recorded in the ledger).")],
    "approve": [click.option("--reject", "reject", is_flag=True, default=False,
                             help="Post failure instead: the paused run stops (exit 1, or rolls back)."),
                click.option("--comment", "comment", default=None, metavar="TEXT",
                             help="One line shown as the status's description in Gitea.")],
}


def _make_command(verb: str, target: str, help_text: str) -> click.Command:
    from pipelines.settings import options_for

    def callback(**params: Any) -> None:
        sys.exit(run_verb(verb, target, params))

    cmd: Callable[..., Any] = callback
    for o in reversed(options_for(verb)):
        cmd = _click_option(o)(cmd)
    for extra in VERB_EXTRAS.get(verb, []):
        cmd = extra(cmd)
    cmd = _common(cmd)
    return click.command(verb, help=help_text)(cmd)


def run_verb(verb: str, target: str, params: dict[str, Any], env: dict[str, str] | None = None) -> int:
    """Resolve, run, map errors to exit codes. Returns the exit code."""
    from pipelines.output import Output

    env = dict(os.environ) if env is None else env
    json_mode = bool(params.pop("json_mode", False))
    out = Output(json_mode=json_mode)
    try:
        import anyio

        module_name, func_name = target.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        from pipelines.runner import run_with_settings

        result: dict[str, Any] = anyio.run(run_with_settings, verb, func, params, env, out)
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
        return sorted({*VERBS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name in VERBS and cmd_name not in self.commands:
            self.add_command(_make_command(cmd_name, *VERBS[cmd_name]))
        return self.commands.get(cmd_name)


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
@click.option("--gitea-version", default="1.22", show_default=True, help="Target Gitea version (decides G8).")
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


__all__ = ["VERBS", "UsageError", "cli", "main", "run_verb"]


if __name__ == "__main__":
    main()
