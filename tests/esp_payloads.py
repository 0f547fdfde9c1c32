"""ESP webhook tests' shared steps: the provider corpus, bodies fed record by record, settings.

The corpus is the providers' own documentation examples and third-party fixtures under
``shared/corpora/webhooks`` beside the repository; it is read in place, never copied in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from golden import check_json

from monitor.collectors.esp.base import EspSource
from monitor.collectors.source import NotUnderstood
from monitor.config import WebhookSettings
from monitor.model import Event

__all__ = [
    "DATA", "WEBHOOKS", "Fetcher", "corpus_files", "feed_body", "golden_corpus", "self_signed",
    "settings",
]

WEBHOOKS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "webhooks"
DATA = Path(__file__).parent / "data" / "esp"


def corpus_files(*patterns: str) -> list[Path]:
    """The corpus files matching ``patterns`` (relative to the corpus); fails when there are none."""
    if not WEBHOOKS.is_dir():
        pytest.fail(f"corpus missing: {WEBHOOKS} (the repository's parent directory must hold "
                    "shared/corpora, as in CI); this test never skips")
    found = sorted({p for pattern in patterns for p in WEBHOOKS.glob(pattern)})
    if not found:
        pytest.fail(f"no corpus file matches {patterns} under {WEBHOOKS}")
    return found


def feed_body(
    source: EspSource, records: Iterable[Any], ref: str = "body"
) -> tuple[list[Event], Counter[str]]:
    """The events of every record, and the records not understood by reason (as the driver counts).

    The ``message_headers`` records a payload's thread headers make are left out
    (tests/test_esp_threads.py holds them)."""
    events: list[Event] = []
    problems: Counter[str] = Counter()
    for n, record in enumerate(records, 1):
        try:
            events.extend(i for i in source.feed(record, f"{ref}:{n}") if isinstance(i, Event))
        except NotUnderstood as exc:
            problems[exc.reason] += 1
    return events, problems


def golden_corpus(
    name: str,
    files: list[Path],
    source: Callable[[], EspSource],
    split: Callable[[str], Iterable[Any]],
    not_understood: Mapping[str, str] | None = None,
) -> dict[str, list[Event]]:
    """Every corpus file's events, held to ``tests/data/esp/NAME.json``; no record goes
    unread but those ``not_understood`` names (file -> the reason of its one such record)."""
    out: dict[str, list[Event]] = {}
    expected = dict(not_understood or {})
    for path in files:
        key = str(path.relative_to(WEBHOOKS))
        events, problems = feed_body(source(), split(path.read_text("utf-8")), key)
        want = {expected.pop(key): 1} if key in expected else {}
        assert dict(problems) == want, f"{key}: records not understood: {dict(problems)}"
        out[key] = events
    assert not expected, f"not in the corpus: {sorted(expected)}"
    check_json(DATA / f"{name}.json", {k: [e.to_dict() for e in v] for k, v in out.items()})
    return out


def settings(tmp_path: Path, secret: str | None, **fields: Any) -> WebhookSettings:
    """``[webhooks.X]`` settings whose secret is in a file under ``tmp_path``."""
    if secret is None:
        return WebhookSettings(**fields)
    path = tmp_path / "secret"
    path.write_text(secret + "\n", "utf-8")
    return WebhookSettings(secret_file=str(path), **fields)


def self_signed(key: rsa.RSAPrivateKey, around: datetime, days: int = 30) -> bytes:
    """A CA-less self-signed certificate (PEM) for ``key``, valid ``days`` either side of ``around``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(around - timedelta(days=days))
            .not_valid_after(around + timedelta(days=days))
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


class Fetcher:
    """Serves URLs from a dict and records each fetch (the tests' stand-in for HTTPS)."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.fetched: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.pages:
            raise OSError(f"no such page: {url}")
        return self.pages[url]
