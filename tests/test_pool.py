"""The serving pool keeps the connections it opens (server.app.create_serving_engine).

Under a load of more concurrent requests than the pool holds, the requests
wait for a connection rather than open one that is closed again when given
back: a new connection costs PostgreSQL a backend's start and every
statement's preparation again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.test_autocommit import ROSTER, TEACHER, UNCOMPILED, post, teachers_class, watching

POOL = 3


@pytest_asyncio.fixture(scope="module")
async def served(settings: Settings, db: DatabaseUrls) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    application = create_app(dataclasses.replace(settings, pool_size=POOL), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield application, http


async def test_more_concurrent_requests_than_the_pool_holds_wait_for_its_connections_and_open_no_others(
    served: tuple[Any, httpx.AsyncClient], settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    app, client = served
    class_id = await teachers_class(owner, users[TEACHER])
    async with watching(app) as seen:
        for _ in range(5):
            calls = [post(client, settings, users[TEACHER], ROSTER, id=str(class_id)) for _ in range(3 * POOL)]
            calls += [post(client, settings, users[TEACHER], UNCOMPILED) for _ in range(POOL)]
            responses = await asyncio.gather(*calls)
            assert [r.status_code for r in responses] == [200] * len(calls), [r.text for r in responses][:2]
    assert len(seen) == 5 * 4 * POOL
    # Every request was served on one of the pool's own connections, however many waited.
    assert len({checkout.pid for checkout in seen}) <= POOL, sorted({c.pid for c in seen})
