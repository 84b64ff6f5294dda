"""The Markdown step summary: appended to `$GITHUB_STEP_SUMMARY` when it is set (Gitea/GitHub Actions).

`write_step_summary(result)` takes the result dict that `rollout`, `deploy-production` and
`redeploy` return (and print with `--json`). Its shape — every key optional here, missing ones are
simply not shown:

    {
      "ok": bool,                      # exit_code == 0
      "exit_code": int,                # CONTRACT §3
      "verb": str,                     # "rollout" | "deploy-production" | "redeploy"
      "outcome": str,                  # one word or phrase: "done", "dry run", "nothing to do", "failed",
                                       # "halted", "rolled back", "stood down", "disabled"
      "message": str,                  # why, one line (the error message when it failed)
      "sha": str, "target_tag": str, "run_id": str, "dry_run": bool,
      "canary": str | None,            # the canary slug, None when --canary none
      "waves": [{                      # in order; the canary wave first
          "index": int,                # 0 = canary (when there is one), then 1, 2, …
          "kind": "canary" | "wave",
          "slugs": [str],              # tenants of the wave (as listed)
          "skipped": [str],            # already on the SHA: not written
          "verified": [str],           # report the SHA after the wave
          "stragglers": [str],         # did not report it within --verify-timeout
          "seconds": float,            # wave duration (CP call + verification)
      }],
      "stragglers": [str],             # all stragglers of the run
      "drift": {str: int},             # tenants by SHA they report (or by verdict when unreadable),
                                       # e.g. the `by_sha` of `verify.drift_report`
      "tenants": {slug: {"before": sha | None, "after": sha | None, "verdict": str}},
      "rollback": {"tag": str, "tenants": [str], "verified": bool},   # when --on-failure rollback ran
    }

Everything written is redacted and Markdown-escaped (slugs are validated, but messages are not ours).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.redact import redact
from pipelines.settings import SHA_RE

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
MAX_TENANT_ROWS = 200  # a fleet table longer than this is cut (the ledger has every tenant)
_ICONS = {0: "✅", 1: "❌", 2: "⚠️", 3: "⏸️", 4: "🛑", 5: "↩️"}


def cell(value: Any, limit: int = 300) -> str:
    """Text safe inside a Markdown table cell: redacted, HTML-escaped, pipes escaped, one line."""
    text = html.escape(redact(str(value), limit=limit), quote=False)
    return text.replace("|", "\\|").replace("`", "'")


def code(value: Any) -> str:
    return f"`{cell(value, limit=120)}`" if value not in (None, "") else "—"


def short(sha: Any) -> str:
    """A SHA as its 7-character prefix; anything else (a verdict, None) as raw text for `code`."""
    if isinstance(sha, str) and SHA_RE.match(sha):
        return sha[:7]
    return str(sha)[:40] if sha else ""


def _names(values: Any, limit: int = 20) -> str:
    items = [str(v) for v in values] if isinstance(values, list | tuple | set) else []
    if not items:
        return "—"
    shown = ", ".join(cell(v, limit=80) for v in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _count(values: Any) -> int:
    return len(values) if isinstance(values, list | tuple | set) else 0


def render(result: Mapping[str, Any]) -> str:
    """The summary as Markdown."""
    exit_code = result.get("exit_code", 0 if result.get("ok") else 1)
    exit_code = exit_code if isinstance(exit_code, int) else 1
    outcome = result.get("outcome") or ("done" if exit_code == 0 else "failed")
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
        lines += ["| wave | kind | tenants | skipped | verified | stragglers | seconds |",
                  "|---:|---|---|---:|---:|---|---:|"]
        for w in waves:
            if not isinstance(w, Mapping):
                continue
            seconds = w.get("seconds")
            secs = f"{seconds:.1f}" if isinstance(seconds, int | float) else "—"
            lines.append(f"| {cell(w.get('index', '?'), 10)} | {cell(w.get('kind', 'wave'), 10)} | "
                         f"{_names(w.get('slugs'), 10)} | {_count(w.get('skipped'))} | "
                         f"{_count(w.get('verified'))}/{_count(w.get('slugs'))} | "
                         f"{_names(w.get('stragglers'), 10)} | {secs} |")
        lines.append("")

    stragglers = result.get("stragglers")
    if isinstance(stragglers, list | tuple) and stragglers:
        lines += [f"**Stragglers ({len(stragglers)})**: {_names(stragglers, 50)}", ""]
    elif isinstance(stragglers, list | tuple):
        lines += ["**Stragglers**: none", ""]

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
        tenants_back = _names(rollback.get("tenants"), 50)
        lines += [f"**Rollback** to {code(rollback.get('tag'))}: {tenants_back} ({ok})", ""]

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
