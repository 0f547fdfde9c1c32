"""A fixed store for the weekly report: ISO week 2026-W47 and 2026-W46 with known numbers.

Everything goes in through the Pipeline (events and records) as the collectors put it;
incidents as the rollup engine opens and closes them.  The numbers (``EXPECTED``) follow
from the construction below, not from running the report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.collectors.reports.records import DmarcRow
from monitor.collectors.seeds.records import SeedPlacement
from monitor.dnscheck.records import DnsblListing, DnsCheck
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.rollup.incidents import active, close, open_incident
from monitor.store import Store

WEEK = "2026-W47"
MONDAY = datetime(2026, 11, 16, tzinfo=UTC)  # 2026-W47 starts
PREVIOUS_MONDAY = MONDAY - timedelta(days=7)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()  # the Monday after, 08:00

#: provider, domain, submitted, delivered, bounced, expired, deferrals (on delivered ones),
#: bounce (reason, hard, blame), latency of the n-th delivery in seconds
THIS_WEEK = (
    ("google", "gmail.com", 100, 96, 4, 0, 10, ("userunknown", True, "recipient"),
     lambda n: 20 + n),
    ("microsoft", "outlook.com", 50, 44, 5, 1, 0, ("blocked", False, "reputation"),
     lambda n: 60 + 2 * n),
    ("yahoo", "yahoo.com", 20, 20, 0, 0, 0, None, lambda n: 5 + n),
)  # fmt: skip
PREVIOUS_WEEK = (
    ("google", "gmail.com", 80, 80, 0, 0, 0, None, lambda n: 30),
    ("microsoft", "outlook.com", 40, 38, 2, 0, 0, ("userunknown", True, "recipient"),
     lambda n: 30),
)  # fmt: skip
#: (provider, domain, n-th message, day of the week): complaints this week
COMPLAINTS = (("google", "gmail.com", 0, 2), ("yahoo", "yahoo.com", 3, 4))


def _latencies(plan: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for provider, _d, _s, delivered, *_rest, latency in plan:
        out[provider] = [float(latency(n)) for n in range(delivered)]
    return out


EXPECTED_LATENCIES = _latencies(THIS_WEEK)


def _messages(pipeline: Pipeline, monday: datetime, plan: Any, tag: str) -> None:
    for provider, domain, submitted, delivered, bounced, expired, deferrals, why, latency in plan:
        assert submitted == delivered + bounced + expired
        for i in range(submitted):
            day = monday + timedelta(days=i % 7, hours=9, minutes=i)
            common = {"source": "postfix:mx1", "queue_id": f"Q{tag}{provider}{i}",
                      "message_id": f"{tag}-{provider}-{i}@app.example",
                      "sender": "news@app.example", "recipient": f"user{i}@{domain}",
                      "provider": provider, "relay": f"mx.{domain}[192.0.2.1]:25"}  # fmt: skip
            pipeline.put(Event(EventType.SUBMITTED, day, **common))
            if i < delivered:
                if i < deferrals:
                    pipeline.put(Event(EventType.DEFERRED, day + timedelta(seconds=5),
                                       reply_code=421, enhanced_status="4.7.28",
                                       diagnostic="421 4.7.28 rate limited", reason="speeding",
                                       hard=False, blame="rate", attempt=1, **common))
                pipeline.put(Event(EventType.DELIVERED, day + timedelta(seconds=latency(i)),
                                   reply_code=250, **common))  # fmt: skip
            elif i < delivered + bounced:
                reason, hard, blame = why
                pipeline.put(Event(EventType.BOUNCED, day + timedelta(seconds=30), reply_code=550,
                                   enhanced_status="5.1.1" if hard else "5.7.1",
                                   diagnostic=f"550 {reason}", reason=reason, hard=hard,
                                   blame=blame, **common))  # fmt: skip
            else:
                pipeline.put(Event(EventType.EXPIRED, day + timedelta(hours=2), reason="expired",
                                   hard=False, blame="infrastructure", **common))  # fmt: skip


def _records(pipeline: Pipeline) -> None:
    def at(day: int, hour: int = 12) -> datetime:
        return MONDAY + timedelta(days=day, hours=hour)

    placements = [("r1", 1, "gmail-a@gmail.com", "google", "inbox"),
                  ("r1", 1, "gmail-b@gmail.com", "google", "tab:promotions"),
                  ("r1", 1, "seed@outlook.com", "microsoft", "spam"),
                  ("r1", 1, "seed@yahoo.com", "yahoo", "inbox"),
                  ("r2", 3, "gmail-a@gmail.com", "google", "inbox"),
                  ("r2", 3, "gmail-b@gmail.com", "google", "inbox"),
                  ("r2", 3, "seed@outlook.com", "microsoft", "missing"),
                  ("r2", 3, "seed@yahoo.com", "yahoo", "inbox"),
                  ("r3", 4, "seed@outlook.com", "microsoft", "error")]  # fmt: skip
    for run, day, seed, provider, placement in placements:
        pipeline.put_record(SeedPlacement(
            "seeds", at(day), run_id=run, seed=seed, provider=provider, token=f"{run}{seed}",
            message_id=f"{run}.{seed}@probe.example", placement=placement,
            seconds_to_inbox=42.0 if placement == "inbox" else None))  # fmt: skip
    for position, (ip, count, ok) in enumerate((("192.0.2.10", 900, True),
                                                ("203.0.113.5", 100, False))):  # fmt: skip
        pipeline.put_record(DmarcRow(
            "dmarc", at(2), org_name="google.com", org_email="noreply-dmarc@google.com",
            report_id="rep-1", end=at(2), policy_domain="example.com", position=position,
            source_ip=ip, count=count, header_from="example.com", envelope_from="example.com",
            disposition="none", dkim_aligned=ok, spf_aligned=ok, dkim_results=(),
            spf_results=(), override_reasons=(), p="reject", sp="reject", pct=100, adkim="r",
            aspf="r"))  # fmt: skip
    checks = [(-6, "spf", "pass", "v=spf1 -all"), (-6, "dmarc", "pass", "v=DMARC1; p=reject"),
              (2, "spf", "pass", "v=spf1 -all"), (2, "dmarc", "fail", None),
              (4, "mta_sts", "warn", "v=STSv1; id=1")]  # fmt: skip
    for day, check, status, value in checks:
        pipeline.put_record(DnsCheck("dnscheck", at(day), domain="example.com", check=check,
                                     status=status, reason=f"{check} {status}", value=value))
    for day, target, listed in ((1, "198.51.100.7", False), (2, "198.51.100.7", True),
                                (3, "198.51.100.7", True), (4, "198.51.100.7", False),
                                (1, "198.51.100.8", False)):  # fmt: skip
        pipeline.put_record(DnsblListing(
            "dnsbl", at(day), target=target, zone="zen.example", listed=listed,
            code="127.0.0.2" if listed else None, meaning="SBL" if listed else None))


def _close(conn: Any, provider: str, domain: str, start: float, seconds: float) -> None:
    row = active(conn, "domain_rejecting", start)[(provider, domain)]
    close(conn, row, start + seconds, {"why": "recovered"})


def build_store(store: Store) -> None:
    """Fill ``store`` with the two weeks, the records and the incidents."""
    pipeline = Pipeline(store, clock=lambda: NOW)
    _messages(pipeline, PREVIOUS_MONDAY, PREVIOUS_WEEK, "p")
    _messages(pipeline, MONDAY, THIS_WEEK, "t")
    for provider, domain, i, day in COMPLAINTS:
        pipeline.put(Event(EventType.COMPLAINED, MONDAY + timedelta(days=day, hours=15),
                           source="sendgrid", message_id=f"t-{provider}-{i}@app.example",
                           recipient=f"user{i}@{domain}", provider=provider,
                           reason="feedback"))  # fmt: skip
    _records(pipeline)
    pipeline.close()
    evidence = {"top_replies": [{"reply_code": 550, "enhanced_status": "5.7.1",
                                 "reason": "blocked", "text": "blocked by policy", "count": 5}]}
    with store.engine.begin() as conn:
        before = (PREVIOUS_MONDAY + timedelta(days=2)).timestamp()
        open_incident(conn, "domain_rejecting", "google", "gmail.com", before, {})
        _close(conn, "google", "gmail.com", before, 600)
        tuesday = (MONDAY + timedelta(days=1, hours=10)).timestamp()
        open_incident(conn, "domain_rejecting", "microsoft", "outlook.com", tuesday, evidence)
        _close(conn, "microsoft", "outlook.com", tuesday, 9000)
        sunday = (MONDAY + timedelta(days=6, hours=23)).timestamp()
        open_incident(conn, "bounce_rate", "microsoft", "", sunday, {})
