"""Mail collectors: bounce (RFC 3464 DSN and plain-text), ARF (RFC 5965), auto-reply and
Amazon SES notification emails -> per-recipient reports -> events.

:func:`monitor.collectors.mail.dsn.parse` reads one email into a :class:`Report`;
:func:`monitor.collectors.mail.events.report_events` turns it into ``Event``s that carry the
original message's Message-ID.  The verdict for each recipient (reason, hard, blame) comes
from :mod:`monitor.classify`; that package never imports this one.
"""
