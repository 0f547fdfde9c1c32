"""Debian's chromium, headless, driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless browser that fetches nothing on its own (updates, sync, QUIC)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "scripts/install-test-deps.sh installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            yield browser
        finally:
            browser.close()
