"""The `[lint]` table of `fleetgate.toml`: rules to disable and what marks a production deploy.

```toml
[lint]
disable = ["G8"]                  # rule ids; L1 (unreadable YAML) cannot be disabled
production_patterns = [           # replaces the defaults; a string is one regex,
  "my-deploy-script --prod",      # a list is several that must all match the file
  ["https://cp\\.example", "/redeploy"],
]
```
A workflow is a production deploy when any entry matches its text. Anything malformed here is
a usage error (exit 2): a silently ignored config would be a silently weaker gate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError
from pipelines.urlguard import PRODUCTION_CP_URL

CONFIG_FILE = "fleetgate.toml"
REDEPLOY_PATH = "/cp/admin/tenants/redeploy-fleet"

# The production deploy verbs, run by the console script or the Dagger module. A backslash
# line continuation may sit between the command and its verb.
_DEPLOY_VERBS = (
    r"\b(?:fleetgate|dagger)\b(?:[^\n]|\\\n)*?"
    r"(?<![\w-])(?:deploy-production|deploy_production|publish-and-deploy|publish_and_deploy|redeploy)(?![\w-])"
)
DEFAULT_PRODUCTION_PATTERNS: tuple[tuple[str, ...], ...] = (
    (re.escape(PRODUCTION_CP_URL), re.escape(REDEPLOY_PATH)),
    (_DEPLOY_VERBS,),
)
_KNOWN_KEYS = frozenset({"disable", "production_patterns"})


@dataclass(frozen=True)
class LintConfig:
    disable: frozenset[str] = frozenset()
    # Each entry: regexes that must all match for the file to be a production deploy.
    production: tuple[tuple[re.Pattern[str], ...], ...] = field(
        default_factory=lambda: compile_patterns(DEFAULT_PRODUCTION_PATTERNS, "defaults"))


def compile_patterns(entries: Sequence[Sequence[str]], where: str) -> tuple[tuple[re.Pattern[str], ...], ...]:
    out: list[tuple[re.Pattern[str], ...]] = []
    for group in entries:
        compiled: list[re.Pattern[str]] = []
        for pattern in group:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise UsageError(f"{where}: bad production pattern {pattern!r}: {exc}") from None
        out.append(tuple(compiled))
    return tuple(out)


def _as_groups(value: Any, where: str) -> list[list[str]]:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: production_patterns must be a non-empty list of regexes "
                         "(or lists of them)")
    groups: list[list[str]] = []
    for entry in value:
        group = [entry] if isinstance(entry, str) else entry
        if not isinstance(group, list) or not group or not all(isinstance(p, str) and p for p in group):
            raise UsageError(f"{where}: each production pattern is a regex or a non-empty list of regexes")
        groups.append(group)
    return groups


def load_lint_config(path: Path | None, known_rules: frozenset[str],
                     undisableable: frozenset[str]) -> LintConfig:
    """Read `[lint]` from `path`, or from ./fleetgate.toml when present; defaults otherwise."""
    explicit = path is not None
    p = path if path is not None else Path(CONFIG_FILE)
    if not p.is_file():
        if explicit:
            raise UsageError(f"--config: no such file {str(p)!r}")
        return LintConfig()
    import tomllib  # only when there is a file to read: keeps the common path light

    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{p}: not valid TOML: {exc}") from None
    table = data.get("lint", {})
    where = f"{p} [lint]"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: must be a table")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_KEYS))})")
    disable_raw = table.get("disable", [])
    if not isinstance(disable_raw, list) or not all(isinstance(r, str) for r in disable_raw):
        raise UsageError(f"{where}: disable must be a list of rule ids")
    disable = frozenset(r.strip().upper() for r in disable_raw)
    for rule_id in sorted(disable):
        if rule_id not in known_rules:
            raise UsageError(f"{where}: unknown rule {rule_id!r} in disable")
        if rule_id in undisableable:
            raise UsageError(f"{where}: {rule_id} cannot be disabled")
    if "production_patterns" not in table:
        return LintConfig(disable=disable)
    return LintConfig(disable=disable,
                      production=compile_patterns(_as_groups(table["production_patterns"], where), where))
