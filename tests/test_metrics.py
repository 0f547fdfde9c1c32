"""Metrics: the documented list matches /metrics, labels stay inside their declared sets."""

from __future__ import annotations

import re
from pathlib import Path

from factories import ev
from prometheus_client import CollectorRegistry

from monitor.classify import REASONS
from monitor.metrics import OUTCOMES, DomainLabeler, Metrics
from monitor.model import Provider

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
