"""G6: duplicate mapping keys — YAML silently keeps the last one."""

from __future__ import annotations

from collections.abc import Iterator

from yaml.nodes import Node

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, key_text


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for node in wf.mappings:
        seen: dict[str, Node] = {}
        for key, _ in node.value:
            text = key_text(key)
            if text is None or text == "<<":  # merge keys may repeat by design
                continue
            if text in seen:
                first = seen[text].start_mark
                yield at(key, f"duplicate key {text!r} (first at {first.line + 1}:{first.column + 1}); "
                              "YAML keeps only the last one")
            else:
                seen[text] = key


RULE = Rule(
    id="G6",
    severity=Severity.ERROR,
    title="duplicate-key",
    why="A repeated key silently replaces the first: a step, env value or trigger vanishes without an error.",
    check=check,
)
