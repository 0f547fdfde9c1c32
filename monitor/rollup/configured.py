"""The rollup engine and its detectors as the config's ``[rollup]`` section tunes them."""

from __future__ import annotations

from typing import Any

from monitor.config import Config
from monitor.rollup import detectors as d
from monitor.rollup.detectors import RejectingDetector
from monitor.rollup.engine import GaugeSink, RollupEngine
from monitor.store import Store

__all__ = ["detector_for", "detectors_for", "engine_for"]


def detector_for(config: Config, rule: type[RejectingDetector] | None = None) -> RejectingDetector:
    """*Domain starts rejecting* (or ``rule``, one of its per-level variants) as configured."""
    r = config.rollup
    return (rule or RejectingDetector)(
        min_attempts=r.min_attempts,
        min_attempts_15m=r.min_attempts_15m,
        min_attempts_1h=r.min_attempts_1h,
        factor=r.factor,
        floor=r.floor,
        weekly_min=r.weekly_min_volume,
    )


def engine_for(config: Config, store: Store, gauges: GaugeSink | None = None) -> RollupEngine:
    """The rollup engine with every detector and the baselines the config's [rollup] asks."""
    weeks = config.rollup.weekly_weeks
    return RollupEngine(
        store,
        detectors_for(config),
        gauges=gauges,
        weeks=weeks,
        min_weeks=min(2, weeks) or 1,
        max_domains=config.rollup.max_domains,
        domains=config.metrics.domains,
    )


def detectors_for(config: Config) -> tuple[Any, ...]:
    """Every detector, tuned by the config's [rollup] section."""
    r = config.rollup
    weekly = r.weekly_min_volume
    return (
        detector_for(config),
        detector_for(config, d.ProviderRejectingDetector),
        d.BounceRateDetector(
            min_finished=r.bounce_min_finished, floor=r.bounce_floor, weekly_min=weekly
        ),
        d.DeferralSpikeDetector(
            min_attempts=r.deferral_min_attempts, floor=r.deferral_floor, weekly_min=weekly
        ),
        d.ComplaintRateDetector(
            min_delivered=r.complaint_min_delivered,
            warning=r.complaint_warning,
            critical=r.complaint_critical,
        ),
        d.ProviderSilentDetector(min_expected=r.silent_min_expected),
        d.LatencyDetector(
            min_deliveries=r.latency_min_deliveries, floor_seconds=r.latency_floor_seconds
        ),
        d.QueueAgeDetector(max_age_seconds=r.queue_max_age_seconds, min_stuck=r.queue_min_stuck),
        # Per sending IP, sending domain and stream with the domain rules' tunables.
        *(
            detector_for(config, rule)
            for rule in (
                d.SendingIpRejectingDetector,
                d.SenderDomainRejectingDetector,
                d.StreamRejectingDetector,
            )
        ),
        *(
            rule(min_finished=r.bounce_min_finished, floor=r.bounce_floor, weekly_min=weekly)
            for rule in (
                d.SendingIpBounceRateDetector,
                d.SenderDomainBounceRateDetector,
                d.StreamBounceRateDetector,
            )
        ),
    )
