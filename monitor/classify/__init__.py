"""Failure classification: reply code + enhanced status + text -> reason, hard.

This is the code-table fallback the pipeline uses for every failure; provider
text rules layer on top of it (see DESIGN.md, "Bounce classes").
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

__all__ = ["HARD_REASONS", "REASONS", "Verdict", "classify_reply"]

#: The reason vocabulary (Sisimai 5.2; DESIGN.md "Bounce classes").
REASONS = frozenset(
    (
        "userunknown hostunknown hasmoved notaccept mailboxfull suspend filtered rejected"
        " blocked badreputation spamdetected virusdetected policyviolation authfailure"
        " requireptr notcompliantrfc contenterror securityerror failedstarttls norelaying"
        " syntaxerror systemerror systemfull networkerror expired mailererror exceedlimit"
        " mesgtoobig toomanyconn speeding ratelimited suppressed onhold undefined delivered"
        " feedback vacation"
    ).split()
)

#: Reasons that mean the address will never work (DESIGN.md).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


class Verdict(NamedTuple):
    reason: str
    hard: bool


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    text = resources.files("monitor.data").joinpath("status_codes.toml").read_text("utf-8")
    data = tomllib.loads(text)
    return dict(data["detail"]), dict(data["reply_code"])


@lru_cache(maxsize=4096)
def classify_reply(
    reply_code: int | None, enhanced_status: str | None, expired: bool = False
) -> Verdict:
    """Classify one failed attempt from its codes (``expired``: the MTA gave up)."""
    if expired:
        return Verdict("expired", False)
    details, codes = _tables()
    permanent = False
    reason = None
    if enhanced_status:
        klass, _, detail = enhanced_status.partition(".")
        permanent = klass == "5"
        reason = details.get(detail)
    if reply_code is not None:
        permanent = permanent or 500 <= reply_code < 600
        if reason is None:
            reason = codes.get(str(reply_code))
    if reason is None:
        reason = "undefined"
    hard = permanent and (reason in HARD_REASONS or reason == "notaccept")
    return Verdict(reason, hard)
