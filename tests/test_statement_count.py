"""A class roster with each student's last 20 responses costs a fixed number of SQL statements."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

from resolvers.audit_store import HEADS, NAMES
from tests.conftest import Gql

ROSTER = """
query Roster($id: ID!) {
  class(id: $id) {
    name
    teachers { firstName }
    students {
      id firstName lastName studentNumber
      responses(first: 20) { answer correct score submittedAt item { prompt skill } }
    }
  }
}
"""


async def make_class(owner: Any, teacher: str, size: int) -> uuid.UUID:
    """A class of ``size`` students of the teacher's school, taught by the teacher."""
    row = await owner.fetchrow("SELECT district_id, id, school_id FROM users WHERE username = $1", teacher)
    class_id = uuid.uuid4()
    await owner.execute(
        "INSERT INTO classes (district_id, id, school_id, name, subject, grade_level) "
        "VALUES ($1, $2, $3, $4, 'Math', '5')",
        row["district_id"],
        class_id,
        row["school_id"],
        f"Counting class {size}",
    )
    await owner.execute(
        "INSERT INTO class_teachers (district_id, class_id, teacher_id) VALUES ($1, $2, $3)",
        row["district_id"],
        class_id,
        row["id"],
    )
    await owner.execute(
        "INSERT INTO enrollments (district_id, class_id, student_id, begin_date) "
        "SELECT district_id, $2, id, $4 FROM users WHERE district_id = $1 AND school_id = $3 "
        "AND role = 'STUDENT' ORDER BY id LIMIT $5",
        row["district_id"],
        class_id,
        row["school_id"],
        dt.date(2026, 8, 15),
        size,
    )
    return class_id


@dataclasses.dataclass
class Checkout:
    """One request's connection: whether it asked for a transaction, whether one was open when
    the request got it, the backend's pid and the statements the request sent."""

    transaction: bool
    in_transaction: bool
    pid: int
    statements: list[str]


@contextlib.asynccontextmanager
async def watching(app: Any) -> AsyncIterator[list[Checkout]]:
    """Each request's checkout, with every query its connection sent (a query logger)."""
    endpoint = app.state.pledgeql.endpoint
    original = endpoint.acquire
    seen: list[Checkout] = []

    @contextlib.asynccontextmanager
    async def acquire(transaction: bool = True) -> AsyncIterator[Any]:
        async with original(transaction=transaction) as connection:
            checkout = Checkout(transaction, connection.is_in_transaction(), connection.get_server_pid(), [])
            seen.append(checkout)

            def log(record: Any) -> None:
                # asyncpg's own type introspection (with JIT off while it runs) happens once
                # per connection and statement type: not ours.
                if "pg_catalog" not in record.query and "set_config('jit'" not in record.query:
                    checkout.statements.append(record.query)

            connection.add_query_logger(log)
            try:
                yield connection
            finally:
                connection.remove_query_logger(log)

    endpoint.acquire = acquire
    try:
        yield seen
    finally:
        # asyncpg calls a query logger soon after its statement, not during it: let the last one's run.
        await asyncio.sleep(0)
        endpoint.acquire = original


@contextlib.asynccontextmanager
async def counting(app: Any) -> AsyncIterator[list[str]]:
    """The statements the requests sent, in order (filled in when the block ends)."""
    statements: list[str] = []
    checkouts: list[Checkout] = []
    try:
        async with watching(app) as checkouts:
            yield statements
    finally:  # once watching has let the last query logger run
        statements.extend(query for checkout in checkouts for query in checkout.statements)


async def test_roster_statement_count_does_not_grow_with_class_size(gql: Gql, owner: Any, app: Any) -> None:
    # Re-read the principal per request: the new classes count as the teacher's.
    small = await make_class(owner, "teacher1@northwind.example", 3)
    large = await make_class(owner, "teacher1@northwind.example", 30)
    counts = {}
    seen_by: dict[str, list[str]] = {}
    # A first request opens a pooled connection (the driver's own setup queries); then count.
    await gql("teacher1@northwind.example", "INSTRUCTION", ROSTER, {"id": str(small)})
    for name, class_id in (("small", small), ("large", large)):
        async with counting(app) as seen:
            body = await gql("teacher1@northwind.example", "INSTRUCTION", ROSTER, {"id": str(class_id)})
        assert "errors" not in body, body["errors"][:2]
        students = body["data"]["class"]["students"]
        assert len(students) == (3 if name == "small" else 30)
        assert all(len(s["responses"]) >= 10 for s in students)
        # The audit reads its chain's head only when this worker does not know it
        # (resolvers.audit_store.KnownHeads), and the names' codes only when it meets
        # a name without one (KnownCodes): that depends on the writes before, not on the class.
        counts[name] = len([q for q in seen if q not in (HEADS, NAMES)])
        seen_by[name] = [q[:80] for q in seen]
    assert counts["small"] == counts["large"], (counts, seen_by)
    # BEGIN, principal, conditions, set_config, class, teachers, students, responses, items,
    # audit lock, chain head, audit insert, COMMIT
    assert counts["large"] <= 13, seen_by["large"]
