"""Every figure of the weekly report, computed with pandas from :class:`WeekData`.

The result is plain JSON (``--json`` prints it, the HTML and text parts render it).
Rates are defined as ``mailmon stats`` defines them (``monitor.store.queries.rates``):
bounce rate = bounced / finished (delivered + bounced + expired), deferral rate =
deferrals / attempts, complaint rate = complaints / delivered.  A section with no data
carries ``note`` saying so instead of zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from monitor.collectors.reports.summary import summarize
from monitor.report.data import WeekData, record_counts
from monitor.store.queries import STAT_FIELDS, rates

__all__ = ["Thresholds", "compute"]

RATES = ("delivery_rate", "bounce_rate", "deferral_rate", "complaint_rate")
PERCENTILES = (50, 90, 95, 99)
#: Seed placements as the report groups them (``tab:<name>`` is a Gmail tab: in the inbox;
#: ``error``: the mailbox could not be read, left out of the rates as the alert does).
PLACEMENTS = ("inbox", "tab", "spam", "missing", "error", "other")


@dataclass(frozen=True)
class Thresholds:
    """Where a rate turns ``warning`` and ``critical`` (from ``[rollup]`` where it has them)."""

    bounce: tuple[float, float] = (0.02, 0.05)
    deferral: tuple[float, float] = (0.10, 0.25)
    complaint: tuple[float, float] = (0.001, 0.003)

    def of(self, rate: str) -> tuple[float, float] | None:
        return {"bounce_rate": self.bounce, "deferral_rate": self.deferral,
                "complaint_rate": self.complaint}.get(rate)  # fmt: skip


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def _totals(frame: pd.DataFrame) -> dict[str, Any]:
    """Outcome sums of counter rows, with their rates."""
    sums = frame.groupby("outcome")["count"].sum() if len(frame) else pd.Series(dtype=int)
    row: dict[str, Any] = {name: int(sums.get(name, 0)) for name in STAT_FIELDS}
    return row | rates(row)


def _status(value: float | None, limits: tuple[float, float] | None) -> str | None:
    if value is None or limits is None:
        return None
    return "critical" if value >= limits[1] else "warning" if value >= limits[0] else "ok"


def _numbers(this: dict[str, Any], before: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    changes = {}
    for name in (*STAT_FIELDS, *RATES):
        now, then = this[name], before[name]
        if now is None or then is None:
            change, direction = None, "new" if then is None and now is not None else "none"
        else:
            change = round(now - then, 6)
            direction = "up" if change > 0 else "down" if change < 0 else "same"
        changes[name] = {"this": now, "previous": then, "change": change,
                         "direction": direction, "status": _status(now, th.of(name))}  # fmt: skip
    return changes


def _groups(frame: pd.DataFrame, by: str, top: int | None) -> list[dict[str, Any]]:
    if not len(frame):
        return []
    table = frame.pivot_table(index=by, columns="outcome", values="count", aggfunc="sum",
                              fill_value=0)  # fmt: skip
    out = []
    for name, sums in table.iterrows():
        row: dict[str, Any] = {"name": str(name) or "(none)"}
        row |= {field: int(sums.get(field, 0)) for field in STAT_FIELDS}
        out.append(row | rates(row))
    out.sort(key=lambda r: (-(r["submitted"] + r["delivered"] + r["deferred"]), r["name"]))
    return out if top is None else out[:top]


def _daily(frame: pd.DataFrame, week_start: float, tz: str) -> list[dict[str, Any]]:
    """Complaints and deliveries per local day of the week."""
    zone = ZoneInfo(tz)
    days = [datetime.fromtimestamp(week_start + 86400 * i + 43200, zone).date() for i in range(7)]
    if len(frame):
        local = pd.to_datetime(frame["bucket"], unit="s", utc=True).dt.tz_convert(tz).dt.date
        sums = frame.assign(day=local).groupby(["day", "outcome"])["count"].sum()
    else:
        sums = pd.Series(dtype=int)
    out = []
    for day in days:
        complained = int(sums.get((day, "complained"), 0))
        delivered = int(sums.get((day, "delivered"), 0))
        out.append({"date": day.isoformat(), "complained": complained, "delivered": delivered,
                    "rate": _share(complained, delivered)})  # fmt: skip
    return out


def _quantiles(seconds: pd.Series) -> dict[str, Any]:
    if not len(seconds):
        return {"deliveries": 0} | {f"p{p}": None for p in PERCENTILES} | {"max": None}
    q = seconds.quantile([p / 100 for p in PERCENTILES])
    out: dict[str, Any] = {"deliveries": len(seconds)}
    out |= {f"p{p}": round(float(q[p / 100]), 1) for p in PERCENTILES}
    return out | {"max": round(float(seconds.max()), 1)}


def _latency(data: WeekData, top: int) -> dict[str, Any]:
    frame = data.latency
    this = frame[frame["final_at"] >= data.start]
    out = _quantiles(this["seconds"]) | {"previous": _quantiles(
        frame[frame["final_at"] < data.start]["seconds"])}  # fmt: skip
    per = []
    for provider, rows in this.groupby(this["provider"].fillna("")):
        per.append({"provider": provider or "(none)"} | _quantiles(rows["seconds"]))
    per.sort(key=lambda r: (-int(r["deliveries"]), str(r["provider"])))
    out["providers"] = per[:top]
    if not len(this):
        out["note"] = "no deliveries with a known submission time this week"
    return out


def _bounces(data: WeekData, top: int) -> dict[str, Any]:
    frame = data.failures[data.failures["outcome"] == "bounced"]
    total = int(frame["count"].sum()) if len(frame) else 0
    out: dict[str, Any] = {"total": total, "hard": 0, "soft": 0, "reasons": [], "blame": []}
    if not total:
        return out | {"note": "no bounces this week"}
    by_hard = frame.groupby("hard")["count"].sum()
    out["hard"], out["soft"] = int(by_hard.get("hard", 0)), int(by_hard.get("soft", 0))
    reasons = frame.groupby(["reason", "hard", "blame"], as_index=False)["count"].sum()
    reasons = reasons.sort_values(["count", "reason"], ascending=[False, True]).head(top)
    out["reasons"] = [{"reason": r.reason or "undefined", "hard": r.hard == "hard",
                       "blame": r.blame or "unknown", "count": int(r.count),
                       "share": _share(int(r.count), total)}
                      for r in reasons.itertuples()]  # fmt: skip
    blame = frame.assign(blame=frame["blame"].replace("", "unknown"))
    sums = blame.groupby("blame")["count"].sum().sort_values(ascending=False, kind="stable")
    out["blame"] = [{"blame": str(name), "count": int(n), "share": _share(int(n), total)}
                    for name, n in sorted(sums.items(), key=lambda x: (-x[1], x[0]))]  # fmt: skip
    return out


def _incidents(data: WeekData) -> list[dict[str, Any]]:
    out = []
    for i in data.incidents:
        ended = i["ended_at"]
        until = data.end if ended is None or ended > data.end else ended
        out.append({
            "id": i["id"], "kind": i["kind"], "provider": i["provider"], "domain": i["domain"],
            "started_at": _iso(i["started_at"]), "ended_at": _iso(ended),
            "open_at_end": ended is None or ended > data.end,
            "duration_seconds": round(until - max(i["started_at"], data.start), 1),
            "evidence_summary": evidence_summary(i["evidence"]), "evidence": i["evidence"],
        })  # fmt: skip
    return out


def evidence_summary(evidence: Mapping[str, Any]) -> str:
    """One line of an incident's evidence: its top reply, else its top failure reason."""
    replies = evidence.get("top_replies") or []
    if replies:
        r = replies[0]
        text = " ".join(str(p) for p in (r.get("reply_code"), r.get("enhanced_status"),
                                           r.get("text")) if p)  # fmt: skip
        return f"{text} (x{r.get('count', 0)})"[:300]
    reasons = evidence.get("top_reasons") or []
    if reasons:
        r = reasons[0]
        return f"{r.get('outcome', '')} {r.get('reason', '')} (x{r.get('count', 0)})".strip()
    return ""


def _seeds(data: WeekData) -> dict[str, Any]:
    if not data.seeds:
        return {"probes": 0, "providers": [], "note": "no seed probes configured, or none ran "
                "this week"}  # fmt: skip
    frame = pd.DataFrame([{"provider": s.provider, "placement": s.placement,
                           "seconds": s.seconds_to_inbox} for s in data.seeds])  # fmt: skip
    group = frame["placement"].map(
        lambda p: "tab" if p.startswith("tab:") else p if p in PLACEMENTS else "other")
    frame = frame.assign(group=group)
    out = []
    for provider, rows in frame.groupby("provider"):
        counts = rows["group"].value_counts()
        row: dict[str, Any] = {"provider": provider, "probes": len(rows)}
        row |= {p: int(counts.get(p, 0)) for p in PLACEMENTS}
        read = len(rows) - row["error"]
        row["inbox_rate"] = _share(row["inbox"] + row["tab"], read)
        row["spam_rate"] = _share(row["spam"], read)
        median = rows["seconds"].dropna().median()
        row["median_seconds_to_inbox"] = None if pd.isna(median) else round(float(median), 1)
        out.append(row)
    counts = frame["group"].value_counts()
    placed = int(counts.get("inbox", 0) + counts.get("tab", 0))
    read = len(frame) - int(counts.get("error", 0))
    return {"probes": len(frame), "unreadable": len(frame) - read,
            "inbox_rate": _share(placed, read),
            "spam_rate": _share(int(counts.get("spam", 0)), read),
            "providers": out}  # fmt: skip


def _dmarc(data: WeekData, top: int) -> dict[str, Any]:
    if not data.dmarc and not data.tls:
        return {"messages": 0, "domains": [], "unknown_sources": [],
                "note": "no DMARC aggregate reports received this week"}  # fmt: skip
    domains = summarize(data.dmarc, data.tls, top=top)
    messages = sum(d["messages"] for d in domains)
    passed = sum(d["passed"] for d in domains)
    unknown = [{"domain": d["domain"]} | s for d in domains for s in d["unknown_sources"]]
    unknown.sort(key=lambda s: (-s["messages"], s["domain"], s["ip"]))
    rows = [{k: d[k] for k in ("domain", "messages", "passed", "pass_rate", "reports", "policy",
                               "sources", "unknown_source_count", "tls_sessions")}
            for d in domains]  # fmt: skip
    return {"messages": messages, "passed": passed, "pass_rate": _share(passed, messages),
            "domains": rows, "unknown_sources": unknown[:top]}  # fmt: skip


def _dns(data: WeekData) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    current: dict[tuple[str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, str], tuple[str, str | None]] = {}
    for check in data.dns_checks:  # oldest first
        key = (check.domain, check.check)
        state = (check.status, check.value)
        before = seen.get(key)
        if check.occurred_at.timestamp() >= data.start and before != state:
            changes.append({"at": check.occurred_at.isoformat(), "domain": check.domain,
                            "check": check.check, "from": before[0] if before else None,
                            "to": check.status, "reason": check.reason,
                            "value": check.value})  # fmt: skip
        seen[key] = state
        current[key] = {"domain": check.domain, "check": check.check, "status": check.status,
                        "reason": check.reason}  # fmt: skip
    listings: dict[tuple[str, str], dict[str, Any]] = {}
    for item in data.dnsbl:
        row = listings.setdefault((item.target, item.zone), {
            "target": item.target, "zone": item.zone, "lookups": 0, "listed": 0,
            "first_listed_at": None, "last_listed_at": None, "listed_at_end": False,
            "code": None, "meaning": None})  # fmt: skip
        row["lookups"] += 1
        row["listed_at_end"] = bool(item.listed)
        if item.listed:
            row["listed"] += 1
            row["first_listed_at"] = row["first_listed_at"] or item.occurred_at.isoformat()
            row["last_listed_at"] = item.occurred_at.isoformat()
            row["code"], row["meaning"] = item.code, item.meaning
    checks_in_week = sum(1 for c in data.dns_checks if c.occurred_at.timestamp() >= data.start)
    out: dict[str, Any] = {
        "checks": checks_in_week, "changes": changes,
        "posture": [current[k] for k in sorted(current)],
        "dnsbl_lookups": len(data.dnsbl),
        "listings": sorted((r for r in listings.values() if r["listed"]),
                           key=lambda r: (r["target"], r["zone"])),
    }  # fmt: skip
    if not checks_in_week and not data.dnsbl:
        out["note"] = "no DNS posture checks or DNSBL lookups ran this week"
    return out


def suppress_rows(data: WeekData) -> list[dict[str, Any]]:
    """One row per recipient and cause (hard bounce, complaint), the latest seen."""
    frame = data.suppress
    if not len(frame):
        return []
    frame = frame[(frame["type"] == "complained") | frame["hard"].eq(True)]
    frame = frame.assign(why=frame["type"].map({"bounced": "hard_bounce",
                                                "complained": "complaint"}),
                         recipient=frame["recipient"].str.strip())  # fmt: skip
    last = frame.sort_values("occurred_at").groupby(["recipient", "why"], as_index=False).last()
    return [{"recipient": r.recipient, "why": r.why, "reason": r.reason or "",
             "last_seen": _iso(float(r.occurred_at))}
            for r in last.sort_values(["recipient", "why"]).itertuples()]  # fmt: skip


def _sources(data: WeekData, counts: Mapping[str, int]) -> dict[str, Any]:
    frame = data.event_sources
    events = ({str(k): int(v) for k, v in frame.groupby("source")["count"].sum().items()}
              if len(frame) else {})  # fmt: skip
    names = {"mta_and_esp_events": bool(events), "dmarc_reports": bool(counts["dmarc_rows"]),
             "tls_reports": bool(counts["tlsrpt_policies"]),
             "dns_posture": bool(counts["dns_checks"]),
             "dnsbl": bool(counts["dnsbl_listings"]),
             "seed_probes": bool(counts["seed_placements"])}  # fmt: skip
    return {"events": dict(sorted(events.items())), "records": dict(counts),
            "incidents": len(data.incidents),
            "with_data": [n for n, ok in names.items() if ok],
            "without_data": [n for n, ok in names.items() if not ok]}  # fmt: skip


def compute(
    data: WeekData, *, week: str, previous: str, time_zone: str, top: int = 10,
    thresholds: Thresholds = Thresholds(), generated_at: float | None = None,
) -> dict[str, Any]:
    """The report's figures for ``data`` (``week``/``previous``: the ISO weeks' names)."""
    frame = data.counters
    this = frame[frame["week"] == "this"]
    before = frame[frame["week"] == "previous"]
    numbers = _numbers(_totals(this), _totals(before), thresholds)
    suppress = suppress_rows(data)
    complaints = numbers["complaint_rate"]
    return {
        "week": week, "previous_week": previous, "time_zone": time_zone,
        "start": _iso(data.start), "end": _iso(data.end),
        "generated_at": _iso(generated_at),
        "thresholds": {"bounce_rate": list(thresholds.bounce),
                       "deferral_rate": list(thresholds.deferral),
                       "complaint_rate": list(thresholds.complaint)},
        "sources": _sources(data, record_counts(data)),
        "numbers": numbers,
        "providers": _groups(this, "provider", None),
        "domains": _groups(this, "domain", top),
        "incidents": _incidents(data),
        "bounces": _bounces(data, top),
        "complaints": {"complained": numbers["complained"]["this"],
                       "delivered": numbers["delivered"]["this"],
                       "rate": complaints["this"], "status": complaints["status"],
                       "warning": thresholds.complaint[0], "critical": thresholds.complaint[1],
                       "daily": _daily(data.daily, data.start, time_zone)},
        "latency": _latency(data, top),
        "seeds": _seeds(data),
        "dmarc": _dmarc(data, top),
        "dns": _dns(data),
        "suppress": {"recipients": len({r["recipient"] for r in suppress}),
                     "hard_bounces": sum(r["why"] == "hard_bounce" for r in suppress),
                     "complaints": sum(r["why"] == "complaint" for r in suppress)},
    }  # fmt: skip


def no_traffic(figures: Mapping[str, Any]) -> bool:
    """True when the week has no counted deliveries at all."""
    return not any(figures["numbers"][f]["this"] for f in STAT_FIELDS)
