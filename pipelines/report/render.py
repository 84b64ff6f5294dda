"""A run as text, Markdown (the step summary's own renderer) or one self-contained HTML page.

The HTML page needs no network and no JavaScript: inline CSS, the timeline as inline SVG. Every
string that came from a server or the ledger is HTML-escaped, and nothing becomes a link.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from pipelines.report.model import Timeline, events_table, summary_result, timeline
from pipelines.report.runs import RunRecord
from pipelines.settings import SHA_RE
from pipelines.summary import render as render_summary
from pipelines.summary import wave_cells

LANE_HEIGHT = 30
LABEL_WIDTH = 150
CHART_WIDTH = 900
COLOURS = {"ok": "#2e9d57", "fail": "#d1382f", "wait": "#e0a526", "call": "#3a6fd8", "info": "#7d8ea3"}


def _short(value: Any) -> str:
    return value[:7] if isinstance(value, str) and SHA_RE.match(value) else ("" if value is None else str(value))


def _list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def markdown(record: RunRecord) -> str:
    return render_summary(summary_result(record))


def text(record: RunRecord) -> str:
    result = summary_result(record)
    lines = [f"fleetgate {result.get('verb')}: {result.get('outcome')} — run {record.run_id}",
             f"sha {_short(result.get('sha'))}  tag {result.get('target_tag') or '—'}  "
             f"exit {result.get('exit_code')}{'  DRY RUN' if result.get('dry_run') else ''}",
             f"started {record.started}" + (f", ended {record.ended}" if record.ended else ", no `done` recorded")]
    if result.get("message"):
        lines.append(f"message: {result['message']}")
    lines += ["", "timeline:"]
    lines += [f"  +{seconds:7.2f}s  {phrase}" for seconds, phrase in events_table(record)]
    waves = [w for w in result.get("waves") or [] if isinstance(w, Mapping)]
    if waves:
        lines += ["", "waves:"]
        for w in waves:
            c = wave_cells(w)
            lines.append(f"  {c.label}: {c.status}" + (f", {c.verified} verified" if c.verified != "—" else "")
                         + f" — {', '.join(c.slugs)}"
                         + (f"; unverified: {', '.join(c.unverified)}" if c.unverified else ""))
    stragglers = _list(result.get("stragglers"))
    lines += ["", f"stragglers within the budget: {', '.join(stragglers) if stragglers else 'none'}"]
    tenants = result.get("tenants")
    if isinstance(tenants, Mapping) and tenants:
        width = max(len(str(s)) for s in tenants)
        lines += ["", "fleet (before → after):"]
        for slug, row in sorted(tenants.items()):
            row = row if isinstance(row, Mapping) else {}
            lines.append(f"  {slug:<{width}}  {_short(row.get('before')) or '-':<7} → "
                         f"{_short(row.get('after')) or '-':<7}  {row.get('verdict', '')}")
    return "\n".join(lines) + "\n"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def svg_timeline(line: Timeline) -> str:
    height = LANE_HEIGHT * len(line.lanes) + 40
    width = LABEL_WIDTH + CHART_WIDTH + 20
    scale = CHART_WIDTH / line.duration

    def x(seconds: float) -> float:
        return LABEL_WIDTH + max(0.0, min(seconds, line.duration)) * scale

    row = {lane: i for i, lane in enumerate(line.lanes)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of the run">']
    for lane, i in row.items():
        y = i * LANE_HEIGHT + 10
        fill = "#f4f6f9" if i % 2 == 0 else "#ffffff"
        parts.append(f'<rect x="0" y="{y}" width="{width}" height="{LANE_HEIGHT}" fill="{fill}"/>')
        parts.append(f'<text x="8" y="{y + 19}" class="lane">{_e(lane)}</text>')
    for span in line.spans:
        y = row[span.lane] * LANE_HEIGHT + 16
        x0, x1 = x(span.start), x(span.end)
        parts.append(f'<rect class="span {span.kind}" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 3):.1f}" '
                     f'height="{LANE_HEIGHT - 12}" rx="3" fill="{COLOURS[span.kind]}">'
                     f'<title>{_e(span.label)} ({span.start:.2f}s–{span.end:.2f}s)</title></rect>')
    for mark in line.marks:
        y = row[mark.lane] * LANE_HEIGHT + 10
        cx = x(mark.at)
        parts.append(f'<line x1="{cx:.1f}" y1="{y + 4}" x2="{cx:.1f}" y2="{y + LANE_HEIGHT - 4}" '
                     f'stroke="{COLOURS[mark.kind]}" stroke-width="3"/>')
        near_end = cx > LABEL_WIDTH + CHART_WIDTH * 0.8  # label to the left, or it runs off the page
        anchor = f'x="{cx - 5:.1f}" text-anchor="end"' if near_end else f'x="{cx + 5:.1f}"'
        parts.append(f'<text {anchor} y="{y + 19}" class="mark">{_e(mark.label)}</text>')
    axis_y = LANE_HEIGHT * len(line.lanes) + 22
    for n in range(6):
        seconds = line.duration * n / 5
        tx = x(seconds)
        parts.append(f'<line x1="{tx:.1f}" y1="10" x2="{tx:.1f}" y2="{axis_y - 8}" stroke="#ccd3dd" '
                     'stroke-dasharray="2,3"/>')
        parts.append(f'<text x="{tx:.1f}" y="{axis_y + 6}" class="tick">{seconds:.1f}s</text>')
    parts.append("</svg>")
    return "\n".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.ok{background:#2e9d57} .fail{background:#d1382f} .warn{background:#e0a526}
.facts{color:#4a5566;margin:4px 0 12px} .message{border-left:4px solid #d1382f;padding:6px 10px;background:#fbeeee}
table{border-collapse:collapse;font-size:14px} th,td{border:1px solid #d8dee8;padding:4px 10px;text-align:left}
th{background:#eef2f7} td.sha{font-family:ui-monospace,monospace}
svg text.lane{font-size:13px;fill:#1d2430} svg text.mark{font-size:11px;fill:#1d2430}
svg text.tick{font-size:11px;fill:#6b778a;text-anchor:middle}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
"""


def html_page(record: RunRecord) -> str:
    result = summary_result(record)
    code = result.get("exit_code")
    badge = "ok" if code == 0 else ("warn" if code in (3, 5) else "fail")
    title = f"fleetgate {result.get('verb')}: {result.get('outcome')}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(title)} — {_e(record.run_id)}</title>",
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
           f"<style>{STYLE}</style></head><body>",
           f'<h1>{_e(title)} <span class="badge {badge}" id="outcome">{_e(result.get("outcome"))}'
           f" · exit {_e(code)}</span></h1>",
           f'<div class="facts">run <code>{_e(record.run_id)}</code> · sha <code>{_e(_short(result.get("sha")))}'
           f'</code> · tag <code>{_e(result.get("target_tag"))}</code> · started {_e(record.started)}'
           f'{" · ended " + _e(record.ended) if record.ended else " · no done recorded"}'
           f'{" · <b>dry run</b>" if result.get("dry_run") else ""}</div>']
    if result.get("message"):
        out.append(f'<p class="message">{_e(result["message"])}</p>')
    out += ["<h2>Timeline</h2>", svg_timeline(timeline(record)),
            '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(k)}</span>'
                                             for k, c in (("CP call", COLOURS["call"]),
                                                          ("verified / ok", COLOURS["ok"]),
                                                          ("waiting (soak, approval)", COLOURS["wait"]),
                                                          ("failed / halt", COLOURS["fail"]),
                                                          ("lease held", COLOURS["info"]))) + "</div>"]
    waves = [w for w in result.get("waves") or [] if isinstance(w, Mapping)]
    out.append("<h2>Waves</h2>")
    if waves:
        out.append('<table id="waves"><tr><th>wave</th><th>status</th><th>tenants</th><th>verified</th>'
                   "<th>unverified</th><th>seconds</th></tr>")
        for w in waves:
            c = wave_cells(w)
            out.append(f'<tr class="wave"><td>{_e(c.label)}</td><td>{_e(c.status)}</td>'
                       f'<td>{_e(", ".join(c.slugs))}</td><td>{_e(c.verified)}</td>'
                       f'<td>{_e(", ".join(c.unverified)) or "—"}</td><td>{_e(c.seconds)}</td></tr>')
        out.append("</table>")
    else:
        out.append("<p>No wave started.</p>")
    stragglers = _list(result.get("stragglers"))
    named = _e(", ".join(stragglers)) if stragglers else "none"
    out.append(f'<h2>Stragglers within the budget</h2><p id="stragglers">{named}</p>')
    tenants = result.get("tenants")
    out.append("<h2>Fleet before → after</h2>")
    if isinstance(tenants, Mapping) and tenants:
        out.append('<table id="fleet"><tr><th>tenant</th><th>before</th><th>after</th><th>verdict</th></tr>')
        for slug, row in sorted(tenants.items()):
            row = row if isinstance(row, Mapping) else {}
            out.append(f'<tr><td>{_e(slug)}</td><td class="sha">{_e(_short(row.get("before")) or "—")}</td>'
                       f'<td class="sha">{_e(_short(row.get("after")) or "—")}</td>'
                       f'<td>{_e(row.get("verdict", ""))}</td></tr>')
        out.append("</table>")
    else:
        out.append("<p>The run recorded no per-tenant readings.</p>")
    out.append("<h2>Events</h2><table><tr><th>+s</th><th>event</th></tr>")
    out += [f"<tr><td>{seconds:.2f}</td><td>{_e(phrase)}</td></tr>" for seconds, phrase in events_table(record)]
    out += ["</table>", "</body></html>"]
    return "\n".join(out) + "\n"


RENDERERS = {"text": text, "md": markdown, "html": html_page}
