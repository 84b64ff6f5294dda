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
import sys
from pathlib import Path

import anyio
import pytest

from pipelines.cli import VERBS
from pipelines.docs import embed
from pipelines.errors import ExitCode
from pipelines.sandbox.scenarios import SCENARIOS
from pipelines.sandbox.world import CP_TOKEN, GITEA_TOKEN, fake_sha
from pipelines.settings import OPTIONS

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


@pytest.mark.anyio
async def test_every_runbook_command_works_against_the_sandbox(tmp_path: Path) -> None:
    ours = ("GITHUB_", "GITEA_", "PROD_", "CP_", "CI_", "FLEETGATE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env["NO_COLOR"] = "1"
    found = commands()
    results: dict[int, tuple[int, str]] = {}
    limiter = anyio.CapacityLimiter(4)

    async def one(i: int, command: Command) -> None:
        cwd = tmp_path / str(i)
        cwd.mkdir()
        args = [sys.executable, "-m", "pipelines", *command.args[1:], "--sandbox", "--scenario", command.scenario]
        async with limiter:
            proc = await anyio.run_process(args, cwd=cwd, env=env, check=False)
        results[i] = (proc.returncode, proc.stdout.decode() + proc.stderr.decode())

    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            for i, command in enumerate(found):
                tg.start_soon(one, i, command)
    for i, command in enumerate(found):
        code, output = results[i]
        assert code == command.exit_code, (command, output[-2000:])
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
