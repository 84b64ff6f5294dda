"""G2: `on: workflow_run` in any form — Gitea never fires it."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for trigger in wf.triggers:
        if trigger.name == "workflow_run":
            yield at(trigger.node, "on: workflow_run never fires on Gitea; chain the work as jobs with "
                                   "`needs:` or gate on commit statuses")


RULE = Rule(
    id="G2",
    severity=Severity.ERROR,
    title="workflow-run-trigger",
    why=("Gitea Actions has no workflow_run event: a workflow triggered only by it never runs, and "
         "nothing says so."),
    check=check,
)
