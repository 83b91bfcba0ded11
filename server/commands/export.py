"""`pledgeql export --district ID --out DIR [--delete-after]`: a district's data at the end of its contract.

Writes every table that holds the district's data (every table with a
``district_id`` column, found in the database catalog, plus the district's
own row) as CSV into DIR, from one consistent snapshot. ``users`` is written
as three files, students, staff and guardians, so that each column has one
data category. Beside them:

- ``data_dictionary.csv``: file, field, type, category, meaning. Categories
  come from the schema's ``@classified`` declarations
  (``schema.catalog.category_fields()``), matched to columns by name, and from
  the few stored columns the API does not show (COLUMN_CATEGORIES);
- ``export_manifest.json``: rows and sha256 of every file;
- ``README.txt``: what the export is and how to read it.

Text cells that begin with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return are written with a leading apostrophe so that no spreadsheet runs
them as a formula (OWASP's CSV injection guidance); numbers, and text that
is a plain number, are written as they are. The data dictionary says so.

The export is itself audited (API.md section 3): before it reads, one entry
in the district's chain, actorRole OPERATOR, operationName
``pledgeql export``, purpose RECORD_ACCESS, the tables as fields.

Then, with ``--delete-after`` (the operator's end-of-contract step), the
district's data is deleted in one transaction, once the export is checked
and only if nothing changed since the snapshot; audit entries, their
retention anchors and deletion certificates are kept (API.md section 3),
and so is the district's row, marked ``contract_ended_at`` because it holds
the retention settings of what is kept. A deletion certificate (scope
DISTRICT, counts per table, sha256 over its canonical JSON) is stored and
written to DIR/deletion_certificate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import getpass
import hashlib
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from server.settings import Settings

# Kept when a district's data is deleted (API.md section 3).
KEPT = frozenset({"audit_entries", "audit_anchors", "deletion_certificates"})
NIL = uuid.UUID(int=0)
USER_FILES = {"STUDENT": "users_students", "STAFF": "users_staff", "GUARDIAN": "users_guardians"}
STAFF_ROLES = ("TEACHER", "SCHOOL_ADMIN", "DISTRICT_ADMIN")
# Which GraphQL type a file's columns are fields of (camelCase column = field name).
FILE_TYPES = {
    "users_students": "Student",
    "users_staff": "Staff",
    "users_guardians": "Guardian",
    "responses": "Response",
    "activity_events": "ActivityEvent",
    "device_sessions": "DeviceSession",
    "data_requests": "DataRequest",
    "guardian_links": "Guardian",
    "student_progress": "StudentProgress",
}
# Stored columns the API does not show, or shows under another name.
COLUMN_CATEGORIES = {
    ("users_students", "sourced_id"): "IDENTIFIER",
    ("users_students", "phone"): "IDENTIFIER",
    ("users_staff", "sourced_id"): "STAFF",
    ("users_staff", "username"): "STAFF",
    ("users_staff", "phone"): "STAFF",
    ("users_guardians", "sourced_id"): "CONTACT",
    ("users_guardians", "username"): "CONTACT",
    ("activity_events", "session_key"): "USAGE",
    ("device_sessions", "session_key"): "DEVICE",
    ("corrections", "previous"): "DIRECTORY, DEMOGRAPHIC",
    ("corrections", "corrected"): "DIRECTORY, DEMOGRAPHIC",
    ("corrections", "statement_of_disagreement"): "DIRECTORY, DEMOGRAPHIC",
}
# Columns of users that are not personal data of any role.
ACCOUNT_COLUMNS = frozenset(
    {"district_id", "id", "role", "disabled", "school_id", "created_at", "updated_at", "roster_modified_at"}
)
# Fields that are relationships or computed, not stored columns.
COMPUTED_FIELDS = frozenset(
    {"Student.progress", "Student.responses", "Student.activity", "Student.deviceSessions", "Student.guardians"}
)
UNDOCUMENTED = "(no description: add one to server/commands/export.py MEANINGS)"

MEANINGS: dict[str, str] = {
    "district_id": "The district the row belongs to.",
    "id": "The row's identifier.",
    "name": "Name of the district, school or class.",
    "sourced_id": "The record's key in the district's student information system (OneRoster sourcedId).",
    "roster_modified_at": "When the student information system last changed the record (OneRoster).",
    "created_at": "When the row was created.",
    "updated_at": "When the row was last changed.",
    "student_id": "The student the row is about.",
    "school_id": "The school.",
    "class_id": "The class.",
    "teacher_id": "The teacher.",
    "guardian_id": "The guardian.",
    "role": "The account's role.",
    "username": "The name the person signs in with.",
    "disabled": "The account cannot sign in.",
    "first_name": "First name.",
    "last_name": "Last name.",
    "email": "Email address.",
    "phone": "Phone number.",
    "preferred_name": "The name the student prefers to be called.",
    "grade_level": "Grade level.",
    "student_number": "The student's number in the district's records.",
    "state_id": "The student's state identifier.",
    "gender": "Gender.",
    "birth_date": "Date of birth.",
    "ethnicity": "Race and ethnicity.",
    "english_learner": "English learner status.",
    "special_education": "Special education status.",
    "economically_disadvantaged": "Economic disadvantage status.",
    "learning_level": "The student's learning level.",
    "last_active_at": "When the student last used the service.",
    "relationship": "The guardian's relationship to the student.",
    "subject": "Subject.",
    "begin_date": "First day of the enrollment.",
    "end_date": "Last day of the enrollment (empty: ongoing).",
    "assessment_id": "The assessment (platform content).",
    "title": "Title.",
    "due_at": "When the assignment is due.",
    "created_by": "The staff member who created it.",
    "item_id": "The question answered (platform content).",
    "assignment_id": "The assignment the answer was for.",
    "answer": "The student's answer.",
    "correct": "Whether the answer was correct.",
    "score": "The answer's score (0 to 1).",
    "feedback": "Feedback shown to the student.",
    "time_spent_seconds": "Seconds spent on the question.",
    "submitted_at": "When the answer was submitted.",
    "idempotency_key": "The client's key for the submission, so a retry is not stored twice.",
    "kind": "What happened.",
    "target": "What the student viewed or used.",
    "occurred_at": "When it happened.",
    "duration_ms": "How long it lasted, in milliseconds.",
    "session_key": "The client's session the row was recorded in.",
    "started_at": "When the device session started.",
    "ip_address": "IP address.",
    "user_agent": "The browser's user agent.",
    "browser": "Browser.",
    "operating_system": "Operating system.",
    "device_type": "Type of device.",
    "referrer": "The page the student came from.",
    "analytics_opt_out": "The family opted the student out of product analytics.",
    "updated_by": "Who last changed it.",
    "ticket": "The support ticket the grant was opened for.",
    "granted_by": "The administrator who opened the grant.",
    "expires_at": "When the grant ends.",
    "revoked_at": "When the grant was revoked.",
    "user_ids": "The users the grant covers (empty: everyone in the district).",
    "requested_by": "Who made the request.",
    "received_at": "When the request was received.",
    "status": "The request's status.",
    "fulfilled_at": "When the request was fulfilled.",
    "data_request_id": "The data request this answered.",
    "previous": "The values before the correction.",
    "corrected": "The values after the correction.",
    "statement_of_disagreement": "The family's statement of disagreement, disclosed with the record.",
    "corrected_by": "Who made the correction.",
    "corrected_at": "When the correction was made.",
    "deleted_at": "When the record was deleted.",
    "deleted_by": "Who deleted it.",
    "reason": "Why it was deleted.",
    "counts": "Rows deleted, per table.",
    "digest": "sha256 over the certificate's canonical JSON.",
    "scope": "STUDENT (one student's record) or DISTRICT (the whole district's data).",
    "operator": "The operator who ran a command-line deletion.",
    "seq": "The entry's position in the district's audit chain.",
    "at": "When the access happened.",
    "request_id": "The server's identifier of the request.",
    "client_request_id": "The identifier the client sent for its request (X-Request-Id), if any.",
    "trace_id": "The request's OpenTelemetry trace identifier.",
    "actor_id": "Who read or changed the data.",
    "actor_role": "Their role.",
    "purpose": "The purpose they declared.",
    "justification": "The reason given (required for legal compliance).",
    "operation_name": "The client's name for the operation.",
    "subject_student_id": "The student whose data it was (empty: no single student).",
    "fields": "The fields read or changed (never their values).",
    "categories": "Their data categories.",
    "decision": "Allowed or denied.",
    "break_glass": "A legal-compliance access, marked for review.",
    "prev_hash": "Hash of the previous entry (tamper evidence).",
    "hash": "This entry's keyed hash (tamper evidence).",
    "mac": "The anchor's keyed signature.",
    "removed": "How many of the oldest entries retention removed.",
    "removed_at": "When retention last removed entries.",
    "contract_ended_at": "When the district's data was exported and deleted.",
    "authorized_purposes": "Purposes the district authorized.",
    "collect_usage": "Whether usage data is collected.",
    "collect_device": "Whether device data is collected.",
    "collect_demographics": "Whether demographic data is collected.",
    "direct_record_access": "Whether students and guardians may see records directly.",
    "minimum_group_size": "Smallest group shown in reports.",
    "responses_days": "Days answers are kept.",
    "activity_days": "Days activity is kept.",
    "device_days": "Days device sessions are kept.",
    "audit_days": "Days audit entries are kept.",
    "accepted_policy_version": "The privacy policy version the district accepted.",
}
TABLE_MEANINGS = {
    ("audit_anchors", "seq"): "The last audit entry retention removed.",
    ("audit_anchors", "hash"): "That entry's hash, from which the chain continues.",
    ("audit_anchors", "at"): "That entry's time.",
    ("classes", "grade_level"): "Grade levels of the class.",
    ("data_requests", "kind"): "ACCESS, CORRECTION or DELETION.",
    ("deletion_certificates", "student_id"): "The student whose record was deleted (empty: the whole district).",
    ("report_student_totals", "responses"): "How many answers the student has submitted (kept for reports).",
    ("report_student_totals", "score_sum"): "The sum of the scores of those answers (kept for reports).",
    ("report_student_totals", "correct"): "How many of those answers were correct (kept for reports).",
    ("student_progress", "responses_submitted"): "How many answers the student has submitted.",
    ("student_progress", "average_score"): "The average score of those answers.",
    ("student_progress", "percent_correct"): "The percentage of them that were correct.",
    ("student_progress", "assignments_completed"): "How many assignments the student answered every item of.",
    ("student_progress", "mastery"): "The average score per skill.",
}

CATALOG = """
SELECT c.relname AS table_name,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns,
       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS types
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND NOT c.relispartition
  AND (c.relkind IN ('r', 'p') OR c.relname = 'audit_entries')
  AND c.relname NOT IN ('audit_records', 'audit_entries_v1', 'audit_heads')
  AND (c.relname = 'districts' OR EXISTS (
      SELECT 1 FROM pg_attribute d WHERE d.attrelid = c.oid AND d.attname = 'district_id' AND NOT d.attisdropped))
GROUP BY c.relname
ORDER BY c.relname
"""
FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE c.contype = 'f' AND n.nspname = 'public' AND c.conrelid <> c.confrelid
"""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


FORMULA_NOTE = (
    "A text cell that begins with =, +, -, @, a tab or a carriage return is written with a leading ' "
    "(an apostrophe) so that no spreadsheet runs it as a formula; remove that first apostrophe to get the "
    "stored value. Numbers, and text that is a plain number such as -5, are written as they are."
)
# Column types whose values are text (format_type's names, without a length).
TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
# A text cell a spreadsheet would run: its first character, unless the whole cell is a plain number.
_FORMULA = "left({c}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) AND {c} !~ '^[-+]?[0-9]+([.][0-9]+)?$'"


def is_text_type(kind: str) -> bool:
    return kind.split("(", 1)[0].strip() in TEXT_TYPES


def neutralised(column: str, kind: str) -> str:
    """A column's SELECT expression: text a spreadsheet would run as a formula gets a leading apostrophe."""
    name = quote_ident(column)
    if not is_text_type(kind):
        return name
    return f"CASE WHEN {_FORMULA.format(c=name)} THEN chr(39) || {name} ELSE {name} END AS {name}"


@dataclass
class ExportFile:
    name: str
    table: str
    columns: list[str]
    types: list[str]
    where: str  # SQL over $1 (the district), from constants here
    rows: int = 0
    sha256: str = ""


@dataclass
class ExportResult:
    district_id: uuid.UUID
    district_name: str
    out: Path
    files: list[ExportFile] = field(default_factory=list)
    certificate: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        """Rows per table (users summed over its three files)."""
        totals: dict[str, int] = {}
        for f in self.files:
            totals[f.table] = totals.get(f.table, 0) + f.rows
        return totals


def field_categories() -> dict[str, str]:
    """``Type.field`` -> category, from the schema's @classified declarations."""
    from schema.catalog import category_fields

    return {name: category for category, names in category_fields().items() for name in names}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def category_of(file: str, column: str, categories: dict[str, str]) -> str:
    """A column's data category, or "" for none."""
    override = COLUMN_CATEGORIES.get((file, column))
    if override is not None:
        return override
    type_name = FILE_TYPES.get(file)
    if type_name is not None:
        found = categories.get(f"{type_name}.{_camel(column)}")
        if found is not None:
            return found
    if file.startswith("users_") and column not in ACCOUNT_COLUMNS:
        # A personal column of a person that the API does not show: the
        # person's own category, never "none".
        return {"users_students": "DIRECTORY", "users_staff": "STAFF", "users_guardians": "CONTACT"}[file]
    return ""


def meaning_of(table: str, column: str) -> str:
    return TABLE_MEANINGS.get((table, column)) or MEANINGS.get(column) or UNDOCUMENTED


async def plan_files(conn: Any) -> list[ExportFile]:
    files: list[ExportFile] = []
    for row in await conn.fetch(CATALOG):
        table, columns, types = row["table_name"], list(row["columns"]), list(row["types"])
        if table == "districts":
            files.append(ExportFile("district", table, columns, types, "id = $1"))
        elif table == "users":
            files.append(ExportFile("users_students", table, columns, types, "district_id = $1 AND role = 'STUDENT'"))
            files.append(
                ExportFile(
                    "users_staff",
                    table,
                    columns,
                    types,
                    "district_id = $1 AND role IN ('TEACHER', 'SCHOOL_ADMIN', 'DISTRICT_ADMIN')",
                )
            )
            files.append(ExportFile("users_guardians", table, columns, types, "district_id = $1 AND role = 'GUARDIAN'"))
        else:
            files.append(ExportFile(table, table, columns, types, "district_id = $1"))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def _primary_key(conn: Any, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        quote_ident(table),
    )
    return [r["attname"] for r in rows]


async def export_district(conn: Any, district_id: uuid.UUID, out: Path) -> ExportResult:
    """Every table of the district as CSV, from one snapshot, with the dictionary and manifest."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        district = await conn.fetchrow("SELECT name FROM districts WHERE id = $1", district_id)
        if district is None:
            raise LookupError("no district has that id")
        result = ExportResult(district_id, district["name"], out)
        result.files = await plan_files(conn)
        for f in result.files:
            keys = await _primary_key(conn, f.table)
            order = ", ".join(quote_ident(c) for c in keys) or ("seq" if f.table == "audit_entries" else "1")
            path = out / f"{f.name}.csv"
            # Table and column names come from the catalog; the district is a bind parameter.
            columns = ", ".join(neutralised(c, t) for c, t in zip(f.columns, f.types, strict=True))
            query = f"SELECT {columns} FROM {quote_ident(f.table)} WHERE {f.where} ORDER BY {order}"  # noqa: S608
            status = await conn.copy_from_query(query, district_id, output=str(path), format="csv", header=True)
            f.rows = int(status.rsplit(" ", 1)[-1])
            f.sha256 = _sha256(path)
    categories = field_categories()
    with (out / "data_dictionary.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "field", "type", "category", "meaning"])
        writer.writerow(["(every file)", "(text cells)", "text", "", FORMULA_NOTE])
        for f in result.files:
            for column, kind in zip(f.columns, f.types, strict=True):
                writer.writerow(
                    [
                        f"{f.name}.csv",
                        column,
                        kind,
                        category_of(f.name, column, categories),
                        meaning_of(f.table, column),
                    ]
                )
    manifest = {
        "district": {"id": str(district_id), "name": result.district_name},
        "files": {f"{f.name}.csv": {"table": f.table, "rows": f.rows, "sha256": f.sha256} for f in result.files},
    }
    (out / "export_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(_readme(result), encoding="utf-8")
    return result


def _readme(result: ExportResult) -> str:
    return (
        f"Data export of district {result.district_name} ({result.district_id}).\n\n"
        "Each CSV file holds one table of the district's data (users are split into students, staff and "
        "guardians), with a header row, in UTF-8. data_dictionary.csv says, for every column of every file, "
        "its type, its data category (the privacy policy's categories: DIRECTORY, IDENTIFIER, DEMOGRAPHIC, "
        "PERFORMANCE, WORK, USAGE, DEVICE, STAFF, CONTACT; empty for none) and what it means. "
        "export_manifest.json lists every file with its row count and sha256.\n\n"
        "Questions (items) and assessments are the platform's content, not the district's data: answers refer "
        "to them by id. The audit entries record who read or changed which fields, never the values.\n\n"
        + FORMULA_NOTE
        + "\n"
    )


def _delete_order(tables: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Children before parents (foreign keys), so every DELETE is allowed."""
    remaining = set(tables)
    order: list[str] = []
    while remaining:
        ready = sorted(t for t in remaining if not any(c in remaining and p == t and c != t for c, p in edges))
        if not ready:
            raise RuntimeError("foreign keys between the district's tables form a cycle; delete by hand")
        order.extend(ready)
        remaining -= set(ready)
    return order


async def delete_district(
    conn: Any, district_id: uuid.UUID, exported: dict[str, int], reason: str, now: dt.datetime
) -> dict[str, Any]:
    """Delete the district's data, as exported, and store the certificate; return its canonical body."""
    from resolvers.rights import DERIVED_FROM, certificate_body, certificate_digest, insert_certificate

    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        files = await plan_files(conn)
        tables = sorted({f.table for f in files} - KEPT - {"districts"})
        # Nothing may have changed since the snapshot the export was made from.
        for table in tables:
            current = await conn.fetchval(
                f"SELECT count(*) FROM {quote_ident(table)} WHERE district_id = $1",  # noqa: S608
                district_id,
            )
            if current != exported.get(table, 0):
                raise RuntimeError(
                    f"{table} changed after the export ({exported.get(table, 0)} rows exported, {current} now); "
                    "stop the district's traffic, export again, then delete"
                )
        edges = [(r["child"], r["parent"]) for r in await conn.fetch(FOREIGN_KEYS)] + list(DERIVED_FROM.items())
        counts: dict[str, int] = {}
        for table in _delete_order(tables, edges):
            status = await conn.execute(
                f"DELETE FROM {quote_ident(table)} WHERE district_id = $1",  # noqa: S608
                district_id,
            )
            counts[table] = int(status.rsplit(" ", 1)[-1])
        await conn.execute("UPDATE districts SET contract_ended_at = $2 WHERE id = $1", district_id, now)
        body = certificate_body(
            certificate_id=uuid.uuid4(),
            scope="DISTRICT",
            district_id=district_id,
            student_id=None,
            deleted_at=now,
            deleted_by=NIL,
            reason=reason,
            counts=counts,
            data_request_id=None,
            operator=getpass.getuser(),
        )
        digest = certificate_digest(body)
        await insert_certificate(conn, body, digest)
    return {**body, "digest": digest}


def _check_files(result: ExportResult) -> None:
    """The files on disk are the ones the manifest describes (before anything is deleted)."""
    for f in result.files:
        path = result.out / f"{f.name}.csv"
        with path.open(newline="", encoding="utf-8") as handle:
            rows = sum(1 for _ in csv.reader(handle)) - 1
        if rows != f.rows or _sha256(path) != f.sha256:
            raise RuntimeError(f"{path.name} does not match what was exported; nothing was deleted")


async def audit_export(conn: Any, key: bytes, district_id: uuid.UUID) -> None:
    """The export's own audit entry, committed before anything is read: no entry, no export."""
    from permissions.enums import DataCategory, Purpose
    from server.commands.operator_audit import record_operator_command

    async with conn.transaction():
        if await conn.fetchval("SELECT count(*) FROM districts WHERE id = $1", district_id) == 0:
            raise LookupError("no district has that id")
        tables = sorted({f.table for f in await plan_files(conn)})
        await record_operator_command(
            conn,
            key,
            "pledgeql export",
            Purpose.RECORD_ACCESS,
            {district_id: tables},
            {district_id: list(DataCategory)},
        )


async def run_export(
    owner_url: str, district_id: uuid.UUID, out: Path, *, delete_after: bool, report: TextIO, key: bytes
) -> ExportResult:
    from server.db import connect

    conn = await connect(owner_url)
    try:
        await audit_export(conn, key, district_id)
        result = await export_district(conn, district_id, out)
        print(f"Exported district {result.district_name} ({district_id}) to {out}:", file=report)
        for f in result.files:
            print(f"  {f.name + '.csv':<28} {f.rows:>9} rows", file=report)
        print("  data_dictionary.csv, export_manifest.json, README.txt", file=report)
        if delete_after:
            _check_files(result)
            manifest_digest = _sha256(out / "export_manifest.json")
            reason = (
                f"End of contract: the district's data was exported (export_manifest.json sha256 {manifest_digest}) "
                "and deleted"
            )
            certificate = await delete_district(conn, district_id, result.counts(), reason, dt.datetime.now(dt.UTC))
            result.certificate = certificate
            text = json.dumps(certificate, indent=2, sort_keys=True)
            (out / "deletion_certificate.json").write_text(text + "\n", encoding="utf-8")
            print(
                "Deleted the district's data; kept its audit entries, retention anchors and deletion certificates, "
                "and its settings row (contract_ended_at set). Certificate (also in deletion_certificate.json):",
                file=report,
            )
            print(text, file=report)
    finally:
        await conn.close()
    return result


def command(settings: Settings, args: argparse.Namespace) -> int:
    from server.db import server_urls

    try:
        district_id = uuid.UUID(args.district)
    except ValueError:
        print("pledgeql export: --district must be a district id (a UUID)", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"pledgeql export: {out} exists and is not an empty folder; choose a new or empty one", file=sys.stderr)
        return 2
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(
            f"pledgeql export: cannot create {out} ({error.strerror}); choose a folder you can write", file=sys.stderr
        )
        return 2
    try:
        url = server_urls(settings).owner
        asyncio.run(
            run_export(
                url,
                district_id,
                out,
                delete_after=bool(getattr(args, "delete_after", False)),
                report=sys.stdout,
                key=settings.audit_key(),
            )
        )
    except LookupError as error:
        if created and not any(out.iterdir()):
            out.rmdir()  # made for this export, which exported nothing
        print(f"pledgeql export: {error}; nothing was exported", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"pledgeql export: {error}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as error:
        print(
            f"pledgeql export: cannot reach the database or write the files ({type(error).__name__}); "
            "check PLEDGEQL_DATABASE_URL and the --out folder; nothing was deleted",
            file=sys.stderr,
        )
        return 2
    return 0
