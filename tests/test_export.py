"""`pledgeql export`: a district's whole data as CSV with its dictionary, then its deletion."""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.commands.audit_cli import verify_chains
from server.commands.cli import main as cli_main
from server.commands.export import COMPUTED_FIELDS, FILE_TYPES, UNDOCUMENTED, delete_district, field_categories
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import Gql, error_codes, run_as_owner

ROSTER = "{ me { district { schools { classes { students { id firstName } } } } } }"


@pytest.fixture(autouse=True)
def _servers_data_dir(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command signs its audit entry with the server's key (kept in its data dir)."""
    monkeypatch.setenv("PLEDGEQL_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)


def _export(
    db: DatabaseUrls, district: str, out: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, *extra: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("PLEDGEQL_DATABASE_URL", db.owner)
    status = cli_main(["export", "--district", district, "--out", str(out), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _district(db: DatabaseUrls, name: str) -> str:
    return str(run_as_owner(db, lambda c: c.fetchval("SELECT id FROM districts WHERE name = $1", name)))


# The audit trail's storage (migration 0013) holds the entries the audit_entries
# view presents, one per (request, subject, decision): the export's audit file.
AUDIT_STORAGE = {"audit_entries_v1", "audit_heads"}


async def _district_tables(conn: Any) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND (c.relkind = 'r' AND NOT c.relispartition OR c.relname = 'audit_entries') "
        "AND a.attname = 'district_id' AND NOT a.attisdropped ORDER BY 1"
    )
    return [r["relname"] for r in rows if r["relname"] not in AUDIT_STORAGE]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_export_holds_every_table_of_the_district_with_a_dictionary_of_every_column(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, users: dict[str, uuid.UUID]
) -> None:
    # (``users`` is read now, before a later test deletes Riverside's accounts.)
    assert "teacher1@riverside.example" in users
    district = _district(db, "Northwind Unified")
    out = tmp_path / "northwind"
    status, report, err = _export(db, district, out, monkeypatch, capsys)
    assert status == 0, err
    manifest = json.loads((out / "export_manifest.json").read_text())
    d = uuid.UUID(district)

    async def expected(conn: Any) -> dict[str, int]:
        counts = {
            t: await conn.fetchval(f'SELECT count(*) FROM "{t}" WHERE district_id = $1', d)
            for t in await _district_tables(conn)
        }
        counts["districts"] = 1
        return counts

    counts = run_as_owner(db, expected)
    exported: dict[str, int] = {}
    for name, entry in manifest["files"].items():
        path = out / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert len(_read(path)) == entry["rows"], name
        exported[entry["table"]] = exported.get(entry["table"], 0) + entry["rows"]
    assert exported == counts  # every table that holds the district's data, every row
    assert counts["users"] > 0 and counts["responses"] > 0 and counts["audit_entries"] >= 0
    students = _read(out / "users_students.csv")
    assert {r["role"] for r in students} == {"STUDENT"} and all(r["district_id"] == district for r in students)
    assert "users_students.csv" in report

    # The dictionary: every column of every file, with its category and meaning.
    dictionary = _read(out / "data_dictionary.csv")
    described = {(r["file"], r["field"]): r for r in dictionary}
    for name in manifest["files"]:
        with (out / name).open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        for column in header:
            entry = described[(name, column)]
            assert entry["meaning"] and entry["meaning"] != UNDOCUMENTED, (name, column)
            assert entry["type"], (name, column)
    category = {(r["file"], r["field"]): r["category"] for r in dictionary}
    assert category[("users_students.csv", "first_name")] == "DIRECTORY"
    assert category[("users_students.csv", "student_number")] == "IDENTIFIER"
    assert category[("users_students.csv", "birth_date")] == "DEMOGRAPHIC"
    assert category[("users_staff.csv", "first_name")] == "STAFF"
    assert category[("users_guardians.csv", "phone")] == "CONTACT"
    assert category[("responses.csv", "answer")] == "WORK"
    assert category[("responses.csv", "score")] == "PERFORMANCE"
    assert category[("device_sessions.csv", "ip_address")] == "DEVICE"
    assert category[("data_requests.csv", "requested_by")] == "CONTACT"
    assert category[("schools.csv", "name")] == ""
    # Every classified field stored in a column is found in the dictionary with the schema's category.
    by_type = {t: f for f, t in FILE_TYPES.items() if f != "guardian_links"}
    for field, declared in field_categories().items():
        type_name, name = field.split(".")
        if type_name not in by_type or field in COMPUTED_FIELDS:
            continue
        column = "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name)
        if type_name == "Guardian" and column == "relationship":
            assert category[("guardian_links.csv", column)] == declared
            continue
        assert category[(f"{by_type[type_name]}.csv", column)] == declared, field


def test_an_export_is_refused_into_a_folder_that_is_not_empty_or_for_an_unknown_district(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _district(db, "Northwind Unified")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    status, _, err = _export(db, district, full, monkeypatch, capsys)
    assert status == 2 and "not an empty folder" in err
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    status, _, err = _export(db, str(uuid.uuid4()), tmp_path / "nobody", monkeypatch, capsys)
    assert status == 2 and "no district has that id" in err
    assert not (tmp_path / "nobody").exists()  # made for the export, and taken away with it
    # A folder that cannot be made: said plainly, never a traceback.
    (tmp_path / "a-file").write_text("")
    status, _, err = _export(db, district, tmp_path / "a-file" / "out", monkeypatch, capsys)
    assert status == 2 and "cannot create" in err and "choose a folder you can write" in err
    assert "Traceback" not in err


async def test_deletion_refuses_when_the_data_changed_after_the_export(db: DatabaseUrls, owner: Any) -> None:
    district = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    users = await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1", district)
    with pytest.raises(RuntimeError, match="changed after the export"):
        await delete_district(owner, district, {"users": users - 1}, "test", __import__("datetime").datetime.now())
    assert await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1", district) == users


def test_export_then_delete_removes_the_district_data_keeps_the_audit_and_certifies_it(
    db: DatabaseUrls, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    riverside = _district(db, "Riverside Unified")
    northwind = _district(db, "Northwind Unified")

    async def counts(conn: Any, district: str) -> dict[str, int]:
        d = uuid.UUID(district)
        return {
            t: await conn.fetchval(f'SELECT count(*) FROM "{t}" WHERE district_id = $1', d)
            for t in await _district_tables(conn)
        }

    northwind_before = run_as_owner(db, lambda c: counts(c, northwind))
    riverside_before = run_as_owner(db, lambda c: counts(c, riverside))
    out = tmp_path / "riverside"
    status, report, err = _export(db, riverside, out, monkeypatch, capsys, "--delete-after")
    assert status == 0, err
    certificate = json.loads((out / "deletion_certificate.json").read_text())
    assert certificate["scope"] == "DISTRICT" and certificate["studentId"] is None
    manifest_digest = hashlib.sha256((out / "export_manifest.json").read_bytes()).hexdigest()
    assert manifest_digest in certificate["reason"]
    body = {k: v for k, v in certificate.items() if k != "digest"}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(raw).hexdigest() == certificate["digest"]
    kept = {"audit_entries", "audit_anchors", "deletion_certificates"}
    for table, rows in riverside_before.items():
        if table not in kept:
            assert certificate["counts"].get(table, 0) == rows, table

    after = run_as_owner(db, lambda c: counts(c, riverside))
    for table, rows in after.items():
        if table in ("deletion_certificates", "audit_entries"):
            # The certificate, and the export's own audit entry (actor OPERATOR).
            assert rows == riverside_before[table] + 1, table
        elif table in kept:
            assert rows == riverside_before[table], table
        else:
            assert rows == 0, table
    assert run_as_owner(db, lambda c: counts(c, northwind)) == northwind_before
    stored = run_as_owner(
        db,
        lambda c: c.fetchrow(
            "SELECT d.contract_ended_at, c.digest FROM districts d JOIN deletion_certificates c "
            "ON c.district_id = d.id AND c.scope = 'DISTRICT' WHERE d.id = $1",
            uuid.UUID(riverside),
        ),
    )
    assert stored["contract_ended_at"] is not None and stored["digest"] == certificate["digest"]
    assert "Certificate" in report

    # The chains still verify, including Riverside's, whose entries were kept.
    reports = run_as_owner(db, lambda c: verify_chains(c, settings.audit_key()))
    assert [r.describe() for r in reports if r.broken is not None] == []


async def test_after_the_deletion_no_one_of_that_district_can_sign_in_and_others_can(
    gql: Gql, users: dict[str, uuid.UUID]
) -> None:
    body = await gql("teacher1@riverside.example", "INSTRUCTION", ROSTER)
    assert error_codes(body) == ["UNAUTHENTICATED"]
    body = await gql("admin@riverside.example", "RECORD_ACCESS", "{ dataRequests { id } }")
    assert error_codes(body) == ["UNAUTHENTICATED"]
    body = await gql("teacher1@northwind.example", "INSTRUCTION", ROSTER)
    assert "errors" not in body and body["data"]["me"]["district"]["schools"]
