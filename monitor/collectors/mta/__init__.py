"""MTA log collectors: one parser per MTA, each a :class:`~monitor.collectors.source.Source`.

They are registered as line sources (``postfix``, ``exim``, ``kumomta``) in
:mod:`monitor.collectors.registry`.  What the parsers share lives in :mod:`.base`
(counters, result codes, the queue-id skeleton) and :mod:`.smtp` (addresses, reply codes).
"""
