"""Auto-replies (vacation, out of office): reason ``vacation``.

RFC 3834 section 5: ``Auto-Submitted: auto-replied`` marks an automatic response; the
older conventions ``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply`` and the
subjects vacation programs and Exchange / Gmail use are recognised too.  The address that
is away is the reply's ``From``.
"""

from __future__ import annotations

import re
from email.message import Message

from monitor.collectors.mail.mime import ADDRESS_RE, header

__all__ = ["away_address", "is_autoreply"]

_SUBJECT = re.compile(
    r"^(?:re:\s*)?(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respuesta|réponse)"
    r"|out of (?:the )?office|vacation|on vacation|abwesenheit|absence|r[ée]ponse automatique"
    r"|respuesta autom[áa]tica|away from|i am (?:away|out)|自動応答|不在)",
    re.I,
)


def is_autoreply(message: Message) -> bool:
    """Whether ``message`` is an automatic reply (not a delivery report)."""
    submitted = (header(message, "Auto-Submitted") or "").lower()
    if submitted.startswith("auto-replied"):
        return True
    if header(message, "X-Autoreply") or header(message, "X-Autorespond"):
        return True
    if (header(message, "Precedence") or "").lower() == "auto_reply":
        return True
    return bool(_SUBJECT.search(header(message, "Subject") or ""))


def away_address(message: Message) -> str | None:
    """The address that replied (its ``From``), else its ``Reply-To``."""
    for name in ("From", "Reply-To", "Sender"):
        value = header(message, name)
        if value:
            found = ADDRESS_RE.search(value)
            if found:
                return found.group(0)
    return None
