"""G8 (warning): keys the target Gitea ignores, so nothing may rely on them.

Version table from Gitea's "Compared to GitHub Actions" pages (docs.gitea.com/<version>/usage/
actions/comparison), read for 1.20, 1.21, 1.22, 1.25, 1.26 and 1.27. Assumed, not read: 1.23
and 1.24 match 1.25 (run-name honoured, concurrency and permissions still ignored). Versions
older than the table use its first row; newer ones its last.
"""

from __future__ import annotations

from collections.abc import Iterator

from yaml.nodes import MappingNode, SequenceNode

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, get_item

_ALL = frozenset({"concurrency", "run-name", "permissions", "timeout-minutes", "continue-on-error",
                  "environment", "complex-runs-on"})
# (first version it applies to, keys ignored from then on), newest last.
IGNORED_BY_VERSION: tuple[tuple[tuple[int, int], frozenset[str]], ...] = (
    ((1, 19), _ALL),
    ((1, 23), _ALL - {"run-name"}),
    ((1, 26), _ALL - {"run-name", "concurrency", "permissions"}),
    ((1, 27), frozenset({"environment", "complex-runs-on"})),
)
_WORKFLOW_KEYS = ("concurrency", "run-name", "permissions")
_JOB_KEYS = ("concurrency", "permissions", "timeout-minutes", "continue-on-error", "environment")


def ignored_keys(version: tuple[int, int]) -> frozenset[str]:
    keys = IGNORED_BY_VERSION[0][1]
    for since, row in IGNORED_BY_VERSION:
        if version >= since:
            keys = row
    return keys


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    ignored = ignored_keys(ctx.gitea_version)
    shown = f"{ctx.gitea_version[0]}.{ctx.gitea_version[1]}"
    for key in _WORKFLOW_KEYS:
        pair = get_item(wf.root, key)
        if key in ignored and pair is not None:
            yield at(pair[0], f"`{key}` is ignored by Gitea {shown}; nothing may rely on it")
    for job in wf.jobs:
        for key in _JOB_KEYS:
            pair = get_item(job.node, key)
            if key in ignored and pair is not None:
                yield at(pair[0], f"jobs.{job.id}.{key} is ignored by Gitea {shown}; nothing may rely on it")
        runs_on = get_item(job.node, "runs-on")
        if "complex-runs-on" in ignored and runs_on is not None:
            value = runs_on[1]
            if isinstance(value, MappingNode) or (isinstance(value, SequenceNode) and len(value.value) > 1):
                yield at(runs_on[0], f"jobs.{job.id}.runs-on: Gitea {shown} matches only `runs-on: label` or "
                                     "`runs-on: [label]`; groups and label sets are ignored")


RULE = Rule(
    id="G8",
    severity=Severity.WARNING,
    title="ignored-by-gitea",
    why=("Gitea accepts these keys and ignores them: a timeout, a concurrency group or a permission "
         "that never applies."),
    check=check,
)
