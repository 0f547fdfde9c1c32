"""DMARC aggregate (RUA) and failure (RUF) reports and SMTP TLS reports (RFC 8460).

``unpack`` guards against hostile input, ``parse`` runs parsedmarc offline,
``source`` turns a parsed report into records (``records``: their kinds and metrics),
``files`` reads files and directories through the driver, ``summary`` and ``rdns``
answer ``mailmon dmarc summary``.  See docs/dmarc.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.collectors.reports.files import ReportIngest
    from monitor.config import Config
    from monitor.driver import Driver

__all__ = ["reports_for"]


def reports_for(config: Config, driver: Driver) -> ReportIngest:
    """The report reader ``[dmarc]`` configures, its domains labelled on /metrics."""
    from monitor.collectors.reports.files import ReportIngest
    from monitor.collectors.reports.records import set_label_domains

    set_label_domains(config.dmarc.domains)
    return ReportIngest(driver, domains=config.dmarc.domains,
                        max_bytes=config.dmarc.max_report_bytes)  # fmt: skip
