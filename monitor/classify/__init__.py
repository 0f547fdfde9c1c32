"""Failure classification: reply code + enhanced status + text + provider -> reason, hard, blame.

    from monitor.classify import classify
    classify(550, "5.1.1", "550 5.1.1 <a@example.org>: User unknown")
    # Verdict(reason='userunknown', hard=True, blame='recipient', rule='generic_mta.userunknown')

The rules are data (``monitor/data/classify/*.toml``, one file per provider or family,
each rule citing its source); the engine is :mod:`monitor.classify.engine`, the loader
and its validation :mod:`monitor.classify.rules` (DESIGN.md, "Bounce classes").
"""

from __future__ import annotations

from monitor.classify.engine import HARD_REASONS, Verdict, classify
from monitor.classify.rules import BLAMES, REASONS, RuleError

__all__ = [
    "BLAMES",
    "HARD_REASONS",
    "REASONS",
    "RuleError",
    "Verdict",
    "classify",
    "classify_reply",
]


def classify_reply(
    reply_code: int | None, enhanced_status: str | None, expired: bool = False
) -> Verdict:
    """Classify one failed attempt from its codes alone (``expired``: the MTA gave up)."""
    if expired:
        return Verdict("expired", False, "infrastructure", "mta.expired")
    return classify(reply_code, enhanced_status, None)
