"""An SMTP submission server (aiosmtpd) on 127.0.0.1 that hands each message to LMTP.

It stands for the path a message takes from submission to a receiving mailbox server:
each recipient is delivered in its own LMTP transaction (Dovecot's, see
tests/servers/dovecot.py), after ``route(recipient, message)`` decided what happens to
it, as a receiving MX would (``lmtp_port`` is one port, or one per recipient domain):

- ``Route.DELIVER`` (the default): to LMTP, with ``stamp(recipient)`` headers prepended
  (the receiver's ``Authentication-Results``, spam headers, ...);
- ``Route.HOLD``: accepted and never delivered (lost on the way),
and ``refuse`` maps recipients to the reply that refuses them at RCPT
(``"550 5.7.1 blocked"``).

``delivered`` lists (recipient, Message-ID) of what reached LMTP, ``held`` the rest.
With ``tls=(certificate, key)`` it requires STARTTLS; with ``users`` (login -> password)
it requires AUTH, and ``logins`` lists who logged in.

Use::

    with LmtpRelay(dovecot.lmtp_port, route=lambda rcpt, msg: Route.DELIVER) as relay:
        smtplib.SMTP("127.0.0.1", relay.port).send_message(message)
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from servers.dovecot import free_port
from servers.smtp_sink import ControlledServer

__all__ = ["LmtpRelay", "Route"]

HOST = "127.0.0.1"


class Route(Enum):
    DELIVER = "deliver"
    HOLD = "hold"


RouteFn = Callable[[str, email.message.Message], Route]
StampFn = Callable[[str], Sequence[tuple[str, str]]]


class _Handler:
    def __init__(self, relay: LmtpRelay) -> None:
        self.relay = relay

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        refused = self.relay.refuse.get(address.lower())
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        for rcpt in envelope.rcpt_tos:
            self.relay.handle(envelope.mail_from, rcpt, raw)
        return "250 2.0.0 OK queued"


class LmtpRelay(ControlledServer):
    """Accepts SMTP on ``port`` and delivers over LMTP to ``lmtp_host:lmtp_port``."""

    def __init__(
        self,
        lmtp_port: int | Mapping[str, int],
        *,
        lmtp_host: str = HOST,
        route: RouteFn | None = None,
        stamp: StampFn | None = None,
        refuse: Mapping[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.lmtp_host = lmtp_host
        #: recipient domain -> LMTP port ("" for every other domain)
        self.lmtp_ports = dict(lmtp_port) if isinstance(lmtp_port, Mapping) else {"": lmtp_port}
        self.route = route or (lambda rcpt, msg: Route.DELIVER)
        self.stamp = stamp or (lambda rcpt: [])
        self.refuse = {k.lower(): v for k, v in (refuse or {}).items()}
        self.delivered: list[tuple[str, str]] = []
        self.held: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.users = dict(users or {})
        self.logins: list[str] = []
        options: dict[str, Any] = {}
        if tls is not None:  # STARTTLS required, with this (certificate, key)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*map(str, tls))
            options |= {"tls_context": context, "require_starttls": True}
        if self.users:  # AUTH PLAIN/LOGIN required (over TLS)
            options |= {"authenticator": self._authenticate, "auth_required": True}
        self._controller = Controller(_Handler(self), hostname=HOST, port=self.port, **options)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:  # fmt: skip
        if isinstance(data, LoginPassword):
            user = data.login.decode()
            if self.users.get(user) == data.password.decode():
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def handle(self, mail_from: str, rcpt: str, raw: bytes) -> None:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        message_id = str(message.get("Message-ID", "")).strip().strip("<>")
        decision = self.route(rcpt, message)
        if decision is Route.HOLD:
            with self._lock:
                self.held.append((rcpt, message_id))
            return
        top = "".join(f"{name}: {value}\r\n" for name, value in self.stamp(rcpt))
        try:
            domain = rcpt.rpartition("@")[2].lower()
            port = self.lmtp_ports.get(domain, self.lmtp_ports.get(""))
            if port is None:
                raise smtplib.SMTPException(f"no LMTP server for {domain}")
            with smtplib.LMTP(self.lmtp_host, port, timeout=10) as lmtp:
                lmtp.sendmail(mail_from, [rcpt], top.encode() + raw)
        except smtplib.SMTPException as exc:
            with self._lock:
                self.errors.append(f"{rcpt}: {exc}")
            return
        with self._lock:
            self.delivered.append((rcpt, message_id))
