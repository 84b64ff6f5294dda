"""What a rule is and what it reports."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pipelines.lint.workflow import Workflow


class Severity(Enum):
    ERROR = "error"  # fatal: the gate fails (exit 1)
    WARNING = "warning"  # reported; exit 0 when nothing worse is found


class Hit(NamedTuple):
    """A rule's raw verdict inside one file: 1-based line and column, and what is wrong."""

    line: int
    column: int
    message: str


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    file: str
    line: int
    column: int
    message: str
    why: str

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.rule)


@dataclass(frozen=True)
class LintContext:
    """What a check may consult besides the file: the target Gitea and the project's config."""

    gitea_version: tuple[int, int] = (1, 22)


FileCheck = Callable[["Workflow", LintContext], Iterable[Hit]]
ProjectCheck = Callable[[Sequence["Workflow"], LintContext], Iterable[tuple["Workflow", Hit]]]


@dataclass(frozen=True)
class Rule:
    """One rule: an id, a severity, a short title, a one-line why, and the check.

    `check` looks at one workflow; `check_all` (rare) compares workflows with each other.
    `production_only` rules run only on workflows detected as production deploys.
    """

    id: str
    severity: Severity
    title: str
    why: str
    check: FileCheck | None = None
    check_all: ProjectCheck | None = None
    production_only: bool = False
    suppressible: bool = True

    def finding(self, file: str, hit: Hit) -> Finding:
        return Finding(self.id, self.severity, file, hit.line, hit.column, hit.message, self.why)
