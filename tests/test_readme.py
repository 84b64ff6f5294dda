"""README promises: two Quick-start commands, CI runs the test one, the settings table is current."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.docs import BEGIN, END, embed

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, re.S)


def test_quick_start_is_two_commands_main_job_then_tests() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("fleetgate deploy-production --sandbox")
    assert "pytest" in commands[1]


def test_ci_runs_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert quick_start_commands()[1] in ci


def test_ci_runs_the_first_command_piped_and_under_a_pseudo_terminal_from_a_clean_venv() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    first = quick_start_commands()[0]
    assert f"rm -rf .venv && {first} | cat" in ci
    assert f'rm -rf .venv && script -qec "{first}" /dev/null' in ci
    assert ci.index(f"rm -rf .venv && {first} | cat") < ci.index(quick_start_commands()[1])  # before [test] lands


def test_the_test_command_installs_the_system_packages_first() -> None:
    assert quick_start_commands()[1].startswith("sh tests/system-packages.sh && ")
    assert (ROOT / "tests" / "system-packages.sh").is_file()


def test_settings_table_in_readme_is_generated_from_the_table() -> None:
    assert BEGIN in README and END in README
    assert embed(README) == README, "README settings table is stale: run python -m pipelines.docs --write README.md"


def test_the_verbs_readme_says_take_sandbox_do_and_the_others_do_not() -> None:
    import click

    from pipelines.cli import cli

    ctx = click.Context(cli)
    commands = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    claim = re.search(r"Every verb but ((?:`[a-z-]+`(?:, | and )?)+) takes `--sandbox`", README)
    assert claim is not None
    without = set(re.findall(r"`([a-z-]+)`", claim.group(1)))
    taking = {name for name, command in commands.items()
              if command is not None and any("--sandbox" in getattr(p, "opts", ()) for p in command.params)}
    assert without == set(commands) - taking
    assert taking and without
