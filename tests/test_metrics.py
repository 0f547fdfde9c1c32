"""Metrics: the documented list matches /metrics, labels stay bounded, batches do not matter."""

from __future__ import annotations

import re
from pathlib import Path

from factories import ev
from prometheus_client import CollectorRegistry, generate_latest

from monitor.classify import REASONS
from monitor.gauges import DomainLabeler
from monitor.metrics import OUTCOMES, Metrics
from monitor.model import Event, Provider

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _families(metrics: Metrics) -> dict[str, str]:
    names = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names[name] = family.type
    return names


def test_docs_list_every_metric_and_nothing_else() -> None:
    """docs/metrics.md and the registry name the same metrics with the same types."""
    documented = dict(re.findall(r"^\| `(mailmon_[a-z_]+)` \| (\w+) \|", DOCS.read_text(), re.M))
    assert documented == _families(Metrics(CollectorRegistry()))


def test_labels_stay_bounded() -> None:
    """Unknown domains become 'other', unknown providers 'other', reasons from the vocabulary."""
    metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["gmail.com"]))
    metrics.observe(
        [
            ev(
                "bounced",
                recipient=f"user{i}@corp{i}.example",
                provider="weird-provider",
                reason="not-a-reason",
                hard=True,
            )
            for i in range(50)
        ]
        + [ev("delivered", recipient="a@gmail.com", provider="google", delay_seconds=3.0)]
    )
    providers = {p.value for p in Provider}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = sample.labels
            assert labels.get("provider", "other") in providers
            assert labels.get("domain", "other") in {"gmail.com", "other"}
            assert labels.get("reason", "undefined") in REASONS
            assert labels.get("outcome", "delivered") in OUTCOMES
    value = metrics.registry.get_sample_value(
        "mailmon_bounces_total",
        {"provider": "other", "domain": "other", "reason": "undefined", "hard": "true"},
    )
    assert value == 50


def test_top_domains_get_their_own_label() -> None:
    """A domain in the top-N set is labelled by name; after a refresh that drops it, 'other'."""
    labeler = DomainLabeler(top=["corp.example"])
    assert labeler("corp.example") == "corp.example"
    labeler.set_top([])
    assert labeler("corp.example") == "other"


def test_last_event_timestamp_only_moves_forward() -> None:
    """The newest-event gauge keeps the latest event time even when older events arrive later."""
    metrics = Metrics(CollectorRegistry())
    metrics.observe([ev("delivered", 10)])
    metrics.observe([ev("delivered", 1, recipient="b@gmail.com")])
    ts = metrics.registry.get_sample_value(
        "mailmon_source_last_event_timestamp_seconds", {"source": "postfix"}
    )
    assert ts == ev("delivered", 10).timestamp


def _mixed_events() -> list[Event]:
    """Every kind of event a counter is made from, with awkward values."""
    return [
        ev("submitted", 0, recipient="a@gmail.com", provider="google"),
        ev("delivered", 1, recipient="a@gmail.com", provider="google", delay_seconds=0.1),
        ev("delivered", 2, recipient="b@gmail.com", provider="google", delay_seconds=0.2),
        ev("delivered", 3, recipient="c@corp.example", provider="weird", delay_seconds=3599.7),
        ev("delivered", 4, recipient="d@corp.example", provider=None),
        ev("deferred", 5, recipient="e@yahoo.com", provider="yahoo", reason="ratelimited"),
        ev("bounced", 6, recipient="f@gmail.com", provider="google", reason="userunknown",
           hard=True),
        ev("bounced", 7, recipient="g@gmail.com", provider="google", reason="nonsense"),
        ev("bounced", 8, recipient="h@x.example", provider="other", reason="blocked", hard=False,
           tags=("ndr",)),
        ev("expired", 9, recipient="i@x.example", provider="other", reason="expired"),
        ev("complained", 10, recipient="j@gmail.com", provider="google", source="arf:mbox"),
        ev("opened", 11, recipient="k@gmail.com", provider="google", source="ses"),
        ev("clicked", 12, recipient="k@gmail.com", provider="google", source="ses"),
        ev("delivered", 13, recipient="l@gmail.com", provider="google", source="exim:mx2",
           delay_seconds=1e-7),
    ] + [
        ev("delivered", 20 + i, recipient=f"m{i}@gmail.com", provider="google",
           delay_seconds=0.1 * (i % 7) + 0.01)
        for i in range(200)
    ]  # fmt: skip


def test_batches_do_not_change_the_exposition() -> None:
    """The same events observed one at a time, in batches or all at once give /metrics
    line for line (label sets in the order their first event came)."""
    before_1970 = ev("delivered", -60 * 24 * 366 * 60, source="kumomta:old", delay_seconds=2.0)
    events = [before_1970, *_mixed_events()]
    texts = []
    for size in (1, 37, len(events)):
        metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["gmail.com", "x.example"]))
        for start in range(0, len(events), size):
            metrics.observe(events[start : start + size])
        text = generate_latest(metrics.registry).decode()
        texts.append([line for line in text.splitlines() if "_created{" not in line])
    assert texts[0] == texts[1] == texts[2]
    newest = [line for line in texts[0] if line.startswith("mailmon_source_last_event_")]
    assert [line.split(" ")[0] for line in newest] == [
        'mailmon_source_last_event_timestamp_seconds{source="postfix"}',
        'mailmon_source_last_event_timestamp_seconds{source="arf"}',
        'mailmon_source_last_event_timestamp_seconds{source="ses"}',
        'mailmon_source_last_event_timestamp_seconds{source="exim"}',
    ]  # a time before 1970 is no newest event


