"""P1: a production deploy relying on `concurrency` (cancel-in-progress: false) for serialisation."""

from __future__ import annotations

from collections.abc import Iterator

from yaml.nodes import Node, ScalarNode

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, get_item, is_true

_MESSAGE = ("{where} serialises production deploys through `concurrency` (cancel-in-progress: false), "
            "which Gitea ignores: two deploys can run at once — serialise with the fleetgate lease")


def _check_one(where: str, value: Node) -> Iterator[Hit]:
    if isinstance(value, ScalarNode):  # `concurrency: group` queues like cancel-in-progress: false
        if value.value:
            yield at(value, _MESSAGE.format(where=where))
        return
    pair = get_item(value, "cancel-in-progress")
    if pair is None:
        yield at(value, _MESSAGE.format(where=where))
    elif not is_true(pair[1]):
        yield at(pair[1], _MESSAGE.format(where=where))


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    pair = get_item(wf.root, "concurrency")
    if pair is not None:
        yield from _check_one("concurrency", pair[1])
    for job in wf.jobs:
        pair = get_item(job.node, "concurrency")
        if pair is not None:
            yield from _check_one(f"jobs.{job.id}.concurrency", pair[1])


RULE = Rule(
    id="P1",
    severity=Severity.ERROR,
    title="concurrency-serialisation",
    why=("Gitea 1.22 ignores `concurrency`, so queued production deploys run in parallel; only the "
         "lease serialises."),
    check=check,
    production_only=True,
)
