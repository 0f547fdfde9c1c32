"""Parsed reports -> ``monitor.model.Event``s that join the original delivery.

A DSN recipient becomes ``bounced`` (``deferred`` for ``Action: delayed``, ``expired`` when
the reason is that the MTA gave up, ``delivered`` for a success notice); an ARF report
becomes ``complained`` and an auto-reply ``auto_replied``.  Each event carries the
*original* message's Message-ID, so the store (keyed by Message-ID + recipient) adds it to
the original delivery row and ``mailmon trace`` shows it in that timeline.
"""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.collectors.mail.dsn import RecipientReport, Report
from monitor.model import Event, EventType

__all__ = ["report_events"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _type(report: Report, r: RecipientReport) -> EventType | None:
    if report.kind == "arf":
        return EventType.COMPLAINED
    if report.kind == "autoreply":
        return EventType.AUTO_REPLIED
    action = r.action or "failed"
    if action == "delayed":
        return EventType.DEFERRED
    if action in ("delivered", "relayed", "expanded") or r.reason == "delivered":
        return EventType.DELIVERED
    if r.reason == "expired":
        return EventType.EXPIRED
    return EventType.BOUNCED


def report_events(
    report: Report,
    source: str = "mailbox",
    *,
    raw_ref: str | None = None,
    received_at: datetime | None = None,
) -> list[Event]:
    """One event per recipient of ``report``; none for a report without recipients.

    The time is the recipient's ``Last-Attempt-Date`` (ARF: ``Arrival-Date``), else the
    report's ``Date``, else ``received_at``, else the epoch: a fixed time keeps the event
    id stable when the same file is read twice.
    """
    events = []
    original = report.original
    for r in report.recipients:
        kind = _type(report, r)
        if kind is None or not r.recipient:
            continue
        failed = kind in (EventType.BOUNCED, EventType.DEFERRED, EventType.EXPIRED)
        recipient = r.recipient
        orig = r.original_recipient if r.original_recipient != recipient else None
        if len(report.recipients) == 1 and original.verp_recipient:  # VERP names one
            orig = orig or (
                original.verp_recipient if original.verp_recipient != recipient else None
            )
        events.append(
            Event(
                type=kind,
                occurred_at=r.last_attempt or report.date or received_at or _EPOCH,
                source=source,
                message_id=original.message_id,
                queue_id=original.queue_id,
                # a bounce goes to the original's envelope sender (RFC 5321 section 4.5.5)
                sender=original.sender or (report.addressed_to if failed else None),
                recipient=recipient,
                orig_recipient=orig,
                relay=r.remote_mta,
                reply_code=r.reply_code,
                enhanced_status=r.status,
                diagnostic=r.diagnostic,
                reason=r.reason if kind is not EventType.DELIVERED else None,
                hard=r.hard if failed else None,
                blame=r.blame if failed or kind is EventType.COMPLAINED else None,
                rule=r.rule or None,
                tags=(f"feedback:{report.feedback.feedback_type}",) if report.feedback else (),
                raw_ref=raw_ref,
            )
        )
    return events
