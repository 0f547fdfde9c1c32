"""Rollups over the store's counters: windows, baselines, detectors and incidents (event time)."""

from __future__ import annotations

from monitor.rollup.detectors import (
    BounceRateDetector,
    ComplaintRateDetector,
    Decision,
    DeferralSpikeDetector,
    Detector,
    LatencyDetector,
    ProviderRejectingDetector,
    ProviderSilentDetector,
    QueueAgeDetector,
    RejectingDetector,
    SenderDomainBounceRateDetector,
    SenderDomainRejectingDetector,
    SendingIpBounceRateDetector,
    SendingIpRejectingDetector,
    StreamBounceRateDetector,
    StreamRejectingDetector,
    default_detectors,
    wilson,
)
from monitor.rollup.engine import (
    DomainState,
    Evaluation,
    RollupEngine,
    SubjectState,
    level_of,
    newest_event_time,
    subject_of,
)
from monitor.rollup.incidents import list_incidents
from monitor.rollup.live import LiveClock
from monitor.rollup.views import (
    RECIPIENT_DOMAINS,
    REJECTING_REASONS,
    SENDER_DOMAINS,
    SENDING_IPS,
    STREAMS,
    View,
)
from monitor.rollup.windows import WINDOWS, Counts, window_counts

__all__ = [
    "RECIPIENT_DOMAINS",
    "REJECTING_REASONS",
    "SENDER_DOMAINS",
    "SENDING_IPS",
    "STREAMS",
    "WINDOWS",
    "BounceRateDetector",
    "ComplaintRateDetector",
    "Counts",
    "Decision",
    "DeferralSpikeDetector",
    "Detector",
    "DomainState",
    "Evaluation",
    "LatencyDetector",
    "LiveClock",
    "ProviderRejectingDetector",
    "ProviderSilentDetector",
    "QueueAgeDetector",
    "RejectingDetector",
    "RollupEngine",
    "SenderDomainBounceRateDetector",
    "SenderDomainRejectingDetector",
    "SendingIpBounceRateDetector",
    "SendingIpRejectingDetector",
    "StreamBounceRateDetector",
    "StreamRejectingDetector",
    "SubjectState",
    "View",
    "default_detectors",
    "level_of",
    "list_incidents",
    "newest_event_time",
    "subject_of",
    "wilson",
    "window_counts",
]
