"""P4: `continue-on-error: true` on a production job or step."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, get_item, is_expression, is_true


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    targets = [(f"jobs.{job.id}", job.node) for job in wf.jobs]
    targets += [(f"jobs.{step.job_id}.steps[{step.index}]", step.node) for step in wf.steps]
    for where, node in targets:
        pair = get_item(node, "continue-on-error")
        if pair is None:
            continue
        if is_true(pair[1]):
            yield at(pair[1], f"{where}: continue-on-error: true lets a failed production step pass as green")
        elif is_expression(pair[1]):
            yield at(pair[1], f"{where}: continue-on-error from an expression may be true; "
                              "a production step must fail the job")


RULE = Rule(
    id="P4",
    severity=Severity.ERROR,
    title="production-continue-on-error",
    why=("Fail-closed: a production deploy that swallows a failure reports success for a fleet it "
         "did not verify."),
    check=check,
    production_only=True,
)
