"""The physical limit of S1: the class view in ONE SQL statement, encoded with orjson.

No GraphQL, no permission check, no audit: PostgreSQL builds the whole answer
(json_build_object / json_agg, each student's last 20 responses by a LATERAL
LIMIT), asyncpg hands it over decoded by orjson, and orjson encodes the
response envelope. Measured two ways by bench/run.py:

* in-process, latency per call (``measure``), on one owner connection;
* as throughput through the minimal Starlette endpoint ``app`` below, served
  by uvicorn and hit by the same load generator as pledgeql.

The endpoint reads its database from ``PLEDGEQL_BENCH_LIMIT_DSN``, a variable
only this benchmark process sets.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.db import _asyncpg_args

DSN_VARIABLE = "PLEDGEQL_BENCH_LIMIT_DSN"

# The same data as the S1 GraphQL document (bench/scenarios.py CLASS_VIEW):
# the class, its active enrollments' students by id, each with their 20 newest
# responses' answer, correct and score.
S1_SQL = """
SELECT json_build_object('class', json_build_object(
  'id', c.id,
  'name', c.name,
  'students', coalesce((
    SELECT json_agg(json_build_object(
             'id', u.id,
             'firstName', u.first_name,
             'lastName', u.last_name,
             'responses', coalesce((
               SELECT json_agg(json_build_object('answer', r.answer, 'correct', r.correct, 'score', r.score)
                               ORDER BY r.submitted_at DESC, r.id DESC)
               FROM (SELECT r.answer, r.correct, r.score, r.submitted_at, r.id FROM responses r
                     WHERE r.district_id = u.district_id AND r.student_id = u.id
                     ORDER BY r.submitted_at DESC, r.id DESC LIMIT 20) r), '[]'::json)
           ) ORDER BY u.id)
    FROM enrollments e
    JOIN users u ON u.district_id = e.district_id AND u.id = e.student_id
    WHERE e.district_id = c.district_id AND e.class_id = c.id AND u.role = 'STUDENT'
      AND e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)
  ), '[]'::json)))
FROM classes c WHERE c.district_id = $1 AND c.id = $2
"""


async def _json_as_python(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec("json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads)


async def connect(url: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(**_asyncpg_args(url))
    await _json_as_python(connection)
    return connection


async def class_view(connection: asyncpg.Connection, district_id: uuid.UUID, class_id: uuid.UUID) -> bytes:
    data = await connection.fetchval(S1_SQL, district_id, class_id)
    return orjson.dumps({"data": data})


@dataclass(frozen=True)
class CallLatency:
    calls: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    sql_p50_ms: float
    encode_p50_ms: float
    response_bytes: int


async def measure(url: str, district_id: uuid.UUID, class_id: uuid.UUID, calls: int = 200) -> CallLatency:
    """Latency per call, in this process, on one connection (after 20 warm-up calls)."""
    connection = await connect(url)
    try:
        for _ in range(20):
            await class_view(connection, district_id, class_id)
        total: list[float] = []
        sql: list[float] = []
        encode: list[float] = []
        size = 0
        for _ in range(calls):
            t0 = time.perf_counter()
            data = await connection.fetchval(S1_SQL, district_id, class_id)
            t1 = time.perf_counter()
            body = orjson.dumps({"data": data})
            t2 = time.perf_counter()
            total.append((t2 - t0) * 1000)
            sql.append((t1 - t0) * 1000)
            encode.append((t2 - t1) * 1000)
            size = len(body)
    finally:
        await connection.close()
    total.sort()
    return CallLatency(
        calls=calls,
        p50_ms=statistics.median(total),
        p95_ms=total[min(len(total) - 1, int(0.95 * len(total)))],
        mean_ms=statistics.fmean(total),
        sql_p50_ms=statistics.median(sql),
        encode_p50_ms=statistics.median(encode),
        response_bytes=size,
    )


# --------------------------------------------------- the Starlette endpoint


@dataclass
class _State:
    pool: Any = None


_state = _State()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        raise SystemExit(f"{DSN_VARIABLE} is not set: bench/run.py starts this endpoint")
    _state.pool = await asyncpg.create_pool(**_asyncpg_args(dsn), min_size=2, max_size=10, init=_json_as_python)
    try:
        yield
    finally:
        await _state.pool.close()


async def _s1(request: Request) -> Response:
    try:
        district_id = uuid.UUID(request.query_params["district"])
        class_id = uuid.UUID(request.query_params["class"])
    except (KeyError, ValueError):
        return Response(b'{"errors": [{"message": "district and class ids are required"}]}', 400)
    async with _state.pool.acquire() as connection:
        body = await class_view(connection, district_id, class_id)
    return Response(body, media_type="application/json")


async def _healthz(request: Request) -> Response:
    return Response(b'{"status": "ok"}', media_type="application/json")


app = Starlette(routes=[Route("/s1", _s1), Route("/healthz", _healthz)], lifespan=_lifespan)
