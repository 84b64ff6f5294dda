"""Find the files, parse each once, run the rules, apply suppressions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError
from pipelines.lint.config import LintConfig
from pipelines.lint.model import Finding, Hit, LintContext, Rule, Severity
from pipelines.lint.rules import ALL_RULES, BY_ID
from pipelines.lint.rules.l1_unreadable import RULE as L1
from pipelines.lint.rules.l2_bad_suppression import RULE as L2
from pipelines.lint.rules.l2_bad_suppression import check_suppressions
from pipelines.lint.suppress import covering, find_suppressions
from pipelines.lint.workflow import ParseError, Workflow, parse

DEFAULT_DIR = Path(".gitea/workflows")
SUFFIXES = (".yml", ".yaml")
KNOWN_RULES = frozenset(BY_ID)
UNDISABLEABLE = frozenset({L1.id})


@dataclass
class Report:
    files: list[str]
    findings: list[Finding] = field(default_factory=list)
    production: list[str] = field(default_factory=list)  # files detected as production deploys

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)


def parse_gitea_version(text: str) -> tuple[int, int]:
    parts = text.strip().split(".")
    try:
        if len(parts) < 2 or len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise ValueError
        version = (int(parts[0]), int(parts[1]))
    except ValueError:
        raise UsageError(f"--gitea-version: expected MAJOR.MINOR like 1.22, got {text[:40]!r}") from None
    if version < (1, 19):
        raise UsageError(f"--gitea-version: Gitea Actions exists from 1.19 on, got {text[:40]!r}")
    return version


def collect_files(paths: Sequence[Path], *, allow_empty: bool) -> list[Path]:
    """The workflow files to lint, sorted per folder; a missing or empty folder is a usage error."""
    files: list[Path] = []
    for p in paths or (DEFAULT_DIR,):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file())
            if not found and not allow_empty:
                raise UsageError(f"{p}: no *.yml or *.yaml workflow files "
                                 "(pass --allow-empty if that is expected)")
            files.extend(found)
        elif p.is_file():
            if p.suffix not in SUFFIXES:
                raise UsageError(f"{p}: not a .yml or .yaml file")
            files.append(p)
        else:
            raise UsageError(f"{p}: no such folder")
    unique: dict[Path, None] = dict.fromkeys(files)  # a file named twice is linted once
    return list(unique)


def detect_production(wf: Workflow, config: LintConfig) -> tuple[int, int] | None:
    """Where the first production marker is, when every pattern of some entry matches."""
    for group in config.production:
        matches = [p.search(wf.text) for p in group]
        if all(matches):
            first = min(m.start() for m in matches if m is not None)
            return wf.position_of_offset(first)
    return None


def _read(path: Path) -> tuple[str | None, Hit | None]:
    try:
        return path.read_bytes().decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, Hit(1, 1, f"not UTF-8 (byte {exc.start}): {exc.reason}")
    except OSError as exc:
        return None, Hit(1, 1, f"cannot read: {exc.strerror or exc}")


def lint_files(files: Sequence[Path], config: LintConfig | None = None, *,
               gitea_version: tuple[int, int] = (1, 22), loader: Any = None) -> Report:
    config = config or LintConfig()
    ctx = LintContext(gitea_version=gitea_version)
    rules = [r for r in ALL_RULES if r.id not in config.disable]
    report = Report(files=[str(f) for f in files])
    workflows: list[Workflow] = []
    lines_of: dict[str, list[str]] = {}
    raw: list[Finding] = []
    for path in files:
        name = str(path)
        text, problem = _read(path)
        if text is None:
            raw.append(L1.finding(name, problem or Hit(1, 1, "cannot read")))
            continue
        try:
            wf = parse(name, text, loader)
        except ParseError as exc:
            raw.append(L1.finding(name, Hit(exc.line, exc.column, exc.message)))
            lines_of[name] = text.splitlines()
            continue
        wf.production_at = detect_production(wf, config)
        if wf.production_at is not None:
            report.production.append(name)
        workflows.append(wf)
        lines_of[name] = wf.lines
        for rule in rules:
            if rule.check is None or (rule.production_only and wf.production_at is None):
                continue
            raw.extend(rule.finding(name, hit) for hit in rule.check(wf, ctx))
    for rule in rules:
        if rule.check_all is not None:
            raw.extend(rule.finding(wf.path, hit) for wf, hit in rule.check_all(workflows, ctx))
    report.findings = sorted(_apply_suppressions(raw, lines_of, rules), key=Finding.sort_key)
    return report


def _apply_suppressions(raw: list[Finding], lines_of: dict[str, list[str]],
                        rules: list[Rule]) -> list[Finding]:
    by_file: dict[str, list[Finding]] = {}
    for f in raw:
        by_file.setdefault(f.file, []).append(f)
    kept: list[Finding] = []
    l2_on = any(r.id == L2.id for r in rules)
    for name, lines in lines_of.items():
        suppressions = find_suppressions(lines)
        cover = covering(suppressions)
        for f in by_file.pop(name, []):
            if BY_ID[f.rule].suppressible and f.rule in cover.get(f.line, ()):
                continue
            kept.append(f)
        if l2_on:
            kept.extend(L2.finding(name, hit) for hit in check_suppressions(suppressions, KNOWN_RULES))
    for leftovers in by_file.values():  # files that could not be read at all
        kept.extend(leftovers)
    return kept
