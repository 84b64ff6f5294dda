"""The settings table and the verb list as Markdown, derived from `pipelines.settings` and `pipelines.verbs`
(README and runbooks embed them).

`python -m pipelines.docs` prints both; `python -m pipelines.docs --write FILE...` refreshes the blocks
between `<!-- settings:begin -->`/`<!-- settings:end -->` and `<!-- verbs:begin -->`/`<!-- verbs:end -->`
in each file (a file may hold either or both). A test fails when a copy is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.settings import OPTIONS, Kind
from pipelines.verbs import VERB_ROWS, verbs_taking


def settings_table() -> str:
    rows = ["| flag | env | config key | default | verbs | meaning |", "|---|---|---|---|---|---|"]
    for o in OPTIONS:
        flag = f"`{o.flag}/--no-{o.flag[2:]}`" if o.negatable else f"`{o.flag}`"
        if o.multiple:
            flag += " (repeatable)"
        env = ", ".join(f"`{e}`" for e in o.env) or "—"
        key = "—" if o.kind is Kind.SECRET else f"`{o.config_key}`"
        verbs = ", ".join(verbs_taking(o))
        rows.append(f"| {flag} | {env} | {key} | {o.default_text} | {verbs} | {o.doc} |")
    return "\n".join(rows)


def verbs_table() -> str:
    rows = ["| verb | what it does | requires | exit codes |", "|---|---|---|---|"]
    for v in VERB_ROWS:
        required = ", ".join(f"`{o.flag}`" for o in v.options if o.required_for(v.name)) or "—"
        codes = ", ".join(["0", *(str(int(c)) for c in v.exits)])
        extras = "".join(f" `{e.flag}`: {e.doc}" for e in v.extras)
        rows.append(f"| `fleetgate {v.name}` | {v.help}{extras} | {required} | {codes} |")
    return "\n".join(rows)


BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
BLOCKS: dict[str, Callable[[], str]] = {"settings": settings_table, "verbs": verbs_table}


def embed(text: str) -> str:
    found = False
    for name, render in BLOCKS.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            found = True
            block = f"{begin}\n{render()}\n{end}"
            text = pattern.sub(lambda _m: block, text)  # noqa: B023 - used at once, in this iteration
    if not found:
        raise ValueError("no settings or verbs block markers")
    return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"]:
        for name in argv[1:]:
            p = Path(name)
            p.write_text(embed(p.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print(settings_table())
    print()
    print(verbs_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
