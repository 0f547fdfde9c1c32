"""Amazon SES notifications delivered by email: a JSON body instead of a DSN.

SES sends bounce, complaint and delivery notifications to an address (or through SNS, whose
envelope carries the notification as a JSON string in ``Message``).  Documented at
https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html.  Mail systems fold
the long JSON line at 998 characters with ``!`` + newline + space; that is undone first.
"""

from __future__ import annotations

import json
import re
from typing import Any

from monitor.collectors.mail import arf
from monitor.collectors.mail.mime import strip_angle
from monitor.collectors.mail.original import OriginalMessage
from monitor.collectors.mail.report import (
    RecipientReport,
    Report,
    classify_recipient,
    host_of,
    reply_of,
    status_of,
)
from monitor.collectors.mta.postfix_lines import clean_message_id
from monitor.provider_rules import ProviderRules

__all__ = ["from_ses", "ses_notification"]

_FOLD = re.compile(r"!\r?\n ")


def _load(text: str) -> Any:
    """The first JSON value in ``text`` (SNS appends an unsubscribe footer after it)."""
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return None


def ses_notification(body: str) -> dict[str, Any] | None:
    """The SES notification object in ``body``, or ``None`` when it is not one."""
    text = body.strip()
    if not text.startswith("{") or ("notificationType" not in text and "eventType" not in text):
        return None
    data = _load(_FOLD.sub("", text))
    if isinstance(data, dict) and isinstance(data.get("Message"), str):  # an SNS envelope
        data = _load(data["Message"])
    if not isinstance(data, dict):
        return None
    kind = data.get("notificationType") or data.get("eventType")
    return data if kind in ("Bounce", "Complaint", "Delivery") else None


def from_ses(data: dict[str, Any], base: Report, rules: ProviderRules | None = None) -> Report:
    """An Amazon SES bounce / complaint / delivery notification (see :mod:`.sesjson`)."""
    kind = data.get("notificationType") or data.get("eventType")
    mail: dict[str, Any] = data["mail"] if isinstance(data.get("mail"), dict) else {}
    headers = {
        str(h.get("name", "")).lower(): str(h.get("value", ""))
        for h in mail.get("headers", [])
        if isinstance(h, dict)
    }
    base.original = OriginalMessage(
        message_id=clean_message_id(headers["message-id"]) if headers.get("message-id") else None,
        envelope_id=str(mail.get("messageId") or "") or None,
        sender=str(mail.get("source") or "") or None,
        to=headers.get("to"),
        subject=headers.get("subject"),
        where="ses",
    )
    if kind == "Bounce":
        base.kind = "dsn"
        bounce = data.get("bounce") or {}
        mta = host_of(str(bounce.get("reportingMTA") or "")) if isinstance(bounce, dict) else None
        base.reporting_mta = mta
        for r in bounce.get("bouncedRecipients", []) if isinstance(bounce, dict) else []:
            if isinstance(r, dict):
                base.recipients.append(
                    classify_recipient(
                        str(r.get("emailAddress") or "") or None,
                        action=r.get("action") or "failed",
                        status_field=r.get("status"),
                        diagnostic=" ".join((strip_angle(r.get("diagnosticCode")) or "").split()),
                        provider_rules=rules,
                    )
                )
    elif kind == "Complaint":
        base.kind = "arf"
        complaint = data.get("complaint") or {}
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        base.feedback = arf.FeedbackFields(
            feedback_type=feedback, user_agent=complaint.get("userAgent")
        )
        for r in complaint.get("complainedRecipients", []):
            if isinstance(r, dict):
                base.recipients.append(
                    RecipientReport(
                        recipient=str(r.get("emailAddress") or "") or None,
                        reason="feedback",
                        hard=False,
                        blame="reputation",
                        rule=f"ses.complaint.{feedback}",
                        action=feedback,
                    )
                )
    else:
        base.kind = "dsn"
        delivery = data.get("delivery") or {}
        response = str(delivery.get("smtpResponse") or "")
        for address in delivery.get("recipients", []):
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
