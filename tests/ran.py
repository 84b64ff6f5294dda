"""What an in-process run of a verb left behind: its result or error, its output and its ledger."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.errors import FleetgateError


@dataclass
class Run:
    result: dict[str, Any] | None
    error: FleetgateError | None
    stderr: str
    stdout: str
    ledger: list[dict[str, Any]]

    @property
    def exit_code(self) -> int:
        return int(self.error.exit_code) if self.error is not None else int(self.result["exit_code"])  # type: ignore[index]

    @property
    def report(self) -> dict[str, Any]:
        return self.error.details if self.error is not None else self.result  # type: ignore[return-value]

    def events(self, name: str, **facts: Any) -> list[dict[str, Any]]:
        """The ledger's `name` events whose facts include `facts`."""
        return [e for e in self.ledger if e["event"] == name and all(e.get(k) == v for k, v in facts.items())]
