"""Amazon SNS over HTTP: signed envelopes, their signing certificates, subscriptions.

SNS posts one JSON envelope per request (``Type``: Notification, SubscriptionConfirmation,
UnsubscribeConfirmation) and signs a canonical string of its fields with the key of a
certificate it names in ``SigningCertURL``; ``SignatureVersion`` 1 is SHA1withRSA, 2 is
SHA256withRSA
(https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html).

The certificate is fetched only over HTTPS from an ``sns.<region>.amazonaws.com`` host (TLS
says it is Amazon's), then cached.  A valid signature proves only that *some* topic sent
the envelope, anyone can make one: ``topic_arns`` names the ones taken.  A
SubscriptionConfirmation is logged and, with ``confirm_subscriptions``, confirmed by
fetching its ``SubscribeURL`` (from such a host too).  Fetching is pluggable: tests pass a
function that serves their own self-signed certificate.  With ``certificate_file`` the
signing certificate is pinned instead: read from that file at start and never fetched (for
hosts whose egress is filtered, and for local load tests that sign with their own key).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import re
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from monitor.collectors.esp.base import Refused
from monitor.config import WebhookSettings
from monitor.errors import ConfigError

__all__ = ["MAX_CERT_BYTES", "Fetch", "SnsSignature", "canonical", "fetch_https", "sns_url"]

log = logging.getLogger(__name__)

#: ``fetch(url) -> body``: GET over HTTPS; raises OSError (or ValueError) when it cannot.
Fetch = Callable[[str], bytes]

MAX_CERT_BYTES = 64 << 10
_CACHED_CERTS = 32  # SNS signs with one certificate per region at a time
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com")
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
#: The fields signed, in this order, per envelope type (absent optional ones are left out).
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
    ),
}
_SIGNED["UnsubscribeConfirmation"] = _SIGNED["SubscriptionConfirmation"]


def fetch_https(url: str, timeout: float = 10.0) -> bytes:
    """GET ``url`` with certificate verification (urllib's default context), at most 64 KiB."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read(MAX_CERT_BYTES + 1))
    except http.client.HTTPException as exc:  # a broken answer: not an OSError of its own
        raise OSError(f"{type(exc).__name__}: {exc}") from None


def sns_url(value: Any, *, pem: bool = False) -> str | None:
    """``value`` if it is an https URL on an SNS host (ending in .pem when ``pem``), else None."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "https" or parts.username or parts.password or port not in (None, 443):
        return None
    if not _SNS_HOST.fullmatch(parts.hostname or "") or (pem and not parts.path.endswith(".pem")):
        return None
    return value


def canonical(envelope: Mapping[str, Any]) -> bytes:
    """The string SNS signs: each signed field's name and value, one a line."""
    fields = _SIGNED[envelope["Type"]]
    out = []
    for name in fields:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def _pinned(path: str | None, name: str) -> x509.Certificate | None:
    """The certificate of ``certificate_file``, or None when none is set."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read(MAX_CERT_BYTES + 1))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"webhooks.{name}.certificate_file {path}: {exc}") from None


def _sns_time(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError("no Timestamp")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class SnsSignature:
    """Verifies SNS envelopes for ``[webhooks.NAME]`` and handles subscription requests."""

    def __init__(
        self,
        settings: WebhookSettings,
        name: str = "ses",
        *,
        fetch: Fetch = fetch_https,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.topic_arns:
            raise ConfigError(f"webhooks.{name}.topic_arns: name the SNS topics to take "
                              "(any AWS account can sign for a topic of its own)")  # fmt: skip
        self.name = name
        self.topics = frozenset(settings.topic_arns)
        self.confirm = settings.confirm_subscriptions
        self.tolerance = settings.tolerance_seconds
        self.fetch = fetch
        self.clock = clock
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()
        self.pinned = _pinned(settings.certificate_file, name)
        # With its certificate pinned and no subscription to confirm, nothing is ever
        # fetched: a small request is then checked on the service's event loop (a hop to a
        # thread and back cost more than the check).
        self.offline = self.pinned is not None and not self.confirm

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            raise Refused("bad_signature", 401, "not an SNS envelope") from None
        if not isinstance(envelope, dict) or envelope.get("Type") not in _SIGNED:
            raise Refused("bad_signature", 401, "not an SNS envelope")
        if envelope.get("TopicArn") not in self.topics:
            raise Refused("bad_topic", 403, f"topic {str(envelope.get('TopicArn'))[:200]!r}")
        self._check_signature(envelope)
        try:
            sent = _sns_time(envelope.get("Timestamp"))
        except ValueError:
            raise Refused("bad_signature", 401, "no readable Timestamp") from None
        if abs(self.clock() - sent) > self.tolerance:
            raise Refused("stale", 403, "Timestamp outside the tolerance")
        if envelope["Type"] != "Notification":
            self._subscription(envelope)

    def _check_signature(self, envelope: Mapping[str, Any]) -> None:
        algorithm = _HASHES.get(str(envelope.get("SignatureVersion")))
        url = sns_url(envelope.get("SigningCertURL"), pem=True)
        if algorithm is None or url is None:
            raise Refused("bad_signature", 401, "no SNS signature or certificate URL")
        try:
            signature = base64.b64decode(str(envelope.get("Signature")), validate=True)
            signed = canonical(envelope)
        except (ValueError, binascii.Error):
            raise Refused("bad_signature", 401, "unreadable signature fields") from None
        key = self._certificate(url).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused("bad_signature", 403, "the signing certificate has no RSA key")
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise Refused("bad_signature", 403) from None

    def _certificate(self, url: str) -> x509.Certificate:
        """The pinned certificate, or the one at ``url``, cached; a fetch that fails is
        retried next time."""
        cert = self.pinned or self._fetched(url)
        now = self.clock()
        if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
            raise Refused("bad_signature", 403, "the signing certificate is not valid now")
        return cert

    def _fetched(self, url: str) -> x509.Certificate:
        with self._lock:
            cert = self._certs.get(url)
            if cert is not None:
                self._certs.move_to_end(url)
        if cert is None:
            try:
                pem = self.fetch(url)
                if len(pem) > MAX_CERT_BYTES:
                    raise ValueError("certificate over 64 KiB")
                cert = x509.load_pem_x509_certificate(pem)
            except (OSError, ValueError) as exc:
                # Not the sender's fault: 503 makes SNS retry later.
                raise Refused("unverifiable", 503, f"signing certificate: {exc}") from None
            with self._lock:
                self._certs[url] = cert
                while len(self._certs) > _CACHED_CERTS:
                    self._certs.popitem(last=False)
        return cert

    def _subscription(self, envelope: Mapping[str, Any]) -> None:
        """Log a (un)subscription confirmation; confirm a subscription when configured."""
        topic = envelope["TopicArn"]
        if envelope["Type"] == "UnsubscribeConfirmation":
            log.warning("webhooks.%s: SNS says topic %s unsubscribed this endpoint", self.name,
                        topic)  # fmt: skip
            return
        url = sns_url(envelope.get("SubscribeURL"))
        if not self.confirm or url is None:
            why = "confirm_subscriptions is off" if url else "its SubscribeURL is not an SNS one"
            log.warning("webhooks.%s: SNS asks to confirm the subscription to %s; not confirmed "
                        "(%s); to confirm, visit %s", self.name, topic, why,
                        envelope.get("SubscribeURL"))  # fmt: skip
            return
        try:
            self.fetch(url)
        except (OSError, ValueError) as exc:
            log.warning("webhooks.%s: confirming the subscription to %s failed: %s", self.name,
                        topic, exc)  # fmt: skip
            raise Refused("unverifiable", 503, "subscription not confirmed") from None
        log.info("webhooks.%s: confirmed the SNS subscription to %s", self.name, topic)
