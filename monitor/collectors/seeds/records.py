"""The records a seed probe run stores: one send and one placement per seed and run."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.records import Record
from monitor.store.records import register_record

__all__ = ["SeedPlacement", "SeedProbe"]


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
