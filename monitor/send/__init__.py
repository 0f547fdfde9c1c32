"""Tracked sending: compose, submit through the configured relay, record (docs/send.md).

    result = send(Draft(to=("dave@example.com",), subject="Your receipt", text="..."),
                  config.send, pipeline)

- :mod:`.compose`: the message: its Message-ID, In-Reply-To / References from the thread,
  a VERP return path and a quoted reference per recipient (tracking tokens), List-Unsubscribe
  and RFC 8058 one-click, DKIM (dkimpy).
- :mod:`.submit`: aiosmtplib to the relay, one transaction per recipient; ``submitted`` (or
  ``rejected``) events, ``tracked_messages`` and ``message_headers`` records.
"""

from monitor.send.compose import Composed, Draft, compose
from monitor.send.submit import Sent, send

__all__ = ["Composed", "Draft", "Sent", "compose", "send"]
