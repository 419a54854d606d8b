"""Browser tests: a real `emeterai serve`, Debian's Chromium driven by Playwright, and
axe-core injected into every page checked.

axe-core comes from the npm registry (`npm install axe-core@AXE_VERSION`) into a cache
directory outside the repository, once per machine, rather than being vendored: it is
half a megabyte of minified third-party code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.api.conftest import Server
from tests.api.conftest import start_server as start_api_server
from tests.conftest import create_postgres_database, drop_postgres_database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_VERSION = "4.14.1"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "screenshots"
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 900}


def axe_source() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emeterai-tests"
    script = cache / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to fetch axe-core for the accessibility checks")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
                str(cache),
                f"axe-core@{AXE_VERSION}",
            ],
            check=True,
            timeout=300,
        )
    return script.read_text("utf-8")


@pytest.fixture(scope="session")
def axe() -> str:
    return axe_source()


# Module scope: Playwright's sync API keeps an event loop running while it is open, and
# tests that call asyncio.run() after a web module (tests/admission) must not meet it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps does)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


def start_server(data_dir: Path, database_url: str, **extra_env: str) -> Iterator[Server]:
    """`emeterai serve` as `make run` starts it: the sandbox payment provider and the
    waiting room on."""
    yield from start_api_server(
        data_dir,
        database_url,
        workers=2,
        extra_env={
            "EMETERAI_PAYMENTS_SANDBOX": "1",
            "EMETERAI_ADMISSION_ENABLED": "true",
            **extra_env,
        },
    )


def server_on(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, **extra_env: str
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("web") / "var"
    if request.param == "sqlite":
        yield from start_server(data_dir, f"sqlite:///{data_dir / 'emeterai.db'}", **extra_env)
        return
    url = create_postgres_database()
    try:
        yield from start_server(data_dir, url, **extra_env)
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from server_on(request, tmp_path_factory)


@pytest.fixture
def page(browser: Browser, web_server: Server) -> Iterator[Page]:
    context = browser.new_context(
        base_url=web_server.base_url, viewport=PHONE, accept_downloads=True
    )
    context.set_default_timeout(20_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def check_accessibility(page: Page, axe: str) -> None:
    """No axe-core violation of WCAG 2.1 A/AA on the page as it is now."""
    page.add_script_tag(content=axe)
    result: dict[str, Any] = page.evaluate(
        """async () => await axe.run(document, {runOnly: {type: 'tag',
             values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"""
    )
    violations = [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(
            node["target"][0] if isinstance(node["target"][0], str) else str(node["target"])
            for node in v["nodes"][:3]
        )
        for v in result["violations"]
    ]
    assert not violations, f"{page.url}:\n" + "\n".join(violations)


def screenshot(page: Page, name: str) -> None:
    """The page at phone and desktop widths, for people to look at (var/screenshots/)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    if original:
        page.set_viewport_size(original)


def check_fits_phone(page: Page) -> None:
    """Nothing sticks out sideways at 360 px: no horizontal scrolling on a phone."""
    original = page.viewport_size
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    if original:
        page.set_viewport_size(original)
    assert width <= PHONE["width"], f"{page.url} is {width} px wide at {PHONE['width']} px"


def looked_at(page: Page, name: str, axe: str) -> None:
    check_accessibility(page, axe)
    check_fits_phone(page)
    screenshot(page, name)
