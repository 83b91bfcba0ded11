"""`pledgeql retention run [--dry-run]`: what is past each district's periods goes, nothing else.

The command-line tests run the real `pledgeql` entry point in-process against
this module's database; the audit tests call the same job with a clock moved
forward, since audit entries cannot be back-dated without breaking their chain.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.commands.audit_cli import verify_chains
from server.commands.cli import main as cli_main
from server.commands.retention import run_retention
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import Gql, error_codes, run_as_owner

NORTHWIND = "Northwind Unified"
RIVERSIDE = "Riverside Unified"
ROSTER = "{ me { district { schools { classes { students { id firstName } } } } } }"


def _cli(
    argv: list[str], db: DatabaseUrls, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> tuple[int, str, str]:
    monkeypatch.setenv("PLEDGEQL_DATABASE_URL", db.owner)
    monkeypatch.setenv("PLEDGEQL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)
    status = cli_main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def _reported(out: str, district: str, table: str) -> int:
    """The count printed for one district's table."""
    section = out.split(district, 1)[1]
    match = re.search(rf"^\s+{table}\s.*?: (\d+) ", section, re.MULTILINE)
    assert match, (district, table, out)
    return int(match.group(1))


OLD = {"responses": 1200, "activity_events": 400, "device_sessions": 100}
COLUMNS = {"responses": "submitted_at", "activity_events": "occurred_at", "device_sessions": "started_at"}
SETTINGS = {"responses": "responses_days", "activity_events": "activity_days", "device_sessions": "device_days"}


async def _plant_old_rows(conn: Any) -> dict[str, list[uuid.UUID]]:
    """Rows past Northwind's default periods, and one fresh row per table that must stay."""
    district = await conn.fetchval("SELECT id FROM districts WHERE name = $1", NORTHWIND)
    student = await conn.fetchval(
        "SELECT id FROM users WHERE district_id = $1 AND username = 'student3@northwind.example'", district
    )
    item = await conn.fetchval("SELECT id FROM items LIMIT 1")
    now = dt.datetime.now(dt.UTC)
    planted: dict[str, list[uuid.UUID]] = {"old": [], "fresh": []}
    for table, days in OLD.items():
        for age, kind in ((days, "old"), (days, "old"), (1, "fresh")):
            row_id = uuid.uuid4()
            at = now - dt.timedelta(days=age)
            if table == "responses":
                await conn.execute(
                    "INSERT INTO responses (district_id, id, student_id, item_id, answer, correct, score, "
                    "submitted_at) VALUES ($1, $2, $3, $4, 'A', true, 1.0, $5)",
                    district,
                    row_id,
                    student,
                    item,
                    at,
                )
            elif table == "activity_events":
                await conn.execute(
                    "INSERT INTO activity_events (district_id, id, student_id, kind, occurred_at) "
                    "VALUES ($1, $2, $3, 'VIEW', $4)",
                    district,
                    row_id,
                    student,
                    at,
                )
            else:
                await conn.execute(
                    "INSERT INTO device_sessions (district_id, id, student_id, started_at, session_key) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    district,
                    row_id,
                    student,
                    at,
                    f"planted-{row_id}",
                )
            planted[kind].append(row_id)
    return planted


async def _past_retention(conn: Any, district: str) -> dict[str, int]:
    counts = {}
    for table, column in COLUMNS.items():
        setting = SETTINGS[table]
        counts[table] = await conn.fetchval(
            f"SELECT count(*) FROM {table} t JOIN districts d ON d.id = t.district_id "
            f"WHERE d.name = $1 AND t.{column} < now() - make_interval(days => d.{setting})",
            district,
        )
    return counts


async def _exists(conn: Any, ids: list[uuid.UUID]) -> int:
    total = 0
    for table in COLUMNS:
        total += await conn.fetchval(f"SELECT count(*) FROM {table} WHERE id = ANY($1::uuid[])", ids)
    return int(total)


def test_dry_run_prints_per_district_counts_and_deletes_nothing(
    db: DatabaseUrls, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    planted = run_as_owner(db, _plant_old_rows)
    expected = {name: run_as_owner(db, lambda c, n=name: _past_retention(c, n)) for name in (NORTHWIND, RIVERSIDE)}
    assert all(n >= 2 for n in expected[NORTHWIND].values())

    status, out, err = _cli(["retention", "run", "--dry-run"], db, settings.data_dir, monkeypatch, capsys)
    assert status == 0, err
    assert "dry run" in out and "would be deleted" in out
    for name in (NORTHWIND, RIVERSIDE):
        for table in COLUMNS:
            assert _reported(out, name, table) == expected[name][table], (name, table)
        assert _reported(out, name, "audit_entries") == 0
    assert run_as_owner(db, lambda c: _exists(c, planted["old"])) == len(planted["old"])


def test_run_deletes_only_what_is_past_retention_and_a_second_run_deletes_nothing(
    db: DatabaseUrls, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    settings.audit_key()  # the key the server signs its chains with (made on its first start)
    planted = run_as_owner(db, _plant_old_rows)
    expected = run_as_owner(db, lambda c: _past_retention(c, NORTHWIND))
    before_total = run_as_owner(db, lambda c: c.fetchval("SELECT count(*) FROM responses"))

    status, out, err = _cli(["retention", "run"], db, settings.data_dir, monkeypatch, capsys)
    assert status == 0, err
    for table in COLUMNS:
        assert _reported(out, NORTHWIND, table) == expected[table], table
    assert run_as_owner(db, lambda c: _exists(c, planted["old"])) == 0
    assert run_as_owner(db, lambda c: _exists(c, planted["fresh"])) == len(planted["fresh"])
    assert run_as_owner(db, lambda c: _past_retention(c, NORTHWIND)) == dict.fromkeys(COLUMNS, 0)
    after_total = run_as_owner(db, lambda c: c.fetchval("SELECT count(*) FROM responses"))
    assert before_total - after_total == sum(_reported(out, name, "responses") for name in (NORTHWIND, RIVERSIDE))

    status, out, err = _cli(["retention", "run"], db, settings.data_dir, monkeypatch, capsys)
    assert status == 0, err
    assert "Total: 0 rows deleted." in out


def test_a_run_without_the_audit_key_is_refused_and_deletes_nothing(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    planted = run_as_owner(db, _plant_old_rows)
    status, out, err = _cli(["retention", "run"], db, tmp_path / "elsewhere", monkeypatch, capsys)
    assert status == 2 and "audit key" in err and "--dry-run" in err
    assert not (tmp_path / "elsewhere" / "audit_key").exists()
    assert run_as_owner(db, lambda c: _exists(c, planted["old"])) == len(planted["old"])
    status, out, err = _cli(["retention", "run", "--dry-run"], db, tmp_path / "elsewhere", monkeypatch, capsys)
    assert status == 0 and "would be deleted" in out


async def test_old_audit_entries_go_as_a_prefix_with_a_signed_anchor_and_the_chain_still_verifies(
    gql: Gql, owner: Any, settings: Settings, db: DatabaseUrls
) -> None:
    riverside = await owner.fetchval("SELECT id FROM districts WHERE name = $1", RIVERSIDE)
    for _ in range(3):
        body = await gql("teacher1@riverside.example", "INSTRUCTION", ROSTER)
        assert "errors" not in body
    entries = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", riverside)
    assert entries >= 6
    await owner.execute("UPDATE districts SET audit_days = 5 WHERE id = $1", riverside)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    key = settings.audit_key()

    dry = await run_retention(db.owner, now=later, dry_run=True, key=None, default_audit_days=2557)
    assert dry.counts()[(riverside, "audit_entries")] == entries
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", riverside) == entries

    report = await run_retention(db.owner, now=later, dry_run=False, key=key, default_audit_days=2557, batch=4)
    assert report.counts()[(riverside, "audit_entries")] == entries
    # What is left is the run's own entry (API.md section 3), chained onto the anchor.
    left = await owner.fetch("SELECT actor_role, operation_name FROM audit_entries WHERE district_id = $1", riverside)
    assert [tuple(r) for r in left] == [("OPERATOR", "pledgeql retention run")]
    anchor = await owner.fetchrow("SELECT * FROM audit_anchors WHERE district_id = $1", riverside)
    assert anchor["removed"] == entries

    # The chain continues from its anchor and verifies; so do the other districts' chains.
    body = await gql("teacher1@riverside.example", "INSTRUCTION", ROSTER)
    assert "errors" not in body
    first = await owner.fetchrow(
        "SELECT seq, prev_hash FROM audit_entries WHERE district_id = $1 ORDER BY seq LIMIT 1", riverside
    )
    assert first["seq"] == anchor["seq"] + 1 and first["prev_hash"] == anchor["hash"]
    reports = await verify_chains(owner, key)
    assert [r.describe() for r in reports if r.broken is not None] == []
    await owner.execute("UPDATE districts SET audit_days = 2557 WHERE id = $1", riverside)


async def test_retention_runs_while_requests_are_served(
    gql: Gql, owner: Any, settings: Settings, db: DatabaseUrls
) -> None:
    northwind = await owner.fetchval("SELECT id FROM districts WHERE name = $1", NORTHWIND)
    for _ in range(4):
        assert "errors" not in await gql("teacher1@northwind.example", "INSTRUCTION", ROSTER)
    await owner.execute("UPDATE districts SET audit_days = 1 WHERE id = $1", northwind)
    key = settings.audit_key()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)

    async def serve() -> list[dict[str, Any]]:
        bodies = []
        for _ in range(15):
            bodies.append(await gql("teacher1@northwind.example", "INSTRUCTION", ROSTER))
        return bodies

    bodies, report = await asyncio.gather(
        serve(), run_retention(db.owner, now=later, dry_run=False, key=key, default_audit_days=2557, batch=2)
    )
    assert [error_codes(b) for b in bodies] == [[]] * len(bodies)
    assert all(b["data"]["me"]["district"]["schools"] for b in bodies)
    assert report.counts()[(northwind, "audit_entries")] > 0
    reports = await verify_chains(owner, key)
    assert [r.describe() for r in reports if r.broken is not None] == []
    await owner.execute("UPDATE districts SET audit_days = 2557 WHERE id = $1", northwind)


def test_audit_verify_passes_after_retention(
    db: DatabaseUrls, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    status, out, err = _cli(["audit", "verify"], db, settings.data_dir, monkeypatch, capsys)
    assert status == 0, err
    assert "retention anchor" in out


async def test_a_period_further_back_than_any_date_keeps_everything_rather_than_failing_the_run(
    owner: Any, db: DatabaseUrls
) -> None:
    """The API takes at most 100 years; a longer period stored before (or by hand) removes nothing."""
    riverside = await owner.fetchval("SELECT id FROM districts WHERE name = $1", RIVERSIDE)
    kept = await owner.fetchrow("SELECT audit_days, responses_days FROM districts WHERE id = $1", riverside)
    await owner.execute(
        "UPDATE districts SET audit_days = 2147483647, responses_days = 2147483647 WHERE id = $1", riverside
    )
    try:
        now = dt.datetime.now(dt.UTC)
        dry = await run_retention(db.owner, now=now, dry_run=True, key=None, default_audit_days=2557)
        counts = dry.counts()
        assert counts[(riverside, "audit_entries")] == 0 and counts[(riverside, "responses")] == 0
    finally:
        await owner.execute(
            "UPDATE districts SET audit_days = $2, responses_days = $3 WHERE id = $1",
            riverside,
            kept["audit_days"],
            kept["responses_days"],
        )
