"""Detectors: pure decisions over window counts, no I/O.

*Domain starts rejecting* (issue 5): in the short window, with ``n`` attempts of which
``k`` failed for a rejecting reason (``windows.REJECTING_REASONS``)::

    threshold = max(baseline_share * factor, floor)
    fires     when n >= min_attempts and wilson_lower(k, n, 95 %) > threshold
    resolves  when wilson_upper(k, n, 80 %) < threshold, or no attempts for the whole 1 h window

The 95 % Wilson score interval keeps small domains and single typo'd addresses quiet
(a handful of failures never has a lower bound above the floor) and gives hysteresis:
an open incident needs enough clean attempts to push the upper bound down again.  The
upper bound is taken at 80 % so that a domain with 20-35 attempts in five minutes can
resolve at all (at 95 %, 0 failures out of 34 still leave the upper bound above 10 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.rollup.windows import BASELINE, SHORT, Counts

__all__ = ["Decision", "RejectingDetector", "wilson"]

Z95 = 1.959964
Z80 = 1.281552


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the share ``k / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a detector concluded for one (provider, domain) at one evaluation."""

    firing: bool
    resolved: bool
    lower: float
    upper: float
    threshold: float
    baseline_share: float | None

    def as_dict(self) -> dict[str, Any]:
        base = self.baseline_share
        return {
            "wilson_lower": round(self.lower, 6),
            "wilson_upper": round(self.upper, 6),
            "threshold": round(self.threshold, 6),
            "baseline_share": None if base is None else round(base, 6),
        }


@dataclass(frozen=True, slots=True)
class RejectingDetector:
    """The *domain starts rejecting* rule (module docstring) with its tunables."""

    kind = "domain_rejecting"
    min_attempts: int = 20
    factor: float = 3.0
    floor: float = 0.10

    def decide(self, windows: dict[str, Counts]) -> Decision:
        short, base = windows[SHORT], windows[BASELINE]
        baseline_share = base.rejecting_share
        threshold = max((baseline_share or 0.0) * self.factor, self.floor)
        lower = wilson(short.rejecting, short.attempts, Z95)[0]
        upper = wilson(short.rejecting, short.attempts, Z80)[1]
        firing = short.attempts >= self.min_attempts and lower > threshold
        silent = windows["1h"].attempts == 0
        return Decision(
            firing=firing,
            resolved=not firing and (upper < threshold or silent),
            lower=lower,
            upper=upper,
            threshold=threshold,
            baseline_share=baseline_share,
        )
