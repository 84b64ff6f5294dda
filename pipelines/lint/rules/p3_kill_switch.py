"""P3: a production deploy that never consults the kill switch or the manual target."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow

_MARKERS = ("PROD_AUTO_DEPLOY_DISABLED", "PROD_MANUAL_REDEPLOY_TARGET_TAG")


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    # Scalars only (keys and values): a marker in a comment wires nothing.
    if any(marker in node.value for node in wf.scalars for marker in _MARKERS):
        return
    line, col = wf.production_at or (1, 1)
    yield Hit(line, col, "production deploy without PROD_AUTO_DEPLOY_DISABLED (kill switch) or "
                         "PROD_MANUAL_REDEPLOY_TARGET_TAG (manual target): only a commit can stop it")


RULE = Rule(
    id="P3",
    severity=Severity.ERROR,
    title="no-kill-switch",
    why=("A production deploy must be stoppable from the outside (kill switch) or pinned to an "
         "explicit manual target."),
    check=check,
    production_only=True,
)
