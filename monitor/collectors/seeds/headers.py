"""What a found probe's headers say: the receiver's verdicts, pure functions of the header text.

- the receiver's *top* ``Authentication-Results`` (RFC 8601: the receiving server prepends
  its own, so the first one is the receiver's; later ones are from hops before it):
  ``spf``, ``dkim``, ``dmarc`` and Microsoft's ``compauth``;
- the spam headers providers add (SpamAssassin's ``X-Spam-*``, Microsoft's SCL and
  Forefront report, Yahoo, GMX/Web.de, Apple, rspamd);
- whether ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (RFC 8058) survived;
- the receiver's time from its top ``Received`` header (RFC 5322 section 3.6.7), the
  fallback for time-to-inbox when INTERNALDATE is absent; never the sender's ``Date``;
- the Gmail tab from ``X-GM-LABELS`` category labels.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from monitor.model import utc

__all__ = [
    "PROBE_HEADER",
    "TABS",
    "Verdicts",
    "parse_headers",
    "received_time",
    "tab_of_labels",
    "verdicts",
]

#: The header that carries a probe's token (matching is by it first, then Message-ID).
PROBE_HEADER = "X-Mailmon-Probe"

#: Gmail's category tabs besides Primary (which is the inbox).
TABS = ("social", "promotions", "updates", "forums")

_METHODS = ("spf", "dkim", "dmarc", "compauth")
_RESULT = re.compile(r"(?:^|;)\s*(spf|dkim|dmarc|compauth)\s*=\s*([A-Za-z]+)", re.IGNORECASE)

#: Spam headers kept with a placement, in this order (the first 200 characters of each).
SPAM_HEADERS = (
    "X-Spam-Flag", "X-Spam-Status", "X-Spam-Score", "X-Spam-Level", "X-Spam",
    "X-Spam-Result", "X-Rspamd-Action", "X-MS-Exchange-Organization-SCL",
    "X-Forefront-Antispam-Report", "X-Microsoft-Antispam", "X-YahooFilteredBulk",
    "X-Yahoo-Newman-Property", "X-UI-Filterresults", "X-UI-Out-Filterresults",
    "X-Apple-Action", "X-Apple-MoveToFolder", "X-Spamd-Result",
)  # fmt: skip
_SPAM_VALUE_CHARS = 200
_SPAM_TOTAL_CHARS = 1000

#: X-GM-LABELS category labels (system and "smart" spellings) -> tab.
_GMAIL_LABELS = {
    "category_promotions": "promotions", "^smartlabel_promo": "promotions",
    "category_social": "social", "^smartlabel_social": "social",
    "category_updates": "updates", "^smartlabel_notification": "updates",
    "category_forums": "forums", "^smartlabel_group": "forums",
    "category_personal": "primary", "^smartlabel_personal": "primary",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdicts:
    """The receiver's verdicts on one found copy."""

    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    compauth: str | None = None
    spam: str | None = None  # "Name: value; ..." of the spam headers present
    list_unsubscribe: bool = False
    one_click: bool = False
    token: str | None = None  # the probe header's value, as found
    message_id: str | None = None


def parse_headers(raw: bytes) -> Message:
    """A message's header block (or whole message) as parsed headers, never raising."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _text(value: object) -> str:
    return " ".join(str(value).split())


def verdicts(message: Message) -> Verdicts:
    """What the receiver said of the copy: its top Authentication-Results, spam headers, ..."""
    found: dict[str, str] = {}
    results = message.get_all("Authentication-Results") or []
    if results:
        # The receiver's own header is the topmost; its results, first of each method.
        for name, result in _RESULT.findall(_text(results[0])):
            found.setdefault(name.lower(), result.lower())
    if "compauth" not in found:
        # Microsoft also writes compauth in its own header when the top one lacks it.
        for header in message.get_all("X-MS-Exchange-Authentication-Results") or []:
            for name, result in _RESULT.findall(_text(header)):
                if name.lower() == "compauth":
                    found.setdefault("compauth", result.lower())
    spam = []
    for name in SPAM_HEADERS:
        value = message.get(name)
        if value is not None:
            spam.append(f"{name}: {_text(value)[:_SPAM_VALUE_CHARS]}")
    unsubscribe = message.get("List-Unsubscribe")
    post = message.get("List-Unsubscribe-Post")
    token = message.get(PROBE_HEADER)
    mid = message.get("Message-ID")
    return Verdicts(
        spf=found.get("spf"),
        dkim=found.get("dkim"),
        dmarc=found.get("dmarc"),
        compauth=found.get("compauth"),
        spam="; ".join(spam)[:_SPAM_TOTAL_CHARS] or None,
        list_unsubscribe=unsubscribe is not None and bool(str(unsubscribe).strip()),
        one_click=post is not None and "one-click" in str(post).lower(),
        token=_text(token) if token is not None else None,
        message_id=_text(mid).strip("<>") if mid is not None else None,
    )


def received_time(message: Message) -> datetime | None:
    """The time the receiver stamped in its (top) ``Received`` header; None if unreadable."""
    for header in message.get_all("Received") or []:
        _, semicolon, when = str(header).rpartition(";")
        if not semicolon:
            continue
        try:
            moment = parsedate_to_datetime(" ".join(when.split()))
        except (TypeError, ValueError, IndexError):
            continue
        if moment is not None:
            return utc(moment)
    return None


def tab_of_labels(labels: Iterable[bytes | str]) -> str | None:
    """The Gmail tab its ``X-GM-LABELS`` put a message in; None when they name none."""
    for label in labels:
        text = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
        tab = _GMAIL_LABELS.get(text.strip('"').lower())
        if tab is not None:
            return tab
    return None
