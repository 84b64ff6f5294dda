"""S2: `pull_request_target` that checks out the pull request's head (runs untrusted code with secrets)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from yaml.nodes import ScalarNode

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, get, get_item, scalar

_HEAD_REF_RE = re.compile(
    r"github\s*\.\s*event\s*\.\s*pull_request\s*\.\s*head\b|github\s*\.\s*head_ref\b"
    r"|refs/pull/|\bpull/\$\{\{[^}]*\}\}/(?:head|merge)\b|github\s*\.\s*event\s*\.\s*number\b"
)
_GIT_FETCH_RE = re.compile(r"\bgit\s+(?:fetch|checkout|switch|pull|worktree\s+add)\b[^\n]*")


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    if not any(t.name == "pull_request_target" for t in wf.triggers):
        return
    for step in wf.steps:
        uses = scalar(step.get("uses")) or ""
        if uses.split("@", 1)[0].rstrip("/").endswith("actions/checkout"):
            with_node = step.get("with")
            for key in ("ref", "repository"):
                pair = get_item(with_node, key)
                value = scalar(pair[1]) if pair else None
                if pair is not None and value and _HEAD_REF_RE.search(value):
                    yield at(pair[1], f"pull_request_target checks out the PR head (with.{key}): untrusted "
                                      "code runs with the base repository's secrets and write token")
        run = get(step.node, "run")
        if isinstance(run, ScalarNode) and _HEAD_REF_RE.search(run.value):
            for line, col, m in wf.find(run, _GIT_FETCH_RE):
                if _HEAD_REF_RE.search(m.group(0)):
                    yield Hit(line, col, "pull_request_target fetches the PR head in a script: untrusted "
                                         "code runs with the base repository's secrets and write token")


RULE = Rule(
    id="S2",
    severity=Severity.ERROR,
    title="pull-request-target-checkout",
    why=("pull_request_target runs with secrets and a write token; checking out the PR head hands "
         "both to the PR author."),
    check=check,
)
