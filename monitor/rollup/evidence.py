"""What an incident is opened (and closed) with: its detector's settings and input, and why
(the top reasons, failures by blame and the replies that say it)."""

from __future__ import annotations

from typing import Any

from monitor.rollup import incidents
from monitor.rollup.deliveries import QueueReader, replies_before, stuck_replies
from monitor.rollup.detectors import LatencyStats, QueueStats
from monitor.rollup.views import REJECTING_REASONS, Key, View
from monitor.rollup.windows import BASELINE, SHORT, WINDOWS, Counts, with_baselines

__all__ = ["empty_input", "empty_windows", "evidence_of", "input_evidence"]

#: Per kind: what the evidence's top replies and reasons look at.
_EVIDENCE: dict[str, tuple[frozenset[str] | None, tuple[str, ...]]] = {
    "domain_rejecting": (REJECTING_REASONS, ("deferred", "bounced")),
    "provider_rejecting": (REJECTING_REASONS, ("deferred", "bounced")),
    "bounce_rate": (None, ("bounced",)),
    "deferral_spike": (None, ("deferred",)),
    "sending_ip_rejecting": (REJECTING_REASONS, ("deferred", "bounced")),
    "sending_ip_bounce_rate": (None, ("bounced",)),
    "sender_domain_rejecting": (REJECTING_REASONS, ("deferred", "bounced")),
    "sender_domain_bounce_rate": (None, ("bounced",)),
    "stream_rejecting": (REJECTING_REASONS, ("deferred", "bounced")),
    "stream_bounce_rate": (None, ("bounced",)),
}


def empty_windows() -> dict[str, Counts]:
    """The windows of a subject that saw nothing."""
    names = (*WINDOWS, BASELINE, "same_hour_min")
    return with_baselines({name: Counts() for name in names})


def empty_input(detector: Any) -> Any:
    """A detector's input for a subject that saw nothing."""
    if detector.source == "latency":
        return LatencyStats()
    if detector.source == "queue":
        return QueueStats()
    return empty_windows()


def evidence_of(
    conn: Any,
    detector: Any,
    key: Key,
    end: float,
    data: Any,
    window: str,
    inputs: dict[str, dict[Key, Any]],
    queue: QueueReader,
    top_replies: int,
    sender_view: View | None,
) -> dict[str, Any]:
    """What an incident of ``detector`` for ``key`` is opened with: the detector's
    settings, its input ``data`` and why (``inputs``: every source's, for a provider's
    domains; ``sender_view``: the counters of a sender-side level)."""
    evidence: dict[str, Any] = {"detector": detector.tunables()}
    evidence |= input_evidence(detector, data)
    if detector.source == "queue":
        max_age = detector.max_age_seconds
        keys = queue.stuck_keys(key)
        evidence["top_replies"] = (
            stuck_replies(conn, key, end, max_age, top_replies)
            if keys is None
            else replies_before(conn, keys, end, top_replies)
        )
        return evidence
    if detector.source == "latency":
        # Slow delivery is mostly retried delivery: why the provider deferred us.
        since = end - WINDOWS["1h"]
        evidence["top_reasons"] = incidents.top_reasons(
            conn, key[0], key[1], since, end, outcomes=("deferred",)
        )
        evidence["failures"] = incidents.failure_breakdown(
            conn, key[0], key[1], since, end, ("deferred",)
        )
        return evidence
    since = end - WINDOWS.get(window or detector.window, WINDOWS[SHORT])
    reasons, states = _EVIDENCE.get(detector.kind, (None, ("deferred", "bounced")))
    if sender_view is not None:
        view = sender_view
        evidence["top_reasons"] = incidents.top_reasons(
            conn, key[0], key[1], since, end, outcomes=states, view=view
        )
        evidence["failures"] = incidents.failure_breakdown(
            conn, key[0], key[1], since, end, states, view=view
        )
        evidence["top_replies"] = incidents.top_sender_replies(
            conn, detector.level, key, since, end, reasons, top_replies, states
        )
        return evidence
    if detector.kind == "complaint_rate":
        evidence["top_reasons"] = incidents.top_reasons(
            conn, key[0], key[1], since, end, outcomes=("complained",)
        )
        return evidence
    evidence["top_reasons"] = incidents.top_reasons(
        conn, key[0], key[1], since, end, outcomes=states
    )
    evidence["failures"] = incidents.failure_breakdown(conn, key[0], key[1], since, end, states)
    domains: str | list[str] = key[1]
    if not key[1] and detector.kind == "provider_rejecting":
        # The provider's domains: the replies that say why (e.g. a block list's name).
        domains = [d for p, d in inputs.get("domain", {}) if p == key[0]]
    evidence["top_replies"] = (
        incidents.top_replies(conn, domains, since, end, reasons, top_replies, states)
        if domains
        else []
    )
    return evidence


def input_evidence(detector: Any, data: Any) -> dict[str, Any]:
    """A detector's input as evidence: ``windows``, ``latency`` or ``queue``."""
    if data is None:
        data = empty_input(detector)
    if isinstance(data, dict):
        return {"windows": {name: counts.as_dict() for name, counts in data.items()}}
    name = "windows" if detector.source == "counters" else detector.source
    return {name: {f: getattr(data, f) for f in data.__dataclass_fields__}}
