"""The request's database handle: one connection (in one transaction for a
mutation; a query's statements each in their own, server.graphql_http), one
statement at a time (asyncpg runs one query per connection)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


class Params:
    """Numbered bind parameters for composing SQL fragments."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class DbClosed(RuntimeError):
    """A statement after the request's transaction was closed to further work."""


class Db:
    __slots__ = ("_closed", "_conn", "_lock", "seconds", "statements")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False
        self.statements = 0
        # Time spent in the database's statements (Server-Timing's ``sql``).
        self.seconds = 0.0

    async def close(self) -> None:
        """Wait for the statement in flight, then refuse any other: the request
        is about to commit, and a resolver graphql-core abandoned must not
        reach its connection afterwards."""
        async with self._lock:
            self._closed = True

    def is_in_transaction(self) -> bool:
        return bool(self._conn.is_in_transaction())

    @property
    def connection(self) -> asyncpg.Connection:
        """The driver's connection (what its session carries is kept against it)."""
        return self._conn

    def is_closed(self) -> bool:
        return bool(self._conn.is_closed())

    def _check(self) -> None:
        if self._closed:
            raise DbClosed("This request's transaction is closed")

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._lock:
            self._check()
            self.statements += 1
            started = time.perf_counter()
            try:
                rows: list[asyncpg.Record] = await self._conn.fetch(sql, *args)
            finally:
                self.seconds += time.perf_counter() - started
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._lock:
            self._check()
            self.statements += 1
            started = time.perf_counter()
            try:
                row: asyncpg.Record | None = await self._conn.fetchrow(sql, *args)
            finally:
                self.seconds += time.perf_counter() - started
            return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            self._check()
            self.statements += 1
            started = time.perf_counter()
            try:
                return await self._conn.fetchval(sql, *args)
            finally:
                self.seconds += time.perf_counter() - started

    async def execute(self, sql: str, *args: Any) -> str:
        async with self._lock:
            self._check()
            self.statements += 1
            started = time.perf_counter()
            try:
                status: str = await self._conn.execute(sql, *args)
            finally:
                self.seconds += time.perf_counter() - started
            return status

    async def copy_records(self, table: str, records: list[tuple[Any, ...]], columns: list[str]) -> None:
        async with self._lock:
            self._check()
            self.statements += 1
            started = time.perf_counter()
            try:
                await self._conn.copy_records_to_table(table, records=records, columns=columns)
            finally:
                self.seconds += time.perf_counter() - started


@contextlib.asynccontextmanager
async def in_transaction(db: Any) -> AsyncIterator[None]:
    """The block in ``db``'s transaction, or (a query runs without one) in a
    transaction of its own: for statements that must hold a lock from one to
    the next, or share a transaction-local setting."""
    if db.is_in_transaction():
        yield
        return
    await db.execute("BEGIN")
    try:
        yield
    except BaseException:
        if not db.is_closed():
            await db.execute("ROLLBACK")
        raise
    await db.execute("COMMIT")
