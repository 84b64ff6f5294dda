"""The four output formats: human, json, sarif (2.1.0) and github (workflow commands)."""

from __future__ import annotations

from typing import Any

from pipelines import __version__
from pipelines.lint.engine import Report
from pipelines.lint.model import Finding, Rule, Severity
from pipelines.lint.rules import BY_ID

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_DOCS = "runbooks/sop-production-cicd.md"


def human(report: Report) -> str:
    return "".join(f"{f.file}:{f.line}:{f.column}: {f.severity.value}[{f.rule}] {f.message}\n"
                   for f in report.findings)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(report: Report) -> str:
    text = (f"lint-workflows: {_count(len(report.files), 'file')}, {_count(report.errors, 'error')}, "
            f"{_count(report.warnings, 'warning')}")
    if report.production:
        text += f"; production deploys: {', '.join(report.production)}"
    return text


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"rule": f.rule, "severity": f.severity.value, "file": f.file, "line": f.line, "column": f.column,
            "message": f.message, "why": f.why}


def as_json(report: Report) -> dict[str, Any]:
    return {
        "ok": report.errors == 0,
        "files": report.files,
        "production": report.production,
        "errors": report.errors,
        "warnings": report.warnings,
        "findings": [_finding_json(f) for f in report.findings],
    }


def _sarif_rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.title,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.why},
        "help": {"text": f"{rule.why} See {_DOCS} ({rule.id})."},
        "defaultConfiguration": {"level": rule.severity.value},
        "properties": {"production_only": rule.production_only},
    }


def _uri(path: str) -> str:
    return path.replace("\\", "/").removeprefix("./")


def as_sarif(report: Report, rules: tuple[Rule, ...]) -> dict[str, Any]:
    index = {r.id: i for i, r in enumerate(rules)}
    results = [
        {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": "error" if f.severity is Severity.ERROR else "warning",
            "message": {"text": f.message},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": _uri(f.file)},
                "region": {"startLine": f.line, "startColumn": f.column},
            }}],
        }
        for f in report.findings
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "fleetgate-lint-workflows", "version": __version__,
                                "rules": [_sarif_rule(r) for r in rules]}},
            "results": results,
        }],
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(report: Report) -> str:
    lines = []
    for f in report.findings:
        title = _escape_property(f"{f.rule} {BY_ID[f.rule].title}")
        lines.append(f"::{f.severity.value} file={_escape_property(f.file)},line={f.line},col={f.column},"
                     f"title={title}::{_escape_data(f.message)}\n")
    return "".join(lines)
