"""SMTP text that every MTA's log carries: addresses and reply codes.

Reply codes follow RFC 5321 section 4.2, enhanced status codes RFC 3463 section 2
(``class.subject.detail``, written ``#5.1.1`` by some servers).
"""

from __future__ import annotations

__all__ = ["ENHANCED", "ENHANCED_AFTER_CODE", "normalize_address"]

#: An enhanced status code, ungrouped (``5.1.1``).
ENHANCED = r"[245][.][0-9]{1,3}[.][0-9]{1,3}"
#: The optional enhanced status after a reply code (``550 5.1.1``, ``550-#5.1.1``), grouped.
ENHANCED_AFTER_CODE = r"(?:[ -]#?(" + ENHANCED + r")(?![0-9.]))?"


def normalize_address(address: str | None) -> str | None:
    """The address with its domain lower-cased (local parts may be case-sensitive)."""
    if not address:
        return None
    at = address.rfind("@")
    if at < 0:
        return address
    domain = address[at + 1 :]
    return address if domain.islower() or not domain else address[: at + 1] + domain.lower()
