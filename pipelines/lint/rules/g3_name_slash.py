"""G3: a workflow `name` containing `/` — breaks `<workflow> / <job> (<event>)` status contexts."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, scalar


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    node = wf.get("name")
    name = scalar(node)
    if node is not None and name is not None and "/" in name:
        yield at(node, f"workflow name {name!r} contains '/': its status contexts "
                       "`<workflow> / <job> (<event>)` can no longer be split or matched exactly")


RULE = Rule(
    id="G3",
    severity=Severity.ERROR,
    title="workflow-name-slash",
    why=("Gitea status contexts are `<workflow> / <job> (<event>)`; a '/' in the name makes "
         "required contexts ambiguous."),
    check=check,
)
