"""One weekly report: read the store, compute the figures, draw, render, write, mail.

    report = build(store, config, parse_week("2026-W47", "UTC"))
    report.write(Path("out"))                 # HTML, text, JSON, CSV, PNGs, .eml
    send(report.message(config.report), config.report)
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from monitor.config import Config, ReportConfig
from monitor.errors import InputError
from monitor.report import charts as charts_module
from monitor.report import data as data_module
from monitor.report import render
from monitor.report.figures import Thresholds, compute, suppress_rows
from monitor.report.mail import build_message
from monitor.report.week import Week
from monitor.store import Store

__all__ = ["SUPPRESS_COLUMNS", "Report", "build", "thresholds_of"]

SUPPRESS_COLUMNS = ("recipient", "why", "reason", "last_seen")


def thresholds_of(config: Config) -> Thresholds:
    """Warning lines of the report; the critical ones are the rollup detectors' floors."""
    r = config.rollup
    return Thresholds(bounce=(min(0.02, r.bounce_floor), r.bounce_floor),
                      deferral=(min(0.10, r.deferral_floor), r.deferral_floor),
                      complaint=(r.complaint_warning, r.complaint_critical))  # fmt: skip


@dataclass(frozen=True)
class Report:
    """A computed report: its figures (JSON), charts (PNG by name) and recipients to suppress."""

    week: Week
    figures: dict[str, Any]
    charts: dict[str, bytes]
    suppress: list[dict[str, Any]]

    @property
    def stem(self) -> str:
        return f"report-{self.week.name}"

    def json(self) -> str:
        return json.dumps(self.figures, indent=2, default=str) + "\n"

    def text(self) -> str:
        return render.text(self.figures)

    def html(self, *, files: bool = False) -> str:
        """The HTML; ``files``: charts as the PNG files :meth:`write` puts beside it."""
        if files:
            return render.html(self.figures, self.charts, lambda n: f"{self.stem}-{n}.png")
        return render.html(self.figures, self.charts)

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUPPRESS_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(self.suppress)
        return buffer.getvalue()

    @property
    def csv_name(self) -> str:
        return f"suppress-{self.week.name}.csv"

    def message(self, settings: ReportConfig) -> EmailMessage:
        n = self.figures["numbers"]
        def rate(name: str, digits: int) -> str:
            value = n[name]["this"]
            return "n/a" if value is None else render.pct(value, digits)

        # Under 70 characters: one line however long the numbers (a longer Subject is folded).
        subject = (f"Deliverability {self.week.name}: bounces {rate('bounce_rate', 2)}, "
                   f"complaints {rate('complaint_rate', 3)}")  # fmt: skip
        return build_message(
            subject=subject, sender=settings.from_address or "mailmon@localhost",
            to=settings.to or ("postmaster@localhost",), text=self.text(), html=self.html(),
            images=self.charts, attachment=(self.csv_name, self.csv()),
        )  # fmt: skip

    def write(self, directory: Path, settings: ReportConfig | None = None) -> list[Path]:
        """Write the report's files into ``directory`` (made if missing); their paths."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            files = {
                f"{self.stem}.html": self.html(files=True).encode(),
                f"{self.stem}.txt": self.text().encode(),
                f"{self.stem}.json": self.json().encode(),
                self.csv_name: self.csv().encode(),
                f"{self.stem}.eml": self.message(settings or ReportConfig()).as_bytes(),
            } | {f"{self.stem}-{name}.png": png for name, png in self.charts.items()}
            written = []
            for name, content in files.items():
                path = directory / name
                path.write_bytes(content)
                written.append(path)
        except OSError as exc:
            raise InputError(f"cannot write the report to {directory}: "
                             f"{exc.strerror or exc}") from exc  # fmt: skip
        return written


def build(store: Store, config: Config, week: Week, *, now: float | None = None) -> Report:
    """The report of ``week`` from ``store``."""
    previous = week.previous()
    data = data_module.load(store, week.start, week.end, previous.start)
    figures = compute(data, week=week.name, previous=previous.name, time_zone=week.time_zone,
                      top=config.report.top_n, thresholds=thresholds_of(config),
                      generated_at=time.time() if now is None else now)  # fmt: skip
    return Report(week, figures, charts_module.draw_all(figures), suppress_rows(data))
