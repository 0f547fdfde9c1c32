"""The records a seed probe run stores: one send and one placement per seed and run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from monitor.metrics import observe_kind
from monitor.records import Record
from monitor.store.records import register_record

__all__ = ["PLACEMENTS", "SeedPlacement", "SeedProbe", "placement_label"]

#: The bounded ``placement`` label (``tab:<name>`` for Gmail's category tabs).
PLACEMENTS = (
    "inbox", "tab:social", "tab:promotions", "tab:updates", "tab:forums",
    "spam", "trash", "missing", "error",
)  # fmt: skip
#: Placements that count as reaching the inbox (time-to-inbox is observed for them).
INBOX_PLACEMENTS = frozenset(p for p in PLACEMENTS if p == "inbox" or p.startswith("tab:"))
TIME_TO_INBOX_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)


@register_record
@dataclass(frozen=True, slots=True)
class SeedProbe(Record):
    """A probe sent to one seed in one run (``occurred_at``: when it was submitted)."""

    kind = "seed_probes"
    identity_fields = ("run_id", "seed")
    indexes = (("run_id",), ("message_id",))

    run_id: str
    seed: str  # the seed mailbox's address
    provider: str  # gmail, outlook, yahoo, icloud, gmx, own ...
    token: str  # the probe's unique token (header and subject marker)
    message_id: str
    status: str  # sent, send_failed
    error: str | None = None


@register_record
@dataclass(frozen=True, slots=True)
class SeedPlacement(Record):
    """Where one probe landed (``occurred_at``: when it was found, or the run's timeout)."""

    kind = "seed_placements"
    identity_fields = ("run_id", "seed")
    indexes = (("run_id",), ("provider",))

    run_id: str
    seed: str
    provider: str
    token: str
    message_id: str
    placement: str  # inbox, tab:<name>, spam, trash, missing, error
    folder: str | None = None
    seconds_to_inbox: float | None = None  # IMAP INTERNALDATE minus the send time
    spf: str | None = None  # the receiver's top Authentication-Results
    dkim: str | None = None
    dmarc: str | None = None
    compauth: str | None = None
    list_unsubscribe: bool = False
    one_click: bool = False  # List-Unsubscribe-Post survived (RFC 8058)
    finding: str | None = None  # for missing: what the MTA log / webhooks say of it
    error: str | None = None  # for error: the IMAP failure
    spam: str | None = None  # the receiver's spam headers ("Name: value; ...")


def placement_label(placement: str) -> str:
    """``placement`` if it is one of :data:`PLACEMENTS`, else ``error``."""
    return placement if placement in PLACEMENTS else "error"


class PlacementMetrics:
    """``mailmon_seed_probes_total{provider,placement}`` and the time-to-inbox histogram."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from monitor.gauges import PROVIDERS

        self._providers = PROVIDERS
        self.probes = Counter(
            "mailmon_seed_probes", "Seed probes by where they landed (inbox, tab:NAME, spam, "
            "trash, missing, error).", ["provider", "placement"], registry=registry,
        )  # fmt: skip
        self.time_to_inbox = Histogram(
            "mailmon_seed_time_to_inbox_seconds",
            "Probe submission to its arrival in the inbox (IMAP INTERNALDATE).",
            ["provider"], buckets=TIME_TO_INBOX_BUCKETS, registry=registry,
        )  # fmt: skip

    def __call__(self, records: Sequence[Record]) -> None:
        for rec in records:
            if not isinstance(rec, SeedPlacement):
                continue
            provider = rec.provider if rec.provider in self._providers else "other"
            placement = placement_label(rec.placement)
            self.probes.labels(provider, placement).inc()
            if placement in INBOX_PLACEMENTS and rec.seconds_to_inbox is not None:
                self.time_to_inbox.labels(provider).observe(rec.seconds_to_inbox)


observe_kind(SeedPlacement.kind, PlacementMetrics)
