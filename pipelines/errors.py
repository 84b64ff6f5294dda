"""Exit codes (CONTRACT §3) and the exceptions that carry them.

Every failure leaves the tool as one of these, with a one-line message: the CLI prints it and
exits with its code, the Dagger functions raise it with the same text.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # fail-closed: gates, verification, CP refusal, unreadable answers
    USAGE = 2  # bad input; nothing was contacted
    DISABLED = 3  # kill switch engaged before any write
    HALTED_MIXED = 4  # kill switch engaged after some writes; the fleet is mixed
    STOOD_DOWN = 5  # a newer commit is already (being) deployed


class FleetgateError(Exception):
    """A failure with a one-line message and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        # One line, always: a message is printed as-is to logs.
        self.message = " ".join(message.split())
        self.details = details or {}
        super().__init__(self.message)


class Failed(FleetgateError):
    exit_code = ExitCode.FAILED


class UsageError(FleetgateError):
    exit_code = ExitCode.USAGE


class Disabled(FleetgateError):
    exit_code = ExitCode.DISABLED


class HaltedMixed(FleetgateError):
    exit_code = ExitCode.HALTED_MIXED


class StoodDown(FleetgateError):
    exit_code = ExitCode.STOOD_DOWN
