"""Faults cost only what they touch (issue 19): one district's stuck audit chain lock, and pooled
connections the database dropped.

* A request waits for its district's chain lock at most ``audit_lock_timeout``,
  and once a wait has timed out the district's other requests fail at once
  (one at a time probes the lock): the other district never lacks a pooled
  connection.
* A pooled connection the database terminated while it sat idle reads as open
  and fails at its next statement with asyncpg's InternalClientError: that is
  a lost connection (503, never 500), a BEGIN that fails so is retried on
  another connection, and the rest of the pool is pinged, so the first request
  after the database returns succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from server.app import create_app
from server.commands.audit_cli import verify_chains
from server.db import DatabaseUrls, connect
from server.failures import is_connection_error
from server.settings import Settings
from tests.conftest import TEST_POLICIES, error_codes

ROSTER = "{ students(first: 30) { nodes { firstName lastName } } }"
NORTHWIND_TEACHER = "teacher1@northwind.example"
RIVERSIDE_TEACHER = "teacher1@riverside.example"


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Settings:
    # A small pool: 4 connections, which 16 waiting requests would hold for as long as they
    # waited if nothing bounded the wait.
    return dataclasses.replace(
        base_settings, policy_dirs=(TEST_POLICIES,), pool_size=4, db_pool_timeout=3.0, audit_lock_timeout=0.5
    )


@pytest_asyncio.fixture(scope="module")
async def districts(owner: Any) -> dict[str, uuid.UUID]:
    rows = await owner.fetch("SELECT name, id FROM districts")
    return {r["name"].split()[0].lower(): r["id"] for r in rows}


async def roster(client: httpx.AsyncClient, token: str, request_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "X-Request-Id": request_id}
    return await client.post("/graphql", json={"query": ROSTER}, headers=headers, timeout=60)


@contextlib.asynccontextmanager
async def chain_lock_held(owner: Any, district: uuid.UUID) -> AsyncIterator[None]:
    await owner.execute("SELECT pg_advisory_lock(pledgeql_audit_lock_key($1))", district)
    try:
        yield
    finally:
        await owner.execute("SELECT pg_advisory_unlock(pledgeql_audit_lock_key($1))", district)


async def test_a_district_whose_chain_lock_is_held_fails_only_its_own_requests_and_the_other_district_all_succeed(
    client: httpx.AsyncClient, owner: Any, token_for: Any, districts: dict[str, uuid.UUID], settings: Settings
) -> None:
    northwind_token, riverside_token = token_for(NORTHWIND_TEACHER), token_for(RIVERSIDE_TEACHER)
    sent: list[tuple[str, str, httpx.Response]] = []

    async def one(district: str, token: str) -> None:
        request_id = f"isolation-{district}-{uuid.uuid4().hex}"
        sent.append((district, request_id, await roster(client, token, request_id)))

    async with chain_lock_held(owner, districts["northwind"]):
        began = time.monotonic()
        # Longer than the pool timeout: without the bound, Riverside would wait for a connection and fail.
        while time.monotonic() - began < 4.5:
            wave = [one("northwind", northwind_token) for _ in range(16)]
            wave += [one("riverside", riverside_token) for _ in range(4)]
            await asyncio.gather(*wave)

    riverside = [(rid, r) for d, rid, r in sent if d == "riverside"]
    northwind = [(rid, r) for d, rid, r in sent if d == "northwind"]
    assert len(riverside) >= 8 and len(northwind) >= 32
    for _, response in riverside:
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]["students"]["nodes"]) > 0
    for _, response in northwind:
        assert response.status_code == 503, response.text
        assert error_codes(response.json()) == ["AUDIT_UNAVAILABLE"]
        assert response.json().get("data") is None

    # Every 200 has its entries; no refused request left any.
    for request_id, _ in riverside:
        assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE client_request_id = $1", request_id) > 0
    refused = [rid for rid, _ in northwind]
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE client_request_id = ANY($1)", refused) == 0

    # The lock released, Northwind is served again at once (its first request probes the lock).
    response = await roster(client, northwind_token, "isolation-after")
    assert response.status_code == 200, response.text
    reports = await verify_chains(owner, settings.audit_key())
    assert reports and all(r.broken is None for r in reports)


async def _terminate_app_connections(owner: Any) -> int:
    count: int = await owner.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE usename = 'pledgeql_app' AND datname = current_database()"
    )
    return count


@pytest_asyncio.fixture(scope="module")
async def big_pool_client(settings: Settings, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(dataclasses.replace(settings, pool_size=20, audit_lock_timeout=5.0), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


async def test_the_first_request_after_every_pooled_connection_was_terminated_succeeds_and_readyz_never_flaps(
    big_pool_client: httpx.AsyncClient, owner: Any, token_for: Any
) -> None:
    token = token_for(NORTHWIND_TEACHER)
    warm = await asyncio.gather(*(roster(big_pool_client, token, f"warm-{n}") for n in range(16)))
    assert [r.status_code for r in warm] == [200] * 16
    assert await _terminate_app_connections(owner) >= 10
    await asyncio.sleep(0.3)  # the backends' FATAL messages reach the idle connections

    statuses = []
    for n in range(30):
        statuses.append((await roster(big_pool_client, token, f"after-{n}")).status_code)
        if n % 3 == 0:
            statuses.append((await big_pool_client.get("/readyz")).status_code)
    assert statuses == [200] * len(statuses)


async def test_a_connection_terminated_while_idle_fails_with_errors_that_all_count_as_a_lost_connection(
    db: DatabaseUrls, owner: Any
) -> None:
    # The backend's FATAL may arrive before its socket's end: a statement sent in between meets
    # a protocol busy with the error, while is_closed() is still false, and asyncpg raises
    # InternalClientError. Which error a terminated connection gives depends on that timing
    # (on a loaded machine the statement usually goes out first); each must count as lost.
    seen = []
    for _ in range(10):
        idle = await connect(db.app)
        try:
            await owner.execute("SELECT pg_terminate_backend($1)", idle.get_server_pid())
            try:
                await idle.execute("BEGIN")
            except Exception as error:
                assert is_connection_error(error), repr(error)
                seen.append(type(error).__name__)
            else:
                raise AssertionError("a terminated connection ran a statement")
        finally:
            idle.terminate()
    assert len(seen) == 10
    # The error of the crash, as asyncpg words it.
    busy = asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    assert is_connection_error(busy)
    assert is_connection_error(RuntimeError("while writing")) is False
    wrapped = RuntimeError("the request failed")
    wrapped.__cause__ = busy
    assert is_connection_error(wrapped)


async def test_dead_pooled_connections_and_no_new_login_answer_503_database_unavailable_never_500(
    big_pool_client: httpx.AsyncClient, owner: Any, token_for: Any, db: DatabaseUrls
) -> None:
    token = token_for(NORTHWIND_TEACHER)
    warm = await asyncio.gather(*(roster(big_pool_client, token, f"warm2-{n}") for n in range(8)))
    assert [r.status_code for r in warm] == [200] * 8
    name = '"' + db.database.replace('"', '""') + '"'
    await owner.execute(f"ALTER DATABASE {name} CONNECTION LIMIT 0")
    try:
        await _terminate_app_connections(owner)
        await asyncio.sleep(0.3)
        for n in range(5):
            started = time.perf_counter()
            response = await roster(big_pool_client, token, f"down-{n}")
            assert time.perf_counter() - started < 5
            assert response.status_code == 503, response.text
            assert error_codes(response.json()) == ["DATABASE_UNAVAILABLE"]
            assert response.json().get("data") is None
        assert (await big_pool_client.get("/readyz")).status_code == 503
    finally:
        await owner.execute(f"ALTER DATABASE {name} CONNECTION LIMIT -1")
    response = await roster(big_pool_client, token, "back")
    assert response.status_code == 200, response.text
    assert (await big_pool_client.get("/readyz")).status_code == 200
