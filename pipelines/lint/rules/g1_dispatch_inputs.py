"""G1: `on.workflow_dispatch.inputs` — Gitea 1.22 ignores the whole file."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, get_item


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for trigger in wf.triggers:
        if trigger.name != "workflow_dispatch":
            continue
        pair = get_item(trigger.config, "inputs")
        if pair is not None:
            yield at(pair[0], "on.workflow_dispatch.inputs: Gitea 1.22 ignores this whole workflow; "
                              "pass inputs as repository variables or a manual-target variable instead")


RULE = Rule(
    id="G1",
    severity=Severity.ERROR,
    title="workflow-dispatch-inputs",
    why=("Gitea 1.22 does not load a workflow whose workflow_dispatch declares inputs: the file "
         "silently never runs."),
    check=check,
)
