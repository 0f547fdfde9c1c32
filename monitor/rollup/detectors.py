"""Detectors: pure decisions over window counts, no I/O.

*Domain starts rejecting* (issue 5): the share test of ``monitor.rollup.share`` on the
attempts that failed for a rejecting reason (``views.REJECTING_REASONS``)::

    threshold = max(baseline_share * factor, floor)
    fires     when n >= min_attempts and wilson_lower(k, n, 95 %) > threshold
    resolves  when wilson_upper(k, n, 80 %) < threshold, or no attempts for the whole 1 h window

The deciding window is the shortest of 5 min (``min_attempts``, 20), 15 min
(``min_attempts_15m``) and 1 h (``min_attempts_1h``) that holds its minimum volume, else
the 1 h window (which then cannot fire): as in multi-window burn-rate alerting, the short
window pages fast at high volume and the longer ones reach lower volumes, here in turn, so
a domain busy enough for 5 minutes is judged exactly as before (a batch too small a share
for the 5-minute test is not re-judged over an hour).  The 5-minute window also judges,
at the 99 % bound, when it is short of ``min_attempts`` by no more than chance while the
last hour ran at that rate (12 of 20 attempts, 210 in the hour: ``share.near``), so a
domain at exactly 20 attempts per 5 minutes pages within 5 minutes.  A longer window fires
only while the 5-minute share is above the threshold too, and resolves only while it is
not (and there were attempts): the last minutes must agree with the window that speaks.
``provider_rejecting`` applies the same rule to the sum of a provider's domains (Microsoft
across outlook.com and hotmail.com).

The 95 % Wilson score interval keeps small domains and single typo'd addresses quiet
(a handful of failures never has a lower bound above the floor) and gives hysteresis:
an open incident needs enough clean attempts to push the upper bound down again.  The
upper bound is taken at 80 % so that a domain with 20-35 attempts in five minutes can
resolve at all (at 95 %, 0 failures out of 34 still leave the upper bound above 10 %).

``baseline_share`` is the same clock hour on the same weekday of the last weeks when every
usable week had ``weekly_min`` attempts then (``WEEKLY``, ``WEEKLY_MIN``: a Monday 09:00
batch is usual at 09:00 on Mondays), else the trailing 7 days; the decision records which.

The bounce-rate and deferral-spike detectors apply the same test to their own share and
window; complaint rate, provider silence, latency and queue age are described on their
classes.  Every detector has a ``kind`` (the incident's kind and the gauges' label), a
``level`` (``domain``: one subject per (provider, domain); ``provider``: per provider,
stored with domain ``""``; ``sending_ip``, ``sender_domain``, ``stream``: per (provider,
sending IP / sending domain / stream), the value stored in the incident's domain column),
the ``source`` of its input and ``decide(input)``::

    class MyDetector:
        kind, level, source, window = "my_kind", "domain", "counters", "1h"

        def decide(self, windows: dict[str, Counts]) -> Decision: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from monitor.rollup.share import Z80, Z95, Decision, ShareDetector, Tunable, wilson
from monitor.rollup.windows import SHORT, Counts

__all__ = [
    "BounceRateDetector",
    "ComplaintRateDetector",
    "Decision",
    "DeferralSpikeDetector",
    "Detector",
    "LatencyDetector",
    "LatencyStats",
    "ProviderRejectingDetector",
    "ProviderSilentDetector",
    "QueueAgeDetector",
    "QueueStats",
    "RejectingDetector",
    "SenderDomainBounceRateDetector",
    "SenderDomainRejectingDetector",
    "SendingIpBounceRateDetector",
    "SendingIpRejectingDetector",
    "StreamBounceRateDetector",
    "StreamRejectingDetector",
    "default_detectors",
    "wilson",
]


class Detector(Protocol):
    """What the engine needs of a detector (module docstring)."""

    @property
    def kind(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def window(self) -> str: ...
    def decide(self, data: Any, /) -> Decision: ...
    def tunables(self) -> dict[str, Any]: ...




@dataclass(frozen=True, slots=True)
class RejectingDetector(ShareDetector):
    """The *domain starts rejecting* rule (module docstring) with its tunables."""

    kind: ClassVar[str] = "domain_rejecting"
    level: ClassVar[str] = "domain"
    source: ClassVar[str] = "counters"
    window: ClassVar[str] = SHORT
    share: ClassVar[tuple[str, str]] = ("rejecting", "attempts")
    minimum: ClassVar[str] = "min_attempts"
    ladder: ClassVar[tuple[tuple[str, str], ...]] = (
        (SHORT, "min_attempts"),
        ("15m", "min_attempts_15m"),
        ("1h", "min_attempts_1h"),
    )
    min_attempts: int = 20
    min_attempts_15m: int = 15  # 60 an hour: 100 an hour is judged within 15 minutes
    min_attempts_1h: int = 30
    factor: float = 3.0
    floor: float = 0.10
    weekly_min: int = 200  # per same-hour-of-week hour; 0: always the trailing week


@dataclass(frozen=True, slots=True)
class ProviderRejectingDetector(RejectingDetector):
    """*Domain starts rejecting* judged on the sum of a provider's domains: Microsoft
    blocking us shows at outlook.com, hotmail.com and live.com at once, each of them maybe
    too quiet on its own.  ``other`` is no one receiver, so it is not judged."""

    kind: ClassVar[str] = "provider_rejecting"
    level: ClassVar[str] = "provider"
    skip_providers: ClassVar[frozenset[str]] = frozenset({"other"})


@dataclass(frozen=True, slots=True)
class BounceRateDetector(ShareDetector):
    """Bounced / finished recipients over 1 h, against the domain's own week (all reasons:
    user-unknown bounces are a list-hygiene problem worth an incident of their own)."""

    kind: ClassVar[str] = "bounce_rate"
    level: ClassVar[str] = "domain"
    source: ClassVar[str] = "counters"
    window: ClassVar[str] = "1h"
    share: ClassVar[tuple[str, str]] = ("bounced", "finished")
    minimum: ClassVar[str] = "min_finished"
    min_finished: int = 100
    factor: float = 3.0
    floor: float = 0.05
    weekly_min: int = 200  # per same-hour-of-week hour; 0: always the trailing week


@dataclass(frozen=True, slots=True)
class DeferralSpikeDetector(ShareDetector):
    """Deferred / all attempts over 15 min, against the domain's week: a domain that always
    greylists a little has a high baseline and does not fire."""

    kind: ClassVar[str] = "deferral_spike"
    level: ClassVar[str] = "domain"
    source: ClassVar[str] = "counters"
    window: ClassVar[str] = "15m"
    share: ClassVar[tuple[str, str]] = ("deferred", "attempts")
    minimum: ClassVar[str] = "min_attempts"
    min_attempts: int = 50
    factor: float = 3.0
    floor: float = 0.25
    weekly_min: int = 200  # per same-hour-of-week hour; 0: always the trailing week


@dataclass(frozen=True, slots=True)
class SendingIpRejectingDetector(RejectingDetector):
    """*Domain starts rejecting* judged per (provider, sending IP): "is 203.0.113.7 blocked
    at Microsoft?" -- one listed address of a pool shows here while the domains it sends
    to stay below their line, its share diluted by the other addresses."""

    kind: ClassVar[str] = "sending_ip_rejecting"
    level: ClassVar[str] = "sending_ip"


@dataclass(frozen=True, slots=True)
class SendingIpBounceRateDetector(BounceRateDetector):
    """The bounce-rate rule judged per (provider, sending IP)."""

    kind: ClassVar[str] = "sending_ip_bounce_rate"
    level: ClassVar[str] = "sending_ip"


@dataclass(frozen=True, slots=True)
class SenderDomainRejectingDetector(RejectingDetector):
    """*Domain starts rejecting* judged per (provider, sending domain): the provider refuses
    mail from one of our From domains (its DMARC or its reputation) and not the others."""

    kind: ClassVar[str] = "sender_domain_rejecting"
    level: ClassVar[str] = "sender_domain"


@dataclass(frozen=True, slots=True)
class SenderDomainBounceRateDetector(BounceRateDetector):
    """The bounce-rate rule judged per (provider, sending domain)."""

    kind: ClassVar[str] = "sender_domain_bounce_rate"
    level: ClassVar[str] = "sender_domain"


@dataclass(frozen=True, slots=True)
class StreamRejectingDetector(RejectingDetector):
    """*Domain starts rejecting* judged per (provider, stream): one stream (a newsletter, a
    campaign) is blocked as spam while the transactional mail still gets through."""

    kind: ClassVar[str] = "stream_rejecting"
    level: ClassVar[str] = "stream"


@dataclass(frozen=True, slots=True)
class StreamBounceRateDetector(BounceRateDetector):
    """The bounce-rate rule judged per (provider, stream): a stream sent to a stale list."""

    kind: ClassVar[str] = "stream_bounce_rate"
    level: ClassVar[str] = "stream"


@dataclass(frozen=True, slots=True)
class ComplaintRateDetector(Tunable):
    """Complaints / delivered over 24 h per provider, at the Gmail and Yahoo sender rules.

    The rules are absolute (stay below 0.1 %, never reach 0.3 %,
    https://support.google.com/a/answer/81126 , https://senders.yahooinc.com/best-practices/)
    and are measured as a plain daily rate, so the point estimate decides, over at least
    ``min_delivered`` deliveries a day (the bulk-sender volume); it resolves once the 80 %
    Wilson upper bound is below the warning level, so it does not flap at the line.
    """

    kind: ClassVar[str] = "complaint_rate"
    level: ClassVar[str] = "provider"
    source: ClassVar[str] = "counters"
    window: ClassVar[str] = "24h"
    min_delivered: int = 5000
    warning: float = 0.001
    critical: float = 0.003

    def decide(self, windows: dict[str, Counts]) -> Decision:
        day = windows[self.window]
        k, n = day.complained, day.delivered
        rate = k / n if n else None
        lower, upper = wilson(k, n, Z95)[0], wilson(k, n, Z80)[1]
        firing = n >= self.min_delivered and rate is not None and rate > self.warning
        severity = ""
        if firing and rate is not None:
            severity = "critical" if rate >= self.critical else "warning"
        return Decision(
            firing=firing,
            resolved=not firing and (upper < self.warning or n == 0),
            lower=lower,
            upper=upper,
            threshold=self.warning,
            baseline_share=None,
            value=rate,
            numerator=k,
            denominator=n,
            severity=severity,
        )


@dataclass(frozen=True, slots=True)
class ProviderSilentDetector(Tunable):
    """A provider with steady traffic at this hour goes silent: no attempt for a whole hour.

    The baseline is the same hour on each of the previous ``days`` days (traffic follows
    the clock: a provider quiet every night must not fire at night), and it must have
    had at least ``min_expected`` attempts on *every* one of them; with that many expected,
    seeing none by chance has a Poisson probability below ``exp(-min_expected)``.
    Resolves at the first attempt in the short window.
    """

    kind: ClassVar[str] = "provider_silent"
    level: ClassVar[str] = "provider"
    source: ClassVar[str] = "counters"
    window: ClassVar[str] = "1h"
    min_expected: int = 20
    days: int = 6

    def decide(self, windows: dict[str, Counts]) -> Decision:
        seen = windows[self.window].attempts
        expected = windows["same_hour_min"].attempts
        firing = seen == 0 and expected >= self.min_expected
        return Decision(
            firing=firing,
            resolved=not firing and windows[SHORT].attempts > 0,
            lower=0.0,
            upper=0.0,
            threshold=float(self.min_expected),
            baseline_share=None,
            value=float(expected),
            numerator=seen,
            denominator=expected,
        )


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Submission-to-delivery latency of one provider's deliveries in the last hour."""

    deliveries: int = 0
    p50: float | None = None
    p95: float | None = None
    baseline_p95: float | None = None
    slow: int = 0  # deliveries slower than the detector's threshold
    threshold: float = 0.0


@dataclass(frozen=True, slots=True)
class LatencyDetector(Tunable):
    """Latency regression: more than 5 % of the last hour's deliveries (the p95) slower than
    ``max(baseline_p95 * factor, floor_seconds)``, tested with the Wilson bound on that 5 %.

    The baseline p95 is the provider's 24 hours before the short window's hour.
    """

    kind: ClassVar[str] = "delivery_latency"
    level: ClassVar[str] = "provider"
    source: ClassVar[str] = "latency"
    window: ClassVar[str] = "1h"
    min_deliveries: int = 100
    factor: float = 2.0
    floor_seconds: float = 1800.0
    quantile: float = 0.95

    def threshold(self, baseline_p95: float | None) -> float:
        return max((baseline_p95 or 0.0) * self.factor, self.floor_seconds)

    def decide(self, stats: LatencyStats) -> Decision:
        share = 1 - self.quantile
        lower, upper = wilson(stats.slow, stats.deliveries, Z95)[0], wilson(
            stats.slow, stats.deliveries, Z80
        )[1]
        firing = stats.deliveries >= self.min_deliveries and lower > share
        return Decision(
            firing=firing,
            resolved=not firing and (upper < share or stats.deliveries == 0),
            lower=lower,
            upper=upper,
            threshold=stats.threshold,
            baseline_share=None,
            value=stats.p95,
            numerator=stats.slow,
            denominator=stats.deliveries,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Deliveries of one (provider, domain) still deferred, first tried long ago."""

    stuck: int = 0  # first attempt more than the detector's max age ago
    oldest_age: float | None = None  # seconds since the oldest stuck one's first attempt
    deferred: int = 0  # all deliveries in state deferred


@dataclass(frozen=True, slots=True)
class QueueAgeDetector(Tunable):
    """Mail stuck deferred for hours (a batch overran a provider's rate limit): at least
    ``min_stuck`` deliveries of a domain still deferred ``max_age_seconds`` after their first
    attempt.  A count, not a share: one stuck message is the MTA's retry doing its job."""

    kind: ClassVar[str] = "queue_age"
    level: ClassVar[str] = "domain"
    source: ClassVar[str] = "queue"
    window: ClassVar[str] = "1h"
    max_age_seconds: float = 4 * 3600.0
    min_stuck: int = 20

    def decide(self, stats: QueueStats) -> Decision:
        firing = stats.stuck >= self.min_stuck
        return Decision(
            firing=firing,
            # Half the trigger: a queue draining slowly does not flap around the line.
            resolved=not firing and stats.stuck < max(1, self.min_stuck // 2),
            lower=0.0,
            upper=0.0,
            threshold=float(self.min_stuck),
            baseline_share=None,
            value=float(stats.stuck),
            numerator=stats.stuck,
            denominator=stats.deferred,
        )


def default_detectors() -> tuple[Detector, ...]:
    """Every detector of issue 5 with its default tunables."""
    return (
        RejectingDetector(),
        ProviderRejectingDetector(),
        BounceRateDetector(),
        DeferralSpikeDetector(),
        ComplaintRateDetector(),
        ProviderSilentDetector(),
        LatencyDetector(),
        QueueAgeDetector(),
        SendingIpRejectingDetector(),
        SendingIpBounceRateDetector(),
        SenderDomainRejectingDetector(),
        SenderDomainBounceRateDetector(),
        StreamRejectingDetector(),
        StreamBounceRateDetector(),
    )
