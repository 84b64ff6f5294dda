"""How a fleetgate failure leaves a Dagger function.

The CLI prints `fleetgate VERB: <message>` and exits with the code (CONTRACT §3). A Dagger function
raises `VerbFailed` with that same line followed by `(exit N)`: `dagger call` exits non-zero for
any function error, so the exit meaning travels in the message (the Gitea workflow reads it to turn 3
and 5 into notices) and in the error's `exit_code` attribute.

The SDK turns any exception a function raises into the function's error with `str(exc)` as its message.
It would also log the Python traceback; `ci/__init__.py` turns that off through the SDK's documented
switch (`Module.log_exceptions`), and `ci/run.py` logs a traceback itself for anything that is not a
`VerbFailed` (a bug deserves one).
"""

from __future__ import annotations

import re

from pipelines.errors import ExitCode

EXIT_MARKER = re.compile(r"\(exit ([0-9])\)$")


class VerbFailed(Exception):
    """A verb failed: `str(exc)` is the CLI's one line plus `(exit N)`."""

    def __init__(self, verb: str, message: str, exit_code: int) -> None:
        self.verb = verb
        self.message = " ".join(message.split())
        self.exit_code = int(exit_code)
        super().__init__(f"fleetgate {verb}: {self.message} (exit {self.exit_code})")


def exit_code_of(line: str) -> int | None:
    """The exit code a `VerbFailed` line carries (what the workflow's shell does with grep)."""
    match = EXIT_MARKER.search(line.strip())
    return int(match.group(1)) if match else None


# What each exit code means, for the function docs (CONTRACT §3).
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.FAILED: "failed, fail-closed",
    ExitCode.USAGE: "usage or configuration error, nothing contacted",
    ExitCode.DISABLED: "disabled by the kill switch before any write",
    ExitCode.HALTED_MIXED: "halted by the kill switch after some writes",
    ExitCode.STOOD_DOWN: "stood down for a newer commit",
}


def exit_doc(codes: tuple[ExitCode, ...]) -> str:
    """The sentence each function doc ends with: which CLI exit codes its failures correspond to."""
    listed = "; ".join(f"{int(c)} {EXIT_MEANINGS[c]}" for c in codes)
    return (f"Fails like the CLI: the error is the CLI's one line ending `(exit N)`, N being the CLI exit "
            f"code ({listed}).")
