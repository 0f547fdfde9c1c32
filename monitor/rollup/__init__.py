"""Rollups over the store's counters: windows, baselines, detectors and incidents (event time)."""

from __future__ import annotations

from monitor.rollup.detectors import (
    BounceRateDetector,
    ComplaintRateDetector,
    Decision,
    DeferralSpikeDetector,
    Detector,
    LatencyDetector,
    ProviderSilentDetector,
    QueueAgeDetector,
    RejectingDetector,
    default_detectors,
    wilson,
)
from monitor.rollup.engine import (
    DomainState,
    Evaluation,
    RollupEngine,
    SubjectState,
    newest_event_time,
)
from monitor.rollup.incidents import list_incidents
from monitor.rollup.live import LiveClock
from monitor.rollup.windows import REJECTING_REASONS, WINDOWS, Counts, window_counts

__all__ = [
    "REJECTING_REASONS",
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
    "ProviderSilentDetector",
    "QueueAgeDetector",
    "RejectingDetector",
    "RollupEngine",
    "SubjectState",
    "default_detectors",
    "list_incidents",
    "newest_event_time",
    "wilson",
    "window_counts",
]
