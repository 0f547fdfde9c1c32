"""Threads: messages joined by Message-ID, In-Reply-To and References (RFC 5322 §3.6.4).

- :mod:`.headers`: outbound thread headers from Postfix ``header_checks`` WARN lines.
- :mod:`.build`: the thread of a message, and broken-thread findings.
"""
