"""L2: a suppression comment without a reason or without a known rule id."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, Rule, Severity
from pipelines.lint.suppress import Suppression


def check_suppressions(suppressions: list[Suppression], known: frozenset[str]) -> Iterator[Hit]:
    for s in suppressions:
        unknown = [r for r in s.rules if r not in known]
        if not s.rules:
            yield Hit(s.line, s.column, "suppression names no rule: write `# fleetgate: ignore[ID] reason`")
        elif unknown:
            yield Hit(s.line, s.column, f"suppression names unknown rule {unknown[0]!r}")
        elif not s.reason:
            yield Hit(s.line, s.column, f"suppression of {', '.join(s.rules)} has no reason; "
                                        "it suppresses nothing until it says why")


RULE = Rule(
    id="L2",
    severity=Severity.ERROR,
    title="bad-suppression",
    why=("An ignore without a reason hides a finding from the next reader; every exception must say "
         "why it is safe."),
    suppressible=False,
)
