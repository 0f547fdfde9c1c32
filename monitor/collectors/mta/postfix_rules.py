"""Which Postfix messages matter: daemons, noise prefixes, refusal actions (data, not code).

A message that starts with one of the noise prefixes is understood and counted as
ignored; the parser reports anything it neither uses nor finds here as unparsed, so a
new kind of line shows up in the counters instead of vanishing.
"""

from __future__ import annotations

__all__ = [
    "ANY_NOISE",
    "CLIENT_NOISE",
    "DELIVERY_AGENTS",
    "MESSAGE_STAGES",
    "NOTIFICATIONS",
    "QUIET_ACTIONS",
    "QUIET_DAEMONS",
    "REFUSALS",
    "SERVER_NOISE",
]

# Daemons whose every line is operational noise for deliverability (postscreen's rejects
# are handled before this applies).
QUIET_DAEMONS = frozenset(
    {
        "anvil",
        "master",
        "postfix-script",
        "script",
        "scache",
        "tlsmgr",
        "verify",
        "dnsblog",
        "tlsproxy",
        "postmap",
        "postalias",
        "postdrop",
        "postlog",
        "postqueue",
        "postconf",
        "postkick",
        "postlock",
        "showq",
        "flush",
        "proxymap",
        "trivial-rewrite",
        "spawn",
        "sendmail",
        "postscreen",
    }
)
DELIVERY_AGENTS = frozenset(
    {"smtp", "lmtp", "local", "virtual", "pipe", "error", "retry", "discard", "relay"}
)

# Messages that are understood and carry nothing to record, by where they appear.
ANY_NOISE = ("warning:", "error:", "fatal:", "panic:", "info:", "statistics:")
SERVER_NOISE = (
    "connect from",
    "disconnect from",
    "lost connection after",
    "timeout after",
    "too many errors after",
    "improper command pipelining",
    "TLS connection established",
    "Anonymous TLS connection",
    "Untrusted TLS connection",
    "Trusted TLS connection",
    "Verified TLS connection",
    "SSL_accept error",
    "bare <LF>",
    "discarding EHLO keywords",
    "table ",
    "Host offered STARTTLS",
    "Unverified:",
    "Cannot start TLS",
    "cannot load Certificate",
    "looking for plugins",
    "unable to dlopen",
    "reload",
    "daemon started",
    "terminating on signal",
)
CLIENT_NOISE = (
    "connect to ",
    "TLS connection established",
    "Anonymous TLS connection",
    "Untrusted TLS connection",
    "Trusted TLS connection",
    "Verified TLS connection",
    # Per-MX-host errors: the status=... line that follows carries the outcome.
    "host ",
    "lost connection with ",
    "conversation with ",
    "enabling PIX",
    "SASL authentication failed",
    "SASL [CACHED] authentication failed",
    "certificate verification failed",
    "server certificate verification failed",
    "SSL_connect error",
    "Host offered STARTTLS",
    "Unverified:",
    "Cannot start TLS",
    "setting up TLS",
    "mail for ",
)
# ACTION words of "QID: ACTION: ..." lines that do not refuse the message.
QUIET_ACTIONS = frozenset(
    {
        "reject_warning",
        "discard",
        "hold",
        "filter",
        "redirect",
        "warn",
        "warning",
        "bcc",
        "prepend",
        "replace",
        "info",
        "milter-hold",
        "milter-discard",
        "milter-header-redirect",
        "milter-redirect",
        "proxy-accept",
    }
)
REFUSALS = frozenset(("reject", "milter-reject", "proxy-reject"))
# SMTP stages at which a refusal concerns a message (sender/recipient), not a connection.
MESSAGE_STAGES = frozenset(
    {
        "MAIL",
        "RCPT",
        "DATA",
        "BDAT",
        "END-OF-MESSAGE",
        "header",
        "body",
        "content",
        "mime-header",
        "nested-header",
    }
)
NOTIFICATIONS = (
    "sender non-delivery notification: ",
    "sender delivery status notification: ",
    "sender delay notification: ",
    "postmaster non-delivery notification: ",
)
