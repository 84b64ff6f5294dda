"""G4: the same workflow `name` in two files — their status contexts collide."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, scalar


def check_all(workflows: Sequence[Workflow], ctx: LintContext) -> Iterator[tuple[Workflow, Hit]]:
    first: dict[str, Workflow] = {}
    for wf in workflows:
        node = wf.get("name")
        name = scalar(node)
        if node is None or not name:
            continue
        if name in first:
            yield wf, at(node, f"workflow name {name!r} is also used by {first[name].path}: "
                               "their status contexts collide")
        else:
            first[name] = wf


RULE = Rule(
    id="G4",
    severity=Severity.ERROR,
    title="duplicate-workflow-name",
    why=("Two workflows with one name post the same status contexts: a green one can satisfy a gate "
         "meant for the other."),
    check_all=check_all,
)
