"""Inline suppressions: `# fleetgate: ignore[ID] reason` on the finding's line or the line above.

A suppression must say why. One without a reason, or naming no known rule, suppresses nothing
and is itself a finding (L2), so a bare `ignore` can never quietly switch a gate off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SUPPRESSION_RE = re.compile(r"#\s*fleetgate:\s*ignore\b(?:\[([^\]]*)\])?(.*)$")


@dataclass(frozen=True)
class Suppression:
    line: int  # 1-based line of the comment
    column: int  # 1-based column of its `#`
    rules: tuple[str, ...]
    reason: str


def find_suppressions(lines: list[str]) -> list[Suppression]:
    out: list[Suppression] = []
    for n, text in enumerate(lines):
        if "fleetgate:" not in text:  # cheap pre-filter: most lines hold no suppression
            continue
        m = _SUPPRESSION_RE.search(text)
        if m is None:
            continue
        ids = tuple(r.strip().upper() for r in (m.group(1) or "").split(",") if r.strip())
        out.append(Suppression(n + 1, m.start() + 1, ids, m.group(2).strip()))
    return out


def covering(suppressions: list[Suppression]) -> dict[int, set[str]]:
    """line -> rule ids suppressed there (valid suppressions only: with ids and a reason)."""
    cover: dict[int, set[str]] = {}
    for s in suppressions:
        if not s.rules or not s.reason:
            continue
        for line in (s.line, s.line + 1):
            cover.setdefault(line, set()).update(s.rules)
    return cover
