"""The share test every rate detector applies, and the window ladder of *starts rejecting*.

With ``n`` attempts in the deciding window, ``k`` of them failing for the detector's
reason, against the baseline share of the week before that window::

    threshold = max(baseline_share * factor, floor)
    fires     when n >= minimum and wilson_lower(k, n, 95 %) > threshold
    resolves  when wilson_upper(k, n, 80 %) < threshold, or no attempts for the whole 1 h window

A detector with a ``ladder`` judges the shortest of its windows that holds that window's
minimum (module docstring of ``monitor.rollup.detectors``).  The minimum of the first,
shortest rung is a volume (a domain at 20 attempts per 5 minutes), and a domain at that
volume has fewer in about half of its windows (Poisson), so the first rung also judges a
window short of its minimum ``m`` when the counts cannot tell the domain from one at
``m``: the window holds ``near(m)`` (``m - 2 sqrt(m)``, 12 of 20) and the last hour
``near(M)`` at the same rate (``M = m * 12``, 210 of 240).  Fewer attempts need stronger
evidence: such a window fires on the 99 % Wilson lower bound, not the 95 % one.  At 95 %
it would page on healthy traffic (3 blocked of 10); at 99 % a week of healthy domains at
60-600 attempts an hour with 1-5 % blocked deferrals paged exactly as often as before,
while a domain at exactly 20 attempts per 5 minutes pages within 5 minutes
(``bench/bench_detection.py``, ``tests/test_rollup_boundary.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from monitor.rollup.windows import SHORT, WEEKLY, WEEKLY_MIN, WINDOWS, Counts, baseline_of

__all__ = [
    "Z80",
    "Z95",
    "Z99",
    "Decision",
    "ShareDetector",
    "Tunable",
    "near",
    "share_test",
    "wilson",
]

Z95 = 1.959964
Z80 = 1.281552
Z99 = 2.575829


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
    """What a detector concluded for one subject at one evaluation.

    ``value`` is what the gauges export (a share, seconds or a count), ``numerator`` and
    ``denominator`` let the gauges pool subjects into ``other``.
    """

    firing: bool
    resolved: bool
    lower: float
    upper: float
    threshold: float
    baseline_share: float | None
    value: float | None = None
    numerator: float = 0.0
    denominator: float = 0.0
    severity: str = ""
    baseline: str = ""  # which baseline a share test used: "weekly" or "7d"
    window: str = ""  # which window decided, for a detector with several
    confidence: float = 0.95  # of the Wilson lower bound that fires (module docstring)

    def as_dict(self) -> dict[str, Any]:
        base = self.baseline_share
        out: dict[str, Any] = {
            "wilson_lower": round(self.lower, 6),
            "wilson_upper": round(self.upper, 6),
            "threshold": round(self.threshold, 6),
            "baseline_share": None if base is None else round(base, 6),
            "value": None if self.value is None else round(self.value, 6),
        }
        if self.severity:
            out["severity"] = self.severity
        if self.baseline:
            out["baseline"] = self.baseline
        if self.window:
            out["window"] = self.window
        if self.confidence != 0.95:
            out["confidence"] = self.confidence
        return out


def near(volume: float) -> int:
    """The fewest attempts a window may hold and still fit a subject at ``volume`` per
    window: ``volume - 2 sqrt(volume)``, under which a Poisson count falls in ~2 % of them."""
    return max(1, math.ceil(volume - 2 * math.sqrt(volume)))


def share_test(
    k: int, n: int, base_k: int, base_n: int, *, min_n: int, factor: float, floor: float,
    silent: bool, baseline: str = "", z: float = Z95,
) -> Decision:
    """The share test of the module docstring: fire above ``max(baseline * factor, floor)``
    (the lower bound at ``z``)."""
    baseline_share = base_k / base_n if base_n > 0 else None
    threshold = max((baseline_share or 0.0) * factor, floor)
    lower = wilson(k, n, z)[0]
    upper = wilson(k, n, Z80)[1]
    firing = n >= min_n and lower > threshold
    return Decision(
        firing=firing,
        resolved=not firing and (upper < threshold or silent),
        lower=lower,
        upper=upper,
        threshold=threshold,
        baseline_share=baseline_share,
        value=k / n if n else None,
        numerator=k,
        denominator=n,
        baseline=baseline,
        confidence=0.99 if z == Z99 else 0.95,
    )


class Tunable:
    """``tunables()``: a detector's settings as the evidence records them."""

    __slots__ = ()

    def tunables(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


class ShareDetector(Tunable):
    """The share test of the module docstring on ``window`` against that window's baseline.

    A subclass names the ``Counts`` fields of its share and the field holding its minimum
    volume (or, in ``ladder``, several windows each with the field holding its minimum:
    the shortest one with its volume decides, or the first one at its volume within noise:
    module docstring); every such detector resolves on silence when its 1 h window saw
    nothing.
    """

    __slots__ = ()
    window: ClassVar[str]
    share: ClassVar[tuple[str, str]]  # (numerator, denominator) Counts fields
    minimum: ClassVar[str]  # the field holding the minimum denominator
    ladder: ClassVar[tuple[tuple[str, str], ...]] = ()  # (window, minimum field), shortest first
    factor: float
    floor: float

    weekly_min: int

    def decide(self, windows: dict[str, Counts]) -> Decision:
        k, n = self.share
        rungs = self.ladder or ((self.window, self.minimum),)
        # The shortest window with the volume to judge decides; the longest when none has.
        name, minimum = next(
            ((w, m) for w, m in rungs if getattr(windows[w], n) >= getattr(self, m)), rungs[-1]
        )
        least, z = getattr(self, minimum), Z95
        first, volume_field = rungs[0]
        if self.ladder and name != first:
            # Short of the first rung's minimum by no more than chance while the hour ran at
            # its rate: the first rung judges, on stronger evidence (module docstring).
            volume = getattr(self, volume_field)
            hourly = volume * WINDOWS["1h"] / WINDOWS[first]
            now, hour = getattr(windows[first], n), getattr(windows["1h"], n)
            if now >= near(volume) and hour >= near(hourly):
                name, least, z = first, near(volume), Z99
        short, base = windows[name], baseline_of(windows, name)
        baseline = "7d"
        weeks = windows.get(WEEKLY_MIN)
        # The same hour of the week when every usable week had the volume to say what is
        # usual then (a Monday 09:00 batch); else the trailing week.
        if weeks is not None and self.weekly_min and getattr(weeks, n) >= self.weekly_min:
            base, baseline = windows[WEEKLY], "weekly"
        decision = share_test(
            getattr(short, k), getattr(short, n), getattr(base, k), getattr(base, n),
            min_n=least, factor=self.factor, floor=self.floor,
            silent=getattr(windows["1h"], n) == 0, baseline=baseline, z=z,
        )  # fmt: skip
        if not self.ladder:
            return decision
        if name != SHORT:
            # A longer window speaks only while the last 5 minutes agree, both ways (as
            # multi-window burn-rate alerts pair each long window with a short one): an
            # hour whose clean traffic slides out after the mail stopped does not fire,
            # nor does one full of clean traffic from before resolve what is failing now.
            now = windows[SHORT]
            seen, failing = getattr(now, n), getattr(now, k)
            agrees = seen > 0 and failing / seen > decision.threshold
            firing = decision.firing and agrees
            silent = getattr(windows["1h"], n) == 0
            clean = decision.upper < decision.threshold and seen > 0 and not agrees
            decision = replace(decision, firing=firing, resolved=not firing and (silent or clean))
        return replace(decision, window=name)
