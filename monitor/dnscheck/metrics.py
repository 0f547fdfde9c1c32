"""The posture gauges, built at scrape time from the last run of the ``dns_check`` job.

* ``mailmon_dns_check{domain,check}``: 1 pass, 0.5 warn, 0 fail (``check``: spf, dmarc,
  dkim:SELECTOR, mx, mta_sts, tlsrpt, bimi);
* ``mailmon_dns_check_regressed{domain,check}``: 1 while the check is worse than before
  it last changed (``monitor.dnscheck.run.regressions``);
* ``mailmon_dnsbl_listed{target,list}``: 1 listed, 0 not (``list``: the list's zone);
* ``mailmon_dns_lookup_errors_total{check}``: checks and DNSBL lookups (``check="dnsbl"``)
  that got no usable answer.  Such a result leaves its gauge at the last known value.

Labels are bounded: the domains, selectors, IPs and lists come from ``[dns]``, never
from what DNS answers.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from monitor.metrics import observe_kind
from monitor.records import Record

if TYPE_CHECKING:
    from monitor.dnscheck.run import PostureRun

__all__ = ["STATUS_VALUES", "PostureMetrics", "posture_metrics"]

#: The gauge value of each status.
STATUS_VALUES = {"pass": 1.0, "warn": 0.5, "fail": 0.0}


class PostureMetrics:
    """The posture gauges of one registry; the job calls :meth:`update` after each run."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._checks: dict[tuple[str, str], float] = {}
        self._regressed: dict[tuple[str, str], float] = {}
        self._listed: dict[tuple[str, str], float] = {}
        self.lookup_errors = Counter(
            "mailmon_dns_lookup_errors",
            "Posture checks and DNSBL lookups (check=dnsbl) whose DNS query got no usable "
            "answer.", ["check"], registry=registry,
        )  # fmt: skip
        registry.register(self)

    def update(self, run: PostureRun) -> None:
        """Take a run's results (stored already, its regressions found)."""
        regressed = {(c.domain, c.check) for c in run.regressed}
        with self._lock:
            for c in run.checks:
                key = (c.domain, c.check)
                if c.error:
                    self.lookup_errors.labels(c.check.partition(":")[0]).inc()
                else:
                    self._checks[key] = STATUS_VALUES.get(c.status, 0.0)
                self._regressed[key] = 1.0 if key in regressed else 0.0
            for r in run.listings:
                if r.error:
                    self.lookup_errors.labels("dnsbl").inc()
                else:
                    self._listed[(r.target, r.zone)] = 1.0 if r.listed else 0.0

    def __call__(self, records: Sequence[Record]) -> None:
        """Stored records change nothing here: the gauges follow this process's runs."""

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            checks, regressed, listed = (dict(self._checks), dict(self._regressed),
                                         dict(self._listed))  # fmt: skip
        families = (
            ("mailmon_dns_check", "Posture check result per domain: 1 pass, 0.5 warn, 0 fail.",
             ["domain", "check"], checks),
            ("mailmon_dns_check_regressed",
             "1 while a posture check is worse than it was before it last changed.",
             ["domain", "check"], regressed),
            ("mailmon_dnsbl_listed", "1 while a DNS blocklist lists one of our IPs or domains.",
             ["target", "list"], listed),
        )  # fmt: skip
        for name, doc, labels, values in families:
            family = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in sorted(values.items()):
                family.add_metric(list(key), value)
            yield family

    def describe(self) -> Iterator[Metric]:
        for name in ("mailmon_dns_check", "mailmon_dns_check_regressed", "mailmon_dnsbl_listed"):
            yield GaugeMetricFamily(name, "", labels=[])


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, PostureMetrics] = (
    weakref.WeakKeyDictionary()
)


def posture_metrics(registry: CollectorRegistry) -> PostureMetrics:
    """The posture gauges registered on ``registry`` (made once per registry)."""
    metrics = _SHARED.get(registry)
    if metrics is None:
        metrics = _SHARED[registry] = PostureMetrics(registry)
    return metrics


observe_kind("dns_checks", posture_metrics)
