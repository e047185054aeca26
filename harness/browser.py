"""Headless Chromium through selenium and chromium-driver, for the page's tests and its benchmark.

The browser is the one requirement a Python install cannot bring: it is looked up on PATH, and when it
is missing `BrowserMissing` says how to install it. Tests turn that into a skip (a failure under CI);
`make bench` into a failure.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from typing import Any

INSTALL_HINT = ("headless Chromium and its driver are needed: `apt-get install chromium chromium-driver` "
                "(Debian/Ubuntu, as root), and selenium (in the test and bench extras)")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
HEADLESS_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--no-first-run", "--disable-extensions")


class BrowserMissing(RuntimeError):
    """Chromium, chromedriver or selenium is not installed; the message names which and how to install it."""


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver) found on PATH; BrowserMissing names what is not there."""
    chromium = next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    if missing:
        raise BrowserMissing(f"no {' and no '.join(missing)} on PATH: {INSTALL_HINT}")
    try:
        import selenium  # noqa: F401 - only whether it is installed
    except ImportError:
        raise BrowserMissing(f"selenium is not installed: {INSTALL_HINT}") from None
    return chromium, driver


def headless_chromium(capabilities: dict[str, Any] | None = None,
                      experimental: Iterable[tuple[str, Any]] = ()) -> Any:
    """A selenium WebDriver on a fresh headless Chromium; the caller quits it."""
    chromium, driver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in HEADLESS_ARGS:
        options.add_argument(arg)
    for name, value in (capabilities or {}).items():
        options.set_capability(name, value)
    for name, value in experimental:
        options.add_experimental_option(name, value)
    return webdriver.Chrome(options=options, service=Service(driver))
