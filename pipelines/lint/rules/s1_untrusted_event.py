"""S1: untrusted `${{ github.event.* }}` fields interpolated into `run:` (script injection)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, expressions

# Fields anyone who opens an issue, a PR, a comment or a branch controls (after the GitHub
# Security Lab list): titles, bodies, messages, labels, branch names, author names and emails.
_UNTRUSTED_RE = re.compile(
    r"\bgithub\s*\.\s*head_ref\b"
    r"|\bgithub\s*\.\s*event\b[\w.\[\]'\"*-]*?"
    r"(?:\b(?:title|body|message|label|page_name|default_branch|head_branch|head_ref)\b"
    r"|\b(?:author|committer|pusher)\b[.\[\]'\"]+(?:name|email)\b"
    r"|\bhead\b[.\[\]'\"]+ref\b)"
)


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for step, node in wf.run_scripts:
        if "${{" not in node.value:
            continue
        bad = {m.group(0) for m in expressions(node.value) if _UNTRUSTED_RE.search(m.group(0))}
        if not bad:
            continue
        pattern = re.compile("|".join(re.escape(b) for b in sorted(bad, key=len, reverse=True)))
        for line, col, m in wf.find(node, pattern):
            field = _UNTRUSTED_RE.search(m.group(0))
            shown = field.group(0) if field else m.group(0)
            yield Hit(line, col, f"jobs.{step.job_id}.steps[{step.index}]: untrusted `{shown}` is pasted "
                                 "into the script (shell injection); pass it through `env:` as \"$NAME\"")


RULE = Rule(
    id="S1",
    severity=Severity.ERROR,
    title="untrusted-input-in-run",
    why="Text from issues, PRs, comments and branch names becomes shell code when pasted into a script.",
    check=check,
)
