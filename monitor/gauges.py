"""The rollup engine's gauges (``mailmon_domain_*``, ``mailmon_provider_*`` and the
sender-side ``mailmon_sending_ip_*``, ``mailmon_sender_domain_*``, ``mailmon_stream_*``),
built at scrape time from the last evaluation, and the labelers that keep their domain,
IP, sending-domain and stream labels to bounded sets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from monitor.model import Provider
from monitor.rollup.windows import REST

__all__ = [
    "DOMAIN_KINDS",
    "PROVIDERS",
    "PROVIDER_KINDS",
    "SENDER_DOMAIN_KINDS",
    "SENDING_IP_KINDS",
    "STREAM_KINDS",
    "DomainLabeler",
    "IpLabeler",
    "RollupGauges",
]

#: The ``provider`` label's values; any other provider is ``other``.
PROVIDERS = frozenset(p.value for p in Provider)


class DomainLabeler:
    """Maps a recipient domain to a bounded ``domain`` label value."""

    def __init__(self, allow: Iterable[str] = (), top: Iterable[str] = ()) -> None:
        self._allow = {d.lower() for d in allow}
        self._top: set[str] = set()
        self.set_top(top)

    def set_top(self, top: Iterable[str]) -> None:
        self._top = {d.lower() for d in top}

    def __call__(self, domain: str | None) -> str:
        if domain and (domain in self._allow or domain in self._top):
            return domain
        return "other"


class IpLabeler:
    """Maps a sending IP to a bounded ``sending_ip`` label value: the configured addresses
    plus the ``top`` busiest ones of the last evaluation, the rest ``other``.  Sending
    domains and streams are labelled the same way."""

    def __init__(self, allow: Iterable[str] = (), top: int = 20) -> None:
        self._allow = frozenset(allow)
        self.top = top

    def labels(self, volumes: dict[str, float]) -> dict[str, str]:
        """Every IP of ``volumes`` (ip -> attempts) with its label value (the rollup's
        ``REST``, the values it did not keep on their own, is ``other``)."""
        busiest = sorted(volumes, key=lambda ip: (-volumes[ip], ip))[: self.top]
        keep = (self._allow | set(busiest)) - {REST}
        return {ip: ip if ip in keep else "other" for ip in volumes}


class _DomainState(Protocol):
    """One (provider, domain) as ``monitor.rollup.DomainState`` describes it."""

    @property
    def provider(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def rejecting(self) -> int: ...
    @property
    def open(self) -> bool: ...


class _SubjectState(Protocol):
    """One detector's subject as ``monitor.rollup.SubjectState`` describes it."""

    @property
    def kind(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def open(self) -> bool: ...
    @property
    def value(self) -> float | None: ...
    @property
    def numerator(self) -> float: ...
    @property
    def denominator(self) -> float: ...
    @property
    def extra(self) -> dict[str, float | None]: ...


class _LatencyState(Protocol):
    """One subject's latency in one window as ``monitor.rollup.latency.SubjectLatency``
    describes it."""

    @property
    def level(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def window(self) -> str: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...


#: Detector kinds judged per (provider, domain), per provider and per (provider, sending
#: IP) (monitor.rollup.detectors).
DOMAIN_KINDS = ("domain_rejecting", "bounce_rate", "deferral_spike", "queue_age")
PROVIDER_KINDS = ("provider_rejecting", "complaint_rate", "provider_silent", "delivery_latency")
SENDING_IP_KINDS = ("sending_ip_rejecting", "sending_ip_bounce_rate")
SENDER_DOMAIN_KINDS = ("sender_domain_rejecting", "sender_domain_bounce_rate")
STREAM_KINDS = ("stream_rejecting", "stream_bounce_rate")
#: Sender-side levels: label name, what the incident gauge's help calls the subject, kinds.
_SENDER_LEVELS = {
    "sending_ip": ("sending_ip", "sending IP", SENDING_IP_KINDS),
    "sender_domain": ("sender_domain", "sending domain", SENDER_DOMAIN_KINDS),
    "stream": ("stream", "stream", STREAM_KINDS),
}


def _sender_ratios(level: str, words: str) -> dict[str, tuple[str, str]]:
    """A sender-side level's share gauges, pooled like the domain ones: kind -> (name, help)."""
    return {
        f"{level}_rejecting": (
            f"mailmon_{level}_rejecting_ratio",
            f"Share of a {words}'s attempts at a provider failing for reputation/policy/rate/"
            "block reasons (last 5 minutes, event time), rollup engine.",
        ),
        f"{level}_bounce_rate": (
            f"mailmon_{level}_bounce_ratio",
            f"Bounced / finished recipients of a {words} at a provider in the last hour "
            "(event time), rollup engine.",
        ),
    }


#: Share gauges pooled as numerator / denominator: kind -> (name, help).
_DOMAIN_RATIOS = {
    "bounce_rate": (
        "mailmon_domain_bounce_ratio",
        "Bounced / finished recipients in the last hour (event time), rollup engine.",
    ),
    "deferral_spike": (
        "mailmon_domain_deferral_ratio",
        "Deferred / all attempts in the last 15 minutes (event time), rollup engine.",
    ),
}


class RollupGauges:
    """The rollup engine's gauges, built at scrape time from its last evaluation.

    Domains outside the labeler aggregate into ``other``: an incident gauge is 1 when any
    of them has an open incident, a ratio is their pooled share, a count their sum.
    Providers outside the known set become ``other`` the same way.
    """

    def __init__(
        self,
        labeler: DomainLabeler,
        ips: IpLabeler | None = None,
        sender_domains: IpLabeler | None = None,
        streams: IpLabeler | None = None,
    ) -> None:
        self._labeler = labeler
        # Sending IPs, sending domains and streams: the configured values plus the busiest.
        self._senders = {
            "sending_ip": ips or IpLabeler(),
            "sender_domain": sender_domains or IpLabeler(),
            "stream": streams or IpLabeler(),
        }
        self._lock = threading.Lock()
        self._states: list[_DomainState] = []
        self._subjects: list[_SubjectState] = []
        self._latency: list[_LatencyState] = []

    def update(
        self,
        states: Iterable[_DomainState],
        subjects: Iterable[_SubjectState] = (),
        latency: Iterable[_LatencyState] = (),
    ) -> None:
        with self._lock:
            self._states = list(states)
            self._subjects = list(subjects)
            self._latency = list(latency)

    def _provider(self, provider: str) -> str:
        return provider if provider in PROVIDERS else "other"

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            states = list(self._states)
            subjects = list(self._subjects)
            latency = list(self._latency)
        pooled: dict[tuple[str, str], list[int]] = {}
        for s in states:
            pair = (self._provider(s.provider), self._labeler(s.domain))
            slot = pooled.setdefault(pair, [0, 0, 0])
            slot[0] += s.attempts
            slot[1] += s.rejecting
            slot[2] = max(slot[2], int(s.open))
        rejecting = GaugeMetricFamily(
            "mailmon_domain_rejecting",
            "1 while the rollup engine has an open domain-rejecting incident.",
            labels=["provider", "domain"],
        )
        ratio = GaugeMetricFamily(
            "mailmon_domain_rejecting_ratio",
            "Share of attempts failing for reputation/policy/rate/block reasons (short window).",
            labels=["provider", "domain"],
        )
        for (provider, domain), (attempts, failing, is_open) in sorted(pooled.items()):
            rejecting.add_metric([provider, domain], is_open)
            if attempts:
                ratio.add_metric([provider, domain], failing / attempts)
        yield rejecting
        yield ratio
        sender_kinds = {k for _l, _w, kinds in _SENDER_LEVELS.values() for k in kinds}
        yield from self._subject_families([s for s in subjects if s.kind not in sender_kinds])
        yield from self._latency_families("domain", "domain", "domain", latency, self._labeler)
        for level, (name, words, kinds) in _SENDER_LEVELS.items():
            chosen = [s for s in subjects if s.kind in kinds]
            label = self._sender_labels(level, chosen, latency)
            yield from self._sender_families(level, name, words, chosen, label)
            yield from self._latency_families(level, name, words, latency, label.__getitem__)

    def _sender_labels(
        self, level: str, subjects: list[_SubjectState], latency: list[_LatencyState]
    ) -> dict[str, str]:
        """A sender-side level's values with their label: the busiest by the detectors'
        volumes (a value only the latency saw, by its deliveries)."""
        volumes: dict[str, float] = {}
        for s in subjects:
            volumes[s.domain] = max(volumes.get(s.domain, 0.0), s.denominator)
        seen: dict[str, float] = {}
        for t in latency:
            if t.level == level and t.value not in volumes:
                seen[t.value] = max(seen.get(t.value, 0.0), float(t.deliveries))
        return self._senders[level].labels(volumes | seen)

    def _latency_families(
        self,
        level: str,
        name: str,
        words: str,
        latency: list[_LatencyState],
        label: Callable[[str], str],
    ) -> Iterator[Metric]:
        """Per (provider, subject) and window: the latency quantiles and their deliveries.
        Quantiles do not pool: values labelled ``other`` (and unknown providers) get the
        count only."""
        seconds = GaugeMetricFamily(
            f"mailmon_{level}_delivery_latency_seconds",
            f"Submission-to-delivery latency quantile of a {words}'s deliveries at a provider "
            "(window 1h: exact; 24h: the whole hours before, from a histogram).",
            labels=["provider", name, "window", "quantile"],
        )
        count = GaugeMetricFamily(
            f"mailmon_{level}_delivery_latency_deliveries",
            f"Deliveries of a {words} at a provider behind its latency quantiles, per window.",
            labels=["provider", name, "window"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        quantiles: list[tuple[str, str, str, str, float]] = []
        for t in latency:
            if t.level != level:
                continue
            provider, value = self._provider(t.provider), label(t.value)
            k = (provider, value, t.window)
            counts[k] = counts.get(k, 0) + t.deliveries
            if provider == t.provider and value == t.value:
                for q, v in (("0.5", t.p50), ("0.95", t.p95)):
                    if v is not None:
                        quantiles.append((*k, q, v))
        for k, n in sorted(counts.items()):
            count.add_metric(list(k), n)
        for *labels, v in sorted(quantiles):
            seconds.add_metric(labels, v)
        yield seconds
        yield count

    def _sender_families(
        self,
        level: str,
        name: str,
        words: str,
        subjects: list[_SubjectState],
        label: dict[str, str],
    ) -> Iterator[Metric]:
        """Per (provider, sender-side value): open incidents and shares; values beyond the
        label budget pool into ``other`` (an incident gauge is then 1 when any of them is)."""
        opened = GaugeMetricFamily(
            f"mailmon_{level}_incident_open",
            f"1 while the rollup engine has an open incident of this kind for the {words} "
            "at the provider.",
            labels=["kind", "provider", name],
        )
        is_open: dict[tuple[str, str, str], int] = {}
        shares: dict[tuple[str, str, str], list[float]] = {}
        for s in subjects:
            k = (s.kind, self._provider(s.provider), label[s.domain])
            is_open[k] = max(is_open.get(k, 0), int(s.open))
            slot = shares.setdefault(k, [0.0, 0.0])
            slot[0] += s.numerator
            slot[1] += s.denominator
        for k, value in sorted(is_open.items()):
            opened.add_metric(list(k), value)
        yield opened
        for kind, (metric, help_text) in _sender_ratios(level, words).items():
            family = GaugeMetricFamily(metric, help_text, labels=["provider", name])
            for (k_kind, provider, ip), (num, den) in sorted(shares.items()):
                if k_kind == kind and den:
                    family.add_metric([provider, ip], num / den)
            yield family

    def _subject_families(self, subjects: list[_SubjectState]) -> Iterator[Metric]:
        domain_open = GaugeMetricFamily(
            "mailmon_domain_incident_open",
            "1 while the rollup engine has an open incident of this kind for the domain.",
            labels=["kind", "provider", "domain"],
        )
        provider_open = GaugeMetricFamily(
            "mailmon_provider_incident_open",
            "1 while the rollup engine has an open incident of this kind for the provider.",
            labels=["kind", "provider"],
        )
        opened: dict[tuple[str, ...], int] = {}
        shares: dict[tuple[str, str, str], list[float]] = {}
        stuck: dict[tuple[str, str], list[float]] = {}
        complaints: dict[str, list[float]] = {}
        latency: dict[tuple[str, str], float] = {}
        for s in subjects:
            provider = self._provider(s.provider)
            if s.kind in PROVIDER_KINDS:
                k: tuple[str, ...] = (s.kind, provider)
            else:
                k = (s.kind, provider, self._labeler(s.domain))
            opened[k] = max(opened.get(k, 0), int(s.open))
            if s.kind in _DOMAIN_RATIOS:
                slot = shares.setdefault((s.kind, provider, self._labeler(s.domain)), [0.0, 0.0])
                slot[0] += s.numerator
                slot[1] += s.denominator
            elif s.kind == "complaint_rate":
                pair = complaints.setdefault(provider, [0.0, 0.0])
                pair[0] += s.numerator
                pair[1] += s.denominator
            elif s.kind == "queue_age":
                slot = stuck.setdefault((provider, self._labeler(s.domain)), [0.0, 0.0])
                slot[0] += s.numerator
                slot[1] = max(slot[1], s.extra.get("oldest_age") or 0.0)
            elif s.kind == "delivery_latency" and provider == s.provider:
                # Quantiles do not pool: only the known providers get a latency series.
                for q, name in (("0.5", "p50"), ("0.95", "p95")):
                    value = s.extra.get(name)
                    if value is not None:
                        latency[(provider, q)] = value
        for k, is_open in sorted(opened.items()):
            (provider_open if len(k) == 2 else domain_open).add_metric(list(k), is_open)
        yield domain_open
        yield provider_open
        for kind, (name, help_text) in _DOMAIN_RATIOS.items():
            family = GaugeMetricFamily(name, help_text, labels=["provider", "domain"])
            for (k_kind, provider, domain), (num, den) in sorted(shares.items()):
                if k_kind == kind and den:
                    family.add_metric([provider, domain], num / den)
            yield family
        family = GaugeMetricFamily(
            "mailmon_provider_complaint_ratio",
            "Complaints / delivered over the last 24 hours (event time), rollup engine.",
            labels=["provider"],
        )
        for provider, (num, den) in sorted(complaints.items()):
            if den:
                family.add_metric([provider], num / den)
        yield family
        family = GaugeMetricFamily(
            "mailmon_provider_delivery_latency_seconds",
            "Submission-to-delivery latency quantile of the last hour's deliveries.",
            labels=["provider", "quantile"],
        )
        for (provider, q), value in sorted(latency.items()):
            family.add_metric([provider, q], value)
        yield family
        count = GaugeMetricFamily(
            "mailmon_domain_queue_stuck",
            "Deliveries still deferred longer than the queue-age detector's max age.",
            labels=["provider", "domain"],
        )
        oldest = GaugeMetricFamily(
            "mailmon_domain_queue_oldest_age_seconds",
            "Age of the oldest stuck deferred delivery since its first attempt (0: none).",
            labels=["provider", "domain"],
        )
        for (provider, domain), (n, age) in sorted(stuck.items()):
            count.add_metric([provider, domain], n)
            oldest.add_metric([provider, domain], age)
        yield count
        yield oldest

    def describe(self) -> Iterator[Metric]:
        return iter(())
