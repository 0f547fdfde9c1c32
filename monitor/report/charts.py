"""The report's charts: small PNGs drawn with matplotlib's Agg backend (no display needed).

Each function takes the figures (``monitor.report.figures``) and returns PNG bytes, or
None when its section has no data; mail clients show them as inline ``cid:`` images.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: a server has no display

from matplotlib.figure import Figure

__all__ = ["CHARTS", "draw_all"]

_COLORS = {"delivered": "#2e7d32", "deferred": "#f9a825", "bounced": "#c62828",
           "complained": "#6a1b9a", "this": "#1565c0", "previous": "#90a4ae"}  # fmt: skip
_WIDTH, _DPI = 6.4, 100  # 640 px: fits a mail client's reading pane


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _outcomes(rows: list[dict[str, Any]], title: str) -> bytes | None:
    """Horizontal stacked bars: delivered, deferred, bounced per group."""
    rows = [r for r in rows if r["delivered"] + r["deferred"] + r["bounced"]][:10]
    if not rows:
        return None
    fig = Figure(figsize=(_WIDTH, 0.4 * len(rows) + 1.2))
    ax = fig.subplots()
    names = [r["name"] for r in rows][::-1]
    left = [0] * len(rows)
    for outcome in ("delivered", "deferred", "bounced"):
        values = [r[outcome] for r in rows][::-1]
        ax.barh(names, values, left=left, color=_COLORS[outcome], label=outcome)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def providers(figures: Mapping[str, Any]) -> bytes | None:
    return _outcomes(figures["providers"], "Outcomes per mailbox provider")


def domains(figures: Mapping[str, Any]) -> bytes | None:
    return _outcomes(figures["domains"], "Outcomes per recipient domain (top)")


def complaints(figures: Mapping[str, Any]) -> bytes | None:
    """The daily complaint rate against the 0.1 % and 0.3 % lines."""
    c = figures["complaints"]
    if not c["delivered"]:
        return None
    days = [d["date"][5:] for d in c["daily"]]
    rates = [(d["rate"] or 0.0) * 100 for d in c["daily"]]
    fig = Figure(figsize=(_WIDTH, 2.4))
    ax = fig.subplots()
    ax.plot(days, rates, marker="o", color=_COLORS["complained"], label="complaint rate")
    for value, color, name in ((c["warning"], "#f9a825", "warning"),
                               (c["critical"], "#c62828", "critical")):  # fmt: skip
        ax.axhline(value * 100, color=color, linestyle="--", linewidth=1,
                   label=f"{name} {value * 100:.1f}%")  # fmt: skip
    ax.set_ylabel("% of delivered", fontsize=8)
    ax.set_ylim(bottom=0, top=max([*rates, c["critical"] * 100]) * 1.25)
    ax.set_title("Daily complaint rate", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def latency(figures: Mapping[str, Any]) -> bytes | None:
    """Delivery latency percentiles, this week beside the previous one."""
    lat = figures["latency"]
    if not lat["deliveries"]:
        return None
    names = ["p50", "p90", "p95", "p99"]
    fig = Figure(figsize=(_WIDTH, 2.4))
    ax = fig.subplots()
    xs = range(len(names))
    for offset, (label, data) in enumerate((("previous", lat["previous"]), ("this", lat))):
        values = [data[n] or 0 for n in names]
        ax.bar([x + (offset - 0.5) * 0.38 for x in xs], values, width=0.38,
               color=_COLORS[label], label=f"{label} week")  # fmt: skip
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("seconds", fontsize=8)
    ax.set_title("Delivery latency (submitted to delivered)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def blame(figures: Mapping[str, Any]) -> bytes | None:
    rows = figures["bounces"]["blame"]
    if not rows:
        return None
    fig = Figure(figsize=(_WIDTH, 0.35 * len(rows) + 1.0))
    ax = fig.subplots()
    ax.barh([r["blame"] for r in rows][::-1], [r["count"] for r in rows][::-1],
            color=_COLORS["bounced"])  # fmt: skip
    ax.set_title("Bounces by who is to blame", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def seeds(figures: Mapping[str, Any]) -> bytes | None:
    rows = figures["seeds"]["providers"]
    if not rows:
        return None
    fig = Figure(figsize=(_WIDTH, 0.4 * len(rows) + 1.2))
    ax = fig.subplots()
    names = [r["provider"] for r in rows][::-1]
    left = [0.0] * len(rows)
    colors = {"inbox": "#2e7d32", "tab": "#81c784", "spam": "#c62828", "missing": "#616161",
              "error": "#f9a825", "other": "#bdbdbd"}  # fmt: skip
    for placement, color in colors.items():
        values = [r[placement] / r["probes"] * 100 for r in rows][::-1]
        ax.barh(names, values, left=left, color=color, label=placement)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of seed probes", fontsize=8)
    ax.set_title("Seed placement per provider", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=5, loc="lower center", bbox_to_anchor=(0.5, -0.6))
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


#: name -> chart; the name is the image's file name and Content-ID.
CHARTS: dict[str, Callable[[Mapping[str, Any]], bytes | None]] = {
    "providers": providers, "domains": domains, "complaints": complaints, "latency": latency,
    "blame": blame, "seeds": seeds,
}  # fmt: skip


def draw_all(figures: Mapping[str, Any]) -> dict[str, bytes]:
    """Every chart that has data, by name."""
    out = {}
    for name, draw in CHARTS.items():
        png = draw(figures)
        if png is not None:
            out[name] = png
    return out
