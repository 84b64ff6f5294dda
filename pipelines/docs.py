"""The settings table as Markdown, derived from `pipelines.settings` (README and runbooks embed it).

`python -m pipelines.docs` prints it; `python -m pipelines.docs --write FILE...` refreshes the block between
`<!-- settings:begin -->` and `<!-- settings:end -->` in each file. A test fails when a copy is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pipelines.settings import OPTIONS, VERB_GROUPS, Kind

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def settings_table() -> str:
    rows = ["| flag | env | config key | default | verbs | meaning |", "|---|---|---|---|---|---|"]
    for o in OPTIONS:
        flag = f"`{o.flag}/--no-{o.flag[2:]}`" if o.negatable else f"`{o.flag}`"
        if o.multiple:
            flag += " (repeatable)"
        env = ", ".join(f"`{e}`" for e in o.env) or "—"
        key = "—" if o.kind is Kind.SECRET else f"`{o.config_key}`"
        verbs = ", ".join(v for v, groups in VERB_GROUPS.items() if o.group in groups)
        rows.append(f"| {flag} | {env} | {key} | {o.default_text} | {verbs} | {o.doc} |")
    return "\n".join(rows)


def embed(text: str) -> str:
    block = f"{BEGIN}\n{settings_table()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError("no settings block markers")
    return pattern.sub(lambda _m: block, text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"]:
        for name in argv[1:]:
            p = Path(name)
            p.write_text(embed(p.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print(settings_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
