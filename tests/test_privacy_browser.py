"""/privacy rendered by a real headless browser against a live server.

Debian's Chromium (``apt-get install chromium``; .ci/run installs it) is
driven by Playwright over the app served by uvicorn on a free port. Every
purpose and every category of the policy must be visible to a reader, with the
plain-language description the policy document gives it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from permissions.enums import DataCategory, Purpose
from permissions.policy import load_policy_set
from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import live_server_of

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)",
)


@pytest.fixture(scope="module")
def live_server(settings: Settings, db: DatabaseUrls) -> Iterator[str]:
    """The app served by uvicorn in a thread, on a free port of the loopback interface."""
    with live_server_of(create_app(settings, db)) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, url: str) -> Any:
    page = await browser.new_page()
    response = await page.goto(url, wait_until="load")
    assert response is not None and response.status == 200
    assert "text/html" in response.headers["content-type"]
    return page


async def visible_text(page: Any, element_id: str) -> str:
    locator = page.locator(f"#{element_id}")
    assert await locator.count() == 1, f"no element #{element_id}"
    assert await locator.is_visible(), f"#{element_id} is not visible"
    text: str = await locator.inner_text()
    return text


async def test_every_purpose_and_category_is_visible_on_the_privacy_page(live_server: str, browser: Any) -> None:
    policy = load_policy_set().latest()
    page = await open_page(browser, f"{live_server}/privacy")
    try:
        assert await page.title()
        for purpose in Purpose:
            text = await visible_text(page, f"purpose-{purpose.value}")
            assert policy.purpose_description(purpose) in " ".join(text.split())
        for category in DataCategory:
            text = await visible_text(page, f"category-{category.value}")
            assert policy.category_description(category) in " ".join(text.split())
    finally:
        await page.close()


async def test_a_districts_privacy_page_shows_its_settings_too(live_server: str, browser: Any, owner: Any) -> None:
    district: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    page = await open_page(browser, f"{live_server}/privacy/{district}")
    try:
        district_text = await visible_text(page, "district")
        assert "Northwind Unified" in district_text
        for purpose in Purpose:
            await visible_text(page, f"purpose-{purpose.value}")
        for category in DataCategory:
            await visible_text(page, f"category-{category.value}")
    finally:
        await page.close()
    missing = await browser.new_page()
    try:
        response = await missing.goto(f"{live_server}/privacy/{uuid.uuid4()}")
        assert response is not None and response.status == 404
    finally:
        await missing.close()
