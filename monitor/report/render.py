"""The report as an HTML email (inline CSS, tables, ``cid:`` charts) and as plain text.

Mail clients drop ``<style>`` blocks and scripts (Gmail keeps little, Outlook renders
with Word): every style is inline, layout is tables, no external asset is referenced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["html", "text"]

_FONT = "font-family:Arial,Helvetica,sans-serif;"
_TABLE = "border-collapse:collapse;width:100%;font-size:13px;margin:6px 0 14px 0;"
_TH = "text-align:left;padding:4px 6px;border-bottom:2px solid #cfd8dc;background:#eceff1;"
_TD = "padding:4px 6px;border-bottom:1px solid #eceff1;"
_NUM = "text-align:right;"
_STATUS = {"ok": "#2e7d32", "warning": "#ef6c00", "critical": "#c62828", None: "#37474f"}
#: Figures whose rise is good news; for the others (failures, their rates) a rise is bad.
_GOOD_UP = frozenset({"submitted", "delivered", "delivery_rate"})
#: (rise is good, direction) -> the colour of the change
_TREND = {(True, "up"): "#2e7d32", (True, "down"): "#c62828", (False, "up"): "#c62828",
          (False, "down"): "#2e7d32"}  # fmt: skip
_ARROW = {"up": "▲", "down": "▼", "same": "=", "new": "•", "none": ""}
_LABELS = {
    "submitted": "Submitted", "delivered": "Delivered", "deferred": "Deferrals",
    "bounced": "Bounced", "expired": "Expired", "rejected": "Rejected",
    "complained": "Complaints", "delivery_rate": "Delivery rate", "bounce_rate": "Bounce rate",
    "deferral_rate": "Deferral rate", "complaint_rate": "Complaint rate",
}  # fmt: skip
SOURCE_NAMES = {
    "mta_and_esp_events": "MTA logs and ESP webhooks", "dmarc_reports": "DMARC reports",
    "tls_reports": "SMTP TLS reports", "dns_posture": "DNS posture checks",
    "dnsbl": "DNSBL lookups", "seed_probes": "seed probes",
}  # fmt: skip


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def when(iso: str | None, tz: str) -> str:
    """An ISO 8601 time as the report's reader reads it: ``Tue 17 Nov 10:00`` in ``tz``."""
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(tz)).strftime("%a %d %b %H:%M")


def span(figures: Mapping[str, Any]) -> str:
    """The week's days in its time zone: ``Mon 16 Nov to Sun 22 Nov 2026``."""
    zone = ZoneInfo(figures["time_zone"])
    first = datetime.fromisoformat(figures["start"]).astimezone(zone)
    last = datetime.fromisoformat(figures["end"]).astimezone(zone) - timedelta(days=1)
    return f"{first:%a %d %b} to {last:%a %d %b %Y}"


def duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


def _value(name: str, value: Any) -> str:
    return pct(value) if name.endswith("_rate") else num(value)


def _change(name: str, item: Mapping[str, Any]) -> str:
    change = item["change"]
    if change is None:
        return _ARROW[item["direction"]]
    shown = f"{change * 100:+.2f} pt" if name.endswith("_rate") else f"{change:+,}"
    return f"{_ARROW[item['direction']]} {shown}"


# -- HTML ---------------------------------------------------------------------


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: int | set[int] = 1
) -> str:
    """A table, cells escaped; right-aligned: the columns from ``numeric`` on (or those named).

    Wide tables get a smaller font and padding, so nine columns fit a 640 px column.
    """
    right = numeric if isinstance(numeric, set) else set(range(numeric, len(headers)))
    wide = len(headers) > 6
    table = _TABLE.replace("13px", "12px") if wide else _TABLE
    th, td = (_TH, _TD) if not wide else (x.replace("6px", "3px") for x in (_TH, _TD))
    head = "".join(f'<th style="{th}{_NUM if i in right else ""}">{escape(h)}</th>'
                   for i, h in enumerate(headers))  # fmt: skip
    body = "".join(
        "<tr>" + "".join(f'<td style="{td}{_NUM if i in right else ""}">{escape(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )  # fmt: skip
    return (f'<table cellpadding="0" cellspacing="0" style="{table}">'
            f"<tr>{head}</tr>{body}</table>")  # fmt: skip


def _h2(title: str) -> str:
    return (f'<h2 style="{_FONT}font-size:17px;color:#263238;margin:22px 0 4px 0;'
            f'border-bottom:1px solid #cfd8dc;padding-bottom:3px;">{escape(title)}</h2>')


def _p(content: str, color: str = "#37474f") -> str:
    return f'<p style="{_FONT}font-size:13px;color:{color};margin:4px 0;">{content}</p>'


def _note(text: str) -> str:
    return _p(f"<em>{escape(text)}</em>", "#78909c")


def _img(src: Callable[[str], str], charts: Mapping[str, bytes], name: str, alt: str) -> str:
    if name not in charts:
        return ""
    return (f'<img src="{escape(src(name))}" alt="{escape(alt)}" width="640" '
            'style="display:block;max-width:100%;height:auto;border:0;margin:6px 0;">')


def _group_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[r["name"], num(r["submitted"]), num(r["delivered"]), num(r["deferred"]),
             num(r["bounced"]), num(r["complained"]), pct(r["bounce_rate"]),
             pct(r["deferral_rate"]), pct(r["complaint_rate"], 3)] for r in rows]  # fmt: skip


_GROUP_HEAD = ("submitted", "delivered", "deferrals", "bounced", "complaints", "bounce %",
               "deferral %", "complaint %")  # fmt: skip


def html(figures: Mapping[str, Any], charts: Mapping[str, bytes],
         src: Callable[[str], str] = lambda name: f"cid:{name}") -> str:  # fmt: skip
    """The HTML part; ``src(name)`` is where chart ``name`` is (a ``cid:`` in the mail)."""
    f = figures
    tz = f["time_zone"]
    parts = [
        f'<h1 style="{_FONT}font-size:22px;color:#263238;margin:0 0 4px 0;">'
        f'Weekly deliverability report — {escape(f["week"])}</h1>',
        _p(f'{escape(span(f))} ({escape(f["time_zone"])}), '
           f'compared with {escape(f["previous_week"])}.'),
    ]
    src_info = f["sources"]
    have = ", ".join(SOURCE_NAMES[n] for n in src_info["with_data"]) or "none"
    lack = ", ".join(SOURCE_NAMES[n] for n in src_info["without_data"]) or "none"
    parts.append(_p(f"<strong>Sources with data:</strong> {escape(have)}. "
                    f"<strong>Without data this week:</strong> {escape(lack)}."))  # fmt: skip

    parts.append(_h2("The week in numbers"))
    if not src_info["events"]:
        parts.append(_note("No MTA log or ESP webhook events this week."))
    rows = []
    for name, item in f["numbers"].items():
        color = _STATUS[item["status"]]
        cells = [_LABELS[name], _value(name, item["this"]), _value(name, item["previous"])]
        row = "".join(f'<td style="{_TD}{_NUM if i else ""}">{escape(c)}</td>'
                      for i, c in enumerate(cells))  # fmt: skip
        trend = _TREND.get((name in _GOOD_UP, item["direction"]), "#37474f")
        row += (f'<td style="{_TD}{_NUM}color:{trend};">{escape(_change(name, item))}</td>'
                f'<td style="{_TD}color:{color};font-weight:bold;">'
                f'{escape(item["status"] or "")}</td>')  # fmt: skip
        rows.append(f"<tr>{row}</tr>")
    head = "".join(f'<th style="{_TH}{_NUM if 0 < i < 4 else ""}">{h}</th>' for i, h in
                   enumerate(("", "this week", "previous week", "change", "status")))  # fmt: skip
    parts.append(f'<table cellpadding="0" cellspacing="0" '
                 f'style="{_TABLE}"><tr>{head}</tr>{"".join(rows)}</table>')  # fmt: skip
    th = f["thresholds"]
    parts.append(_p("Thresholds (warning / critical): bounce rate "
                    f"{pct(th['bounce_rate'][0], 1)} / {pct(th['bounce_rate'][1], 1)}, deferral "
                    f"rate {pct(th['deferral_rate'][0], 1)} / {pct(th['deferral_rate'][1], 1)}, "
                    f"complaint rate {pct(th['complaint_rate'][0], 1)} / "
                    f"{pct(th['complaint_rate'][1], 1)}.", "#78909c"))  # fmt: skip

    parts.append(_h2("Per mailbox provider"))
    if f["providers"]:
        parts.append(_table(("provider", *_GROUP_HEAD), _group_rows(f["providers"])))
        parts.append(_img(src, charts, "providers", "Outcomes per mailbox provider"))
        parts.append(_h2("Top recipient domains"))
        parts.append(_table(("domain", *_GROUP_HEAD), _group_rows(f["domains"])))
        parts.append(_img(src, charts, "domains", "Outcomes per recipient domain"))
    else:
        parts.append(_note("No deliveries this week."))

    parts.append(_h2("Incidents"))
    if f["incidents"]:
        parts.append(_table(("kind", "provider", "domain", "started", "ended", "duration",
                             "evidence"), [
            [i["kind"], i["provider"], i["domain"] or "(all)", when(i["started_at"], tz),
             "open" if i["open_at_end"] else when(i["ended_at"], tz),
             duration(i["duration_seconds"]), i["evidence_summary"]]
            for i in f["incidents"]], numeric=7))  # fmt: skip
    else:
        parts.append(_note("No incidents this week."))

    b = f["bounces"]
    parts.append(_h2("Bounces: top reasons and who is to blame"))
    if b["total"]:
        parts.append(_p(f"{num(b['total'])} bounces: {num(b['hard'])} hard, "
                        f"{num(b['soft'])} soft."))  # fmt: skip
        parts.append(_table(("reason", "hard", "blame", "bounces", "share"), [
            [r["reason"], "yes" if r["hard"] else "no", r["blame"], num(r["count"]),
             pct(r["share"], 1)] for r in b["reasons"]], numeric=3))  # fmt: skip
        parts.append(_table(("blame", "bounces", "share"), [
            [r["blame"], num(r["count"]), pct(r["share"], 1)] for r in b["blame"]]))  # fmt: skip
        parts.append(_img(src, charts, "blame", "Bounces by blame"))
    else:
        parts.append(_note(b["note"]))

    c = f["complaints"]
    parts.append(_h2("Complaint rate"))
    if c["delivered"]:
        color = _STATUS[c["status"]]
        parts.append(_p(f'<strong style="color:{color};">{pct(c["rate"], 3)}</strong> '
                        f"({num(c['complained'])} complaints for {num(c['delivered'])} delivered)"
                        f"; the lines: {pct(c['warning'], 1)} warning, "
                        f"{pct(c['critical'], 1)} critical (Gmail and Yahoo sender rules)."))
        parts.append(_img(src, charts, "complaints", "Daily complaint rate"))
    else:
        parts.append(_note("Nothing delivered this week: no complaint rate."))

    lat = f["latency"]
    parts.append(_h2("Delivery latency"))
    if lat["deliveries"]:
        prev = lat["previous"]
        parts.append(_table(("", "deliveries", "p50 s", "p90 s", "p95 s", "p99 s", "max s"), [
            [label, num(d["deliveries"]), *(num(d[k]) for k in ("p50", "p90", "p95", "p99",
                                                                  "max"))]
            for label, d in (("this week", lat), ("previous week", prev))]))  # fmt: skip
        parts.append(_table(("provider", "deliveries", "p50 s", "p95 s", "p99 s"), [
            [d["provider"], num(d["deliveries"]), num(d["p50"]), num(d["p95"]), num(d["p99"])]
            for d in lat["providers"]]))  # fmt: skip
        parts.append(_img(src, charts, "latency", "Delivery latency percentiles"))
    else:
        parts.append(_note(lat["note"]))

    s = f["seeds"]
    parts.append(_h2("Seed placement"))
    if s["providers"]:
        parts.append(_p(f"{num(s['probes'])} probes: {pct(s['inbox_rate'], 1)} inbox (tabs "
                        f"included), {pct(s['spam_rate'], 1)} spam, of those whose mailbox "
                        f"could be read ({num(s['unreadable'])} could not)."))  # fmt: skip
        parts.append(_table(("provider", "probes", "inbox", "tab", "spam", "missing",
                             "unreadable", "other", "inbox rate"), [
            [r["provider"], num(r["probes"]), num(r["inbox"]), num(r["tab"]), num(r["spam"]),
             num(r["missing"]), num(r["error"]), num(r["other"]), pct(r["inbox_rate"], 1)]
            for r in s["providers"]]))  # fmt: skip
        parts.append(_img(src, charts, "seeds", "Seed placement per provider"))
    else:
        parts.append(_note(s["note"]))

    d = f["dmarc"]
    parts.append(_h2("DMARC"))
    if d["domains"]:
        parts.append(_p(f"{num(d['messages'])} messages reported, "
                        f"{pct(d.get('pass_rate'), 1)} pass DMARC."))  # fmt: skip
        parts.append(_table(("domain", "messages", "pass rate", "reports", "sources",
                             "unknown sources"), [
            [r["domain"], num(r["messages"]), pct(r["pass_rate"], 1), num(r["reports"]),
             num(r["sources"]), num(r["unknown_source_count"])] for r in d["domains"]]))
        if d["unknown_sources"]:
            parts.append(_p("<strong>Unknown senders</strong> (never passed DMARC):"))
            parts.append(_table(("domain", "source IP", "messages", "network", "country"), [
                [u["domain"], u["ip"], num(u["messages"]), u.get("as_name") or "",
                 u.get("country") or ""] for u in d["unknown_sources"]], numeric={2}))
    else:
        parts.append(_note(d["note"]))

    dns = f["dns"]
    parts.append(_h2("DNS posture and DNSBL listings"))
    if "note" in dns:
        parts.append(_note(dns["note"]))
    else:
        if dns["changes"]:
            parts.append(_table(("when", "domain", "check", "from", "to", "reason"), [
                [when(ch["at"], tz), ch["domain"], ch["check"], ch["from"] or "(first check)",
                 ch["to"], ch["reason"]] for ch in dns["changes"]], numeric=6))  # fmt: skip
        else:
            parts.append(_note("No posture changes this week."))
        if dns["listings"]:
            parts.append(_table(("listed", "list", "lookups listed", "still listed", "code",
                                 "meaning"), [
                [r["target"], r["zone"], f"{r['listed']} of {r['lookups']}",
                 "yes" if r["listed_at_end"] else "no", r["code"] or "", r["meaning"] or ""]
                for r in dns["listings"]], numeric=6))  # fmt: skip
        else:
            parts.append(_note(f"No DNSBL listings in {dns['dnsbl_lookups']} lookups."
                               if dns["dnsbl_lookups"] else "No DNSBL lookups this week."))

    sup = f["suppress"]
    parts.append(_h2("Recipients to suppress"))
    if sup["recipients"]:
        parts.append(_p(f"{num(sup['recipients'])} recipients ({num(sup['hard_bounces'])} hard "
                        f"bounces, {num(sup['complaints'])} complaints): see the attached CSV."))
    else:
        parts.append(_note("No hard bounces or complaints this week."))

    body = "\n".join(p for p in parts if p)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>Deliverability report {escape(f["week"])}</title></head>'
            f'<body style="margin:0;padding:0;background:#f5f7f8;{_FONT}">'
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'style="background:#f5f7f8;"><tr><td align="center" style="padding:16px;">'
            '<table role="presentation" width="680" cellpadding="0" cellspacing="0" '
            'style="max-width:680px;width:100%;background:#ffffff;"><tr>'
            f'<td style="padding:20px;{_FONT}color:#263238;">\n{body}\n'
            "</td></tr></table></td></tr></table></body></html>\n")  # fmt: skip


# -- plain text -----------------------------------------------------------------


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "-" * len(line)]
    for row in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return out


def text(figures: Mapping[str, Any]) -> str:
    """The plain-text part: the same sections, as aligned columns."""
    f = figures
    tz = f["time_zone"]
    lines = [f"Weekly deliverability report {f['week']} ({span(f)}, "
             f"{f['time_zone']}), compared with {f['previous_week']}", ""]  # fmt: skip
    src = f["sources"]
    lines.append("Sources with data: " + (", ".join(SOURCE_NAMES[n] for n in src["with_data"])
                                          or "none"))  # fmt: skip
    lines.append("Without data this week: " + (", ".join(SOURCE_NAMES[n]
                                                          for n in src["without_data"]) or "none"))
    lines += ["", "THE WEEK IN NUMBERS"]
    lines += _columns(("", "this week", "previous", "change", "status"), [
        [_LABELS[n], _value(n, i["this"]), _value(n, i["previous"]), _change(n, i),
         i["status"] or ""] for n, i in f["numbers"].items()])  # fmt: skip
    head = ("submitted", "delivered", "deferrals", "bounced", "complaints", "bounce",
            "deferral", "complaint")  # fmt: skip
    for title, key in (("PER PROVIDER", "providers"), ("TOP DOMAINS", "domains")):
        lines += ["", title]
        lines += (_columns(("name", *head), _group_rows(f[key])) if f[key]
                  else ["no deliveries this week"])  # fmt: skip
    lines += ["", "INCIDENTS"]
    lines += [f"- {i['kind']} {i['provider']} {i['domain'] or '(all)'}: "
              f"{when(i['started_at'], tz)}, {duration(i['duration_seconds'])}"
              f"{' (still open)' if i['open_at_end'] else ''}"
              f"{'; ' + i['evidence_summary'] if i['evidence_summary'] else ''}"
              for i in f["incidents"]] or ["no incidents this week"]
    b = f["bounces"]
    lines += ["", "BOUNCES"]
    if b["total"]:
        lines.append(f"{b['total']} bounces: {b['hard']} hard, {b['soft']} soft")
        lines += _columns(("reason", "hard", "blame", "bounces", "share"), [
            [r["reason"], "yes" if r["hard"] else "no", r["blame"], num(r["count"]),
             pct(r["share"], 1)] for r in b["reasons"]])  # fmt: skip
        lines.append("blame: " + ", ".join(f"{r['blame']} {pct(r['share'], 1)}"
                                           for r in b["blame"]))  # fmt: skip
    else:
        lines.append(b["note"])
    c = f["complaints"]
    lines += ["", "COMPLAINT RATE",
              f"{pct(c['rate'], 3)} ({c['complained']} complaints, {c['delivered']} delivered;"
              f" warning {pct(c['warning'], 1)}, critical {pct(c['critical'], 1)})"
              if c["delivered"] else "nothing delivered this week"]  # fmt: skip
    lat = f["latency"]
    lines += ["", "DELIVERY LATENCY (seconds)"]
    lines += (_columns(("", "deliveries", "p50", "p90", "p95", "p99", "max"), [
        [label, num(d["deliveries"]), *(num(d[k]) for k in ("p50", "p90", "p95", "p99", "max"))]
        for label, d in (("this week", lat), ("previous week", lat["previous"]))])
        if lat["deliveries"] else [lat["note"]])  # fmt: skip
    s = f["seeds"]
    lines += ["", "SEED PLACEMENT"]
    lines += (_columns(("provider", "probes", "inbox", "tab", "spam", "missing", "unreadable",
                        "inbox rate"), [
        [r["provider"], num(r["probes"]), num(r["inbox"]), num(r["tab"]), num(r["spam"]),
         num(r["missing"]), num(r["error"]), pct(r["inbox_rate"], 1)] for r in s["providers"]])
        if s["providers"] else [s["note"]])  # fmt: skip
    d = f["dmarc"]
    lines += ["", "DMARC"]
    if d["domains"]:
        lines.append(f"{d['messages']} messages reported, {pct(d['pass_rate'], 1)} pass")
        lines += [f"- unknown sender {u['ip']} for {u['domain']}: {u['messages']} messages"
                  for u in d["unknown_sources"]]  # fmt: skip
    else:
        lines.append(d["note"])
    dns = f["dns"]
    lines += ["", "DNS POSTURE AND DNSBL"]
    if "note" in dns:
        lines.append(dns["note"])
    else:
        lines += [f"- {when(ch['at'], tz)} {ch['domain']} {ch['check']}: "
                  f"{ch['from'] or '(first check)'} -> {ch['to']} ({ch['reason']})"
                  for ch in dns["changes"]] or ["no posture changes this week"]
        lines += [f"- listed: {r['target']} on {r['zone']} ({r['listed']} of {r['lookups']} "
                  f"lookups{', still listed' if r['listed_at_end'] else ''})"
                  for r in dns["listings"]] or ["no DNSBL listings this week"]
    sup = f["suppress"]
    lines += ["", "RECIPIENTS TO SUPPRESS",
              f"{sup['recipients']} recipients ({sup['hard_bounces']} hard bounces, "
              f"{sup['complaints']} complaints): see the attached CSV"
              if sup["recipients"] else "no hard bounces or complaints this week"]  # fmt: skip
    return "\n".join(lines) + "\n"
