"""The runbooks stay true: every `fleetgate` command in them runs against the sandbox, the settings
table is the one the code generates, and every exit code has its instructions.

Convention: commands live in ```console blocks as `$ fleetgate VERB …`. The test appends
`--sandbox`; a trailing `# sandbox: scenario=NAME exit=N` comment names the scenario (default
happy) and the exit code the rehearsal must end with (default 0). `$GOOD_SHA` and `$GOOD_TAG` are
the sandbox's previous release.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.docs import embed
from pipelines.errors import ExitCode
from pipelines.sandbox.scenarios import SCENARIOS
from pipelines.sandbox.world import CP_TOKEN, GITEA_TOKEN, fake_sha
from pipelines.settings import OPTIONS
from pipelines.verbs import VERBS

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = [ROOT / "runbooks" / "production-auto-deploy.md", ROOT / "runbooks" / "rollback.md"]
GOOD_SHA = fake_sha("c1")
SANDBOX_VALUES = {"GOOD_SHA": GOOD_SHA, "GOOD_TAG": f"staging-{GOOD_SHA[:7]}"}
CONSOLE_BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)


class Command:
    def __init__(self, source: str, line: str) -> None:
        self.source = source
        self.line = line
        text, _, comment = line.partition("  # sandbox:")
        self.scenario, self.exit_code = "happy", 0
        for pair in comment.split():
            key, _, value = pair.partition("=")
            if key == "scenario":
                self.scenario = value
            elif key == "exit":
                self.exit_code = int(value)
            else:
                raise AssertionError(f"{source}: unknown `# sandbox:` key {key!r} in {line!r}")
        words = shlex.split(text)
        self.args = [re.sub(r"\$(\w+)", lambda m: SANDBOX_VALUES[m.group(1)], w) for w in words]

    def __repr__(self) -> str:
        return f"{self.source}: {self.line}"


def commands() -> list[Command]:
    found: list[Command] = []
    for path in RUNBOOKS:
        for block in CONSOLE_BLOCK.findall(path.read_text(encoding="utf-8")):
            for raw in block.splitlines():
                if raw.startswith("$ "):
                    found.append(Command(path.name, raw[2:]))
    return found


def test_every_console_command_is_a_fleetgate_verb_with_a_known_scenario() -> None:
    found = commands()
    assert len(found) >= 10
    for command in found:
        assert command.args[0] == "fleetgate" and command.args[1] in VERBS, command
        assert command.scenario in SCENARIOS, command
        assert "--sandbox" not in command.args, command  # production form; the test adds it
    verbs = {c.args[1] for c in found}
    assert {"deploy-production", "redeploy", "verify", "assert-enabled"} <= verbs


def test_every_runbook_command_works_against_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process through the click entry point (the same parsing, exit codes and output as the console
    # script, without an interpreter start per command); each command in its own folder for its ledger.
    ours = ("GITHUB_", "GITEA_", "PROD_", "CP_", "CI_", "FLEETGATE_")
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(ours)}
    env["NO_COLOR"] = "1"
    runner = CliRunner()
    seen: set[tuple[str, ...]] = set()
    for i, command in enumerate(commands()):
        key = (*command.args, command.scenario)
        if key in seen:
            continue  # the same rehearsal twice proves nothing new
        seen.add(key)
        cwd = tmp_path / str(i)
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        result = runner.invoke(cli, [*command.args[1:], "--sandbox", "--scenario", command.scenario], env=env)
        output = result.stdout + result.stderr
        assert result.exit_code == command.exit_code, (command, output[-2000:], result.exception)
        assert GITEA_TOKEN not in output and CP_TOKEN not in output, command


def test_the_settings_table_is_the_generated_one() -> None:
    text = RUNBOOKS[0].read_text(encoding="utf-8")
    assert embed(text) == text, "stale: run python -m pipelines.docs --write runbooks/production-auto-deploy.md"
    for option in OPTIONS:
        assert f"`{option.flag}" in text, option.flag


def test_every_exit_code_says_what_to_do() -> None:
    text = RUNBOOKS[0].read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d) \| [^|]+ \| ([^|]+) \|$", text, re.M))
    assert sorted(int(k) for k in rows) == sorted(int(c) for c in ExitCode)
    assert all(len(what.strip()) > 5 for what in rows.values())


def test_the_rollback_runbook_freezes_rolls_back_verifies_and_unfreezes_in_that_order() -> None:
    text = RUNBOOKS[1].read_text(encoding="utf-8")
    marks = [text.index(s) for s in ("fleetgate assert-enabled  # sandbox: scenario=kill-switch-engaged exit=3",
                                     "fleetgate redeploy --target-tag", "## 4. Verify",
                                     "fleetgate verify --sha \"$GOOD_SHA\"\n", "-X DELETE")]
    assert marks == sorted(marks)
