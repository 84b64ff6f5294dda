"""`fleetgate self-test`: the project's own test command, then `fleetgate lint-workflows`.

The same two commands CI runs, so a red CI run can be reproduced with one command — on a laptop
(`fleetgate self-test`) or in the pinned container (`dagger call self-test`). Both always run, so one
failure does not hide the other. The exit code is fleetgate's, never a runner's own: 0 all passed,
1 something failed, 2 nothing to test (not a fleetgate checkout: pass `--source`) or a usage error.
pytest's 5 ("no tests collected") would otherwise read as 5, "stood down for a newer commit".
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pipelines.errors import ExitCode

# The README's test command. `sys.executable` so the tests run in the interpreter fleetgate runs in.
TEST_COMMAND: tuple[str, ...] = ("-m", "pytest", "-q")
# lint-workflows through the same interpreter: no reliance on a `fleetgate` script on PATH.
LINT_COMMAND: tuple[str, ...] = ("-m", "pipelines", "lint-workflows")
# A runner's code → fleetgate's: pytest 2 (interrupted), 4 (usage) and 5 (no tests), lint-workflows 2
# (usage) are usage errors; every other non-zero code (failures, internal errors, signals) is a failure.
USAGE_CODES = frozenset({2, 4, 5})
HINT = "run it in a checkout of fleetgate, or pass --source PATH"


def commands() -> list[list[str]]:
    """The commands self-test runs, in order."""
    return [[sys.executable, *TEST_COMMAND], [sys.executable, *LINT_COMMAND]]


def fleetgate_code(code: int) -> ExitCode:
    if code == 0:
        return ExitCode.OK
    return ExitCode.USAGE if code in USAGE_CODES else ExitCode.FAILED


def is_checkout(source: Path) -> bool:
    """A folder holding fleetgate's pyproject.toml and its tests."""
    try:
        project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return project.get("project", {}).get("name") == "fleetgate" and (source / "tests").is_dir()


def _say(line: str) -> None:
    print(f"fleetgate self-test: {line}", file=sys.stderr, flush=True)


def run_self_test(source: Path, *, run: Sequence[list[str]] | None = None) -> int:
    """Run every command in `source`; 0 when all pass, else the first failure as 1 or 2."""
    if not source.is_dir():
        _say(f"--source: no such folder {str(source)!r}")
        return int(ExitCode.USAGE)
    if not is_checkout(source):
        _say(f"{str(source.resolve())!r} is not a fleetgate checkout (no pyproject.toml of fleetgate with "
             f"tests/): {HINT}")
        return int(ExitCode.USAGE)
    first_failure = ExitCode.OK
    for argv in run if run is not None else commands():
        shown = " ".join(["python", *argv[1:]] if argv[0] == sys.executable else argv)
        _say(f"$ {shown}")
        # No timeout: the test suite bounds its own tests; a hung suite is for CI's job timeout.
        code = subprocess.call(argv, cwd=source)  # fixed argv, no shell
        if code != 0:
            mapped = fleetgate_code(code)
            hint = f"; {HINT}" if code == 5 else ""
            _say(f"`{shown}` exited {code} (fleetgate exit {int(mapped)}){hint}")
            first_failure = first_failure or mapped
    if first_failure == ExitCode.OK:
        _say("tests and lint-workflows passed")
    return int(first_failure)
