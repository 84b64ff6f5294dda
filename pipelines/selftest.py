"""`fleetgate self-test`: the project's own test command, then `fleetgate lint-workflows`.

The same two commands CI runs, so a red CI run can be reproduced with one command — on a laptop
(`fleetgate self-test`) or in the pinned container (`dagger call self-test`). Both always run, so one
failure does not hide the other; the exit code is the first non-zero one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# The README's test command. `sys.executable` so the tests run in the interpreter fleetgate runs in.
TEST_COMMAND: tuple[str, ...] = ("-m", "pytest", "-q")
# lint-workflows through the same interpreter: no reliance on a `fleetgate` script on PATH.
LINT_COMMAND: tuple[str, ...] = ("-m", "pipelines", "lint-workflows")


def commands() -> list[list[str]]:
    """The commands self-test runs, in order."""
    return [[sys.executable, *TEST_COMMAND], [sys.executable, *LINT_COMMAND]]


def run_self_test(source: Path, *, run: Sequence[list[str]] | None = None) -> int:
    """Run every command in `source`; 0 when all pass, else the first failing exit code."""
    if not source.is_dir():
        print(f"fleetgate self-test: --source: no such folder {str(source)!r}", file=sys.stderr, flush=True)
        return 2
    first_failure = 0
    for argv in run if run is not None else commands():
        shown = " ".join(["python", *argv[1:]] if argv[0] == sys.executable else argv)
        print(f"fleetgate self-test: $ {shown}", file=sys.stderr, flush=True)
        # No timeout: the test suite bounds its own tests; a hung suite is for CI's job timeout.
        code = subprocess.call(argv, cwd=source)  # fixed argv, no shell
        if code != 0:
            print(f"fleetgate self-test: `{shown}` exited {code}", file=sys.stderr, flush=True)
            first_failure = first_failure or code
    if first_failure == 0:
        print("fleetgate self-test: tests and lint-workflows passed", file=sys.stderr, flush=True)
    return first_failure
