"""Shared fixtures: a real PostgreSQL (embedded, or PLEDGEQL_DATABASE_URL), a
demo-seeded template database, and a fresh copy of it per test module.

Copying a template database takes a fraction of a second, so every module
that writes gets its own database and no test sees another module's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from server.app import create_app
from server.auth import mint_token
from server.commands.migrate import migrate
from server.commands.seed import seed_demo
from server.db import DatabaseUrls, connect, server_urls, stop_embedded
from server.settings import Settings

TEMPLATE = "pledgeql_template"
ALL_PURPOSES = [
    "INSTRUCTION",
    "STUDENT_LEARNING",
    "REPORTING",
    "PERSONALIZATION",
    "COMMUNICATION",
    "SUPPORT",
    "PRODUCT_ANALYTICS",
    "RECORD_ACCESS",
    "LEGAL_COMPLIANCE",
]
TEST_POLICIES = Path(__file__).with_name("policies")


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    """The test server's own folder: not pytest's rotating tmp dirs, which a
    concurrent pytest session may delete under a running server."""
    configured = os.environ.get("PLEDGEQL_TEST_DATA_DIR")
    if configured:
        yield Path(configured)
        return
    path = Path(tempfile.mkdtemp(prefix="pledgeql-test-"))
    yield path
    stop_embedded()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(data_dir: Path) -> Settings:
    return dataclasses.replace(
        Settings.from_env(),
        env="test",
        data_dir=data_dir,
        jwt_secret="test-secret-not-for-production-use-0123456789",
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=1_000_000,
    )


@pytest.fixture(scope="session")
def server(base_settings: Settings) -> DatabaseUrls:
    return server_urls(base_settings)


async def _drop(urls: DatabaseUrls, name: str) -> None:
    admin = await connect(urls.with_database("postgres").owner)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture(scope="session")
async def template(server: DatabaseUrls) -> DatabaseUrls:
    urls = server.with_database(TEMPLATE)
    await _drop(server, TEMPLATE)
    await migrate(urls)
    await seed_demo(urls.owner)
    return urls


async def clone(server: DatabaseUrls, template: DatabaseUrls, name: str) -> DatabaseUrls:
    await _drop(server, name)
    admin = await connect(server.with_database("postgres").owner)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await admin.close()
    return server.with_database(name)


@pytest_asyncio.fixture(scope="module")
async def db(
    request: pytest.FixtureRequest, server: DatabaseUrls, template: DatabaseUrls
) -> AsyncIterator[DatabaseUrls]:
    """A fresh copy of the demo database for this test module."""
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())[:50]
    urls = await clone(server, template, name)
    yield urls
    await _drop(server, name)


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Settings:
    return dataclasses.replace(base_settings, policy_dirs=(TEST_POLICIES,))


@pytest_asyncio.fixture(scope="module")
async def app(settings: Settings, db: DatabaseUrls) -> AsyncIterator[Any]:
    application = create_app(settings, db)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="module")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
        yield http


@pytest_asyncio.fixture(scope="module")
async def users(db: DatabaseUrls) -> dict[str, uuid.UUID]:
    """username -> id, for every demo account."""
    conn = await connect(db.owner)
    try:
        rows = await conn.fetch("SELECT username, id FROM users UNION ALL SELECT username, id FROM platform_users")
    finally:
        await conn.close()
    return {r["username"]: r["id"] for r in rows}


@pytest_asyncio.fixture(scope="module")
async def owner(db: DatabaseUrls) -> AsyncIterator[Any]:
    """An owner connection (bypasses row-level security) for checking what is stored."""
    conn = await connect(db.owner)
    yield conn
    await conn.close()


Gql = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
def token_for(settings: Settings, users: dict[str, uuid.UUID]) -> Callable[..., str]:
    def make(username: str, purposes: list[str] | None = None, ttl: int = 600) -> str:
        return mint_token(settings, users[username], purposes or ALL_PURPOSES, ttl)

    return make


@pytest.fixture(scope="module")
def gql(client: httpx.AsyncClient, token_for: Callable[..., str]) -> Gql:
    """Run one GraphQL request as a demo user under a purpose; return the JSON body."""

    async def run(
        username: str,
        purpose: str,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        purposes: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        sent = {"Authorization": f"Bearer {token_for(username, purposes)}", "X-Purpose": purpose}
        sent.update(headers or {})
        response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=sent)
        body: dict[str, Any] = response.json()
        body["_status"] = response.status_code
        return body

    return run


def justified(purpose: str, text: str = "court order 2026-1") -> dict[str, str]:
    """X-Justification for LEGAL_COMPLIANCE, the one purpose that accepts it (API.md headers)."""
    return {"X-Justification": text} if purpose == "LEGAL_COMPLIANCE" else {}


def error_codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


T = TypeVar("T")


@contextlib.contextmanager
def live_server_of(application: Any) -> Iterator[str]:
    """``application`` served by uvicorn in a thread, on a free port of the loopback interface."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        threading.Event().wait(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError("uvicorn did not start within 20 seconds")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def run_as_owner(db: DatabaseUrls, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work`` on a fresh owner connection, from a synchronous test."""

    async def run() -> T:
        conn = await connect(db.owner)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


@contextlib.contextmanager
def clock_at(app: Any, moment: dt.datetime) -> Iterator[None]:
    """Serve requests as if at ``moment``: the request clock decides grant expiry,
    enrollment dates and which policy versions are in effect."""
    endpoint = app.state.pledgeql.endpoint
    before = endpoint.clock
    endpoint.clock = lambda: moment
    try:
        yield
    finally:
        endpoint.clock = before
