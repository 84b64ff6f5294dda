"""The Markdown step summary: appended to `$GITHUB_STEP_SUMMARY` when it is set (Gitea/GitHub Actions).

`write_step_summary(result)` takes the `--json` object of a run, i.e. `RunResult.to_json()` of
`pipelines.rollout.result` (its module docstring has the shape). Every key is optional here; a
missing one is simply not shown. What it says is what the result says: the wave table shows each
wave's status ("not started" for waves that never ran, no verified count for them), its
stragglers are the same names as the run's "Stragglers" line (those unverified at the end; a wave
straggler that reported the SHA later is listed as caught up), and the lease as it ended.

Server text (messages, CP error rows, verdicts) is not ours: everything written is redacted, and
escaped for Markdown — HTML-escaped, and every character that could start a link, an image,
emphasis or a code span backslash-escaped — or put in a code span with backticks removed.
Nothing from a server can become a link, an image or HTML.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.redact import redact
from pipelines.settings import SHA_RE

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
MAX_TENANT_ROWS = 200  # a fleet table longer than this is cut (the ledger has every tenant)
_ICONS = {0: "✅", 1: "❌", 2: "⚠️", 3: "⏸️", 4: "🛑", 5: "↩️"}


_MARKDOWN_SPECIAL = "\\`*_[]()!#|~"


def cell(value: Any, limit: int = 300) -> str:
    """Text safe in Markdown (a table cell too): redacted, one line, HTML-escaped, and every Markdown
    punctuation character backslash-escaped, so no link, image, emphasis or code span can start."""
    text = html.escape(redact(str(value), limit=limit), quote=False)
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)


def code(value: Any) -> str:
    """A code span (nothing inside is Markdown); backticks, which could close it, become quotes."""
    if value in (None, ""):
        return "—"
    text = redact(str(value), limit=120).replace("`", "'").replace("|", "\\|")
    return f"`{text}`"


def short(sha: Any) -> str:
    """A SHA as its 7-character prefix; anything else (a verdict, None) as raw text for `code`."""
    if isinstance(sha, str) and SHA_RE.match(sha):
        return sha[:7]
    return str(sha)[:40] if sha else ""


def _list(values: Any) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list | tuple | set) else []


@dataclass(frozen=True)
class WaveCells:
    """One wave as every renderer shows it (step summary, report text and HTML): a wave that never ran
    has no verified count, CP calls or seconds; `unverified` are the wave's tenants that did not verify
    (stragglers within the budget when the wave passed, the reason it failed when it did not)."""

    label: str
    status: str
    slugs: list[str]
    verified: str
    unverified: list[str]
    calls: str
    seconds: str


def wave_cells(w: Mapping[str, Any]) -> WaveCells:
    status = str(w.get("status") or "")
    ran = status not in ("not started", "")
    seconds = w.get("seconds")
    return WaveCells(
        label=f"{w.get('kind', 'wave')} {w.get('index', '?')}", status=status or "—", slugs=_list(w.get("slugs")),
        verified=f"{len(_list(w.get('verified')))}/{len(_list(w.get('slugs')))}" if ran else "—",
        unverified=_list(w.get("stragglers")) if ran else [],
        calls=str(w.get("cp_attempts")) if ran and isinstance(w.get("cp_attempts"), int) else "—",
        seconds=f"{seconds:.1f}" if ran and isinstance(seconds, int | float) else "—")


def _names(values: Any, limit: int = 20) -> str:
    items = _list(values)
    if not items:
        return "—"
    shown = ", ".join(cell(v, limit=80) for v in items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")


def render(result: Mapping[str, Any]) -> str:
    """The summary as Markdown."""
    exit_code = result.get("exit_code", 0 if result.get("ok") else 1)
    exit_code = exit_code if isinstance(exit_code, int) else 1
    outcome = result.get("outcome") or ("deployed" if exit_code == 0 else "failed")
    verb = result.get("verb") or "rollout"
    icon = _ICONS.get(exit_code, "❌")
    lines = [f"## {icon} fleetgate {cell(verb, 40)}: {cell(outcome, 60)} — {code(short(result.get('sha')))} "
             f"({code(result.get('target_tag'))})", ""]
    facts = [f"exit code **{exit_code}**"]
    if result.get("dry_run"):
        facts.append("**dry run** (nothing changed)")
    if result.get("run_id"):
        facts.append(f"run {code(result.get('run_id'))}")
    if "canary" in result:
        facts.append(f"canary {code(result.get('canary')) if result.get('canary') else 'none'}")
    if result.get("step") and exit_code != 0:
        facts.append(f"ended at {cell(result.get('step'), 40)}")
    if isinstance(result.get("lease"), str):
        facts.append(f"lease {cell(result['lease'], 60)}")
    lines += [" · ".join(facts), ""]
    if result.get("message"):
        lines += [f"> {cell(result['message'], 500)}", ""]
    approval = result.get("approval")
    if isinstance(approval, Mapping):
        word = "Approved" if approval.get("approved") else "Rejected"
        lines += [f"**{word} by** {code(approval.get('approver') or 'unknown')} "
                  f"after {cell(approval.get('waited_seconds', '?'), 20)}s", ""]

    waves = result.get("waves")
    if isinstance(waves, list) and waves:
        lines += ["| wave | kind | tenants | status | verified | unverified | CP calls | seconds |",
                  "|---:|---|---|---|---:|---|---:|---:|"]
        for w in waves:
            if not isinstance(w, Mapping):
                continue
            c = wave_cells(w)
            lines.append(f"| {cell(w.get('index', '?'), 10)} | {cell(w.get('kind', 'wave'), 10)} | "
                         f"{_names(c.slugs, 10)} | {cell(c.status, 20)} | {c.verified} | "
                         f"{_names(c.unverified, 10)} | {c.calls} | {c.seconds} |")
        lines.append("")

    skipped = _list(result.get("skipped"))
    if skipped:
        lines += [f"**Already on the SHA, not written ({len(skipped)})**: {_names(skipped, 10)}", ""]
    stragglers = result.get("stragglers")
    if isinstance(stragglers, list | tuple) and stragglers:
        lines += [f"**Stragglers within the budget ({len(stragglers)})**: {_names(stragglers, 50)}", ""]
    elif isinstance(stragglers, list | tuple):
        lines += ["**Stragglers within the budget**: none", ""]
    caught_up = _list(result.get("caught_up"))
    if caught_up:
        lines += [f"Wave stragglers that reported the SHA later: {_names(caught_up, 50)}", ""]

    drift = result.get("drift")
    if isinstance(drift, Mapping) and drift:
        lines += ["| fleet runs | tenants |", "|---|---:|"]
        for key, count in sorted(drift.items(), key=lambda kv: (-_int(kv[1]), str(kv[0]))):
            marker = " ← target" if key == result.get("sha") else ""
            lines.append(f"| {code(short(key))}{marker} | {_int(count)} |")
        lines.append("")

    rollback = result.get("rollback")
    if isinstance(rollback, Mapping):
        ok = "verified" if rollback.get("verified") else "**not verified**"
        tenants_back = _names(rollback.get("restored", rollback.get("tenants")), 50)
        lines += [f"**Rollback** to {code(rollback.get('tag'))}: restored {tenants_back} ({ok})"]
        if _list(rollback.get("not_restored")):
            lines.append(f"; not restored: {_names(rollback.get('not_restored'), 50)}")
        lines.append("")

    tenants = result.get("tenants")
    if isinstance(tenants, Mapping) and tenants:
        lines += ["<details><summary>Tenants (before → after)</summary>", "",
                  "| tenant | before | after | verdict |", "|---|---|---|---|"]
        for slug, row in sorted(tenants.items())[:MAX_TENANT_ROWS]:
            row = row if isinstance(row, Mapping) else {}
            lines.append(f"| {cell(slug, 80)} | {code(short(row.get('before')))} | "
                         f"{code(short(row.get('after')))} | {cell(row.get('verdict', '—'), 40)} |")
        if len(tenants) > MAX_TENANT_ROWS:
            lines.append(f"| … {len(tenants) - MAX_TENANT_ROWS} more (see the ledger) | | | |")
        lines += ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def write_step_summary(result: Mapping[str, Any], env: Mapping[str, str] | None = None) -> bool:
    """Append the summary to `$GITHUB_STEP_SUMMARY` when set. True when written.

    A summary that cannot be written does not change the run's outcome (the ledger and the exit
    code are the record); the OSError is left to the caller only if it wants it — here it is
    swallowed and reported as False."""
    env = os.environ if env is None else env
    target = env.get(SUMMARY_ENV, "").strip()
    if not target:
        return False
    try:
        with Path(target).open("a", encoding="utf-8") as f:
            f.write(render(result))
    except OSError:
        return False
    return True
