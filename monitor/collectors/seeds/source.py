"""``SeedSource``: what a probe run learnt -> records and events, through the driver.

Two kinds of unit: a :class:`~monitor.collectors.seeds.message.SendResult` (a probe
submitted, or refused) gives a :class:`SeedProbe` and, when accepted, a ``submitted``
event; an :class:`Outcome` (where the probe was found, or why not) gives a
:class:`SeedPlacement` and, for a probe that was sent, a ``placed`` event in its
delivery's timeline.  ``placed`` is no delivery outcome: no counter table counts it
(``monitor.store.writer``), so ``stats``, the rollups and ``mailmon_deliveries_total``
never see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from monitor.collectors.seeds.headers import Verdicts
from monitor.collectors.seeds.message import Probe, SendResult
from monitor.collectors.seeds.records import SeedPlacement, SeedProbe
from monitor.collectors.source import Item, NotUnderstood, ParseStats, Source
from monitor.model import Event, EventType

__all__ = ["SOURCE", "STREAM_TAG", "Outcome", "SeedSource"]

#: The events' ``source`` (and the input counts' label).
SOURCE = "seeds"
#: Probes are their own stream, so ``stats`` and the rollups can tell them apart.
STREAM_TAG = "stream:seeds"


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one probe of a run ended up (``at``: when it was found, or the run's end)."""

    probe: Probe
    sender: str
    at: datetime
    placement: str  # inbox, tab:<name>, spam, trash, missing, error
    sent: bool = True
    folder: str | None = None
    seconds_to_inbox: float | None = None
    verdicts: Verdicts | None = None
    finding: str | None = None
    error: str | None = None


class SeedSource(Source[SendResult | Outcome]):
    """Probe sends and placements -> ``seed_probes`` / ``seed_placements`` and events."""

    kind = SOURCE
    records = True

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.stats = ParseStats()

    def feed(self, unit: SendResult | Outcome, ref: str | None = None) -> Sequence[Item]:
        self.stats.lines += 1
        if isinstance(unit, SendResult):
            items = self._sent(unit, ref)
        elif isinstance(unit, Outcome):
            items = self._placed(unit, ref)
        else:
            raise NotUnderstood("not a probe result")
        self.stats.events += sum(1 for i in items if isinstance(i, Event))
        return items

    def _sent(self, result: SendResult, ref: str | None) -> list[Item]:
        p = result.probe
        items: list[Item] = [SeedProbe(
            SOURCE, result.sent_at, p.run_id, p.seed, p.provider, p.token, p.message_id,
            "send_failed" if result.error else "sent", result.error,
        )]  # fmt: skip
        if result.error is None:
            items.append(Event(
                type=EventType.SUBMITTED, occurred_at=result.sent_at, source=SOURCE,
                message_id=p.message_id, sender=self.sender, recipient=p.seed,
                provider=p.provider, tags=(STREAM_TAG,), raw_ref=ref,
            ))  # fmt: skip
        return items

    def _placed(self, o: Outcome, ref: str | None) -> list[Item]:
        p, v = o.probe, o.verdicts or Verdicts()
        items: list[Item] = [SeedPlacement(
            SOURCE, o.at, p.run_id, p.seed, p.provider, p.token, p.message_id, o.placement,
            folder=o.folder, seconds_to_inbox=o.seconds_to_inbox, spf=v.spf, dkim=v.dkim,
            dmarc=v.dmarc, compauth=v.compauth, list_unsubscribe=v.list_unsubscribe,
            one_click=v.one_click, finding=o.finding, error=o.error, spam=v.spam,
        )]  # fmt: skip
        if o.sent:
            detail = o.placement if o.folder is None else f"{o.placement} ({o.folder})"
            note = o.finding or o.error
            items.append(Event(
                type=EventType.PLACED, occurred_at=o.at, source=SOURCE,
                message_id=p.message_id, sender=o.sender, recipient=p.seed,
                provider=p.provider, diagnostic=f"{detail}: {note}" if note else detail,
                delay_seconds=o.seconds_to_inbox, tags=(STREAM_TAG, f"placement:{o.placement}"),
                raw_ref=ref,
            ))  # fmt: skip
        return items
