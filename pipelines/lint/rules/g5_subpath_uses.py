"""G5: `uses: owner/repo/path@ref` — sub-path actions resolve to GitHub and 404 on Gitea."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Workflow, at, scalar

# owner/repo/sub/path@ref; local (./, ../), docker:// and absolute URLs are resolved differently.
_SUBPATH_RE = re.compile(r"^[^/@\s]+/[^/@\s]+/[^@\s]+@\S+$")
_FINE_PREFIXES = ("./", "../", "docker://", "https://", "http://")


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for step in wf.steps:
        node = step.get("uses")
        ref = scalar(node)
        if node is None or ref is None:
            continue
        ref = ref.strip()
        if ref.startswith(_FINE_PREFIXES):
            continue
        if _SUBPATH_RE.match(ref):
            yield at(node, f"uses: {ref!r} is a sub-path action; Gitea resolves it against GitHub and "
                           "fails — use owner/repo@ref, a local ./path, or a full https:// URL")


RULE = Rule(
    id="G5",
    severity=Severity.ERROR,
    title="subpath-action",
    why=("Gitea resolves `owner/repo/path@ref` through its default actions URL (GitHub) and the job "
         "fails with a 404."),
    check=check,
)
