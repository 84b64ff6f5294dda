"""`fleetgate report`: one run of the ledger (default: the last) as text, Markdown or HTML.

No network: the ledger is the whole input. The document goes to stdout (`> run.html`); with
`--json`, stdout gets one object instead: the run's summary-shaped result and its timeline phrases.
"""

from __future__ import annotations

from typing import Any

from pipelines.errors import Failed, UsageError
from pipelines.output import Output
from pipelines.report.model import events_table, summary_result
from pipelines.report.render import RENDERERS
from pipelines.report.runs import find_run, ledger_runs
from pipelines.settings import Settings


async def run(settings: Settings, out: Output, run: str | None = None,
              format: str | None = None) -> dict[str, Any]:  # the flags are --run and --format
    """The `report` verb."""
    run_id, fmt = run, format or "text"
    if fmt not in RENDERERS:
        raise UsageError(f"--format: expected one of {', '.join(RENDERERS)}, got {fmt!r}")
    record = find_run(settings.ledger, run_id)
    if record is None:
        runs = ledger_runs(settings.ledger)
        if not runs:
            raise Failed(f"no run in the ledger {settings.ledger!r}: nothing to report")
        recent = ", ".join(r.run_id for r in runs[-5:])
        raise UsageError(f"--run {run_id!r}: no such run (or an ambiguous prefix) in {settings.ledger!r}; "
                         f"recent: {recent}")
    result: dict[str, Any] = {"verb": "report", "run_id": record.run_id, "format": fmt,
                              "run": summary_result(record),
                              "timeline": [{"seconds": round(s, 3), "event": p} for s, p in events_table(record)]}
    if out.json_mode:
        out.result(result)
    else:
        out.stdout.write(RENDERERS[fmt](record))
        out.stdout.flush()
    return result


__all__ = ["run"]
