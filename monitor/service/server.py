"""The HTTP server under ``mailmon serve``: uvicorn on a socket bound before anything is said.

Binding first turns "address in use" or an impossible address into one clear error (and a
non-zero exit, so a supervisor restarts or reports it) before the service claims to serve.
uvicorn's HTTP/1.1 protocol gets a deadline per request: a client that sends its headers or
body too slowly (a slowloris), or connects and sends nothing, is disconnected once
``request_timeout_seconds`` have passed since the request could start, and connections past
``max_connections`` open at once are closed as they come (file descriptors are finite).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from monitor.errors import ConfigError, MailmonError

__all__ = ["bind", "build_server", "check_port", "is_loopback"]

log = logging.getLogger(__name__)

#: A full server says so in the log at most this often.
REFUSED_LOG_INTERVAL_SECONDS = 60.0
#: States of the client's half of the connection in which its request is still arriving.


def check_port(port: int) -> int:
    """``port`` if it is a TCP port number, else a ConfigError naming it."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port}: expected a number from 0 to 65535")
    return port


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a MailmonError that says why not."""
    check_port(port)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MailmonError(f"cannot listen on {shown}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses TIME_WAIT
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise MailmonError(f"cannot listen on {shown}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _deadline_protocol(seconds: float, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (a C parser: h11 took a fifth of serve's time under
    load), closing a connection whose request is not in after ``seconds`` and any
    connection past ``max_connections`` open at once."""
    refused_logged_at = [float("-inf")]

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        #: the current request is wholly in: the app's own time is not limited
        _request_in = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > max_connections:
                # File descriptors are finite: past the cap a connection is closed at once.
                if self.loop.time() - refused_logged_at[0] >= REFUSED_LOG_INTERVAL_SECONDS:
                    refused_logged_at[0] = self.loop.time()
                    log.warning("%d connections open: closing new ones (service.max_connections)",
                                max_connections)  # fmt: skip
                self.transport.close()
                return
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._request_in = True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._request_in = False
            self._watch()  # a keep-alive connection waits for its next request

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_deadline()
            super().connection_lost(exc)

        def _watch(self) -> None:
            """Run the deadline while the client's request is still arriving, and only then."""
            if self.transport.is_closing():
                self._stop_deadline()
            elif not self._request_in:
                if self._deadline is None:
                    self._deadline = self.loop.call_later(seconds, self._expire)
            else:
                self._stop_deadline()

        def _stop_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                log.debug("closing %s: no complete request within %.1f s", self.client, seconds)
                self.transport.close()

    return DeadlineProtocol


def build_server(app: Any, *, request_timeout_seconds: float,
                 max_connections: int = 512) -> uvicorn.Server:  # fmt: skip
    """The uvicorn server for ``app``; run it with ``server.run(sockets=[bind(...)])``."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            http=_deadline_protocol(request_timeout_seconds, max_connections),
            # Idle keep-alive connections go sooner than a request may take to arrive.
            timeout_keep_alive=max(1, min(5, int(request_timeout_seconds))),
            log_level="warning",
            access_log=False,
        )
    )

