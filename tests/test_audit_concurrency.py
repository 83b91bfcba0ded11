"""32 concurrent clients, 1,000 requests: every entry written once, every chain intact."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from server.commands.audit_cli import verify_chains
from server.db import DatabaseUrls, connect
from server.settings import Settings
from tests.conftest import TEST_POLICIES

CLIENTS = 32
REQUESTS = 1000
NIL = uuid.UUID(int=0)


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Settings:
    """More clients than pooled connections: they queue for one, so the wait may be longer than
    the production default on a busy test machine."""
    return dataclasses.replace(base_settings, policy_dirs=(TEST_POLICIES,), db_pool_timeout=120.0)


async def test_concurrent_clients_write_exactly_the_expected_entries_and_chains_that_verify(
    client: httpx.AsyncClient,
    token_for: Any,
    users: dict[str, uuid.UUID],
    owner: Any,
    settings: Settings,
    db: DatabaseUrls,
) -> None:
    northwind = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    riverside = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    roster = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN enrollments e ON e.class_id = ct.class_id "
        "WHERE ct.teacher_id = $1 AND e.student_id = $2 LIMIT 1",
        users["teacher1@northwind.example"],
        users["student1@northwind.example"],
    )
    roster_size = await owner.fetchval(
        "SELECT count(DISTINCT student_id) FROM enrollments WHERE class_id = $1 AND begin_date <= now()::date "
        "AND (end_date IS NULL OR end_date >= now()::date)",
        roster,
    )
    # (user, purpose, query, variables, {district: entries it writes})
    kinds: list[tuple[str, str, str, dict[str, Any], dict[uuid.UUID, int]]] = [
        (
            "teacher1@northwind.example",
            "INSTRUCTION",
            "query A($id: ID!) { student(id: $id) { firstName lastName } }",
            {"id": str(users["student1@northwind.example"])},
            {northwind: 1},
        ),
        (
            "teacher1@riverside.example",
            "INSTRUCTION",
            "query B($id: ID!) { student(id: $id) { firstName gender } }",
            {"id": str(users["student1@riverside.example"])},
            {riverside: 2},  # one ALLOW, one DENY
        ),
        (
            "admin@northwind.example",
            "REPORTING",
            "query C { auditLog(first: 1) { nodes { id } } }",
            {},
            {northwind: 1},
        ),
        (
            "teacher1@northwind.example",
            "INSTRUCTION",
            "query D($id: ID!) { class(id: $id) { students { firstName } } }",
            {"id": str(roster)},
            {northwind: roster_size},
        ),
        (
            "analyst@pledgeql.example",
            "REPORTING",
            "query E { auditLog { nodes { id } } }",
            {},
            {NIL: 1},  # refused, and the refusal recorded in the chain of no district
        ),
    ]
    tokens = {user: token_for(user) for user, *_ in kinds}
    before = Counter(
        {
            r["district_id"]: r["n"]
            for r in await owner.fetch("SELECT district_id, count(*) AS n FROM audit_entries GROUP BY district_id")
        }
    )
    expected: Counter[uuid.UUID] = Counter()
    per_request: dict[str, int] = {}
    failures: list[Any] = []

    async def one(n: int) -> None:
        user, purpose, query, variables, writes = kinds[n % len(kinds)]
        request_id = f"load-{n}-{uuid.uuid4().hex[:8]}"
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {tokens[user]}", "X-Purpose": purpose, "X-Request-Id": request_id},
        )
        body = response.json()
        refused = user.startswith("analyst")
        if response.status_code != 200 or (bool(body.get("errors")) != refused and purpose != "INSTRUCTION"):
            failures.append((n, response.status_code, body.get("errors")))
        if any(e["extensions"]["code"] not in ("FORBIDDEN",) for e in body.get("errors", [])):
            failures.append((n, response.status_code, body.get("errors")))
        expected.update(writes)
        per_request[request_id] = sum(writes.values())

    async def worker(index: int) -> None:
        for n in range(index, REQUESTS, CLIENTS):
            await one(n)

    async def verifier() -> list[Any]:
        """Verify chains while the load runs: a snapshot always holds whole requests."""
        conn = await connect(db.owner)
        reports: list[Any] = []
        try:
            while not load.done():
                reports.extend(await verify_chains(conn, settings.audit_key()))
                await asyncio.sleep(1.0)
        finally:
            await conn.close()
        return reports

    load = asyncio.ensure_future(asyncio.gather(*(worker(i) for i in range(CLIENTS))))
    during = await verifier()
    await load
    assert failures == []
    assert len(per_request) == REQUESTS

    after = Counter(
        {
            r["district_id"]: r["n"]
            for r in await owner.fetch("SELECT district_id, count(*) AS n FROM audit_entries GROUP BY district_id")
        }
    )
    assert after - before == expected
    rows = await owner.fetch(
        "SELECT client_request_id, count(*) AS n FROM audit_entries "
        "WHERE client_request_id LIKE 'load-%' GROUP BY client_request_id"
    )
    assert {r["client_request_id"]: r["n"] for r in rows} == per_request
    for district in expected:
        seqs = await owner.fetchval(
            "SELECT array_agg(seq ORDER BY seq) FROM audit_entries WHERE district_id = $1", district
        )
        assert seqs == list(range(1, len(seqs) + 1))
    final = await verify_chains(owner, settings.audit_key())
    assert [r.broken for r in final] == [None] * len(final)
    assert {r.district_id for r in final} >= set(expected)
    assert during and all(r.broken is None for r in during)
