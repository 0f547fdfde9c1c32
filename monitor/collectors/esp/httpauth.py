"""HTTP Basic and bearer-token authentication, for providers that sign nothing.

SparkPost, Brevo (and Postmark) send a fixed credential with every request: a Basic
``user:password`` pair, or a bearer token.  The secret of ``[webhooks.NAME]`` is the
password (with ``username``) and the token; a request passes when its ``Authorization``
header carries either.  Comparisons are constant-time on the whole header value.

    register_webhook(Webhook("brevo", BrevoEvents, split_records, BasicOrBearer.named("brevo")))
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping

from monitor.collectors.esp.base import Refused
from monitor.collectors.esp.common import header
from monitor.config import WebhookSettings
from monitor.errors import ConfigError

__all__ = ["BasicOrBearer"]


class BasicOrBearer:
    """``Authorization: Basic base64(username:secret)`` (when a username is configured) or
    ``Authorization: Bearer secret``; anything else is refused as ``bad_auth``."""

    offline = True  # checks with the key it holds: never waits on the network

    def __init__(self, settings: WebhookSettings, name: str) -> None:
        secret = settings.secret(name)
        if not secret:
            raise ConfigError(f"webhooks.{name}: set secret_env or secret_file")
        self.accepted = [f"Bearer {secret}".encode()]
        if settings.username:
            pair = base64.b64encode(f"{settings.username}:{secret}".encode()).decode()
            self.accepted.append(f"Basic {pair}".encode())

    @classmethod
    def named(cls, name: str) -> Callable[[WebhookSettings], BasicOrBearer]:
        """The verifier factory a :class:`~monitor.collectors.esp.base.Webhook` takes."""
        return lambda settings: cls(settings, name)

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        given = header(headers, "authorization")
        if given is None:
            raise Refused("bad_auth", 401, "no Authorization header")
        scheme, _, credential = given.strip().partition(" ")
        # The scheme is case-insensitive (RFC 9110 section 11.1), the credential is not.
        presented = f"{scheme.capitalize()} {credential.strip()}".encode("utf-8", "replace")
        matched = False
        for expected in self.accepted:  # every comparison runs: no early exit to time
            matched |= hmac.compare_digest(presented, expected)
        if not matched:
            raise Refused("bad_auth", 401, "wrong credentials")
