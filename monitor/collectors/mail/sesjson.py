"""Amazon SES notifications delivered by email: a JSON body instead of a DSN.

SES sends bounce, complaint and delivery notifications to an address (or through SNS, whose
envelope carries the notification as a JSON string in ``Message``).  Mail systems fold
the long JSON line at 998 characters with ``!`` + newline + space; that is undone first.
What the JSON says is read by :mod:`monitor.collectors.ses_records`, as for the SES webhook.
"""

from __future__ import annotations

import re
from typing import Any

from monitor.collectors import ses_records
from monitor.collectors.mail import arf
from monitor.collectors.mail.original import OriginalMessage
from monitor.collectors.mail.report import (
    RecipientReport,
    Report,
    classify_recipient,
    reply_of,
    status_of,
)
from monitor.provider_rules import ProviderRules

__all__ = ["from_ses", "ses_notification"]

_FOLD = re.compile(r"!\r?\n ")


def ses_notification(body: str) -> dict[str, Any] | None:
    """The SES notification object in ``body``, or ``None`` when it is not one."""
    text = body.strip()
    if not text.startswith("{") or ("notificationType" not in text and "eventType" not in text):
        return None
    data = ses_records.unwrap(ses_records.first_json(_FOLD.sub("", text)))
    if not isinstance(data, dict):
        return None
    return data if ses_records.kind_of(data) in ("Bounce", "Complaint", "Delivery") else None


def from_ses(data: dict[str, Any], base: Report, rules: ProviderRules | None = None) -> Report:
    """An Amazon SES bounce / complaint / delivery notification (see :mod:`.sesjson`)."""
    kind = ses_records.kind_of(data)
    mail = ses_records.mail_of(data)
    base.original = OriginalMessage(
        message_id=mail.message_id,
        envelope_id=mail.ses_id,
        sender=mail.sender,
        to=mail.to,
        subject=mail.subject,
        where="ses",
    )
    if kind == "Bounce":
        base.kind = "dsn"
        base.reporting_mta, recipients = ses_records.bounced(data)
        for r in recipients:
            base.recipients.append(
                classify_recipient(
                    r.address,
                    action=r.action or "failed",
                    status_field=r.status,
                    diagnostic=r.diagnostic,
                    provider_rules=rules,
                )
            )
    elif kind == "Complaint":
        base.kind = "arf"
        feedback, user_agent, complainers = ses_records.complained(data)
        base.feedback = arf.FeedbackFields(feedback_type=feedback, user_agent=user_agent)
        for address in complainers:
            base.recipients.append(
                RecipientReport(
                    recipient=address,
                    reason="feedback",
                    hard=False,
                    blame="reputation",
                    rule=f"ses.complaint.{feedback}",
                    action=feedback,
                )
            )
    else:
        base.kind = "dsn"
        response, delivered_to = ses_records.delivered(data)
        for address in delivered_to:
            base.recipients.append(
                RecipientReport(
                    recipient=str(address),
                    reason="delivered",
                    hard=False,
                    rule="ses.delivery",
                    status=status_of(None, response),
                    reply_code=reply_of(response),
                    diagnostic=response or None,
                    action="delivered",
                )
            )
    return base
