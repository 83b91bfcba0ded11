"""A worker that knows its chain's head writes a request's audit in one statement (migration 0014).

``resolvers.audit_store.KnownHeads`` keeps the head each district's chain had
after this worker's last write; ``pledgeql_audit_advance`` moves a head only
from the one expected, under the chain lock, and refuses at once when the lock
is held elsewhere. Whatever happened in between (another worker, an operator's
command, a held lock), the chain stays one unbroken sequence and verifies.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from permissions.audit import PendingEntry
from resolvers.audit_store import ADVANCE, HEADS, INSERT, NAMES, KnownCodes, KnownHeads, write_batch, write_entries
from server.commands.audit_cli import verify_chains
from server.db import connect
from tests.test_audit_storage import _origin
from tests.test_rls import app_role
from tests.test_statement_count import counting

TEACHER_NW = "teacher1@northwind.example"
ROSTER = "query R($id: ID!) { class(id: $id) { id students { id firstName } } }"
LOCK_KEY = "SELECT pg_advisory_xact_lock(pledgeql_audit_lock_key($1))"
ADVANCE_CALL = "SELECT pledgeql_audit_advance($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], '1s')"
HEAD = "SELECT seq, encode(hash, 'hex') AS hash FROM audit_heads WHERE district_id = $1"


def _entries(district: uuid.UUID, count: int, fields: tuple[str, ...] = ("Student.firstName",)) -> list[PendingEntry]:
    return [PendingEntry(str(district), uuid.uuid4(), True, fields, ("DIRECTORY",)) for _ in range(count)]


@pytest_asyncio.fixture
async def app_conn(db: Any) -> AsyncIterator[Any]:
    async with app_role(db) as conn:
        yield conn


async def _write(
    conn: Any,
    district: uuid.UUID,
    key: bytes,
    known: KnownHeads,
    count: int = 3,
    codes: KnownCodes | None = None,
    fields: tuple[str, ...] = ("Student.firstName",),
) -> list[str]:
    """One request's worth of entries written as the server does, in its own transaction; the statements sent."""
    seen: list[str] = []

    def log(record: Any) -> None:
        if "pg_catalog" not in record.query and "set_config('jit'" not in record.query:
            seen.append(record.query)

    async with conn.transaction():
        await conn.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
        conn.add_query_logger(log)
        try:
            batch = [(_origin(dt.datetime.now(dt.UTC)), _entries(district, count, fields), None)]
            await write_batch(conn, batch, key, 1.0, known, codes)
        finally:
            conn.remove_query_logger(log)
    return seen


async def _verified(owner: Any, key: bytes, district: uuid.UUID, entries: int) -> None:
    (report,) = await verify_chains(owner, key, district)
    assert report.broken is None, report.describe()
    assert report.entries == entries and report.head_seq == entries
    seqs = await owner.fetch("SELECT seq FROM audit_entries WHERE district_id = $1 ORDER BY seq", district)
    assert [r["seq"] for r in seqs] == list(range(1, entries + 1))


def test_known_heads_trust_a_head_only_after_a_write_and_back_off_after_misses() -> None:
    known = KnownHeads()
    a, b = uuid.UUID(int=1), uuid.UUID(int=2)
    assert known.expected([a]) is None
    known.wrote({a: (3, "aa"), b: (9, "bb")}, [a], advanced=False)
    assert known.expected([a]) == {a: (3, "aa")}
    assert known.expected([a, b]) is None, "b's head was not written by this worker"
    known.missed([a])
    assert [known.expected([a]) for _ in range(3)] == [None, None, {a: (3, "aa")}]
    known.missed([a])
    assert [known.expected([a]) is None for _ in range(5)] == [True] * 4 + [False]
    for _ in range(10):
        known.missed([a])
    assert sum(known.expected([a]) is None for _ in range(KnownHeads.MAX_SKIP + 1)) == KnownHeads.MAX_SKIP
    known.wrote({a: (4, "cc")}, [a], advanced=True)
    known.missed([a])
    assert [known.expected([a]) for _ in range(3)] == [None, None, {a: (4, "cc")}], "a hit starts the count again"


async def test_the_second_write_of_a_worker_is_one_statement_and_the_chain_verifies(
    owner: Any, app_conn: Any, settings: Any
) -> None:
    key, district, known = settings.audit_key(), uuid.uuid4(), KnownHeads()
    assert await _write(app_conn, district, key, known) == [HEADS, INSERT]
    for _ in range(3):
        assert await _write(app_conn, district, key, known) == [ADVANCE]
    await _verified(owner, key, district, 12)
    head = await owner.fetchrow(HEAD, district)
    assert known.expected([district]) == {district: (12, head["hash"])}


async def test_records_carry_the_codes_the_worker_knows_and_a_new_name_is_written_by_name_once(
    owner: Any, app_conn: Any, settings: Any
) -> None:
    key, district, known, codes = settings.audit_key(), uuid.uuid4(), KnownHeads(), KnownCodes()
    # Nothing known yet: the codes are read once, with the head.
    assert await _write(app_conn, district, key, known, codes=codes) == [HEADS, NAMES, INSERT]
    assert "Student.firstName" in codes.codes and "DIRECTORY" in codes.codes
    assert await _write(app_conn, district, key, known, codes=codes) == [ADVANCE]
    # A name no record has had: the codes are read again, the name is not among
    # them, so the record goes by name (which gives it a code); the next write
    # reads the codes again and finds it.
    new = f"Student.field{uuid.uuid4().hex}"
    assert await _write(app_conn, district, key, known, codes=codes, fields=(new, "Student.firstName")) == [
        NAMES,
        ADVANCE,
    ]
    assert new not in codes.codes
    assert await _write(app_conn, district, key, known, codes=codes, fields=(new,)) == [NAMES, ADVANCE]
    assert new in codes.codes
    assert await _write(app_conn, district, key, known, codes=codes, fields=(new,)) == [ADVANCE]
    # Every record holds the codes of its own names, however it was written.
    stored = await owner.fetch(
        "SELECT pledgeql_audit_names(fields) AS fields, pledgeql_audit_names(categories) AS categories "
        "FROM audit_records WHERE district_id = $1 ORDER BY seq",
        district,
    )
    assert [(r["fields"], r["categories"]) for r in stored] == [
        (["Student.firstName"], ["DIRECTORY"]),
        (["Student.firstName"], ["DIRECTORY"]),
        ([new, "Student.firstName"], ["DIRECTORY"]),
        ([new], ["DIRECTORY"]),
        ([new], ["DIRECTORY"]),
    ]
    assert codes.codes[new] == await owner.fetchval("SELECT code FROM audit_names WHERE name = $1", new)
    await _verified(owner, key, district, 15)


async def test_a_head_moved_by_another_writer_is_read_again_and_the_chain_stays_whole(
    owner: Any, app_conn: Any, settings: Any
) -> None:
    key, district = settings.audit_key(), uuid.uuid4()
    mine, theirs = KnownHeads(), KnownHeads()
    await _write(app_conn, district, key, mine)
    await _write(app_conn, district, key, theirs, 2)  # another worker
    async with owner.transaction():  # and an operator's command
        await write_entries(owner, _origin(dt.datetime.now(dt.UTC)), _entries(district, 1), key)
    # ADVANCE finds the head moved and writes nothing; the head is read and the records chained onto it.
    assert await _write(app_conn, district, key, mine) == [ADVANCE, HEADS, INSERT]
    # After a miss the next write does not try.
    assert await _write(app_conn, district, key, mine) == [HEADS, INSERT]
    assert await _write(app_conn, district, key, theirs) == [ADVANCE, HEADS, INSERT]
    await _verified(owner, key, district, 3 + 2 + 1 + 3 + 3 + 3)


async def test_advance_refuses_at_once_while_the_chain_lock_is_held_and_the_write_then_waits_for_it(
    owner: Any, app_conn: Any, db: Any, settings: Any
) -> None:
    key, district, known = settings.audit_key(), uuid.uuid4(), KnownHeads()
    await _write(app_conn, district, key, known)
    head = await owner.fetchrow(HEAD, district)
    holder = await connect(db.owner)
    try:
        async with holder.transaction():
            await holder.execute(LOCK_KEY, district)
            async with app_conn.transaction():
                await app_conn.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
                started = time.monotonic()
                moved = await app_conn.fetchval(
                    ADVANCE_CALL, [district], [head["seq"]], [head["hash"]], [head["seq"] + 1], ["00" * 32]
                )
                assert moved is False and time.monotonic() - started < 0.5
            # The write falls back to waiting for the lock, and fails closed when the wait runs out.
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                await _write(app_conn, district, key, known)
    finally:
        await holder.close()
    assert dict(await owner.fetchrow(HEAD, district)) == dict(head)
    await _verified(owner, key, district, 3)


@pytest.mark.parametrize("change", ["other district", "no district", "seq", "hash", "none"])
async def test_advance_moves_a_head_only_from_the_expected_one_in_the_caller_s_districts(
    owner: Any, app_conn: Any, settings: Any, change: str
) -> None:
    key, district = settings.audit_key(), uuid.uuid4()
    await _write(app_conn, district, key, KnownHeads())
    head = await owner.fetchrow(HEAD, district)
    seq, digest = head["seq"] + (1 if change == "seq" else 0), ("ab" * 32 if change == "hash" else head["hash"])
    transaction = app_conn.transaction()
    await transaction.start()
    try:
        scope = str(uuid.uuid4()) if change == "other district" else str(district)
        await app_conn.execute("SELECT set_config('pledgeql.district_ids', $1, true)", scope)
        asked = [] if change == "no district" else [district]
        moved = await app_conn.fetchval(ADVANCE_CALL, asked, [seq], [digest], [seq + 5], ["cd" * 32])
        assert moved is (change == "none")
        after = await owner.fetchrow(HEAD, district)  # another transaction: the head as committed
        assert dict(after) == dict(head)
        await app_conn.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
        mine = await app_conn.fetchrow(HEAD, district)  # this transaction's view
        assert (mine["seq"], mine["hash"]) == (
            (seq + 5, "cd" * 32) if change == "none" else (head["seq"], head["hash"])
        )
    finally:
        await transaction.rollback()
    await _verified(owner, key, district, 3)


async def test_a_server_s_second_class_view_writes_its_audit_in_one_statement(
    gql: Any, owner: Any, app: Any, users: dict[str, uuid.UUID], settings: Any
) -> None:
    class_id = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN class_teachers t ON t.class_id = c.id WHERE t.teacher_id = $1 LIMIT 1",
        users[TEACHER_NW],
    )
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users[TEACHER_NW])
    seen_by = []
    for _ in range(3):
        async with counting(app) as seen:
            body = await gql(TEACHER_NW, "INSTRUCTION", ROSTER, {"id": str(class_id)})
        assert body["data"]["class"]["students"], body
        seen_by.append([q for q in seen if q in (HEADS, INSERT, ADVANCE)])
    assert seen_by[1:] == [[ADVANCE], [ADVANCE]], seen_by
    (report,) = await verify_chains(owner, settings.audit_key(), district)
    assert report.broken is None
