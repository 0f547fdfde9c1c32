"""The inbound mailbox collector: bounces, complaints, auto-replies and replies over IMAP.

    source = InboundSource("support", StoreLinker(store), role="replies")
    reader = MailboxReader(settings, Driver(pipeline, metrics), source)
    reader.watch(stop)

- :mod:`.route`: one email -> bounce / complaint / auto_reply / reply / unmatched, linked
  to the outbound message it is about; the reports are read by ``collectors/mail``.
- :mod:`.links`: what the store knows of outbound messages (Message-IDs, tokens, VERP).
- :mod:`.tokens`: tracking tokens in plus-addressed return paths and quoted text.
- :mod:`.records`: ``inbound_messages`` and ``tracked_messages``, and their metrics.
- :mod:`.source`: the :class:`~monitor.collectors.source.Source` the driver runs.
- :mod:`.imap`: ``imapclient``: UIDVALIDITY + UID checkpoints, IDLE or polling, moves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.collectors.mailbox.links import Linker, StoreLinker
from monitor.collectors.mailbox.records import InboundMessage, TrackedMessage
from monitor.collectors.mailbox.source import InboundSource, Mail

if TYPE_CHECKING:
    from monitor.collectors.mailbox.imap import MailboxReader
    from monitor.config import MailboxSettings
    from monitor.driver import Driver
    from monitor.provider_rules import ProviderRules

__all__ = [
    "InboundMessage",
    "InboundSource",
    "Linker",
    "Mail",
    "StoreLinker",
    "TrackedMessage",
    "reader_for",
]


def reader_for(
    settings: MailboxSettings, driver: Driver, *, provider_rules: ProviderRules | None = None
) -> MailboxReader:
    """A :class:`~.imap.MailboxReader` of ``settings`` feeding ``driver``."""
    from monitor.collectors.mailbox.imap import MailboxReader

    source = InboundSource(settings.name, StoreLinker(driver.pipeline.store), role=settings.role,
                           max_bytes=settings.max_message_bytes,
                           provider_rules=provider_rules)  # fmt: skip
    return MailboxReader(settings, driver, source)
