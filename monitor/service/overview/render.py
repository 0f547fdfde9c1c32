"""The overview page as one HTML document: inline CSS, inline SVG, no script, no external asset.

    html = page(view)                                  # the overview
    html = page(view, query=q, found=store.trace(q))   # with a trace result

Every stored value is escaped (addresses, Message-IDs and SMTP replies come from outside).
Colours keep a contrast of at least 4.5:1 on white (WCAG 2.1 AA); tables have headers with
``scope``; the page has header, nav, main and footer landmarks and a labelled search form.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from monitor import __version__
from monitor.service.overview.data import WINDOWS, Overview, SourceHealth, Spark

__all__ = ["page", "sparkline"]

_CSS = """
:root{color-scheme:light;--fg:#1a1a1a;--muted:#4a4a4a;--bad:#a4001d;--warn:#7a4a00;--ok:#0b6b2f;
--line:#d0d0d0;--bg:#ffffff;--alt:#f4f5f7;--accent:#0b4f9c}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main,footer{max-width:90rem;margin:0 auto;padding:.75rem 1rem}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;
border-bottom:1px solid var(--line)}
h1{font-size:1.3rem;margin:0}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
h3{font-size:1rem;margin:1rem 0 .25rem}
a{color:var(--accent)}
nav ul{list-style:none;margin:0;padding:0;display:flex;gap:1rem;flex-wrap:wrap}
form{display:flex;gap:.5rem;flex:1 1 20rem}
input[type=search]{flex:1;min-width:0;padding:.4rem .5rem;font:inherit;border:1px solid #767676;
border-radius:4px}
button{padding:.4rem .8rem;font:inherit;background:var(--accent);color:#fff;border:0;
border-radius:4px}
:focus-visible{outline:3px solid #1a73e8;outline-offset:2px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:var(--alt)}
td.n,th.n{text-align:right}
.bad{color:var(--bad);font-weight:600}.warn{color:var(--warn)}.ok{color:var(--ok)}
.muted{color:var(--muted)}
.diag{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-word}
svg.spark{vertical-align:middle}
td.n{white-space:nowrap}
table.wide{min-width:46rem}
td.ev{min-width:20rem}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);
white-space:nowrap}
@media (max-width:40rem){body{font-size:14px}th,td{padding:.25rem .3rem}}
"""


def page(view: Overview, *, query: str | None = None,
         found: Sequence[dict[str, Any]] | None = None,
         error: str | None = None) -> str:  # fmt: skip
    """The whole document: the search result first when there is a query, then the overview."""
    title = "Mailmon overview" if query is None else f"Trace {query} · Mailmon"
    body = [_header(query)]
    body.append('<main id="main">')
    if query is not None:
        body.append(_trace(query, found or [], error))
    if view.store_error:
        body.append(f'<p class="bad" role="alert">The store cannot be read: '
                    f"{escape(view.store_error)}.</p>")  # fmt: skip
    body += [_incidents(view), _providers(view), _ingestion(view)]
    body.append("</main>")
    body.append(_footer(view))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body) + "</body></html>\n"
    )


def _header(query: str | None) -> str:
    value = escape(query or "", quote=True)
    return (
        '<header><h1><a href="/" style="color:inherit;text-decoration:none">Mailmon</a></h1>'
        '<nav aria-label="Sections"><ul><li><a href="/#incidents">Incidents</a></li>'
        '<li><a href="/#providers">Providers</a></li><li><a href="/#ingestion">Ingestion</a></li>'
        "</ul></nav>"
        '<form role="search" method="get" action="/trace">'
        '<label for="q" class="muted">Trace</label>'
        f'<input type="search" id="q" name="q" value="{value}" required maxlength="998" '
        'placeholder="Message-ID, queue id or recipient" '
        'aria-describedby="q-help" autocomplete="off">'
        '<button type="submit">Search</button></form>'
        '<p id="q-help" class="muted" style="margin:0;flex-basis:100%;font-size:.85em">'
        "Runs <code>mailmon trace</code>: every delivery of a message, queue id or recipient "
        "with its timeline.</p></header>"
    )


def _footer(view: Overview) -> str:
    return (
        f'<footer class="muted"><p>mailmon {escape(__version__)} · '
        f"as of {_time(view.at)} UTC · "
        '<a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · '
        '<a href="/openapi.json">/openapi.json</a> (the read API)</p></footer>'
    )


def _incidents(view: Overview) -> str:
    out = ['<section aria-labelledby="incidents-h"><h2 id="incidents">'
           '<span id="incidents-h">Open incidents</span></h2>']  # fmt: skip
    if view.incidents:
        out.append(_incident_table("open-incidents", view.incidents, view.at, open_=True))
    else:
        out.append('<p class="ok" id="no-incidents">No open incident.</p>')
    if view.closed:
        out.append("<h3>Closed in the last 24 hours</h3>")
        out.append(_incident_table("closed-incidents", view.closed, view.at, open_=False))
    out.append("</section>")
    return "".join(out)


def _incident_table(table_id: str, items: list[dict[str, Any]], at: float, *, open_: bool) -> str:
    caption = "Open incidents" if open_ else "Incidents closed in the last 24 hours"
    head = ["Kind", "Provider", "Domain", "Started (UTC)", "For" if open_ else "Lasted",
            "Evidence"]  # fmt: skip
    rows = []
    for item in items:
        started = _ts(item["started_at"])
        ended = _ts(item["ended_at"]) if item["ended_at"] else at
        rows.append(
            f'<tr data-id="{int(item["id"])}"><td class="bad">{escape(str(item["kind"]))}</td>'
            f'<td>{escape(item["provider"] or "")}</td><td>{escape(item["domain"] or "")}</td>'
            f"<td>{_time(started)}</td><td>{_duration(max(0.0, ended - started))}</td>"
            f'<td class="ev">{_evidence(item.get("evidence") or {})}</td></tr>'
        )
    return _table(table_id, caption, head, rows)


def _evidence(evidence: dict[str, Any]) -> str:
    """A short account of what decided: the value against its threshold in its window, and
    the replies most often given (what ``mailmon incidents`` shows in full)."""
    if not isinstance(evidence, dict):
        return ""
    parts = []
    value, threshold, window = (evidence.get(k) for k in ("value", "threshold", "window"))
    if isinstance(value, int | float) and isinstance(threshold, int | float) and not isinstance(
            value, bool) and not isinstance(threshold, bool):  # fmt: skip
        share = 0 <= value <= 1 and 0 < threshold <= 1
        shown = (f"{value:.1%} (threshold {threshold:.1%})" if share
                 else f"{value:g} (threshold {threshold:g})")  # fmt: skip
        counts = (evidence.get("windows") or {}).get(window) if window else None
        if isinstance(counts, dict) and _number(counts.get("attempts")):
            shown += f" of {int(counts['attempts'])} attempts"
        parts.append(escape(f"{window}: {shown}" if window else shown))
    replies = evidence.get("top_replies")
    if isinstance(replies, list):
        for reply in replies[:2]:
            if not isinstance(reply, dict):
                continue
            text = str(reply.get("text") or "")
            text = text.split(" said: ", 1)[-1]  # "host mx[ip] said: 550 ..." -> the reply
            head = " ".join(str(reply[k]) for k in ("reply_code", "enhanced_status")
                            if reply.get(k) and str(reply[k]) not in text[:12])  # fmt: skip
            line = f"{reply.get('count', '?')}× {head + ' ' if head else ''}{text}"
            line = line if len(line) <= 120 else line[:119] + "…"
            parts.append(f'<span class="diag">{escape(line)}</span>')
    return "<br>".join(parts) or '<span class="muted">see <code>mailmon incidents</code></span>'


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _providers(view: Overview) -> str:
    out = ['<section aria-labelledby="providers"><h2 id="providers">Providers</h2>']
    if not view.providers:
        out.append('<p class="muted">No delivery attempt in the last 24 hours.</p></section>')
        return "".join(out)
    out.append('<p class="muted">Delivered, bounced: share of recipients with a final outcome; '
               "deferred: deferrals per attempt; complained: per delivered. Sparklines: "
               "attempts (grey) and failed attempts (red) per 5 minutes (1 h) and per hour "
               "(24 h).</p>")  # fmt: skip
    head = ["Provider"]
    for window in WINDOWS:
        head += [f"{window} attempts", f"{window} delivered", f"{window} deferred",
                 f"{window} bounced", f"{window} complained", f"{window} trend"]  # fmt: skip
    rows = []
    for item in view.providers:
        name = escape(item["provider"])
        cells = [f'<th scope="row">{name}</th>']
        for window in WINDOWS:
            w = item["windows"][window]
            attempts = w["delivered"] + w["deferred"] + w["bounced"]
            cells.append(f'<td class="n">{attempts}</td>')
            cells.append(_rate(w["delivery_rate"], good=True))
            cells.append(_rate(w["deferral_rate"], warn=0.05, bad=0.2))
            cells.append(_rate(w["bounce_rate"], warn=0.02, bad=0.05))
            cells.append(_rate(w["complaint_rate"], warn=0.001, bad=0.003))
            spark = item["sparks"].get(window)
            cells.append(f"<td>{sparkline(spark, f'{name}, {window}') if spark else ''}</td>")
        rows.append(f'<tr data-provider="{name}">{"".join(cells)}</tr>')
    out.append(_table("provider-rates", "Per provider, last hour and last 24 hours", head, rows))
    out.append("</section>")
    return "".join(out)


def _rate(value: float | None, *, good: bool = False, warn: float = 1.0, bad: float = 1.0) -> str:
    if value is None:
        return '<td class="n muted">–</td>'
    css = "" if good else ("bad" if value >= bad else "warn" if value >= warn else "")
    shown = f"{value * 100:.2f}%" if value < 0.1 else f"{value * 100:.1f}%"
    return f'<td class="n {css}">{shown}</td>'


def sparkline(spark: Spark, label: str, width: int = 120, height: int = 28) -> str:
    """An inline SVG of attempts (grey area) and failed attempts (red line), with a text
    alternative that says the totals and the worst step."""
    n = len(spark.attempts)
    top = max(max(spark.attempts, default=0), 1)
    step = width / max(n - 1, 1)

    def points(values: Sequence[int]) -> str:
        return " ".join(f"{i * step:.1f},{height - 1 - v / top * (height - 2):.1f}"
                        for i, v in enumerate(values))  # fmt: skip

    total, failed = sum(spark.attempts), sum(spark.failed)
    worst = max(range(n), key=lambda i: spark.failed[i], default=0)
    minutes = spark.step_seconds // 60
    text = (f"{label}: {total} attempts, {failed} failed"
            + (f"; most failures ({spark.failed[worst]}) in step {worst + 1} of {n} "
               f"({minutes} min each)" if failed else ""))  # fmt: skip
    area = f"0,{height} {points(spark.attempts)} {width},{height}"
    return (
        f'<svg class="spark" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{escape(text, quote=True)}">'
        f"<title>{escape(text)}</title>"
        f'<polygon points="{area}" fill="#c8ccd2"/>'
        f'<polyline points="{points(spark.failed)}" fill="none" stroke="#a4001d" '
        'stroke-width="1.5"/></svg>'
    )


def _ingestion(view: Overview) -> str:
    out = ['<section aria-labelledby="ingestion"><h2 id="ingestion">Ingestion</h2>']
    if view.sources:
        head = ["Source", "Events stored", "Duplicates", "Refused", "Log lines", "Bytes behind",
                "Newest event (UTC)", "Age"]  # fmt: skip
        rows = [_source_row(s, view.at) for s in view.sources]
        out.append('<p class="muted">Per source, since this process started (as /metrics '
                   "counts it):</p>")
        out.append(_table("sources", "Per source, since this process started (/metrics)",
                          head, rows))  # fmt: skip
    else:
        out.append('<p class="muted">Nothing read since this process started.</p>')
    if view.files:
        out.append('<p class="muted">Each followed log, from its checkpoint (since it was first '
                   "followed, across restarts):</p>")  # fmt: skip
        rows = [f'<tr><th scope="row" class="diag">{escape(f.path)}</th><td>{escape(f.kind)}</td>'
                f'<td>{escape(f.instance)}</td><td class="n">{f.lines}</td>'
                f'<td class="n{" bad" if f.unparsed else ""}">{f.unparsed}</td>'
                f"<td>{_time(f.updated_at)}</td></tr>" for f in view.files]  # fmt: skip
        out.append(_table("files", "Followed logs, from their checkpoints",
                          ["Log", "Kind", "Instance", "Lines read", "Not understood",
                           "Checkpoint (UTC)"], rows))  # fmt: skip
    if view.checks:
        head = ["Part", "Status", "Reason"]
        rows = []
        for name, status, reason in view.checks:
            css = {"ok": "ok", "failing": "bad"}.get(status, "warn")
            rows.append(f'<tr><th scope="row" class="diag">{escape(name)}</th>'
                        f'<td class="{css}">{escape(status)}</td><td>{escape(reason)}</td></tr>')
        out.append('<p class="muted">Each part, as /healthz says it:</p>')
        out.append(_table("health", "Health of each part (/healthz)", head, rows))
    out.append("</section>")
    return "".join(out)


def _source_row(s: SourceHealth, at: float) -> str:
    age = "" if s.last_event_at is None else _duration(max(0.0, at - s.last_event_at))
    refused = f'<td class="n{" bad" if s.rejected else ""}">{s.rejected}</td>'
    return (f'<tr><th scope="row">{escape(s.source)}</th><td class="n">{s.ingested}</td>'
            f'<td class="n">{s.duplicates}</td>{refused}<td class="n">{s.lines}</td>'
            f'<td class="n">{s.bytes_behind}</td><td>{_time(s.last_event_at)}</td>'
            f'<td class="n">{age}</td></tr>')  # fmt: skip


def _trace(query: str, found: Sequence[dict[str, Any]], error: str | None) -> str:
    out = ['<section aria-labelledby="trace-h" id="trace">'
           f'<h2 id="trace-h">Trace: {escape(query)}</h2>']  # fmt: skip
    if error:
        out.append(f'<p class="bad" role="alert">{escape(error)}</p></section>')
        return "".join(out)
    if not found:
        out.append(f'<p role="status">Nothing found for {escape(query)}.</p></section>')
        return "".join(out)
    out.append(f'<p role="status">{len(found)} deliver{"y" if len(found) == 1 else "ies"} '
               "found.</p>")  # fmt: skip
    for n, item in enumerate(found):
        d = item["delivery"]
        verdict = escape(d["state"] or "")
        if d["reason"]:
            verdict += f" ({escape(d['reason'])}{', hard' if d['hard'] else ''}" + (
                f", blame: {escape(d['blame'])})" if d["blame"] else ")")
        mid = f"&lt;{escape(d['message_id'])}&gt;" if d["message_id"] else "(no Message-ID)"
        out.append(
            f'<h3 class="delivery">{mid} → {escape(d["recipient"] or "(all recipients)")}: '
            f"{verdict}</h3>"
            f'<p class="muted">queue id {escape(d["queue_id"] or "-")}, sender '
            f'&lt;{escape(d["sender"] or "")}&gt;, provider {escape(d["provider"] or "-")}, '
            f'{int(d["attempts"] or 0)} attempt(s)</p>'
        )
        rows = []
        for e in item["events"]:
            code = " ".join(str(x) for x in (e.reply_code, e.enhanced_status) if x)
            reason = (e.reason or "") + (f" (rule {e.rule})" if e.rule else "")
            rows.append(
                f"<tr><td>{e.occurred_at.strftime('%Y-%m-%d %H:%M:%S')}</td>"
                f"<td>{escape(e.type.value)}</td><td>{escape(code)}</td>"
                f"<td>{escape(reason)}</td><td>{escape(e.relay or '')}</td>"
                f'<td class="diag">{escape((e.diagnostic or "")[:300])}</td></tr>'
            )
        out.append(_table(f"timeline-{n}", "Timeline (UTC)",
                          ["Time (UTC)", "Event", "Reply", "Reason", "Relay", "Diagnostic"],
                          rows))  # fmt: skip
    out.append("</section>")
    return "".join(out)


def _table(table_id: str, caption: str, head: Sequence[str], rows: Sequence[str]) -> str:
    """A table with column headers and a caption for screen readers (the heading shows it)."""
    cols = "".join(f'<th scope="col">{escape(h)}</th>' for h in head)
    # Wide tables scroll sideways on a phone rather than squeeze their text into a column.
    wide = ' class="wide"' if len(head) > 5 else ""
    return (f'<div class="scroll"><table id="{table_id}"{wide}><caption class="sr-only">'
            f'{escape(caption)}</caption><thead><tr>{cols}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip


def _ts(value: Any) -> float:
    """An incident's time as the API gives it (ISO 8601) in UNIX seconds."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def _time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
