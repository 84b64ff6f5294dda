"""L1: a file that cannot be read as a workflow (invalid YAML, not a mapping, not UTF-8).

Reported by the engine from the parser's own position; it cannot be disabled or suppressed —
an unreadable file is never a pass.
"""

from __future__ import annotations

from pipelines.lint.model import Rule, Severity

RULE = Rule(
    id="L1",
    severity=Severity.ERROR,
    title="unreadable-workflow",
    why=("A file the linter cannot read is a file Gitea cannot run, and a gate that skipped it "
         "would pass blind."),
    suppressible=False,
)
