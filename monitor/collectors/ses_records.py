"""Amazon SES's JSON: what a notification or a published event says, read in one place.

SES describes what happened to a message in JSON, the same objects whether they come as
identity notifications (``notificationType``: Bounce, Complaint, Delivery;
https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html) or event publishing
(``eventType``; https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html),
and whether they reach us through SNS over HTTP (:mod:`monitor.collectors.esp.ses`) or
mailed (:mod:`monitor.collectors.mail.sesjson`).  Both read them through here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from monitor.collectors.mail.mime import strip_angle
from monitor.collectors.mail.report import host_of
from monitor.collectors.mta.postfix_lines import clean_message_id

__all__ = [
    "SesMail",
    "SesRecipient",
    "bounced",
    "complained",
    "delayed",
    "delivered",
    "first_json",
    "kind_of",
    "mail_of",
    "unwrap",
]


def first_json(text: str) -> Any:
    """The first JSON value in ``text`` (SNS appends an unsubscribe footer to mail), or None."""
    try:
        return json.JSONDecoder().raw_decode(text.lstrip())[0]
    except (ValueError, RecursionError):
        return None


def unwrap(data: Any) -> Any:
    """The SES object an SNS envelope carries as a JSON string in ``Message``; else ``data``."""
    if isinstance(data, Mapping) and isinstance(data.get("Message"), str) and "Type" in data:
        return first_json(data["Message"])
    return data


def kind_of(data: Mapping[str, Any]) -> str | None:
    """``Bounce``, ``Delivery``, ``Open``, ...: the notification or event type."""
    kind = data.get("notificationType") or data.get("eventType")
    return kind if isinstance(kind, str) else None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


@dataclass(frozen=True)
class SesMail:
    """The ``mail`` object: the message the notification is about."""

    ses_id: str | None = None  # SES's own message id
    message_id: str | None = None  # the RFC 5322 Message-ID, where SES shows it
    sender: str | None = None  # the envelope sender, an address
    to: str | None = None
    subject: str | None = None
    #: thread headers, from ``mail.headers`` (a configuration set's "include original headers")
    in_reply_to: str | None = None
    references: str | None = None
    timestamp: str | None = None  # when SES accepted it
    destination: tuple[str, ...] = ()
    #: message tags, as SES sends them: name -> values (``ses:configuration-set`` among them)
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def mail_of(data: Mapping[str, Any]) -> SesMail:
    """What the notification says of its message (empty fields for an absent ``mail``)."""
    mail = _object(data.get("mail"))
    headers = {
        str(h.get("name", "")).lower(): str(h.get("value", ""))
        for h in mail.get("headers") or []
        if isinstance(h, Mapping)
    }
    common = _object(mail.get("commonHeaders"))
    ses_id = _text(mail.get("messageId"))
    message_id = clean_message_id(headers["message-id"]) if headers.get("message-id") else None
    if message_id is None and _text(common.get("messageId")) not in (None, ses_id):
        # commonHeaders shows SES's own id when SES made the Message-ID (whose domain it
        # leaves out); another one is the sender's own
        message_id = clean_message_id(str(common["messageId"]))
    source = _text(mail.get("source"))
    to = headers.get("to") or ", ".join(str(t) for t in common.get("to") or [] if t) or None
    tags = {
        str(name): tuple(str(v) for v in values if v is not None)
        for name, values in _object(mail.get("tags")).items()
        if isinstance(values, list)
    }
    return SesMail(
        ses_id=ses_id,
        message_id=message_id,
        sender=(parseaddr(source)[1] or source) if source else None,
        to=to,
        subject=headers.get("subject") or _text(common.get("subject")),
        in_reply_to=headers.get("in-reply-to") or None,
        references=headers.get("references") or None,
        timestamp=_text(mail.get("timestamp")),
        destination=tuple(str(d) for d in mail.get("destination") or [] if isinstance(d, str)),
        tags=tags,
    )


@dataclass(frozen=True)
class SesRecipient:
    """One recipient of a bounce (or a delivery delay): its DSN fields."""

    address: str | None
    action: str | None
    status: str | None
    diagnostic: str  # the diagnostic code without its type (``smtp;``), blanks collapsed


def _recipients(found: Any) -> list[SesRecipient]:
    return [
        SesRecipient(
            address=_text(r.get("emailAddress")),
            action=_text(r.get("action")),
            status=_text(r.get("status")),
            diagnostic=" ".join((strip_angle(_text(r.get("diagnosticCode"))) or "").split()),
        )
        for r in found or []
        if isinstance(r, Mapping)
    ]


def bounced(data: Mapping[str, Any]) -> tuple[str | None, list[SesRecipient]]:
    """A bounce's reporting MTA (a host name) and its recipients."""
    bounce = _object(data.get("bounce"))
    return host_of(_text(bounce.get("reportingMTA"))), _recipients(bounce.get("bouncedRecipients"))


def delayed(data: Mapping[str, Any]) -> list[SesRecipient]:
    """A delivery delay's recipients (event publishing's ``DeliveryDelay``)."""
    return _recipients(_object(data.get("deliveryDelay")).get("delayedRecipients"))


def complained(data: Mapping[str, Any]) -> tuple[str, str | None, list[str]]:
    """A complaint's feedback type (``abuse`` when SES has none), user agent and recipients."""
    complaint = _object(data.get("complaint"))
    recipients = [
        str(r["emailAddress"])
        for r in complaint.get("complainedRecipients") or []
        if isinstance(r, Mapping) and _text(r.get("emailAddress"))
    ]
    feedback = _text(complaint.get("complaintFeedbackType")) or "abuse"
    return feedback, _text(complaint.get("userAgent")), recipients


def delivered(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """A delivery's SMTP response and its recipients."""
    delivery = _object(data.get("delivery"))
    recipients = [str(r) for r in delivery.get("recipients") or [] if isinstance(r, str)]
    return str(delivery.get("smtpResponse") or ""), recipients
