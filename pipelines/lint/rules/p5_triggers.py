"""P5: a production deploy reachable from any trigger but push, schedule or workflow_dispatch."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at

ALLOWED = frozenset({"push", "schedule", "workflow_dispatch"})


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for trigger in wf.triggers:
        if trigger.name in ALLOWED:
            continue
        if trigger.name in ("pull_request", "pull_request_target"):
            why = "anyone who can open a pull request could start a production deploy"
        else:
            why = "only push, schedule and workflow_dispatch may start a production deploy"
        yield at(trigger.node, f"production deploy triggered by `{trigger.name}`: {why}")


RULE = Rule(
    id="P5",
    severity=Severity.ERROR,
    title="production-trigger",
    why=("Production deploys start only from main (push), a schedule or a person "
         "(workflow_dispatch), never from a PR."),
    check=check,
    production_only=True,
)
