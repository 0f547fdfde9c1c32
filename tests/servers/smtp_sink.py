"""Scripted SMTP peers on 127.0.0.1 for tests that drive a real MTA.

Three kinds, one per way a receiving server answers:

- :class:`SmtpSink` — an aiosmtpd server whose answer to each recipient comes from a
  script of address patterns (accept, user unknown, mailbox full, greylisted, spam after
  DATA); it records what it accepted.
- :class:`GreetingRejectServer` — says ``421 4.7.0 try later`` instead of a greeting and
  hangs up, as a server under load does.
- :class:`RefusedPort` — a port with nothing listening, so connections are refused.

Use::

    with SmtpSink({"*@userunknown.test": Behaviour.USER_UNKNOWN}) as sink:
        ...  # route mail to 127.0.0.1:{sink.port}
    sink.accepted  # [Accepted(mail_from=..., rcpt_tos=[...], content=b"...")]
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller

__all__ = [
    "GREETING_TRY_LATER",
    "Accepted",
    "Behaviour",
    "GreetingRejectServer",
    "RefusedPort",
    "SmtpSink",
    "behaviour_for",
]

HOST = "127.0.0.1"

# Replies (RFC 5321 section 4.2, enhanced codes from RFC 3463).
RCPT_OK = "250 2.1.5 OK"
DATA_OK = "250 2.0.0 OK queued as sink"
USER_UNKNOWN = "550 5.1.1 user unknown"
MAILBOX_FULL = "552 5.2.2 mailbox full"
GREYLISTED = "450 4.2.0 greylisted"
SPAM_REJECTED = "550 5.7.1 message rejected as spam"
GREETING_TRY_LATER = "421 4.7.0 try later"


class Behaviour(Enum):
    """How the sink answers one recipient; the value is the reply and where it is given."""

    ACCEPT = ("RCPT", RCPT_OK)
    USER_UNKNOWN = ("RCPT", USER_UNKNOWN)
    MAILBOX_FULL = ("RCPT", MAILBOX_FULL)
    GREYLISTED = ("RCPT", GREYLISTED)
    SPAM = ("DATA", SPAM_REJECTED)  # accepted at RCPT, the whole transaction refused after DATA

    @property
    def reply(self) -> str:
        return self.value[1]

    @property
    def at_rcpt(self) -> bool:
        return self.value[0] == "RCPT"


@dataclass(frozen=True)
class Accepted:
    """One message the sink took (``mail_from`` is ``""`` for the null sender ``<>``)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


@dataclass(frozen=True)
class Refused:
    """One refusal the sink gave: the recipient(s), the stage and the reply."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    stage: str
    reply: str


def _sender(envelope: Any) -> str:
    """The envelope sender, ``""`` for the null sender (aiosmtpd reports it as ``<>``)."""
    mail_from = envelope.mail_from or ""
    return "" if mail_from == "<>" else str(mail_from)


def behaviour_for(
    rules: Mapping[str, Behaviour] | Iterable[tuple[str, Behaviour]],
    address: str,
    default: Behaviour = Behaviour.ACCEPT,
) -> Behaviour:
    """How a sink with ``rules`` answers ``address``: the first matching pattern wins."""
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    address = address.lower()
    for pattern, behaviour in pairs:
        if fnmatchcase(address, pattern.lower()):
            return behaviour
    return default


class _Script:
    """aiosmtpd handler: answers each recipient by the first matching address pattern."""

    def __init__(self, rules: Iterable[tuple[str, Behaviour]], default: Behaviour) -> None:
        self.rules = list(rules)
        self.default = default
        self.accepted: list[Accepted] = []
        self.refused: list[Refused] = []
        self._lock = threading.Lock()

    def behaviour(self, address: str) -> Behaviour:
        return behaviour_for(self.rules, address, self.default)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        behaviour = self.behaviour(address)
        if not behaviour.at_rcpt or behaviour is Behaviour.ACCEPT:
            envelope.rcpt_tos.append(address)
            return RCPT_OK
        with self._lock:
            self.refused.append(Refused(_sender(envelope), (address,), "RCPT", behaviour.reply))
        return behaviour.reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpts = tuple(envelope.rcpt_tos)
        spam = [r for r in rcpts if self.behaviour(r) is Behaviour.SPAM]
        with self._lock:
            if spam:
                self.refused.append(Refused(_sender(envelope), rcpts, "DATA", Behaviour.SPAM.reply))
                return Behaviour.SPAM.reply
            self.accepted.append(Accepted(_sender(envelope), rcpts, envelope.content))
        return DATA_OK


class _EphemeralController(Controller):
    """A Controller that may bind port 0: it learns the real port before its self-check."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class ControlledServer:
    """An aiosmtpd server on its own thread (``_controller``), as a context manager."""

    _controller: Controller

    def start(self) -> Self:
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller._thread is not None:
            self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SmtpSink(ControlledServer):
    """An SMTP server on 127.0.0.1 answering by a script of address patterns.

    ``rules`` maps fnmatch patterns on the lower-cased recipient address (``"*@spam.test"``,
    ``"unknown-*@mixed.test"``) to a :class:`Behaviour`; the first match wins, otherwise
    ``default``.  ``port=0`` picks a free port; read it from :attr:`port` after start.
    """

    def __init__(
        self,
        rules: Mapping[str, Behaviour] | Iterable[tuple[str, Behaviour]] = (),
        *,
        default: Behaviour = Behaviour.ACCEPT,
        port: int = 0,
        hostname: str = "sink.test",
    ) -> None:
        pairs = rules.items() if isinstance(rules, Mapping) else rules
        self.handler = _Script(pairs, default)
        self._controller = _EphemeralController(
            self.handler, hostname=HOST, port=port, server_hostname=hostname
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def accepted(self) -> list[Accepted]:
        """The messages taken so far (a copy)."""
        with self.handler._lock:
            return list(self.handler.accepted)

    @property
    def refused(self) -> list[Refused]:
        """The refusals given so far (a copy)."""
        with self.handler._lock:
            return list(self.handler.refused)



class _GreetOnce(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: GreetingRejectServer._Server = self.server  # type: ignore[assignment]
        with server.lock:
            server.connections += 1
        self.request.sendall(f"{server.greeting}\r\n".encode("ascii"))


class GreetingRejectServer:
    """Answers every connection with ``421 4.7.0 try later`` as its greeting and hangs up."""

    class _Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        greeting: str
        connections: int
        lock: threading.Lock

    def __init__(self, port: int = 0, greeting: str = GREETING_TRY_LATER) -> None:
        self._server = self._Server((HOST, port), _GreetOnce, bind_and_activate=False)
        self._server.greeting = greeting
        self._server.connections = 0
        self._server.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def connections(self) -> int:
        with self._server.lock:
            return self._server.connections

    def start(self) -> Self:
        self._server.server_bind()
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RefusedPort:
    """A port on 127.0.0.1 where connections are refused.

    The socket is bound but never listens, so the kernel answers every SYN with a reset and
    no other test can take the port while this object is open.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
