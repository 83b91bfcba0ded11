"""Tamper evidence: `pledgeql audit verify` recomputes every chain with the key.

Each tampering test changes the stored chain through the owner connection (the
app role cannot), checks that verify fails naming the entry, and puts the
chain back, checking that it verifies again.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from permissions.audit import GENESIS, Anchor, ChainVerifier, anchor_mac, entry_hash, record_hash
from resolvers.audit_retention import trim_chain
from server.commands.audit_cli import RECORD_COLUMNS, command
from server.db import DatabaseUrls, connect
from server.settings import Settings

TEACHER_NW = "teacher1@northwind.example"
TEACHER_RS = "teacher1@riverside.example"
KEY = b"k" * 32


# ------------------------------------------------------- the pure verifier


def make_chain(n: int, key: bytes = KEY, district: uuid.UUID | None = None) -> list[dict[str, Any]]:
    district = district or uuid.uuid4()
    rows: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        row: dict[str, Any] = {
            "district_id": district,
            "seq": seq,
            "id": uuid.uuid4(),
            "at": dt.datetime(2026, 9, 1, 8, 0, seq, 123456, tzinfo=dt.UTC),
            "request_id": f"r{seq}",
            "trace_id": None,
            "actor_id": uuid.uuid4(),
            "actor_role": "TEACHER",
            "purpose": "INSTRUCTION",
            "justification": None,
            "operation_name": None,
            "subject_student_id": uuid.uuid4() if seq % 2 else None,
            "fields": ["Student.firstName"],
            "categories": ["DIRECTORY"],
            "decision": "ALLOW",
            "break_glass": False,
            "prev_hash": prev,
        }
        row["hash"] = prev = entry_hash(key, row)
        rows.append(row)
    return rows


def first_break(rows: list[dict[str, Any]], key: bytes = KEY, anchor: Anchor | None = None) -> Any:
    verifier = ChainVerifier(key, rows[0]["district_id"], anchor, max(r["seq"] for r in rows))
    broken = verifier.start()
    for row in rows:
        broken = broken or verifier.feed(row)
    return broken


def test_an_untouched_chain_verifies_and_reports_its_head() -> None:
    rows = make_chain(6)
    verifier = ChainVerifier(KEY, rows[0]["district_id"])
    assert all(verifier.feed(r) is None for r in rows)
    assert verifier.count == 6 and verifier.head == (6, rows[-1]["hash"])


def test_the_hash_covers_every_column_but_itself() -> None:
    row = make_chain(1)[0]
    changed = {
        "district_id": uuid.uuid4(),
        "seq": 2,
        "id": uuid.uuid4(),
        "at": row["at"] + dt.timedelta(microseconds=1),
        "request_id": "other",
        "trace_id": "0" * 32,
        "actor_id": uuid.uuid4(),
        "actor_role": "SUPPORT",
        "purpose": "SUPPORT",
        "justification": "x",
        "operation_name": "Op",
        "subject_student_id": uuid.uuid4(),
        "fields": ["Student.lastName"],
        "categories": ["WORK"],
        "decision": "DENY",
        "break_glass": True,
        "prev_hash": "1" * 64,
    }
    for column, value in changed.items():
        assert entry_hash(KEY, {**row, column: value}) != row["hash"], column


def test_the_canonical_time_does_not_depend_on_the_zone_it_is_given_in() -> None:
    row = make_chain(1)[0]
    shifted = {**row, "at": row["at"].astimezone(dt.timezone(dt.timedelta(hours=-5)))}
    assert entry_hash(KEY, shifted) == row["hash"]


def test_an_altered_entry_is_named() -> None:
    rows = make_chain(5)
    rows[2]["purpose"] = "REPORTING"
    broken = first_break(rows)
    assert (broken.seq, broken.entry_id, broken.kind) == (3, rows[2]["id"], "altered")


def test_a_deleted_entry_is_named_by_its_seq_and_the_entry_after_it() -> None:
    rows = make_chain(5)
    del rows[2]
    broken = first_break(rows)
    assert (broken.seq, broken.entry_id, broken.kind) == (4, rows[2]["id"], "deleted")
    assert "seq 3" in broken.detail


def test_swapped_entries_are_reported_as_reordered() -> None:
    rows = make_chain(5)
    rows[1]["seq"], rows[2]["seq"] = 3, 2
    rows[1], rows[2] = rows[2], rows[1]
    broken = first_break(rows)
    assert (broken.seq, broken.entry_id, broken.kind) == (2, rows[1]["id"], "reordered")
    assert "written as seq 3" in broken.detail


def test_a_chain_rewritten_without_the_key_is_detected() -> None:
    rows = make_chain(5)
    forged = make_chain(5, key=b"not the key")
    assert first_break(forged).kind == "altered" and first_break(forged).seq == 1
    # Rewriting from the third entry on, relinking every hash, still fails there.
    prev = rows[1]["hash"]
    for row in rows[2:]:
        row["purpose"] = "REPORTING"
        row["prev_hash"] = prev
        row["hash"] = prev = entry_hash(b"guessed key", row)
    broken = first_break(rows)
    assert (broken.seq, broken.kind) == (3, "altered")


def test_missing_first_entries_need_a_key_signed_anchor() -> None:
    rows = make_chain(6)
    kept = rows[3:]
    assert first_break(kept).kind == "deleted"
    last = rows[2]
    anchor = Anchor(last["district_id"], 3, last["hash"], last["at"], "")
    good = dataclasses.replace(anchor, mac=anchor_mac(KEY, anchor.district_id, 3, last["hash"], last["at"]))
    assert first_break(kept, anchor=good) is None
    forged = dataclasses.replace(anchor, mac=anchor_mac(b"guess", anchor.district_id, 3, last["hash"], last["at"]))
    assert first_break(kept, anchor=forged).kind == "anchor"
    # An anchor cannot excuse more than it signed for.
    assert first_break(rows[4:], anchor=good).kind == "deleted"


def test_a_chain_cut_short_after_an_earlier_verify_recorded_its_head_is_detected() -> None:
    rows = make_chain(6)
    assert first_break(rows[:4]) is None  # by itself, a shorter chain verifies
    verifier = ChainVerifier(KEY, rows[0]["district_id"], None, 4, known_head=(6, rows[5]["hash"]))
    assert all(verifier.feed(r) is None for r in rows[:4])
    broken = verifier.finish()
    assert (broken.seq, broken.kind) == (6, "deleted") and "now ends at seq 4" in broken.detail
    whole = ChainVerifier(KEY, rows[0]["district_id"], None, 6, known_head=(5, rows[4]["hash"]))
    assert all(whole.feed(r) is None for r in rows) and whole.finish() is None
    rewritten = ChainVerifier(KEY, rows[0]["district_id"], None, 6, known_head=(5, "f" * 64))
    assert [rewritten.feed(r) for r in rows][4].kind == "altered"


# ----------------------------------------------------- against the database


@pytest.fixture(scope="module")
def verify_settings(settings: Settings, db: DatabaseUrls) -> Settings:
    return dataclasses.replace(settings, database_url=db.owner)


@pytest.fixture(scope="module")
def audit_key(settings: Settings) -> bytes:
    return settings.audit_key()


@pytest.fixture(scope="module")
async def districts(owner: Any) -> dict[str, uuid.UUID]:
    rows = await owner.fetch("SELECT name, id FROM districts")
    return {r["name"].split()[0].lower(): r["id"] for r in rows}


async def read_some(gql: Any, users: dict[str, uuid.UUID], owner: Any, times: int = 4) -> None:
    """A few requests that write entries in both districts."""
    students = {
        TEACHER_NW: users["student1@northwind.example"],
        TEACHER_RS: users["student1@riverside.example"],
    }
    for _ in range(times):
        for teacher, student in students.items():
            body = await gql(
                teacher,
                "INSTRUCTION",
                "query R($id: ID!) { student(id: $id) { firstName gender } }",
                {"id": str(student)},
            )
            assert body["data"]["student"]["firstName"]


@pytest.fixture(scope="module", autouse=True)
async def chain(app: Any, gql: Any, users: dict[str, uuid.UUID], owner: Any) -> None:
    await read_some(gql, users, owner)


async def verify(
    settings: Settings, capsys: pytest.CaptureFixture[str], district: str | None = None, heads: Path | None = None
) -> Any:
    args = argparse.Namespace(district=district, heads=str(heads) if heads else None)
    code = await asyncio.to_thread(command, settings, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def entry(owner: Any, district: uuid.UUID, seq: int) -> Any:
    """The stored record at ``seq`` (each request of ``read_some`` is one record of one entry)."""
    return await owner.fetchrow("SELECT * FROM audit_records WHERE district_id = $1 AND seq = $2", district, seq)


async def reinsert(owner: Any, row: Any) -> None:
    columns = list(row.keys())
    placeholders = ", ".join(f"${i + 1}" for i in range(len(columns)))
    await owner.execute(
        f"INSERT INTO audit_records ({', '.join(columns)}) VALUES ({placeholders})", *[row[c] for c in columns]
    )


async def test_an_untouched_chain_passes_with_one_ok_line_per_district(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], districts: dict[str, uuid.UUID]
) -> None:
    code, out, err = await verify(verify_settings, capsys)
    assert code == 0, err
    lines = out.splitlines()
    for district in districts.values():
        (line,) = [ln for ln in lines if str(district) in ln]
        assert line.startswith(f"OK district {district}: ") and " entries (seq 1.." in line
    assert err == ""


async def test_an_updated_entry_fails_verify_naming_it(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    district = districts["northwind"]
    original = await entry(owner, district, 3)
    await owner.execute(
        "UPDATE audit_records SET fields = pledgeql_audit_codes(ARRAY['Student.lastName']) "
        "WHERE district_id = $1 AND seq = 3",
        district,
    )
    try:
        code, out, err = await verify(verify_settings, capsys)
        assert code == 1
        assert f"district {district}: entry seq 3 id {original['id']}: altered" in err
        assert f"OK district {districts['riverside']}" in out  # the other chain still verifies
    finally:
        await owner.execute(
            "UPDATE audit_records SET fields = $2 WHERE district_id = $1 AND seq = 3", district, original["fields"]
        )
    assert (await verify(verify_settings, capsys))[0] == 0


async def test_a_deleted_entry_fails_verify_naming_its_seq(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    district = districts["northwind"]
    original = await entry(owner, district, 2)
    after = await entry(owner, district, 3)
    await owner.execute("DELETE FROM audit_records WHERE district_id = $1 AND seq = 2", district)
    try:
        code, _, err = await verify(verify_settings, capsys)
        assert code == 1
        assert f"district {district}: entry seq 3 id {after['id']}: deleted: entries seq 2 before this one" in err
    finally:
        await reinsert(owner, original)
    assert (await verify(verify_settings, capsys))[0] == 0


async def test_two_swapped_entries_fail_verify_as_reordered(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    district = districts["riverside"]
    fourth = await entry(owner, district, 4)

    async def swap() -> None:
        async with owner.transaction():
            await owner.execute("UPDATE audit_records SET seq = -1 WHERE district_id = $1 AND seq = 4", district)
            await owner.execute("UPDATE audit_records SET seq = 4 WHERE district_id = $1 AND seq = 5", district)
            await owner.execute("UPDATE audit_records SET seq = 5 WHERE district_id = $1 AND seq = -1", district)

    await swap()
    try:
        code, _, err = await verify(verify_settings, capsys, str(district))
        assert code == 1
        moved = await entry(owner, district, 4)
        assert moved["id"] != fourth["id"]
        assert f"district {district}: entry seq 4 id {moved['id']}: reordered: this entry was written as seq 5" in err
    finally:
        await swap()
    assert (await verify(verify_settings, capsys))[0] == 0


async def test_a_rewrite_of_the_chain_without_the_key_fails_verify(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    district = districts["northwind"]
    rows = [
        dict(r)
        for r in await owner.fetch(
            f"SELECT {RECORD_COLUMNS} FROM audit_records WHERE district_id = $1 ORDER BY seq", district
        )
    ]
    names = {r["code"]: r["name"] for r in await owner.fetch("SELECT code, name FROM audit_names")}
    originals = [(r["seq"], r["purpose"], bytes.fromhex(r["prev_hash"]), bytes.fromhex(r["hash"])) for r in rows]
    prev = rows[1]["hash"]
    async with owner.transaction():
        for row in rows[2:]:
            row["purpose"], row["prev_hash"] = "REPORTING", prev
            named = {
                **row,
                "fields": [names[c] for c in row["fields"]],
                "categories": [names[c] for c in row["categories"]],
            }
            row["hash"] = prev = record_hash(b"a guessed key", named)
            await owner.execute(
                "UPDATE audit_records SET purpose = $3, prev_hash = decode($4, 'hex'), hash = decode($5, 'hex') "
                "WHERE district_id = $1 AND seq = $2",
                district,
                row["seq"],
                row["purpose"],
                row["prev_hash"],
                row["hash"],
            )
    try:
        code, _, err = await verify(verify_settings, capsys)
        assert code == 1 and f"district {district}: entry seq 3 id {rows[2]['id']}: altered" in err
    finally:
        async with owner.transaction():
            for seq, purpose, prev_hash, hash_ in originals:
                await owner.execute(
                    "UPDATE audit_records SET purpose = $3, prev_hash = $4, hash = $5 "
                    "WHERE district_id = $1 AND seq = $2",
                    district,
                    seq,
                    purpose,
                    prev_hash,
                    hash_,
                )
    assert (await verify(verify_settings, capsys))[0] == 0


async def test_removing_the_newest_entries_is_detected_against_the_recorded_head_and_a_heads_file(
    verify_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    owner: Any,
    districts: dict[str, uuid.UUID],
    tmp_path: Path,
) -> None:
    heads = tmp_path / "audit-heads.json"
    code, _, err = await verify(verify_settings, capsys, heads=heads)
    assert code == 0, err
    district = districts["northwind"]
    last = await owner.fetchval("SELECT max(seq) FROM audit_records WHERE district_id = $1", district)
    assert f'"{district}"' in heads.read_text() and f'"seq": {last}' in heads.read_text()
    newest = await entry(owner, district, last)
    recorded = await owner.fetchrow("SELECT seq, hash FROM audit_heads WHERE district_id = $1", district)
    assert recorded["seq"] == last
    await owner.execute("DELETE FROM audit_records WHERE district_id = $1 AND seq = $2", district, last)
    try:
        # The head the writers recorded is still the removed entry's: verify says so, file or not.
        code, _, err = await verify(verify_settings, capsys)
        assert code == 1
        assert f"district {district}: entry seq {last}: deleted: the chain's recorded head is seq {last}" in err
        # Moved back as well, to the entry now last: the keyed chain alone cannot tell.
        before = await owner.fetchrow(
            "SELECT seq + cardinality(subjects) - 1 AS seq, hash FROM audit_records WHERE district_id = $1 "
            "ORDER BY seq DESC LIMIT 1",
            district,
        )
        await owner.execute(
            "UPDATE audit_heads SET seq = $2, hash = $3 WHERE district_id = $1", district, before["seq"], before["hash"]
        )
        assert (await verify(verify_settings, capsys))[0] == 0
        code, _, err = await verify(verify_settings, capsys, heads=heads)
        assert code == 1
        assert (
            f"district {district}: entry seq {last}: deleted: an earlier verify saw the chain reach seq {last}" in err
        )
        assert f'"seq": {last}' in heads.read_text()  # a failed run does not move the recorded heads
    finally:
        await reinsert(owner, newest)
        await owner.execute(
            "UPDATE audit_heads SET seq = $2, hash = $3 WHERE district_id = $1",
            district,
            recorded["seq"],
            recorded["hash"],
        )
    assert (await verify(verify_settings, capsys, heads=heads))[0] == 0
    other = tmp_path / "other.json"
    other.write_text('{"database": "another", "heads": {}}')
    code, _, err = await verify(verify_settings, capsys, heads=other)
    assert code == 2 and "use one heads file per database" in err
    (tmp_path / "a-file").write_text("")
    code, out, err = await verify(verify_settings, capsys, heads=tmp_path / "a-file" / "heads.json")
    assert code == 2 and "OK district" in out and "the heads file" in err and "cannot be written" in err
    assert "cannot reach the database" not in err


async def test_verify_of_one_district_prints_only_that_district(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], districts: dict[str, uuid.UUID]
) -> None:
    code, out, _ = await verify(verify_settings, capsys, str(districts["riverside"]))
    assert code == 0 and out.count("OK district") == 1 and str(districts["riverside"]) in out
    code, _, err = await verify(verify_settings, capsys, "not-a-district")
    assert code == 2 and "--district must be a district id" in err
    # An id of no district and no chain is an error, not "OK, 0 entries".
    unknown = uuid.uuid4()
    code, out, err = await verify(verify_settings, capsys, str(unknown))
    assert code == 2 and f"no district {unknown} and no audit chain of it" in err and "OK" not in out


async def test_verify_refuses_to_run_without_the_audit_key(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)
    keyless = dataclasses.replace(verify_settings, data_dir=tmp_path, extra={})
    code, _, err = await verify(keyless, capsys)
    assert code == 2 and "no audit key" in err
    assert not (tmp_path / "audit_key").exists()


async def test_verify_with_another_key_fails_at_the_first_entry(
    verify_settings: Settings, capsys: pytest.CaptureFixture[str], districts: dict[str, uuid.UUID]
) -> None:
    other = dataclasses.replace(verify_settings, extra={"audit_key": "another key entirely, 32+ characters long"})
    code, _, err = await verify(other, capsys, str(districts["northwind"]))
    assert code == 1 and "entry seq 1 " in err and "altered" in err


def test_the_command_line_verifies_and_fails_with_a_nonzero_status(verify_settings: Settings, db: DatabaseUrls) -> None:
    env = {
        **os.environ,
        "PLEDGEQL_DATABASE_URL": db.owner,
        "PLEDGEQL_DATA_DIR": str(verify_settings.data_dir),
    }
    env.pop("PLEDGEQL_AUDIT_KEY", None)
    pledgeql = Path(sys.executable).with_name("pledgeql")
    ok = subprocess.run(  # noqa: S603 (our own console entry point)
        [pledgeql, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("OK district") >= 2
    bad = subprocess.run(  # noqa: S603 (our own console entry point)
        [pledgeql, "audit", "verify"],
        env={**env, "PLEDGEQL_AUDIT_KEY": "not the key the server signs with"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "altered" in bad.stderr


async def test_the_app_role_can_neither_change_nor_remove_audit_entries(
    db: DatabaseUrls, districts: dict[str, uuid.UUID]
) -> None:
    app = await connect(db.app)
    try:
        async with app.transaction():
            await app.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(districts["northwind"]))
            assert await app.fetchval("SELECT count(*) FROM audit_entries") > 0
        for statement in (
            "UPDATE audit_records SET purpose = 'SUPPORT'",
            "DELETE FROM audit_records",
            "TRUNCATE audit_records",
            "UPDATE audit_entries_v1 SET purpose = 'SUPPORT'",
            "DELETE FROM audit_entries_v1",
            "UPDATE audit_names SET name = 'Student.id'",
            "INSERT INTO audit_anchors (district_id, seq, hash, at, removed, mac) "
            "VALUES (gen_random_uuid(), 1, '', now(), 1, '')",
            "DELETE FROM audit_anchors",
        ):
            async with app.transaction():
                await app.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(districts["northwind"]))
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(statement)
        # The chain heads (read as the owner, for a plan that never sorts a chain) are
        # given only for the request's own districts.
        async with app.transaction():
            await app.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(districts["northwind"]))
            own = await app.fetch("SELECT * FROM pledgeql_audit_heads($1::uuid[])", [districts["northwind"]])
            assert [r["head_district"] for r in own] == [districts["northwind"]] and own[0]["head_seq"] > 0
            other = await app.fetch("SELECT * FROM pledgeql_audit_heads($1::uuid[])", [districts["riverside"]])
            assert other == []
            locks = await app.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            assert locks == 1  # Northwind's chain lock, not Riverside's
    finally:
        await app.close()


async def test_entries_survive_the_deletion_of_the_students_record(
    verify_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    owner: Any,
    gql: Any,
    users: dict[str, uuid.UUID],
) -> None:
    student = users["student5@riverside.example"]
    body = await gql(
        "admin@riverside.example",
        "INSTRUCTION",
        "query S($id: ID!) { student(id: $id) { firstName } }",
        {"id": str(student)},
    )
    assert body["data"]["student"]["firstName"]
    before = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE subject_student_id = $1", student)
    assert before > 0
    foreign_keys = await owner.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'audit_entries'::regclass AND contype = 'f'"
    )
    assert foreign_keys == 0
    await owner.execute("DELETE FROM users WHERE id = $1", student)
    assert await owner.fetchval("SELECT count(*) FROM users WHERE id = $1", student) == 0
    after = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE subject_student_id = $1", student)
    assert after == before
    assert (await verify(verify_settings, capsys))[0] == 0


# ------------------------------------------------------------------ retention


async def test_retention_trim_in_steps_leaves_a_chain_that_verifies_from_its_signed_anchor(
    verify_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    owner: Any,
    gql: Any,
    users: dict[str, uuid.UUID],
    audit_key: bytes,
    districts: dict[str, uuid.UUID],
) -> None:
    district = districts["riverside"]
    cutoff = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.01)
    await read_some(gql, users, owner, times=2)
    total = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", district)
    older = await owner.fetchval(
        "SELECT count(*) FROM audit_entries WHERE district_id = $1 AND at < $2", district, cutoff
    )
    assert 0 < older < total

    # Removing old entries without the retention job breaks the chain.
    saved = await owner.fetch("SELECT * FROM audit_records WHERE district_id = $1 AND seq <= 2", district)
    await owner.execute("DELETE FROM audit_records WHERE district_id = $1 AND seq <= 2", district)
    code, _, err = await verify(verify_settings, capsys, str(district))
    assert code == 1 and "missing at the start of the chain" in err
    for row in saved:
        await reinsert(owner, row)

    # In steps, as retention trims (each a short transaction under the chain's lock): at most
    # `step` entries each time, never one written after the cutoff.
    step = max(1, older // 3)
    removed, steps = 0, 0
    while taken := await trim_chain(owner, audit_key, district, cutoff, step):
        assert taken <= step
        removed, steps = removed + taken, steps + 1
    assert removed == older and steps >= min(3, older)
    code, out, err = await verify(verify_settings, capsys, str(district))
    assert code == 0, err
    assert f"{total - older} entries (seq {older + 1}..{total}, continuing retention anchor at seq {older})" in out

    # A forged anchor (no key) is refused.
    mac = await owner.fetchval("SELECT mac FROM audit_anchors WHERE district_id = $1", district)
    await owner.execute("UPDATE audit_anchors SET seq = seq - 1 WHERE district_id = $1", district)
    code, _, err = await verify(verify_settings, capsys, str(district))
    assert code == 1 and ": anchor:" in err
    await owner.execute("UPDATE audit_anchors SET seq = seq + 1, mac = $2 WHERE district_id = $1", district, mac)

    # Everything removed: the next request continues the chain from the anchor.
    assert await trim_chain(owner, audit_key, district, dt.datetime.now(dt.UTC)) == total - older
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", district) == 0
    await read_some(gql, users, owner, times=1)
    first = await owner.fetchrow(
        "SELECT seq, prev_hash FROM audit_entries WHERE district_id = $1 ORDER BY seq LIMIT 1", district
    )
    assert first["seq"] == total + 1
    code, out, err = await verify(verify_settings, capsys)
    assert code == 0, err
    assert f"continuing retention anchor at seq {total}" in out


@pytest.mark.parametrize("key_length", [1, 32, 64, 65, 200])
def test_the_entry_mac_is_hmac_sha256(key_length: int) -> None:
    import hmac
    import os

    from permissions.audit import _mac

    key = os.urandom(key_length)
    for message in (b"", b"pledgeql", os.urandom(700)):
        assert _mac(key, message) == hmac.digest(key, message, "sha256").hex()


def test_entries_chained_before_client_request_id_existed_still_verify_beside_new_ones() -> None:
    rows = make_chain(4)
    # Entries of before migration 0012 have no such column at all (or NULL once it is added).
    assert first_break(rows) is None
    assert first_break([{**r, "client_request_id": None} for r in rows]) is None
    # A new entry carries the client's id, and its hash covers it.
    new = {**rows[-1], "seq": 5, "id": uuid.uuid4(), "prev_hash": rows[-1]["hash"], "client_request_id": "c-1"}
    new["hash"] = entry_hash(KEY, new)
    assert new["hash"] != entry_hash(KEY, {**new, "client_request_id": None})
    assert first_break([*rows, new]) is None


def test_a_client_request_id_added_to_removed_from_or_changed_in_a_stored_entry_breaks_its_hash() -> None:
    rows = make_chain(3)
    rows[1]["client_request_id"] = "c-9"
    rows[1]["hash"] = entry_hash(KEY, rows[1])
    rows[2]["prev_hash"] = rows[1]["hash"]
    rows[2]["hash"] = entry_hash(KEY, rows[2])
    assert first_break(rows) is None
    for forged in ("c-10", None, ""):
        tampered = [dict(r) for r in rows]
        tampered[1]["client_request_id"] = forged
        assert first_break(tampered).seq == 2, forged
    added = [dict(r) for r in rows]
    added[0]["client_request_id"] = "planted"
    assert first_break(added).seq == 1


def test_the_entries_ids_are_distinct_random_version_4_uuids_in_their_text_form() -> None:
    from permissions.audit_chain import new_ids

    ids = new_ids(500)
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(p) for p in parsed] == ids
    assert all(p.version == 4 and p.variant == uuid.RFC_4122 for p in parsed)
    assert len(set(ids)) == 500
    assert new_ids(0) == []
