"""Delivery latency p50/p95 per recipient domain, sending IP, sending domain and stream: the
1 h window exact, the 24 h window from hourly histograms, NDRs left out, gauges capped."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from factories import T0, ev
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.gauges import DomainLabeler, IpLabeler
from monitor.metrics import Metrics
from monitor.model import Event, domain_of
from monitor.rollup import (
    LatencyDetector,
    RejectingDetector,
    RollupEngine,
    SenderDomainRejectingDetector,
    SendingIpRejectingDetector,
    StreamRejectingDetector,
    list_incidents,
)
from monitor.rollup import latency as latency_module
from monitor.rollup.latency import (
    LEVELS,
    Latency,
    LatencyReader,
    SubjectLatency,
    _delivered_between,
    _LastHour,
    _slices,
    quantile,
)
from monitor.rollup.windows import REST
from monitor.store import Store
from monitor.store.schema import deliveries

HOUR = 3600.0
AT = T0.timestamp()  # 10:00: the 1 h window is 09:00-10:00, the 24 h one the day before it
IP1, IP2, IP3 = "192.0.2.1", "192.0.2.2", "198.51.100.9"
_n = 0


def _sent(
    latencies: list[float],
    minute: float,
    recipient_domain: str,
    provider: str,
    sender: str,
    ip: str | None,
    tags: tuple[str, ...],
) -> list[Event]:
    """One delivery per latency (seconds), submitted at ``minute`` after T0 (0.1 min apart)."""
    global _n
    out = []
    for i, latency in enumerate(latencies):
        _n += 1
        common = {"recipient": f"u{_n}@{recipient_domain}", "queue_id": f"L{_n:08d}",
                  "message_id": f"l{_n}@app.example", "provider": provider, "sender": sender,
                  "tags": tags}  # fmt: skip
        at = minute + i * 0.1
        out.append(ev("submitted", at, **common))
        out.append(ev("delivered", at + latency / 60, delay_seconds=latency, sending_ip=ip,
                      **common))  # fmt: skip
    return out


def _traffic() -> list[Event]:
    """Gmail and Yahoo in the last hour (exact window); Outlook only in older hours (24 h)."""
    receipts, news = ("stream:receipts",), ("category:news",)
    events = _sent([10, 20, 30, 40, 50], -50, "gmail.com", "google", "noreply@App.Example",
                   IP1, receipts)  # fmt: skip
    events += _sent([100, 200, 300], -40, "gmail.com", "google", "news@news.example", IP2, news)
    # No sending IP and no stream known: the domain and the sending domain only.
    events += _sent([70], -30, "gmail.com", "google", "x@app.example", None, ())
    events += _sent([600], -45, "yahoo.com", "yahoo", "noreply@app.example", IP1, receipts)
    # Our own notice, slow: left out everywhere.
    events += _sent([5000], -59 - 5000 / 60, "gmail.com", "google", "noreply@app.example",
                    IP1, ("ndr",))  # fmt: skip
    alerts = ("microsoft", "Alerts@A.Example.", IP3, ("stream:alerts",))
    events += _sent([45] * 10, -5 * 60, "outlook.com", *alerts)  # 05:00
    events += _sent([3 * HOUR] * 10, -17 * 60, "outlook.com", *alerts)  # 17:00 the day before
    events += _sent([100_000] * 5, -23.5 * 60 - 100_000 / 60, "outlook.com", *alerts)  # 10:30
    events += _sent([200_000] * 10, -24.5 * 60 - 200_000 / 60, "outlook.com", *alerts)  # 25 h back
    events += _sent([50_000] * 10, -4 * 60 - 50_000 / 60, "outlook.com", "microsoft", "Alerts@A.Example.", IP3,
                    ("ndr",))  # fmt: skip
    return events


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        s.write(_traffic())
        yield s


def _r(value: float | None) -> float | None:
    """Interpolation leaves float noise (259.99999999999994): compare to the microsecond."""
    return None if value is None else round(value, 6)


def _table(latency: list[SubjectLatency]) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """(level, provider, value, window) -> (deliveries, p50, p95)."""
    return {(t.level, t.provider, t.value, t.window): (t.deliveries, _r(t.p50), _r(t.p95))
            for t in latency}  # fmt: skip


def test_last_hour_quantiles_are_exact_per_subject(store: Store) -> None:
    """p50/p95 of the last hour per domain, sending IP, sending domain and stream, NDRs left out."""
    table = _table(RollupEngine(store, LatencyDetector()).evaluate(AT).latency)
    hour = {k[:3]: v for k, v in table.items() if k[3] == "1h"}
    assert hour == {
        ("domain", "google", "gmail.com"): (9, 50, 260),
        ("domain", "yahoo", "yahoo.com"): (1, 600, 600),
        ("sending_ip", "google", IP1): (5, 30, 48),
        ("sending_ip", "google", IP2): (3, 200, 290),
        ("sending_ip", "yahoo", IP1): (1, 600, 600),
        ("sender_domain", "google", "app.example"): (6, 35, 65),
        ("sender_domain", "google", "news.example"): (3, 200, 290),
        ("sender_domain", "yahoo", "app.example"): (1, 600, 600),
        ("stream", "google", "receipts"): (5, 30, 48),
        ("stream", "google", "news"): (3, 200, 290),
        ("stream", "yahoo", "receipts"): (1, 600, 600),
    }


def test_day_window_comes_from_whole_hours_and_moves_with_them(store: Store) -> None:
    """The 24 h window interpolates in its histogram, leaves out notices and the 25th hour back,
    and drops an hour when event time passes into the next one."""
    engine = RollupEngine(store, LatencyDetector())
    table = _table(engine.evaluate(AT).latency)
    # Outlook: 10 x 45 s in (30, 60], 10 x 3 h in (2 h, 4 h], 5 x 100,000 s in (1 d, 2 d].
    outlook = (25, 7200 + 7200 * 2.5 / 10, 86400 + 86400 * 3.75 / 5)
    for level, value in (("domain", "outlook.com"), ("sending_ip", IP3),
                         ("sender_domain", "a.example"), ("stream", "alerts")):  # fmt: skip
        assert table[(level, "microsoft", value, "24h")] == outlook
        assert (level, "microsoft", value, "1h") not in table
    # Gmail's last hour is the last whole hour: 1 in (5,10], 2 in (15,30], 2 in (30,60],
    # 2 in (60,120], 2 in (120,300].
    assert table[("domain", "google", "gmail.com", "24h")] == (9, 30 + 30 * 1.5 / 2,
                                                               120 + 180 * 1.55 / 2)  # fmt: skip
    assert table == _table(engine.evaluate(AT + 60).latency)  # the same hours, from the cache
    later = _table(engine.evaluate(AT + HOUR).latency)
    assert later[("domain", "microsoft", "outlook.com", "24h")] == (20, 60, 7200 + 7200 * 0.9)
    assert later[("domain", "google", "gmail.com", "24h")][0] == 9
    assert not any(k[3] == "1h" for k in later)  # nothing delivered 10:00-11:00


def test_day_window_hours_are_read_once_until_a_rebuild(store: Store) -> None:
    """Kept hours are not read again: rows stored late for them count after time moves back."""
    engine = RollupEngine(store, LatencyDetector())
    engine.evaluate(AT)
    alerts = ("microsoft", "Alerts@A.Example.", IP3, ("stream:alerts",))
    store.write(_sent([45] * 10, -5 * 60 + 2, "outlook.com", *alerts))  # back-filled 05:02
    store.write(_sent([45], -10, "outlook.com", *alerts))  # and one in the last hour
    table = _table(engine.evaluate(AT + 60).latency)
    assert table[("domain", "microsoft", "outlook.com", "24h")][0] == 25
    assert table[("domain", "microsoft", "outlook.com", "1h")] == (1, 45, 45)
    rebuilt = _table(engine.evaluate(AT).latency)  # backwards: every hour read afresh
    assert rebuilt[("domain", "microsoft", "outlook.com", "24h")][0] == 25 + 10 + 1  # 09:50 too


def test_gauges_keep_the_label_caps(store: Store) -> None:
    """Domains and IPs beyond the labels pool into ``other`` with a count and no quantiles."""
    metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["gmail.com"]), ips=IpLabeler(top=1))
    RollupEngine(store, LatencyDetector(), gauges=metrics.rollup).evaluate(AT)

    def value(name: str, labels: dict[str, str]) -> float | None:
        return _r(metrics.registry.get_sample_value(name, labels))

    gmail = {"provider": "google", "domain": "gmail.com", "window": "1h"}
    assert value("mailmon_domain_delivery_latency_seconds", gmail | {"quantile": "0.5"}) == 50
    assert value("mailmon_domain_delivery_latency_seconds", gmail | {"quantile": "0.95"}) == 260
    assert value("mailmon_domain_delivery_latency_deliveries", gmail) == 9
    assert value("mailmon_domain_delivery_latency_deliveries",
                 {"provider": "microsoft", "domain": "other", "window": "24h"}) == 25  # fmt: skip
    # IP3 delivered the most (25 in 24 h): the one IP with a label of its own.
    ip3 = {"provider": "microsoft", "sending_ip": IP3, "window": "24h"}
    assert value("mailmon_sending_ip_delivery_latency_seconds", ip3 | {"quantile": "0.5"}) == 9000
    assert value("mailmon_sending_ip_delivery_latency_deliveries",
                 {"provider": "google", "sending_ip": "other", "window": "1h"}) == 8  # fmt: skip
    stream = {"provider": "google", "stream": "news", "window": "1h", "quantile": "0.95"}
    assert value("mailmon_stream_delivery_latency_seconds", stream) == 290
    sending = {"provider": "google", "sender_domain": "app.example", "window": "1h",
               "quantile": "0.5"}  # fmt: skip
    assert value("mailmon_sender_domain_delivery_latency_seconds", sending) == 35
    labels = {
        (family.name, s.labels.get("domain", s.labels.get("sending_ip")))
        for family in metrics.registry.collect()
        for s in family.samples
        if family.name in ("mailmon_domain_delivery_latency_seconds",
                           "mailmon_sending_ip_delivery_latency_seconds")
    }  # fmt: skip
    assert labels == {("mailmon_domain_delivery_latency_seconds", "gmail.com"),
                      ("mailmon_sending_ip_delivery_latency_seconds", IP3)}  # fmt: skip


def _blocked(minute: float) -> list[Event]:
    """30 deferrals of gmail.com mail from IP1 (receipts) for reputation in five minutes."""
    out = []
    for i in range(30):
        out.append(ev("deferred", minute + i * 0.1, recipient=f"b{i}@gmail.com",
                      queue_id=f"B{i:08d}", message_id=f"b{i}@app.example", provider="google",
                      sender="noreply@app.example", sending_ip=IP1, tags=("stream:receipts",),
                      reply_code=421, enhanced_status="4.7.28", reason="blocked", hard=False,
                      diagnostic="421-4.7.28 unusual rate of unsolicited mail"))  # fmt: skip
    return out


def test_incident_evidence_carries_the_subjects_latency(store: Store) -> None:
    """Domain and sender-side incidents record their subject's last-hour p50/p95."""
    store.write(_blocked(-4))
    engine = RollupEngine(store, [RejectingDetector(), SendingIpRejectingDetector(),
                                  SenderDomainRejectingDetector(), StreamRejectingDetector()])  # fmt: skip
    result = engine.evaluate(AT)
    assert result.latency == []  # no gauges, no latency detector: read for the evidence only
    with store.engine.connect() as conn:
        found = {(i["kind"], i["domain"]): {k: _r(v) for k, v in i["evidence"]["latency_1h"].items()}
                 for i in list_incidents(conn)}  # fmt: skip
    assert found == {
        ("domain_rejecting", "gmail.com"): {"deliveries": 9, "p50": 50, "p95": 260},
        ("sending_ip_rejecting", IP1): {"deliveries": 5, "p50": 30, "p95": 48},
        ("sender_domain_rejecting", "app.example"): {"deliveries": 6, "p50": 35, "p95": 65},
        ("stream_rejecting", "receipts"): {"deliveries": 5, "p50": 30, "p95": 48},
    }


def test_rollup_json_lists_the_latency_of_the_last_evaluation(store: Store, db_url: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`mailmon rollup --json` gives per subject the 1 h and 24 h latency at the last time."""
    at = (T0 + timedelta(0)).isoformat()
    assert main(["rollup", "--db", db_url, "--at", at, "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    rows = {(r["level"], r["provider"], r["value"]): r for r in run["latency"]}
    news = rows[("stream", "google", "news")]["1h"]
    assert {k: _r(v) for k, v in news.items()} == {"deliveries": 3, "p50": 200, "p95": 290}
    outlook = rows[("domain", "microsoft", "outlook.com")]
    assert outlook["1h"] is None and outlook["24h"]["deliveries"] == 25


def test_reported_latency_is_rounded_to_milliseconds() -> None:
    """Latencies are differences of UNIX times near 1.8e9, whose float noise (1.0999999046...
    for 1.1) must not reach the JSON evidence or `rollup --json`."""
    submitted = 1795100000.0
    noisy = (submitted + 1.1) - submitted
    assert noisy != 1.1
    assert Latency(1, noisy, None).as_dict() == {"deliveries": 1, "p50": 1.1, "p95": None}


def _every_row(
    store: Store, end: float, kept: dict[str, Any], q: float, thresholds: dict[str, float]
) -> dict[str, Any]:
    """The last hour's (deliveries, p50, pq, slow) per level and key from every delivered row
    read into Python one by one: what the grouped read must equal."""
    c = deliveries.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(c.provider, c.recipient_domain, c.sending_ip, c.sender,
                                      c.stream_tag, c.final_at - c.submitted_at)
                            .where(*_delivered_between(end - HOUR, end))).all()  # fmt: skip
    values: dict[str, dict[Any, list[float]]] = {level: {} for level in ("provider", *LEVELS)}
    for provider, domain, ip, sender, stream, latency in rows:
        name, v = provider or "other", max(0.0, float(latency))
        values["provider"].setdefault((name, ""), []).append(v)
        for level, value in zip(LEVELS, (domain, ip, domain_of(sender), stream), strict=True):
            if value:
                if kept.get(level) is not None and value not in kept[level]:
                    value = REST
                values[level].setdefault((name, value), []).append(v)
    return {
        level: {
            key: (
                len(vs),
                quantile(sorted(vs), 0.5),
                quantile(sorted(vs), q),
                sum(1 for v in vs if v > thresholds[key[0]]),
            )
            for key, vs in per.items()
        }
        for level, per in values.items()
    }


def _deliveries(rng: random.Random, n: int, first: int = 0) -> list[Event]:
    """``n`` deliveries in the hour before AT: ties, zero and negative latencies, three
    providers (one unknown), senders in any case or none, streams or none."""
    events: list[Event] = []
    for i in range(first, first + n):
        at = -rng.uniform(1, 59)
        common = {"recipient": f"u{i}@d{rng.randrange(4)}.example", "queue_id": f"Q{i}",
                  "provider": rng.choice(["google", "yahoo", None]),
                  "sender": rng.choice(["a@X.Example", "b@y.example.", '"q@r"@Two.Example',
                                     " c@Z.example ", "nobody", None]),
                  "tags": rng.choice([(), ("stream:s0",), ("stream:s1",)])}  # fmt: skip
        latency = rng.choice([0.0, 5.0, 5.0, 12.0, rng.uniform(0, 900), -3.0])
        events.append(ev("submitted", at - latency / 60, **common))
        events.append(ev("delivered", at, sending_ip=rng.choice([IP1, IP2, None]), **common))
    return events


@pytest.mark.parametrize("slice_rows", [latency_module.SLICE_ROWS, 30, 4])
@pytest.mark.parametrize("kept", [{}, {"domain": ["d1.example"], "sending_ip": [IP1],
                                        "sender_domain": None, "stream": ["s0"]}])  # fmt: skip
def test_last_hour_kept_per_minute_equals_every_row_in_python(
    db_url: str, kept: dict[str, Any], slice_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The minutes kept between evaluations and read again when they change give the same
    counts, quantiles and slow counts as every row read afresh: after more rows, rows stored
    late in old minutes, a submission stored after its delivery, a delivery bounced after it
    was counted, and the hour moving on; whether a statement reads many minutes, or a
    minute is read in parts (``slice_rows``)."""
    monkeypatch.setattr(latency_module, "SLICE_ROWS", slice_rows)
    rng = random.Random(7)
    thresholds = {"google": 5.0, "yahoo": 100.0, "other": 0.0}
    short = _LastHour()

    def check(store: Store, end: float) -> dict[str, Any]:
        with store.engine.connect() as conn:
            got = short.read(conn, end, kept)
            fresh = _LastHour().read(conn, end, kept)
        for q in (0.95, 0.9):
            table = {level: {key: (len(s), s.quantile(0.5), s.quantile(q),
                                   s.above(thresholds[key[0]]))
                             for key, s in per.items()}
                     for level, per in got.items() if per}  # fmt: skip
            assert table == {level: per for level, per in
                             _every_row(store, end, kept, q, thresholds).items() if per}  # fmt: skip
        assert {level: {k: s.counts() for k, s in per.items()} for level, per in got.items()} == {
            level: {k: s.counts() for k, s in per.items()} for level, per in fresh.items()
        }
        return got

    with Store.open(db_url) as store:
        store.write(_deliveries(rng, 700))
        got = check(store, AT)
        assert sum(len(s) for s in got["provider"].values()) == 700
        # Providers stamping to the second repeat latencies: fewer distinct values than rows.
        assert sum(len(s.values) for s in got["provider"].values()) < 700
        store.write(_deliveries(rng, 200, first=700))  # late rows, all over the hour
        got = check(store, AT)
        assert sum(len(s) for s in got["provider"].values()) == 900
        # A delivery whose submission is stored after it: it enters the hour's latencies.
        late = {"recipient": "late@d0.example", "queue_id": "QLATE", "provider": "google"}
        store.write([ev("delivered", -30, sending_ip=IP1, **late)])
        check(store, AT)
        store.write([ev("submitted", -31, **late)])
        got = check(store, AT)
        assert sum(len(s) for s in got["provider"].values()) == 901
        # A delivery bounced afterwards leaves the delivered rows.
        store.write([ev("bounced", -29, reply_code=550, enhanced_status="5.1.1",
                        reason="bad_mailbox", hard=True, **late)])  # fmt: skip
        check(store, AT)
        check(store, AT + 25 * 60)  # the hour moves on: its first 25 minutes leave
        check(store, AT - 10 * 60)  # and back


def test_reader_reads_only_the_minutes_that_changed(sqlite_url: str) -> None:
    """A second evaluation a minute on reads the new minute alone; unchanged minutes are
    not read again."""
    rng = random.Random(3)
    with Store.open(sqlite_url) as store:
        store.write(_deliveries(rng, 300))
        reader = LatencyReader()
        statements: list[str] = []

        def grouped_reads() -> int:
            return sum("count(*)" in s.lower() and "stream_tag" in s for s in statements)

        @sa.event.listens_for(store.engine, "before_cursor_execute")
        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        with store.engine.connect() as conn:
            reader.read(conn, AT, daily=False)
            assert grouped_reads() == 1
            statements.clear()
            reader.read(conn, AT, daily=False)
            assert grouped_reads() == 0  # nothing changed: the marks alone
            store.write([ev("submitted", 0.2, recipient="n@d0.example", queue_id="QN"),
                         ev("delivered", 0.5, recipient="n@d0.example", queue_id="QN")])  # fmt: skip
            statements.clear()
            table = reader.read(conn, AT + 60, daily=False)
            assert grouped_reads() == 1
            assert sum(t.deliveries for t in table.providers.values()) == 301


def test_slices_read_each_stale_minute_once_in_statements_of_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small stale minutes share a statement while no kept minute lies between them and
    their rows stay within SLICE_ROWS; a bigger minute is read in equal parts of its 60 s
    that cover it end to end (a second of margin outside it)."""
    monkeypatch.setattr(latency_module, "SLICE_ROWS", 10)
    counts = {100: 3, 101: 4, 102: 2, 103: 5, 105: 1, 106: 25, 107: 2, 108: 1, 110: 9}
    marks = {m: (n, 0.0, 0.0) for m, n in counts.items()}
    stale = [100, 101, 102, 103, 105, 106, 108, 110]  # 107 is kept
    slices = _slices(marks, stale)
    assert [minutes for minutes, _lo, _hi in slices] == [
        [100, 101, 102], [103, 105], [106], [106], [106], [108, 110]
    ]  # 104 and 109 hold no rows: nothing to skip there
    assert slices[0][1:] == (100 * 60 - 1, 103 * 60 + 1)
    assert slices[1][1:] == (103 * 60 - 1, 106 * 60 + 1)
    parts = [(lo, hi) for minutes, lo, hi in slices if minutes == [106]]
    assert parts == [(106 * 60 - 1, 106 * 60 + 20), (106 * 60 + 20, 106 * 60 + 40),
                     (106 * 60 + 40, 107 * 60 + 1)]  # fmt: skip
    assert slices[-1][1:] == (108 * 60 - 1, 111 * 60 + 1)
    assert _slices(marks, []) == []
