"""P6: `${{ secrets.* }}` interpolated into `run:` text instead of passed through `env`."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow

_SECRET_EXPR_RE = re.compile(r"\$\{\{(?:(?!\}\}).)*?\bsecrets\s*(?:\.|\[)(?:(?!\}\}).)*\}\}")


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for step, node in wf.run_scripts:
        if "secrets" not in node.value:
            continue
        for line, col, _ in wf.find(node, _SECRET_EXPR_RE):
            yield Hit(line, col, f"jobs.{step.job_id}.steps[{step.index}]: a secret is pasted into the "
                                 "script text; pass it through `env:` and use \"$NAME\"")


RULE = Rule(
    id="P6",
    severity=Severity.ERROR,
    title="secret-in-run",
    why=("A secret pasted into script text lands in the generated script file and in xtrace output, "
         "unmasked by quoting."),
    check=check,
    production_only=True,
)
