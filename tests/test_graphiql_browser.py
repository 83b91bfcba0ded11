"""GraphiQL in headless Chromium with every request to another host blocked (issue 16, item 7):
it renders, introspects the schema and runs a query, all from the server's own assets.

Debian's Chromium (``apt-get install chromium``; .ci/run installs it) driven by
Playwright, as for the /privacy page.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from server.app import create_app
from server.auth import mint_token
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import live_server_of
from tests.test_privacy_browser import ARGS, CHROMIUM

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)",
)


@pytest.fixture(scope="module")
def demo_server(settings: Settings, db: DatabaseUrls, users: dict[str, uuid.UUID]) -> Iterator[str]:
    """The app as `serve --demo` runs it: GraphiQL starts with a teacher's token."""
    token = mint_token(settings, users["teacher1@northwind.example"], ["INSTRUCTION"], 600)
    with live_server_of(create_app(dataclasses.replace(settings, graphiql_token=token), db)) as url:
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


async def test_graphiql_renders_introspects_and_runs_a_query_with_other_hosts_blocked(
    demo_server: str, browser: Any
) -> None:
    context = await browser.new_context()
    blocked: list[str] = []
    own_host = urlparse(demo_server).netloc

    async def only_the_server(route: Any) -> None:
        if urlparse(route.request.url).netloc == own_host:
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_the_server)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        async with page.expect_response(
            lambda r: r.url.endswith("/graphql") and "__schema" in (r.request.post_data or ""), timeout=30_000
        ) as introspection:
            response = await page.goto(f"{demo_server}/graphql", wait_until="load")
        assert response is not None and response.status == 200
        introspected = await (await introspection.value).json()
        assert introspected["data"]["__schema"]["queryType"]["name"] == "Query"
        await page.locator(".graphiql-container").wait_for(state="visible", timeout=30_000)
        # The editor starts with the demo token's query; run it.
        await page.locator(".graphiql-execute-button").click()
        result = page.locator(".result-window")
        await result.get_by_text("TEACHER").wait_for(timeout=30_000)
        assert "allowedPurposes" in await result.inner_text()
        assert blocked == [] and errors == []
    finally:
        await context.close()


async def test_graphiql_without_a_demo_token_starts_with_an_empty_authorization_and_runs_a_public_query(
    demo_server: str, browser: Any, settings: Settings, db: DatabaseUrls
) -> None:
    with live_server_of(create_app(settings, db)) as plain:
        page = await browser.new_page()
        try:
            await page.route(
                "**/*",
                lambda route: route.continue_() if route.request.url.startswith(plain) else route.abort(),
            )
            await page.goto(f"{plain}/graphql", wait_until="load")
            await page.locator(".graphiql-container").wait_for(state="visible", timeout=30_000)
            await page.locator(".graphiql-execute-button").click()
            await page.locator(".result-window").get_by_text("policyVersions").wait_for(timeout=30_000)
            assert "UNAUTHENTICATED" not in await page.locator(".result-window").inner_text()
            await page.get_by_text("Headers", exact=True).click()
            headers = await page.locator(".graphiql-editor-tool").inner_text()
            assert '"Authorization": ""' in headers and "Bearer" not in headers
        finally:
            await page.close()
