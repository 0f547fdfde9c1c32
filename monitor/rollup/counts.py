"""Outcome counts of one subject over one window: what the rollup windows add up."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from monitor.classify.rules import BLAMES

__all__ = ["ATTEMPT_OUTCOMES", "OUTCOMES", "Counts"]

#: Attempts are the tries that got an answer: delivered, deferred or bounced.
ATTEMPT_OUTCOMES = ("delivered", "deferred", "bounced")
#: The outcomes windows count (the ``counters.outcome`` values that are ``Counts`` fields).
OUTCOMES = (*ATTEMPT_OUTCOMES, "expired", "complained", "submitted", "opened", "clicked")
_BLAME_FIELDS = tuple(f"blame_{b}" for b in sorted(BLAMES))


@dataclass(slots=True)
class Counts:
    """Outcome counts of one (provider, subject) over one window.

    The hard/soft split and the blame counts come from ``failure_counters``, which knows
    recipient domains only: sender-side windows leave them 0.  Failures by reason stay
    out (three dozen classes): an incident's evidence lists them (``failure_breakdown``).
    """

    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    expired: int = 0
    rejecting: int = 0  # deferred or bounced attempts for a REJECTING_REASONS reason
    complained: int = 0
    submitted: int = 0
    opened: int = 0
    clicked: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    # Failures (deferred attempts, bounces, expiries) by blame (monitor.classify.BLAMES).
    blame_authentication: int = 0
    blame_content: int = 0
    blame_infrastructure: int = 0
    blame_policy: int = 0
    blame_rate: int = 0
    blame_recipient: int = 0
    blame_reputation: int = 0
    blame_unknown: int = 0

    @property
    def attempts(self) -> int:
        return self.delivered + self.deferred + self.bounced

    @property
    def finished(self) -> int:
        """Recipients with a final outcome: the bounce rate's denominator."""
        return self.delivered + self.bounced + self.expired

    # Spelled out, not via fields(): the engine adds thousands of these per evaluation.
    def __add__(self, o: Counts) -> Counts:
        return Counts(
            self.delivered + o.delivered,
            self.deferred + o.deferred,
            self.bounced + o.bounced,
            self.expired + o.expired,
            self.rejecting + o.rejecting,
            self.complained + o.complained,
            self.submitted + o.submitted,
            self.opened + o.opened,
            self.clicked + o.clicked,
            self.bounced_hard + o.bounced_hard,
            self.bounced_soft + o.bounced_soft,
            self.blame_authentication + o.blame_authentication,
            self.blame_content + o.blame_content,
            self.blame_infrastructure + o.blame_infrastructure,
            self.blame_policy + o.blame_policy,
            self.blame_rate + o.blame_rate,
            self.blame_recipient + o.blame_recipient,
            self.blame_reputation + o.blame_reputation,
            self.blame_unknown + o.blame_unknown,
        )

    def __sub__(self, o: Counts) -> Counts:
        return Counts(
            self.delivered - o.delivered,
            self.deferred - o.deferred,
            self.bounced - o.bounced,
            self.expired - o.expired,
            self.rejecting - o.rejecting,
            self.complained - o.complained,
            self.submitted - o.submitted,
            self.opened - o.opened,
            self.clicked - o.clicked,
            self.bounced_hard - o.bounced_hard,
            self.bounced_soft - o.bounced_soft,
            self.blame_authentication - o.blame_authentication,
            self.blame_content - o.blame_content,
            self.blame_infrastructure - o.blame_infrastructure,
            self.blame_policy - o.blame_policy,
            self.blame_rate - o.blame_rate,
            self.blame_recipient - o.blame_recipient,
            self.blame_reputation - o.blame_reputation,
            self.blame_unknown - o.blame_unknown,
        )

    def least(self, o: Counts) -> Counts:
        """Field by field, the smaller of the two."""
        return Counts(*(min(getattr(self, f), getattr(o, f)) for f in _FIELDS))

    @property
    def rejecting_share(self) -> float | None:
        return self.rejecting / self.attempts if self.attempts else None

    @property
    def failures_by_blame(self) -> dict[str, int]:
        """Blame -> failures, the blames seen only."""
        out = {}
        for name in _BLAME_FIELDS:
            n = getattr(self, name)
            if n:
                out[name[len("blame_") :]] = n
        return out

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("blame_")
        }
        out["failures_by_blame"] = self.failures_by_blame
        out["attempts"] = self.attempts
        share = self.rejecting_share
        out["rejecting_share"] = None if share is None else round(share, 6)
        out["deferral_rate"] = round(self.deferred / self.attempts, 6) if self.attempts else None
        out["bounce_rate"] = round(self.bounced / self.finished, 6) if self.finished else None
        out["complaint_rate"] = (
            round(self.complained / self.delivered, 6) if self.delivered else None
        )
        out["delivery_rate"] = round(self.delivered / self.finished, 6) if self.finished else None
        return out


_FIELDS = tuple(f.name for f in fields(Counts))
