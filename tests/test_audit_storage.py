"""Compact audit storage (migration 0013): records, their read-back, partitions and the old chain.

A request's consecutive entries that share everything but their subject are
one stored record; ``auditLog``, ``accessLog``, the ``audit_entries`` view and
``pledgeql audit verify`` still see one entry per (request, subject,
decision). Entries chained one by one before records existed stay verifiable
and the chain continues from them. Retention drops a month's partition whole.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from permissions.audit import PendingEntry, entry_hash, entry_id, runs
from permissions.audit_chain import Origin
from resolvers.audit_retention import drop_covered_partitions, trim_chain
from resolvers.audit_store import write_entries
from server.commands.audit_cli import verify_chains

TEACHER_NW = "teacher1@northwind.example"
NORTHWIND_ADMIN = "admin@northwind.example"
ROSTER = "query R($id: ID!) { class(id: $id) { id students { id firstName lastName } } }"
ENTRY_FIELDS = (
    "id seq: id at requestId clientRequestId traceId actorId actorRole purpose justification operationName "
    "subjectStudentId fields categories decision breakGlass"
)


def pending(district: uuid.UUID, subject: uuid.UUID | None, fields: tuple[str, ...] = ("Student.firstName",)) -> Any:
    return PendingEntry(str(district), subject, True, fields, ("DIRECTORY",))


def test_runs_group_consecutive_entries_that_differ_only_in_subject_and_keep_their_order() -> None:
    district, other = uuid.uuid4(), uuid.uuid4()
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    entries = [
        pending(district, a),
        pending(district, b),
        pending(district, c, ("Student.lastName",)),
        pending(district, d),
        pending(other, a),
        PendingEntry(str(other), b, False, ("Student.firstName",), ("DIRECTORY",)),
        pending(other, None),
    ]
    grouped = runs(entries)
    assert [[e.subject_id for e in run] for run in grouped] == [[a, b], [c], [d], [a], [b], [None]]
    assert [e for run in grouped for e in run] == entries  # nothing lost, nothing reordered
    assert runs([]) == []


def test_entry_ids_are_the_record_id_for_the_first_and_distinct_for_the_rest() -> None:
    record = uuid.uuid4()
    ids = [entry_id(record, i) for i in range(500)]
    assert ids[0] == record and len(set(ids)) == 500
    assert all(entry_id(r, 7) != entry_id(r, 8) for r in (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)))


async def test_the_python_and_sql_entry_ids_agree(owner: Any) -> None:
    for _ in range(20):
        record = uuid.uuid4()
        for i in (0, 1, 29, 4096, 2**31 - 1):
            assert await owner.fetchval("SELECT pledgeql_audit_entry_id($1, $2)", record, i) == entry_id(record, i)


async def test_a_class_view_is_one_record_read_back_as_one_entry_per_student(
    gql: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    class_id = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN class_teachers t ON t.class_id = c.id WHERE t.teacher_id = $1 LIMIT 1",
        users[TEACHER_NW],
    )
    tag = f"storage-{uuid.uuid4().hex[:8]}"
    body = await gql(TEACHER_NW, "INSTRUCTION", ROSTER, {"id": str(class_id)}, headers={"X-Request-Id": tag})
    students = [s["id"] for s in body["data"]["class"]["students"]]
    assert len(students) > 1
    records = await owner.fetch(
        "SELECT seq, subjects, cardinality(subjects) AS n FROM audit_records WHERE client_request_id = $1", tag
    )
    assert len(records) == 1 and records[0]["n"] == len(students)
    assert [str(s) for s in records[0]["subjects"]] == students
    entries = await owner.fetch(
        "SELECT seq, id, subject_student_id, fields FROM audit_entries WHERE client_request_id = $1 ORDER BY seq", tag
    )
    assert [str(e["subject_student_id"]) for e in entries] == students
    assert [e["seq"] for e in entries] == list(range(records[0]["seq"], records[0]["seq"] + len(students)))
    assert all(e["fields"] == ["Student.firstName", "Student.lastName"] for e in entries)
    assert len({e["id"] for e in entries}) == len(students)


async def test_audit_log_pages_read_back_exactly_what_the_view_holds(
    gql: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    district = await owner.fetchval("SELECT id FROM districts WHERE name LIKE 'Northwind%'")
    class_id = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN class_teachers t ON t.class_id = c.id WHERE t.teacher_id = $1 LIMIT 1",
        users[TEACHER_NW],
    )
    for _ in range(2):  # records of many entries, so that pages of 7 cut through them
        await gql(TEACHER_NW, "INSTRUCTION", ROSTER, {"id": str(class_id)})
    expected = await owner.fetch("SELECT * FROM audit_entries WHERE district_id = $1 ORDER BY seq DESC", district)
    assert len(expected) > 40
    seen: list[dict[str, Any]] = []
    after, pages = None, 0
    while True:
        body = await gql(
            NORTHWIND_ADMIN,
            "RECORD_ACCESS",
            f"query L($after: String) {{ auditLog(first: 7, after: $after) {{ nodes {{ {ENTRY_FIELDS} }} "
            "pageInfo { hasNextPage endCursor } } }",
            {"after": after},
        )
        assert "errors" not in body, body
        log = body["data"]["auditLog"]
        seen += log["nodes"]
        pages += 1
        if not log["pageInfo"]["hasNextPage"]:
            break
        after = log["pageInfo"]["endCursor"]
    # Each read of the log writes an entry newer than every cursor: the pages walk
    # exactly the entries there were before the first page.
    assert pages == -(-len(expected) // 7)
    assert [n["id"] for n in seen] == [str(e["id"]) for e in expected]
    for node, row in zip(seen, expected, strict=True):
        assert node["fields"] == list(row["fields"]) and node["categories"] == list(row["categories"])
        assert node["subjectStudentId"] == (
            None if row["subject_student_id"] is None else str(row["subject_student_id"])
        )
        assert (node["requestId"], node["decision"], node["operationName"]) == (
            row["request_id"],
            row["decision"],
            row["operation_name"],
        )


@pytest.mark.parametrize("size", [1, 2])
@pytest.mark.parametrize("log", ["auditLog", "accessLog"])
async def test_one_student_s_log_pages_through_every_entry_when_the_student_is_not_first_in_the_records(
    gql: Any, owner: Any, users: dict[str, uuid.UUID], log: str, size: int
) -> None:
    district = await owner.fetchval("SELECT id FROM districts WHERE name LIKE 'Northwind%'")
    class_id = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN class_teachers t ON t.class_id = c.id WHERE t.teacher_id = $1 LIMIT 1",
        users[TEACHER_NW],
    )
    for _ in range(5):  # records of the whole roster: this student's entry is the last of each
        body = await gql(TEACHER_NW, "INSTRUCTION", ROSTER, {"id": str(class_id)})
        last = body["data"]["class"]["students"][-1]["id"]
    expected = await owner.fetch(
        "SELECT id FROM audit_entries WHERE district_id = $1 AND subject_student_id = $2 ORDER BY seq DESC",
        district,
        uuid.UUID(last),
    )
    assert len(expected) >= 5
    page = "nodes { id } pageInfo { hasNextPage endCursor }"
    if log == "auditLog":
        query = (
            f"query L($after: String, $student: ID!) {{ auditLog(first: {size}, after: $after, "
            f"filter: {{subjectStudentId: $student}}) {{ {page} }} }}"
        )
    else:
        query = (
            f"query L($after: String, $student: ID!) {{ student(id: $student) {{ "
            f"accessLog(first: {size}, after: $after) {{ {page} }} }} }}"
        )
    seen: list[str] = []
    after = None
    while True:
        body = await gql(NORTHWIND_ADMIN, "RECORD_ACCESS", query, {"after": after, "student": last})
        assert "errors" not in body, body
        connection = body["data"]["auditLog"] if log == "auditLog" else body["data"]["student"]["accessLog"]
        seen += [n["id"] for n in connection["nodes"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    # Reading a student's log writes an entry about them, newer than every cursor.
    assert seen == [str(e["id"]) for e in expected]


async def test_access_log_lists_exactly_the_view_s_entries_about_the_student(
    gql: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    student = users["student1@northwind.example"]
    for _ in range(3):
        await gql(
            TEACHER_NW, "INSTRUCTION", "query S($id: ID!) { student(id: $id) { firstName } }", {"id": str(student)}
        )
    expected = await owner.fetch(
        "SELECT id, seq FROM audit_entries WHERE subject_student_id = $1 ORDER BY seq DESC LIMIT 50", student
    )
    body = await gql(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        "query A($id: ID!) { student(id: $id) { accessLog(first: 50) { nodes { id subjectStudentId } } } }",
        {"id": str(student)},
    )
    nodes = body["data"]["student"]["accessLog"]["nodes"]
    assert [n["id"] for n in nodes] == [str(e["id"]) for e in expected]
    assert {n["subjectStudentId"] for n in nodes} == {str(student)}


# -------------------------------------------- the old chain, partitions, retention


def _v1_chain(key: bytes, district: uuid.UUID, count: int, at: dt.datetime) -> list[dict[str, Any]]:
    rows, prev = [], "0" * 64
    for seq in range(1, count + 1):
        row = {
            "district_id": district,
            "seq": seq,
            "id": uuid.uuid4(),
            "at": at,
            "request_id": uuid.uuid4().hex,
            "trace_id": None,
            "actor_id": uuid.uuid4(),
            "actor_role": "TEACHER",
            "purpose": "INSTRUCTION",
            "justification": None,
            "operation_name": "Old",
            "subject_student_id": uuid.uuid4(),
            "fields": ["Student.firstName"],
            "categories": ["DIRECTORY"],
            "decision": "ALLOW",
            "break_glass": False,
            "prev_hash": prev,
            "client_request_id": None,
        }
        row["hash"] = prev = entry_hash(key, row)
        rows.append(row)
    return rows


def _origin(at: dt.datetime) -> Origin:
    return Origin(
        at=at,
        request_id=uuid.uuid4().hex,
        client_request_id=None,
        actor_id=uuid.uuid4(),
        actor_role="TEACHER",
        purpose="INSTRUCTION",
        justification=None,
        operation_name="New",
        break_glass=False,
    )


async def _report(owner: Any, key: bytes, district: uuid.UUID) -> Any:
    (report,) = await verify_chains(owner, key, district)
    return report


async def test_a_chain_written_before_records_continues_through_them_and_verifies(owner: Any, settings: Any) -> None:
    key = settings.audit_key()
    district = uuid.uuid4()
    old = _v1_chain(key, district, 3, dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    for row in old:
        columns = list(row)
        await owner.execute(
            f"INSERT INTO audit_entries_v1 ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
            *row.values(),
        )
    await owner.execute(
        "INSERT INTO audit_heads (district_id, seq, hash) VALUES ($1, 3, decode($2, 'hex'))", district, old[-1]["hash"]
    )
    subjects = [uuid.uuid4() for _ in range(4)]
    async with owner.transaction():
        await write_entries(owner, _origin(dt.datetime.now(dt.UTC)), [pending(district, s) for s in subjects], key)
    report = await _report(owner, key, district)
    assert report.broken is None and report.entries == 7 and report.head_seq == 7
    view = await owner.fetch(
        "SELECT seq, subject_student_id FROM audit_entries WHERE district_id = $1 ORDER BY seq", district
    )
    assert [r["seq"] for r in view] == list(range(1, 8))
    assert [r["subject_student_id"] for r in view][3:] == subjects
    # An old entry altered still breaks the chain.
    await owner.execute(
        "UPDATE audit_entries_v1 SET purpose = 'REPORTING' WHERE district_id = $1 AND seq = 2", district
    )
    broken = (await _report(owner, key, district)).broken
    assert broken is not None and (broken.seq, broken.kind) == (2, "altered")
    await owner.execute(
        "UPDATE audit_entries_v1 SET purpose = 'INSTRUCTION' WHERE district_id = $1 AND seq = 2", district
    )
    # So does a changed name in the dictionary the records' codes point to (the hash covers names).
    code = await owner.fetchval("SELECT fields[1] FROM audit_records WHERE district_id = $1", district)
    name = await owner.fetchval("SELECT name FROM audit_names WHERE code = $1", code)
    await owner.execute("UPDATE audit_names SET name = name || '.x' WHERE code = $1", code)
    try:
        broken = (await _report(owner, key, district)).broken
        assert broken is not None and (broken.seq, broken.kind) == (4, "altered")
    finally:
        await owner.execute("UPDATE audit_names SET name = $2 WHERE code = $1", code, name)
    assert (await _report(owner, key, district)).broken is None


async def test_a_record_outside_every_partition_waits_in_the_default_one_and_moves_to_its_month(
    owner: Any, settings: Any
) -> None:
    key = settings.audit_key()
    district = uuid.uuid4()
    far = dt.datetime(2031, 6, 15, 12, tzinfo=dt.UTC)
    async with owner.transaction():
        await write_entries(owner, _origin(far), [pending(district, uuid.uuid4())], key)
    place = "SELECT tableoid::regclass::text FROM audit_records WHERE district_id = $1"
    assert await owner.fetchval(place, district) == "audit_records_default"
    assert await owner.fetchval("SELECT pledgeql_audit_partitions(now())") >= 1
    assert await owner.fetchval(place, district) == "audit_records_2031_06"
    assert await owner.fetchval("SELECT pledgeql_audit_partitions(now())") == 0  # already there
    assert (await _report(owner, key, district)).broken is None


SUBJECTS_INDEX_PARTS = """
SELECT i.inhrelid::regclass::text AS part, c.reloptions FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'ix_audit_records_subjects'::regclass
"""


async def test_every_month_s_subjects_index_takes_records_into_its_pending_list_and_finds_them_there(
    owner: Any, settings: Any
) -> None:
    key = settings.audit_key()
    district, student = uuid.uuid4(), uuid.uuid4()
    # A month made here, as the server and retention make them, is set like those the migration set.
    far = dt.datetime(2032, 2, 3, tzinfo=dt.UTC)
    async with owner.transaction():
        await write_entries(owner, _origin(far), [pending(district, uuid.uuid4())], key)
    assert await owner.fetchval("SELECT pledgeql_audit_partitions(now())") >= 1
    parts = {r["part"]: r["reloptions"] for r in await owner.fetch(SUBJECTS_INDEX_PARTS)}
    assert "audit_records_2032_02_subjects_idx" in parts and "audit_records_default_subjects_idx" in parts
    for options in parts.values():
        assert set(options) == {"fastupdate=on", "gin_pending_list_limit=512"}

    now = dt.datetime.now(dt.UTC)
    async with owner.transaction():
        await write_entries(owner, _origin(now), [pending(district, student), pending(district, uuid.uuid4())], key)
    found = "SELECT seq FROM audit_records WHERE subjects @> ARRAY[$1::uuid] AND district_id = $2"
    async with owner.transaction():
        await owner.execute("SET LOCAL enable_seqscan = off")
        assert [r["seq"] for r in await owner.fetch(found, student, district)] == [2]
        # The record waited in the pending list; merged into the trees, it is found the same.
        merged = await owner.fetchval(f"SELECT gin_clean_pending_list('audit_records_{now:%Y_%m}_subjects_idx')")
        assert merged >= 1
        assert [r["seq"] for r in await owner.fetch(found, student, district)] == [2]


async def test_retention_drops_a_month_s_partition_whole_and_the_chain_still_verifies(
    owner: Any, settings: Any
) -> None:
    key = settings.audit_key()
    district = uuid.uuid4()
    long_ago = dt.datetime(2019, 3, 10, tzinfo=dt.UTC)
    async with owner.transaction():
        await write_entries(owner, _origin(long_ago), [pending(district, uuid.uuid4()) for _ in range(5)], key)
        await write_entries(owner, _origin(long_ago), [pending(district, None, ("Query.x",))], key)
    await owner.fetchval("SELECT pledgeql_audit_partitions(now())")
    assert await owner.fetchval("SELECT to_regclass('audit_records_2019_03')::text") == "audit_records_2019_03"
    async with owner.transaction():
        await write_entries(owner, _origin(dt.datetime.now(dt.UTC)), [pending(district, uuid.uuid4())], key)
    cutoff = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert await trim_chain(owner, key, district, cutoff, remove=False) == 6
    # Anchored, not yet removed: verify passes over what the anchor covers.
    report = await _report(owner, key, district)
    assert report.broken is None and report.anchor_seq == 6 and report.entries == 1
    assert "audit_records_2019_03" in await drop_covered_partitions(owner)
    assert await owner.fetchval("SELECT to_regclass('audit_records_2019_03')") is None
    report = await _report(owner, key, district)
    assert report.broken is None and report.entries == 1 and report.first_seq == 7
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", district) == 1


@pytest.mark.parametrize("statement", ["DELETE FROM audit_records_default", "TRUNCATE audit_records_default"])
async def test_the_app_role_cannot_reach_the_partitions_directly(db: Any, statement: str) -> None:
    import asyncpg

    from server.db import connect

    app = await connect(db.app)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute(statement)
    finally:
        await app.close()


async def test_the_server_keeps_the_partitions_of_the_months_ahead(owner: Any, db: Any) -> None:
    import asyncio
    import contextlib

    from resolvers.audit_store import PARTITIONS_AHEAD
    from server.audit_writer import keep_audit_partitions
    from server.db import connect

    now = dt.datetime.now(dt.UTC)
    ahead = dt.datetime(
        now.year + (now.month + PARTITIONS_AHEAD - 1) // 12, (now.month + PARTITIONS_AHEAD - 1) % 12 + 1, 1
    )
    name = f"audit_records_{ahead:%Y_%m}"
    await owner.execute(f"DROP TABLE IF EXISTS {name}")

    @contextlib.asynccontextmanager
    async def as_app() -> Any:
        conn = await connect(db.app)
        try:
            async with conn.transaction():
                yield conn
        finally:
            await conn.close()

    upkeep = asyncio.create_task(keep_audit_partitions(as_app, every=3600))
    try:
        for _ in range(100):
            if await owner.fetchval("SELECT to_regclass($1)::text", name) == name:
                break
            await asyncio.sleep(0.05)
    finally:
        upkeep.cancel()
    # Made by the application role's call, owned by the owner (the function runs as its definer).
    assert await owner.fetchval("SELECT to_regclass($1)::text", name) == name
    assert await owner.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = $1", name) != "pledgeql_app"


async def test_verify_reports_its_progress_on_long_chains(
    owner: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from server.commands import audit_cli

    key = settings.audit_key()
    district = uuid.uuid4()
    async with owner.transaction():
        await write_entries(
            owner, _origin(dt.datetime.now(dt.UTC)), [pending(district, uuid.uuid4()) for _ in range(3)], key
        )
    monkeypatch.setattr(audit_cli, "PROGRESS_EVERY", 2)
    progress = io.StringIO()
    (report,) = await verify_chains(owner, key, district, None, progress)
    assert report.broken is None and report.entries == 3
    assert progress.getvalue() == f"district {district}: 3 entries verified\n"


async def _migrate_to(urls: Any, revision: str, down: bool = False) -> None:
    from alembic import command

    from server.commands.migrate import alembic_config
    from server.db import create_engine, ensure_database

    await ensure_database(urls)
    config = alembic_config(urls.owner)
    engine = create_engine(urls.owner, pool_size=1)

    def run(connection: Any) -> None:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def test_entries_chained_before_the_migration_stay_verifiable_and_the_chain_goes_on(
    server: Any, settings: Any
) -> None:
    from server.db import connect

    key = settings.audit_key()
    name = "t_audit_storage_upgrade"
    admin = await connect(server.with_database("postgres").owner)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()
    urls = server.with_database(name)
    await _migrate_to(urls, "0012")
    district = uuid.uuid4()
    old = _v1_chain(key, district, 5, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    conn = await connect(urls.owner)
    try:
        for row in old:  # as the server wrote them before 0013
            columns = list(row)
            await conn.execute(
                f"INSERT INTO audit_entries ({', '.join(columns)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                *row.values(),
            )
    finally:
        await conn.close()
    await _migrate_to(urls, "head")
    conn = await connect(urls.owner)
    try:
        assert await conn.fetchval("SELECT seq FROM audit_heads WHERE district_id = $1", district) == 5
        subjects = [uuid.uuid4() for _ in range(3)]
        async with conn.transaction():
            await write_entries(conn, _origin(dt.datetime.now(dt.UTC)), [pending(district, s) for s in subjects], key)
        (report,) = await verify_chains(conn, key, district)
        assert report.broken is None and (report.entries, report.first_seq, report.head_seq) == (8, 1, 8)
        rows = await conn.fetch("SELECT seq, id FROM audit_entries WHERE district_id = $1 ORDER BY seq", district)
        assert [r["seq"] for r in rows] == list(range(1, 9))
        assert [r["id"] for r in rows][:5] == [r["id"] for r in old]
    finally:
        await conn.close()
    # Records exist: going back to 0012 would discard them, and is refused.
    with pytest.raises(Exception, match="downgrading would discard them"):
        await _migrate_to(urls, "0012", down=True)
    admin = await connect(server.with_database("postgres").owner)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_an_empty_database_migrates_down_to_0012_and_up_again(server: Any) -> None:
    from server.db import connect

    name = "t_audit_storage_roundtrip"
    admin = await connect(server.with_database("postgres").owner)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()
    urls = server.with_database(name)
    await _migrate_to(urls, "head")
    await _migrate_to(urls, "0012", down=True)
    conn = await connect(urls.owner)
    try:
        assert await conn.fetchval("SELECT to_regclass('audit_entries')::text") == "audit_entries"
        assert await conn.fetchval("SELECT to_regclass('audit_records')") is None
    finally:
        await conn.close()
    await _migrate_to(urls, "head")
    admin = await connect(server.with_database("postgres").owner)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_the_subject_lookup_answers_only_for_the_callers_own_districts(
    db: Any, owner: Any, gql: Any, users: dict[str, uuid.UUID]
) -> None:
    from server.db import connect

    student = users["student1@northwind.example"]
    await gql(TEACHER_NW, "INSTRUCTION", "query S($id: ID!) { student(id: $id) { firstName } }", {"id": str(student)})
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", student)
    other = await owner.fetchval("SELECT id FROM districts WHERE id <> $1 LIMIT 1", district)
    lookup = "SELECT count(*) FROM pledgeql_audit_subject_page($1, $2, 9223372036854775807, 50)"
    app = await connect(db.app)
    try:
        for setting, district_asked, found in (
            (district, district, True),
            (other, district, False),
            ("", district, False),
        ):
            async with app.transaction():
                await app.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(setting))
                assert (await app.fetchval(lookup, district_asked, student) > 0) is found, setting
    finally:
        await app.close()


async def test_a_student_s_newest_records_are_found_month_by_month_as_every_record_sorted_finds_them(
    owner: Any, settings: Any
) -> None:
    """pledgeql_audit_subject_page (migration 0015) against the plain answer:
    a month with few of the student's records (the subjects' index), one with
    more than its cap (along the chain), records of an older month written
    after the newer month's (their ``at`` is a month's, their ``seq`` later),
    and records waiting in the default partition; every page size and cursor."""
    key = settings.audit_key()
    district, student = uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(3)]

    def about_the_student(count: int) -> list[Any]:
        # Each entry about the student a record of its own, between entries about others.
        out = []
        for i in range(count):
            out += [pending(district, student), pending(district, others[i % 3], ("Student.lastName",))]
        return out

    async def write(at: dt.datetime, count: int) -> None:
        async with owner.transaction():
            await write_entries(owner, _origin(at), about_the_student(count), key)

    await write(dt.datetime(2016, 10, 15, tzinfo=dt.UTC), 30)
    await write(dt.datetime(2016, 12, 10, tzinfo=dt.UTC), 2100)
    await write(dt.datetime(2016, 11, 30, 23, 59, tzinfo=dt.UTC), 5)
    await write(dt.datetime(2016, 12, 20, tzinfo=dt.UTC), 10)

    plain = (
        "SELECT seq FROM audit_records WHERE district_id = $1 AND subjects @> ARRAY[$2::uuid] AND seq < $3 "
        "ORDER BY seq DESC LIMIT $4"
    )
    paged = "SELECT s FROM pledgeql_audit_subject_page($1, $2, $3, $4) s"
    newest = 2**63 - 1

    async def agree() -> int:
        seqs = [r["seq"] for r in await owner.fetch(plain, district, student, newest, 10**6)]
        cursors = [newest, *seqs[::97], *seqs[-40:], *seqs[:20]]
        checked = 0
        async with owner.transaction():
            await owner.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
            for before in cursors:
                for limit in (1, 7, 50, 51):
                    expected = [r["seq"] for r in await owner.fetch(plain, district, student, before, limit)]
                    got = [r["s"] for r in await owner.fetch(paged, district, student, before, limit)]
                    assert got == expected, (before, limit)
                    checked += 1
            # Without a limit: every record below the cursor.
            whole = [r["s"] for r in await owner.fetch(paged + " ORDER BY s DESC", district, student, newest, None)]
            assert whole == seqs
        return checked

    place = "SELECT DISTINCT tableoid::regclass::text FROM audit_records WHERE district_id = $1"
    assert {r[0] for r in await owner.fetch(place, district)} == {"audit_records_default"}
    assert await agree() > 100
    await owner.fetchval("SELECT pledgeql_audit_partitions(now())")
    await write(dt.datetime(2032, 1, 5, tzinfo=dt.UTC), 3)  # waits in the default partition
    assert {r[0] for r in await owner.fetch(place, district)} == {
        "audit_records_2016_10",
        "audit_records_2016_11",
        "audit_records_2016_12",
        "audit_records_default",
    }
    in_december = "SELECT count(*) FROM audit_records_2016_12 WHERE district_id = $1 AND subjects @> ARRAY[$2::uuid]"
    assert await owner.fetchval(in_december, district, student) > 2000  # more than the month's cap
    assert await agree() > 100
    assert (await _report(owner, key, district)).broken is None


async def test_a_student_read_in_a_burst_long_ago_in_the_month_is_found_without_walking_the_month_since(
    owner: Any, settings: Any
) -> None:
    """More than CAP records about the student early in a month, then a long
    stretch about others only: the page is the plain answer's, and finding it
    reads far fewer pages than the stretch holds (migration 0017: the walk along
    the chain stops after WALK records and the subjects' index answers)."""
    key = settings.audit_key()
    district, student = uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(3)]
    at = dt.datetime(2015, 3, 2, tzinfo=dt.UTC)
    burst: list[Any] = []
    for i in range(2100):
        burst += [pending(district, student), pending(district, others[i % 3], ("Student.lastName",))]
    # Consecutive entries about others that differ in their fields: a record each.
    stretch = [
        pending(district, others[i % 3], ("Student.lastName",) if i % 2 else ("Student.firstName",))
        for i in range(80_000)
    ]
    async with owner.transaction():
        await write_entries(owner, _origin(at), burst, key)
        await write_entries(owner, _origin(at + dt.timedelta(days=9)), stretch, key)
    await owner.fetchval("SELECT pledgeql_audit_partitions(now())")
    await owner.execute("ANALYZE audit_records_2015_03")  # planned as a month that has been analyzed
    plain = (
        "SELECT seq FROM audit_records WHERE district_id = $1 AND subjects @> ARRAY[$2::uuid] AND seq < $3 "
        "ORDER BY seq DESC LIMIT $4"
    )
    newest = 2**63 - 1
    async with owner.transaction():
        await owner.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
        for before, limit in ((newest, 50), (newest, 1), (newest, 2001)):
            expected = [r["seq"] for r in await owner.fetch(plain, district, student, before, limit)]
            got = [
                r["s"]
                for r in await owner.fetch(
                    "SELECT s FROM pledgeql_audit_subject_page($1, $2, $3, $4) s", district, student, before, limit
                )
            ]
            assert got == expected and len(got) == limit, (before, limit)
        plan = await owner.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pledgeql_audit_subject_page($1, $2, $3, 50)",
            district,
            student,
            newest,
        )
    node = json.loads(plan[0][0])[0]["Plan"]
    read = node["Shared Hit Blocks"] + node["Shared Read Blocks"]
    stretch_pages = await owner.fetchval(
        "SELECT count(DISTINCT (ctid::text::point)[0]) FROM audit_records_2015_03 WHERE district_id = $1 AND at > $2",
        district,
        at,
    )
    # Walking the chain back to the burst, or sorting the month, reads every page of the stretch at least.
    assert stretch_pages > 3000
    assert read < stretch_pages / 2, (read, stretch_pages)


async def test_a_student_read_often_lately_is_paged_from_the_district_s_newest_records(
    owner: Any, settings: Any
) -> None:
    """More than CAP records about the student in a month, the newest among the
    district's last few hundred: the page is the plain answer's and comes from
    those records alone (migration 0019), without asking the month's subjects'
    index; a page not among them is asked of the months, as before."""
    key = settings.audit_key()
    district, student, seldom = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(3)]
    at = dt.datetime(2014, 5, 6, tzinfo=dt.UTC)
    entries: list[Any] = [pending(district, seldom, ("Student.lastName",))]
    for i in range(2100):
        entries += [pending(district, student), pending(district, others[i % 3], ("Student.lastName",))]
    async with owner.transaction():
        await write_entries(owner, _origin(at), entries, key)
    await owner.fetchval("SELECT pledgeql_audit_partitions(now())")
    in_may = "SELECT count(*) FROM audit_records_2014_05 WHERE district_id = $1 AND subjects @> ARRAY[$2::uuid]"
    assert await owner.fetchval(in_may, district, student) > 2000  # more than the month's cap
    plain = (
        "SELECT seq FROM audit_records WHERE district_id = $1 AND subjects @> ARRAY[$2::uuid] AND seq < $3 "
        "ORDER BY seq DESC LIMIT $4"
    )
    months = (
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions "
        "WHERE funcname = 'pledgeql_audit_subject_months'"
    )
    newest = 2**63 - 1
    async with owner.transaction():
        await owner.execute("SET LOCAL track_functions = 'pl'")
        await owner.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
        asked = 0
        for subject, before, limit, from_recent in (
            (student, newest, 50, True),
            (student, newest, 1, True),
            (student, newest, 251, False),  # the newest 500 hold 250 of theirs
            (seldom, newest, 50, False),
            (student, None, 50, True),  # a later page: the newest 500 below its cursor (set below)
        ):
            if before is None:
                oldest = await owner.fetchval(
                    "SELECT min(seq) FROM (SELECT seq FROM audit_records WHERE district_id = $1 "
                    "ORDER BY seq DESC LIMIT 600) x",
                    district,
                )
                before = oldest
            expected = [r["seq"] for r in await owner.fetch(plain, district, subject, before, limit)]
            got = [
                r["s"]
                for r in await owner.fetch(
                    "SELECT s FROM pledgeql_audit_subject_page($1, $2, $3, $4) s", district, subject, before, limit
                )
            ]
            assert got == expected and expected, (subject == student, before, limit)
            asked += 0 if from_recent else 1
            assert await owner.fetchval(months) == asked, (subject == student, before, limit)
