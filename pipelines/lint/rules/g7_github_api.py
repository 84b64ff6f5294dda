"""G7 (warning): GitHub API URLs with no top-level `env.GITHUB_SERVER_URL`."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, get_item

# The whole URL, scheme included when there is one, so the finding points at its start.
_GITHUB_API_RE = re.compile(
    r"(?:https?://)?\bapi\.github\.com\b[^\s'\"]*"
    r"|(?:https?://)?\bgithub\.com/(?:[^\s'\"/]+/)*api(?=[/\s'\"]|$)[^\s'\"]*"
)


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    if get_item(wf.get("env"), "GITHUB_SERVER_URL") is not None:
        return
    for node in wf.scalars:
        if "github.com" not in node.value:  # cheap pre-filter
            continue
        for line, col, m in wf.find(node, _GITHUB_API_RE):
            yield Hit(line, col, f"GitHub API URL {m.group(0)!r} on a Gitea runner: derive it from "
                                 "GITHUB_SERVER_URL / github.api_url, or set env.GITHUB_SERVER_URL")


RULE = Rule(
    id="G7",
    severity=Severity.WARNING,
    title="github-api-url",
    why=("On Gitea the job talks to github.com, not to its own server, unless GITHUB_SERVER_URL "
         "says where to go."),
    check=check,
)
