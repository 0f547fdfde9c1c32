"""The weekly report: known figures from a fixed store, the CLI, sections without data."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_store import EXPECTED_LATENCIES, NOW, WEEK, build_store

from monitor.cli import main
from monitor.config import Config, load_config
from monitor.errors import ConfigError
from monitor.jobs.catalog import effective, trigger_of
from monitor.report import build, last_complete_week, parse_week
from monitor.store import Store


@pytest.fixture
def filled(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as store:
        build_store(store)
        yield store


def _figures(store: Store, config: Config | None = None) -> dict[str, Any]:
    return build(store, config or Config(), parse_week(WEEK, "UTC"), now=NOW).figures


def _quantile(values: list[float], p: int) -> float:
    """Linear interpolation between closest ranks (statistics' "inclusive" method)."""
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 1)


def test_week_in_numbers_against_the_previous_week(filled: Store) -> None:
    """Volumes and rates of the week and the week before, with changes, arrows and status."""
    n = _figures(filled)["numbers"]
    this = {k: n[k]["this"] for k in n}
    before = {k: n[k]["previous"] for k in n}
    assert this == {"submitted": 170, "delivered": 160, "deferred": 10, "bounced": 9,
                    "expired": 1, "rejected": 0, "complained": 2,
                    "delivery_rate": round(160 / 170, 6), "bounce_rate": round(9 / 170, 6),
                    "deferral_rate": round(10 / 179, 6), "complaint_rate": round(2 / 160, 6)}
    assert before == {"submitted": 120, "delivered": 118, "deferred": 0, "bounced": 2,
                      "expired": 0, "rejected": 0, "complained": 0,
                      "delivery_rate": round(118 / 120, 6), "bounce_rate": round(2 / 120, 6),
                      "deferral_rate": 0.0, "complaint_rate": 0.0}
    assert n["submitted"]["change"] == 50 and n["submitted"]["direction"] == "up"
    assert n["rejected"]["direction"] == "same"
    assert n["delivery_rate"]["direction"] == "down"
    # bounce 5.3 % >= 5 % critical; deferral 5.6 % < 10 % ok; complaints 1.25 % >= 0.3 %
    assert (n["bounce_rate"]["status"], n["deferral_rate"]["status"],
            n["complaint_rate"]["status"]) == ("critical", "ok", "critical")


def test_providers_domains_bounces_and_complaints(filled: Store) -> None:
    """Per provider and domain rows, bounce reasons with blame, daily complaint rates."""
    f = _figures(filled)
    rows = {r["name"]: (r["submitted"], r["delivered"], r["deferred"], r["bounced"],
                        r["expired"], r["complained"]) for r in f["providers"]}
    assert rows == {"google": (100, 96, 10, 4, 0, 1), "microsoft": (50, 44, 0, 5, 1, 0),
                    "yahoo": (20, 20, 0, 0, 0, 1)}
    assert [r["name"] for r in f["providers"]] == ["google", "microsoft", "yahoo"]
    assert [r["name"] for r in f["domains"]] == ["gmail.com", "outlook.com", "yahoo.com"]
    assert f["domains"][1]["bounce_rate"] == 0.1  # 5 of 50 finished
    b = f["bounces"]
    assert (b["total"], b["hard"], b["soft"]) == (9, 4, 5)
    assert b["reasons"] == [
        {"reason": "blocked", "hard": False, "blame": "reputation", "count": 5,
         "share": round(5 / 9, 6)},
        {"reason": "userunknown", "hard": True, "blame": "recipient", "count": 4,
         "share": round(4 / 9, 6)},
    ]
    assert [(r["blame"], r["count"]) for r in b["blame"]] == [("reputation", 5), ("recipient", 4)]
    c = f["complaints"]
    assert (c["complained"], c["delivered"], c["rate"]) == (2, 160, 0.0125)
    assert (c["warning"], c["critical"]) == (0.001, 0.003)
    daily = {d["date"]: (d["complained"], d["delivered"]) for d in c["daily"]}
    assert len(daily) == 7 and sum(d for _, d in daily.values()) == 160
    assert daily["2026-11-18"][0] == 1 and daily["2026-11-20"][0] == 1


def test_incidents_latency_and_suppressions(filled: Store) -> None:
    """Incidents overlapping the week with durations and evidence; latency percentiles; CSV."""
    report = build(filled, Config(), parse_week(WEEK, "UTC"), now=NOW)
    f = report.figures
    got = [(i["kind"], i["provider"], i["domain"], i["duration_seconds"], i["open_at_end"],
            i["evidence_summary"]) for i in f["incidents"]]
    assert got == [("domain_rejecting", "microsoft", "outlook.com", 9000.0, False,
                    "550 5.7.1 blocked by policy (x5)"),
                   ("bounce_rate", "microsoft", "", 3600.0, True, "")]
    lat = f["latency"]
    every = sorted(x for values in EXPECTED_LATENCIES.values() for x in values)
    assert lat["deliveries"] == len(every) == 160
    assert {p: lat[f"p{p}"] for p in (50, 90, 95, 99)} == {
        p: _quantile(every, p) for p in (50, 90, 95, 99)}
    assert lat["max"] == max(every) == 146.0
    assert lat["previous"]["deliveries"] == 118 and lat["previous"]["p95"] == 30.0
    google = next(r for r in lat["providers"] if r["provider"] == "google")
    assert google["p50"] == _quantile(EXPECTED_LATENCIES["google"], 50)
    assert f["suppress"] == {"recipients": 6, "hard_bounces": 4, "complaints": 2}
    assert report.csv().splitlines() == [
        "recipient,why,reason,last_seen",
        "user0@gmail.com,complaint,feedback,2026-11-18T15:00:00+00:00",
        "user3@yahoo.com,complaint,feedback,2026-11-20T15:00:00+00:00",
        "user96@gmail.com,hard_bounce,userunknown,2026-11-21T10:36:30+00:00",
        "user97@gmail.com,hard_bounce,userunknown,2026-11-22T10:37:30+00:00",
        "user98@gmail.com,hard_bounce,userunknown,2026-11-16T10:38:30+00:00",
        "user99@gmail.com,hard_bounce,userunknown,2026-11-17T10:39:30+00:00",
    ]


def test_seeds_dmarc_dns_and_sources(filled: Store) -> None:
    """Seed placement per provider, DMARC pass rate and unknown senders, DNS changes, DNSBL."""
    f = _figures(filled)
    seeds = {r["provider"]: (r["probes"], r["inbox"], r["tab"], r["spam"], r["missing"],
                             r["error"], r["inbox_rate"], r["spam_rate"])
             for r in f["seeds"]["providers"]}  # fmt: skip
    assert seeds == {"google": (4, 3, 1, 0, 0, 0, 1.0, 0.0),
                     "microsoft": (3, 0, 0, 1, 1, 1, 0.0, 0.5),
                     "yahoo": (2, 2, 0, 0, 0, 0, 1.0, 0.0)}  # fmt: skip
    # An unreadable mailbox is left out of the rates, as MailmonSeedPlacementLow's ratio does.
    assert (f["seeds"]["probes"], f["seeds"]["unreadable"], f["seeds"]["inbox_rate"],
            f["seeds"]["spam_rate"]) == (9, 1, 0.75, 0.125)
    d = f["dmarc"]
    assert (d["messages"], d["passed"], d["pass_rate"]) == (1000, 900, 0.9)
    assert [(u["domain"], u["ip"], u["messages"]) for u in d["unknown_sources"]] == [
        ("example.com", "203.0.113.5", 100)]
    dns = f["dns"]
    assert dns["checks"] == 3
    assert [(c["check"], c["from"], c["to"]) for c in dns["changes"]] == [
        ("dmarc", "pass", "fail"), ("mta_sts", None, "warn")]
    assert [(r["target"], r["zone"], r["listed"], r["lookups"], r["listed_at_end"], r["code"])
            for r in dns["listings"]] == [("198.51.100.7", "zen.example", 2, 4, False,
                                           "127.0.0.2")]
    assert dns["dnsbl_lookups"] == 5
    s = f["sources"]
    assert s["events"] == {"postfix:mx1": 170 + 160 + 10 + 9 + 1, "sendgrid": 2}
    assert s["records"] == {"seed_placements": 9, "dmarc_rows": 2, "tlsrpt_policies": 0,
                            "dns_checks": 3, "dnsbl_listings": 5}
    assert s["without_data"] == ["tls_reports"]


def test_a_week_without_data_says_so(sqlite_url: str) -> None:
    """Every section of an empty week says it had no data, and which sources had none."""
    with Store.open(sqlite_url) as store:
        report = build(store, Config(), parse_week(WEEK, "UTC"), now=NOW)
    f = report.figures
    assert f["sources"]["with_data"] == []
    assert f["seeds"]["note"].startswith("no seed probes configured")
    assert "note" in f["dmarc"] and "note" in f["dns"] and "note" in f["bounces"]
    assert f["numbers"]["bounce_rate"]["this"] is None
    html, text = report.html(), report.text()
    for says in ("no seed probes configured", "no DMARC aggregate reports",
                 "No incidents this week", "No hard bounces or complaints"):
        assert says.lower() in html.lower() and says.lower() in text.lower()
    assert report.charts == {}


def test_cli_json_and_files(filled: Store, db_url: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints every figure; --out writes HTML, text, JSON, CSV, charts and the .eml."""
    out = tmp_path / "out"
    assert main(["report", "weekly", "--week", WEEK, "--db", db_url, "--json",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = _figures(filled)
    assert {k: v for k, v in printed.items() if k != "generated_at"} == {
        k: v for k, v in expected.items() if k != "generated_at"}
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"report-{WEEK}.{ext}" for ext in ("html", "txt", "json", "eml")]
                           + [f"suppress-{WEEK}.csv"]
                           + [f"report-{WEEK}-{c}.png" for c in
                              ("providers", "domains", "complaints", "latency", "blame",
                               "seeds")])
    assert json.loads((out / f"report-{WEEK}.json").read_text())["numbers"] == printed["numbers"]
    assert main(["report", "weekly", "--week", WEEK, "--db", db_url]) == 0
    assert "THE WEEK IN NUMBERS" in capsys.readouterr().out
    assert main(["report", "weekly", "--week", "2026-W54", "--db", db_url]) == 2
    assert "2026 has no week 54" in capsys.readouterr().err
    assert main(["report", "weekly", "--send", "--db", db_url]) == 2  # no [report] relay
    assert ("sending the report needs [report] relay_host, from_address, to"
            in capsys.readouterr().err)


def test_weeks_in_a_time_zone() -> None:
    """An ISO week runs Monday to Monday local time; the last complete week is the one before."""
    week = parse_week("2026-W13", "Europe/Berlin")  # summer time starts on its Sunday
    assert week.end - week.start == 7 * 86400 - 3600
    assert week.previous().name == "2026-W12" and week.following().name == "2026-W14"
    assert parse_week("2026-W01", "UTC").previous().name == "2025-W52"
    assert last_complete_week(NOW, "UTC").name == WEEK
    # Monday 00:30 in Tokyo is still Sunday in UTC: Tokyo's last complete week is W47
    assert last_complete_week(NOW - 8.5 * 3600 + 1800, "Asia/Tokyo").name == WEEK
    with pytest.raises(ConfigError):
        parse_week("47", "UTC")


def test_the_job_defaults_to_monday_8_in_the_report_zone(tmp_path: Path) -> None:
    """weekly_report: cron Monday 08:00 in [report] time_zone, on once a relay or a folder is set."""
    path = tmp_path / "mailmon.toml"
    path.write_text('[report]\ntime_zone = "Europe/Berlin"\n')
    assert not effective(load_config(path), "weekly_report").enabled
    path.write_text('[report]\ntime_zone = "Europe/Berlin"\nout_directory = "/tmp/x"\n'
                    '[jobs.weekly_report]\nenabled = true\n')
    job = effective(load_config(path), "weekly_report")
    assert job.enabled and job.cron == "0 8 * * mon" and job.time_zone == "Europe/Berlin"
    assert "Europe/Berlin" in trigger_of(job)[1]


def test_a_week_read_in_another_time_zone(filled: Store) -> None:
    """In Tokyo the week ends at 15:00 UTC on the Sunday and its days start at 15:00 UTC."""
    f = build(filled, Config(), parse_week(WEEK, "Asia/Tokyo"), now=NOW).figures
    assert (f["start"], f["end"]) == ("2026-11-15T15:00:00+00:00", "2026-11-22T15:00:00+00:00")
    assert f["numbers"]["delivered"]["this"] == 160  # sent 09:00-12:00 UTC: the same week
    complained = [d["date"] for d in f["complaints"]["daily"] if d["complained"]]
    assert complained == ["2026-11-19", "2026-11-21"]  # 15:00 UTC is midnight in Tokyo
    assert [i["kind"] for i in f["incidents"]] == ["domain_rejecting"]  # Sunday 23:00 UTC: W48
