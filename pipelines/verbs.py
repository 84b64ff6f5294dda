"""Every verb, defined once: one `Verb` row each.

The CLI (`pipelines/cli.py`), the Dagger module (`ci/_verbs.py`, generated from this table by
`python -m ci.generate`), `--help`, the README's verb list and the settings table's "verbs" column are
derived from it. A row says what the verb runs (`module:function`, an
`async def run(settings, out, **extras) -> dict`), which setting groups it takes (the settings table
says which of those it requires), its extra arguments and the exit codes it can end with.

Adding a verb is one row here (then `python -m ci.generate` and `python -m pipelines.docs --write
README.md`, which tests insist on).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipelines.errors import ExitCode
from pipelines.settings import OPTIONS, Group, Kind, Option

E = ExitCode
C, G, GT, K, CP, R, TG, T, L, LD, RG, AP, W, N = (
    Group.COMMIT, Group.GITEA, Group.GATES, Group.KILL_SWITCH, Group.CP, Group.ROLLOUT, Group.TAG,
    Group.TENANTS, Group.LEASE, Group.LEDGER, Group.REGISTRY, Group.APPROVAL, Group.WATCH, Group.NOTIFY,
)
DEPLOYING = (C, G, GT, K, CP, R, TG, T, L, LD, AP, W, N)
VerbFunc = Callable[..., Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Extra:
    """An argument of one verb that is not a setting (no env, no file): a flag or a repeatable value."""

    name: str  # the verb function's keyword
    kind: Kind  # Kind.BOOL (a flag, default off), Kind.LIST (repeatable; a list in Dagger) or Kind.STR (optional)
    doc: str

    @property
    def flag(self) -> str:
        # `break_` is `--break` (a Python keyword gets a trailing underscore; Dagger drops it too)
        return "--" + self.name.rstrip("_").replace("_", "-")

    def value(self, raw: Any) -> Any:
        """What the verb function receives, from a click or Dagger argument value."""
        if self.kind is Kind.LIST:
            return tuple(v for v in raw or () if str(v).strip())
        if self.kind is Kind.STR:
            return None if raw is None else str(raw)
        return bool(raw)


@dataclass(frozen=True)
class Verb:
    name: str
    runs: str  # "module:function"
    help: str
    groups: tuple[Group, ...]
    exits: tuple[ExitCode, ...] = (E.FAILED, E.USAGE)
    extras: tuple[Extra, ...] = ()
    writes_ledger: bool = True  # with the ledger group: refuse an unwritable ledger up front
    tag_from_template: bool = True  # with the tag group: an unset --target-tag is --tag-template of --sha

    @property
    def python_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def options(self) -> tuple[Option, ...]:
        return tuple(o for o in OPTIONS if o.group in self.groups)

    def load(self) -> VerbFunc:
        module_name, func_name = self.runs.split(":")
        func: VerbFunc = getattr(importlib.import_module(module_name), func_name)
        return func


ONLY = Extra("only", Kind.LIST, "Verify only these tenant slugs (repeatable).")
REJECT = Extra("reject", Kind.BOOL, "Post failure instead: the paused run stops (exit 1, or rolls back).")
COMMENT = Extra("comment", Kind.STR, "One line shown as the status's description in Gitea.")
BREAK_LEASE = Extra("break_lease", Kind.BOOL, "Emergency: take over another run's lease (recorded in the ledger).")
FLEET = Extra("fleet", Kind.BOOL, "Add the fleet by SHA (CP dry-run listing + /buildinfo).")
BREAK = Extra("break_", Kind.BOOL, "Delete another run's lease (recorded in the ledger); needs --yes.")
YES = Extra("yes", Kind.BOOL, "Confirm --break.")
RUN = Extra("run", Kind.STR, "Run id (or a unique prefix) to report; default: the last run.")
FORMAT = Extra("format", Kind.STR, "text (default), md (the step summary) or html (one self-contained page).")

VERB_ROWS: tuple[Verb, ...] = (
    Verb("plan", "pipelines.plan:run", "Resolve settings, run every preflight, print the plan as JSON.",
         DEPLOYING, (E.FAILED, E.USAGE, E.DISABLED), writes_ledger=False),
    Verb("wait-gates", "pipelines.gates:run",
         "Block until every required status context on the SHA is success.", (C, G, GT)),
    Verb("assert-enabled", "pipelines.killswitch:run", "Live re-read of the kill switch (exit 3 when engaged).",
         (G, K), (E.FAILED, E.USAGE, E.DISABLED)),
    Verb("rollout", "pipelines.rollout:run", "Lease, canary, then verified waves through the control plane.",
         DEPLOYING, (E.FAILED, E.USAGE, E.DISABLED, E.HALTED_MIXED, E.STOOD_DOWN)),
    Verb("verify", "pipelines.verify:run",
         "Read every tenant's /buildinfo and compare with --sha (drift report).", (C, CP, T), extras=(ONLY,)),
    Verb("deploy-production", "pipelines.deploy:deploy_production",
         "The main job: plan, wait-gates, assert-enabled, rollout, final verify.",
         DEPLOYING, (E.FAILED, E.USAGE, E.DISABLED, E.HALTED_MIXED, E.STOOD_DOWN)),
    # redeploy keeps an unset tag visible: the Gitea variable PROD_MANUAL_REDEPLOY_TARGET_TAG may supply
    # it before the template does (pipelines/deploy.py: manual_target_tag).
    Verb("redeploy", "pipelines.deploy:redeploy", "Manual redeploy / rollback to an explicit known-good tag and SHA.",
         (C, G, CP, R, TG, T, L, LD, AP, W, N), (E.FAILED, E.USAGE, E.HALTED_MIXED), extras=(BREAK_LEASE,),
         tag_from_template=False),
    Verb("promote", "pipelines.registry:run",
         "Re-point a moving tag to the verified image (after a verified rollout).", (C, CP, TG, T, LD, RG)),
    Verb("approve", "pipelines.approve:run",
         "Approve (or --reject) a run paused after its canary: posts the --approval-context status on --sha.",
         (C, G, AP), extras=(REJECT, COMMENT)),
    Verb("status", "pipelines.status:run",
         "What is going on now: the lease, the kill switch, the branch head and its gates, the last run.",
         (G, GT, K, CP, TG, T, L, LD), extras=(FLEET,), writes_ledger=False),
    Verb("lease", "pipelines.leasecmd:run",
         "Show the deploy lease; --break --yes deletes another run's lease (recorded in the ledger).",
         (G, L, LD), extras=(BREAK, YES)),
    Verb("report", "pipelines.report:run",
         "One run of the ledger (default: the last) as text, Markdown or one self-contained HTML page.",
         (LD,), extras=(RUN, FORMAT), writes_ledger=False),
)
VERBS: dict[str, Verb] = {v.name: v for v in VERB_ROWS}


def verbs_taking(o: Option) -> tuple[str, ...]:
    return tuple(v.name for v in VERB_ROWS if o.group in v.groups)


def suggestion(name: str, known: list[str]) -> str:
    """`; did you mean X?` for a mistyped verb, or ""."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""
