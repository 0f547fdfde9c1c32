"""The weekly deliverability report (docs/report.md).

    week = parse_week("2026-W47", "Europe/Berlin")
    report = build(store, config, week)
    report.figures          # every figure, JSON-ready
    report.write(out_dir)   # HTML (charts beside it), text, JSON, CSV, the .eml
    send(report.message(config.report), config.report)

``monitor.report.job`` is the scheduled ``weekly_report`` job: once per ISO week, the
week it mailed remembered in the store.
"""

from __future__ import annotations

from monitor.report.build import Report, build
from monitor.report.mail import ReportSendError, send
from monitor.report.week import Week, last_complete_week, parse_week

__all__ = ["Report", "ReportSendError", "Week", "build", "last_complete_week", "parse_week",
           "send"]  # fmt: skip
