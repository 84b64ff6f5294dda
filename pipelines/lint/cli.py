"""`fleetgate lint-workflows [DIR ...]`: exit 0 clean or warnings only, 1 any error, 2 usage.

Findings go to stdout in the chosen format; the one-line summary and usage errors go to stderr,
so `--format json|sarif` output can be piped as it is.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.errors import ExitCode, UsageError

FORMATS = ("human", "json", "sarif", "github")
DEFAULT_GITEA_VERSION = "1.22"  # the CLI's and the Dagger function's default too


def main(dirs: Sequence[Path], *, fmt: str = "human", gitea_version: str = DEFAULT_GITEA_VERSION,
         allow_empty: bool = False, config_path: Path | None = None) -> int:
    from pipelines.lint import engine, report
    from pipelines.lint.config import load_lint_config
    from pipelines.lint.rules import ALL_RULES

    try:
        if fmt not in FORMATS:
            raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        version = engine.parse_gitea_version(gitea_version)
        config = load_lint_config(config_path, engine.KNOWN_RULES, engine.UNDISABLEABLE)
        files = engine.collect_files(list(dirs), allow_empty=allow_empty)
    except UsageError as exc:
        print(f"fleetgate lint-workflows: {exc.message}", file=sys.stderr)
        return int(ExitCode.USAGE)
    # Every composed tree stays alive until the report is written, so the cyclic collector
    # would only re-scan live nodes again and again (a third of the parse time): pause it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = engine.lint_files(files, config, gitea_version=version)
    finally:
        if gc_was_enabled:
            gc.enable()
    if fmt == "human":
        sys.stdout.write(report.human(result))
    elif fmt == "github":
        sys.stdout.write(report.github(result))
    else:
        import json  # only for the machine formats

        payload = report.as_json(result) if fmt == "json" else report.as_sarif(result, ALL_RULES)
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()
    print(report.summary(result), file=sys.stderr)
    return int(ExitCode.FAILED) if result.errors else int(ExitCode.OK)
