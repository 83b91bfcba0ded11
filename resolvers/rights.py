"""Families' rights in SQL: data requests, the student's whole record, correction,
deletion with its certificate, and consent.

Which tables hold a student's data is read from the database catalog, not
from a list kept here: every table with a ``student_id`` or
``subject_student_id`` column is part of the record. A table added later is
exported (under ``otherRecords``) and deleted with the student without anyone
remembering to, or, if the application role may not touch it, the export or
deletion fails rather than silently leaving it out.

Everything runs on the request's connection, inside its transaction, under
row-level security: only the caller's district is reachable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resolvers.audit_log import AuditFilters, audit_page
from resolvers.db import Db
from resolvers.reads import Row

# Columns that tie a row to a student.
STUDENT_COLUMNS = ("student_id", "subject_student_id")
# Tables whose rows are kept when a student's record is deleted: the record
# of disclosures (API.md section 3) and the certificates themselves.
KEPT_ON_DELETION = frozenset({"audit_entries", "deletion_certificates"})
# Tables whose rows stay but lose their personal fields on deletion: the
# district's record that a request was made and answered.
SCRUBBED_ON_DELETION = {"data_requests": {"requested_by": "(removed with the student's record)"}}
REQUEST_DUE_DAYS = 45
# Tables kept from another by triggers (migrations 0008, 0018): deleted before it, so that a
# deletion counts their rows itself instead of the triggers removing them on the way.
DERIVED_FROM = {"report_student_totals": "responses", "student_progress": "responses"}

CATALOG = """
SELECT c.relname AS table_name, a.attname AS column_name
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($1::text[])
  AND c.relname <> ALL($2::text[])
ORDER BY c.relname, a.attname
"""
# The audit trail's storage (migration 0013): a student's entries are read
# through resolvers.audit_log, by the subjects' index, as "audit_entries".
AUDIT_STORAGE = ("audit_entries_v1", "audit_records", "audit_heads")


def quote_ident(name: str) -> str:
    """A catalog name as an SQL identifier (names come from pg_class, never from input)."""
    return '"' + name.replace('"', '""') + '"'


async def student_tables(db: Db) -> list[tuple[str, str]]:
    """(table, column) for every table with a column that names a student."""
    rows = await db.fetch(CATALOG, list(STUDENT_COLUMNS), list(AUDIT_STORAGE))
    return [(r["table_name"], r["column_name"]) for r in rows]


# ------------------------------------------------------------------ requests


async def insert_data_request(
    db: Db, district_id: uuid.UUID, kind: str, student_id: uuid.UUID, requested_by: str, now: dt.datetime
) -> Row:
    row: Row = await db.fetchrow(
        "INSERT INTO data_requests (district_id, id, kind, student_id, requested_by, received_at, due_at, status) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 'OPEN') RETURNING *",
        district_id,
        uuid.uuid4(),
        kind,
        student_id,
        requested_by,
        now,
        now + dt.timedelta(days=REQUEST_DUE_DAYS),
    )
    return row


async def data_requests(db: Db, district_id: uuid.UUID, status: str | None) -> list[Row]:
    if status is None:
        return await db.fetch(
            "SELECT * FROM data_requests WHERE district_id = $1 ORDER BY due_at, received_at, id", district_id
        )
    return await db.fetch(
        "SELECT * FROM data_requests WHERE district_id = $1 AND status = $2 ORDER BY due_at, received_at, id",
        district_id,
        status,
    )


async def data_request_for_update(db: Db, district_id: uuid.UUID, request_id: uuid.UUID) -> Row | None:
    row: Row | None = await db.fetchrow(
        "SELECT * FROM data_requests WHERE district_id = $1 AND id = $2 FOR UPDATE", district_id, request_id
    )
    return row


async def close_open_requests(db: Db, district_id: uuid.UUID, student_id: uuid.UUID, now: dt.datetime) -> None:
    """Every open request about the student, closed by the deletion under way: a DELETION is
    fulfilled by it; an ACCESS or CORRECTION request can no longer be carried out (nothing is
    left to export or correct), so it is REJECTED, never left open about a record that is gone."""
    await db.execute(
        "UPDATE data_requests SET "
        "status = CASE WHEN kind = 'DELETION' THEN 'FULFILLED' ELSE 'REJECTED' END, "
        "fulfilled_at = CASE WHEN kind = 'DELETION' THEN $3::timestamptz END "
        "WHERE district_id = $1 AND student_id = $2 AND status = 'OPEN'",
        district_id,
        student_id,
        now,
    )


async def fulfil_data_request(db: Db, district_id: uuid.UUID, request_id: uuid.UUID, now: dt.datetime) -> None:
    await db.execute(
        "UPDATE data_requests SET status = 'FULFILLED', fulfilled_at = $3 WHERE district_id = $1 AND id = $2",
        district_id,
        request_id,
        now,
    )


# ------------------------------------------------------------------ students


async def lock_student(db: Db, district_id: uuid.UUID, student_id: uuid.UUID) -> Row | None:
    """The student's row, locked until the transaction ends: a concurrent write
    that references the student waits, so counts and exports are exact."""
    row: Row | None = await db.fetchrow(
        "SELECT * FROM users WHERE district_id = $1 AND id = $2 AND role = 'STUDENT' FOR UPDATE",
        district_id,
        student_id,
    )
    return row


async def correct_student(
    db: Db,
    district_id: uuid.UUID,
    student_id: uuid.UUID,
    changes: Mapping[str, Any],
    previous: Mapping[str, Any],
    corrected: Mapping[str, Any],
    statement: str | None,
    data_request_id: uuid.UUID | None,
    corrected_by: uuid.UUID,
    now: dt.datetime,
) -> Row:
    """Apply ``changes`` (column -> value, columns from a fixed list) and keep
    the previous and corrected values (by field name) and the statement in
    ``corrections``."""
    row: Row
    if changes:
        columns = list(changes)
        assignments = ", ".join(f"{quote_ident(c)} = ${i + 4}" for i, c in enumerate(columns))
        row = await db.fetchrow(
            f"UPDATE users SET {assignments}, updated_at = $3 WHERE district_id = $1 AND id = $2 RETURNING *",
            district_id,
            student_id,
            now,
            *[changes[c] for c in columns],
        )
    else:
        row = await db.fetchrow("SELECT * FROM users WHERE district_id = $1 AND id = $2", district_id, student_id)
    await db.execute(
        "INSERT INTO corrections (district_id, id, student_id, data_request_id, previous, corrected, "
        "statement_of_disagreement, corrected_by, corrected_at) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9)",
        district_id,
        uuid.uuid4(),
        student_id,
        data_request_id,
        json.dumps({k: plain(v) for k, v in previous.items()}, sort_keys=True),
        json.dumps({k: plain(v) for k, v in corrected.items()}, sort_keys=True),
        statement,
        corrected_by,
        now,
    )
    return row


async def set_consent(
    db: Db, district_id: uuid.UUID, student_id: uuid.UUID, opt_out: bool, by: uuid.UUID, now: dt.datetime
) -> Row:
    row: Row = await db.fetchrow(
        "INSERT INTO consents (district_id, student_id, analytics_opt_out, updated_at, updated_by) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (district_id, student_id) DO UPDATE SET "
        "analytics_opt_out = excluded.analytics_opt_out, updated_at = excluded.updated_at, "
        "updated_by = excluded.updated_by RETURNING *",
        district_id,
        student_id,
        opt_out,
        now,
        by,
    )
    return row


# --------------------------------------------------------------- the record


@dataclass
class StudentRecord:
    """Every row held about one student, by table, with what makes it readable."""

    student: Row
    tables: dict[str, list[Row]]  # table -> rows naming the student
    school: Row | None
    classes: dict[uuid.UUID, Row]
    items: dict[uuid.UUID, Row]
    assignments: dict[uuid.UUID, Row]
    guardians: dict[uuid.UUID, Row]
    support_grants: list[Row]


async def gather_record(db: Db, district_id: uuid.UUID, student: Row) -> StudentRecord:
    student_id = student["id"]
    tables: dict[str, list[Row]] = {}
    for table, column in await student_tables(db):
        tables.setdefault(table, []).extend(
            await db.fetch(
                f"SELECT * FROM {quote_ident(table)} WHERE district_id = $1 AND {quote_ident(column)} = $2 ORDER BY 1",
                district_id,
                student_id,
            )
        )
    # Oldest first, every one (the page is the whole record of disclosures).
    entries = await audit_page(db, district_id, AuditFilters(subject=student_id), None, 2**62)
    tables["audit_entries"] = entries[::-1]
    school = None
    if student["school_id"] is not None:
        school = await db.fetchrow(
            "SELECT * FROM schools WHERE district_id = $1 AND id = $2", district_id, student["school_id"]
        )
    class_ids = list({r["class_id"] for r in tables.get("enrollments", [])})
    responses = tables.get("responses", [])
    item_ids = list({r["item_id"] for r in responses})
    assignment_ids = list({r["assignment_id"] for r in responses if r["assignment_id"] is not None})
    guardian_ids = list({r["guardian_id"] for r in tables.get("guardian_links", [])})
    classes = await db.fetch(
        "SELECT * FROM classes WHERE district_id = $1 AND id = ANY($2::uuid[])", district_id, class_ids
    )
    items = await db.fetch("SELECT id, prompt, skill FROM items WHERE id = ANY($1::uuid[])", item_ids)
    assignments = await db.fetch(
        "SELECT * FROM assignments WHERE district_id = $1 AND id = ANY($2::uuid[])", district_id, assignment_ids
    )
    guardians = await db.fetch(
        "SELECT * FROM users WHERE district_id = $1 AND id = ANY($2::uuid[])", district_id, guardian_ids
    )
    grants = await db.fetch(
        "SELECT * FROM support_grants WHERE district_id = $1 AND $2 = ANY(user_ids) ORDER BY created_at, id",
        district_id,
        student_id,
    )
    return StudentRecord(
        student=student,
        tables=tables,
        school=school,
        classes={r["id"]: r for r in classes},
        items={r["id"]: r for r in items},
        assignments={r["id"]: r for r in assignments},
        guardians={r["id"]: r for r in guardians},
        support_grants=list(grants),
    )


# ------------------------------------------------------------------ deletion


async def delete_record(db: Db, district_id: uuid.UUID, student_id: uuid.UUID, now: dt.datetime) -> dict[str, int]:
    """Remove every row of personal data about the student; return counts per table.

    Kept: audit entries and deletion certificates (KEPT_ON_DELETION). Data
    requests stay as the district's record of the request but lose who made
    it. Guardians left with no child in the district are deleted too: their
    account existed only through the link to this student, and keeping their
    contact data would keep it longer than it is needed. Support grants that
    named the student no longer do; a grant that named only this student is
    revoked, because an empty list would mean every user of the district.
    """
    counts: dict[str, int] = {}
    guardian_ids = [
        r["guardian_id"]
        for r in await db.fetch(
            "SELECT guardian_id FROM guardian_links WHERE district_id = $1 AND student_id = $2", district_id, student_id
        )
    ]
    for table, column in sorted(await student_tables(db), key=lambda found: found[0] not in DERIVED_FROM):
        if table in KEPT_ON_DELETION:
            continue
        where = f"WHERE district_id = $1 AND {quote_ident(column)} = $2"
        scrub = SCRUBBED_ON_DELETION.get(table)
        if scrub is not None:
            sets = ", ".join(f"{quote_ident(c)} = ${i + 3}" for i, c in enumerate(scrub))
            status = await db.execute(
                f"UPDATE {quote_ident(table)} SET {sets} {where}", district_id, student_id, *scrub.values()
            )
        else:
            status = await db.execute(f"DELETE FROM {quote_ident(table)} {where}", district_id, student_id)
        counts[table] = counts.get(table, 0) + _affected(status)
    grants = await db.fetch(
        "UPDATE support_grants SET user_ids = array_remove(user_ids, $2), "
        "revoked_at = CASE WHEN cardinality(array_remove(user_ids, $2)) = 0 THEN coalesce(revoked_at, $3) "
        "ELSE revoked_at END WHERE district_id = $1 AND $2 = ANY(user_ids) RETURNING id",
        district_id,
        student_id,
        now,
    )
    counts["support_grants"] = len(grants)
    status = await db.execute(
        "DELETE FROM users WHERE district_id = $1 AND id = $2 AND role = 'STUDENT'", district_id, student_id
    )
    counts["users"] = _affected(status)
    status = await db.execute(
        "DELETE FROM users u WHERE u.district_id = $1 AND u.id = ANY($2::uuid[]) AND u.role = 'GUARDIAN' "
        "AND NOT EXISTS (SELECT 1 FROM guardian_links gl WHERE gl.district_id = u.district_id "
        "AND gl.guardian_id = u.id)",
        district_id,
        guardian_ids,
    )
    counts["guardians"] = _affected(status)
    return counts


def _affected(status: str) -> int:
    """Rows affected, from a command tag such as ``DELETE 3``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


# -------------------------------------------------------------- certificates


def iso(value: dt.datetime) -> str:
    """A time as ISO 8601 in UTC with microseconds: the certificate's one form."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def certificate_body(
    *,
    certificate_id: uuid.UUID,
    scope: str,
    district_id: uuid.UUID,
    student_id: uuid.UUID | None,
    deleted_at: dt.datetime,
    deleted_by: uuid.UUID,
    reason: str,
    counts: Mapping[str, int],
    data_request_id: uuid.UUID | None,
    operator: str | None,
) -> dict[str, Any]:
    """What a certificate's digest covers, in its canonical shape."""
    return {
        "certificateId": str(certificate_id),
        "scope": scope,
        "districtId": str(district_id),
        "studentId": None if student_id is None else str(student_id),
        "deletedAt": iso(deleted_at),
        "deletedBy": str(deleted_by),
        "operator": operator,
        "reason": reason,
        "counts": {table: int(n) for table, n in sorted(counts.items())},
        "dataRequestId": None if data_request_id is None else str(data_request_id),
    }


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: anyone can recompute the digest."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def certificate_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


async def insert_certificate(conn: Any, body: Mapping[str, Any], digest: str) -> Row:
    """Store a certificate (``conn`` is a Db or an asyncpg connection)."""
    row: Row = await conn.fetchrow(
        "INSERT INTO deletion_certificates (district_id, id, student_id, deleted_at, deleted_by, reason, counts, "
        "digest, scope, data_request_id, operator) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11) "
        "RETURNING *",
        uuid.UUID(body["districtId"]),
        uuid.UUID(body["certificateId"]),
        None if body["studentId"] is None else uuid.UUID(body["studentId"]),
        dt.datetime.fromisoformat(body["deletedAt"]),
        uuid.UUID(body["deletedBy"]),
        body["reason"],
        json.dumps(body["counts"], sort_keys=True),
        digest,
        body["scope"],
        None if body["dataRequestId"] is None else uuid.UUID(body["dataRequestId"]),
        body["operator"],
    )
    return row


def body_of_row(row: Row) -> dict[str, Any]:
    """A stored certificate's canonical body, to recompute its digest."""
    counts = row["counts"]
    counts = json.loads(counts) if isinstance(counts, str) else counts
    return certificate_body(
        certificate_id=row["id"],
        scope=row["scope"],
        district_id=row["district_id"],
        student_id=row["student_id"],
        deleted_at=row["deleted_at"],
        deleted_by=row["deleted_by"],
        reason=row["reason"],
        counts=counts,
        data_request_id=row["data_request_id"],
        operator=row["operator"],
    )


async def certificates(db: Db, district_id: uuid.UUID, student_id: uuid.UUID | None) -> list[Row]:
    if student_id is None:
        return await db.fetch(
            "SELECT * FROM deletion_certificates WHERE district_id = $1 AND scope = 'STUDENT' "
            "ORDER BY deleted_at DESC, id",
            district_id,
        )
    return await db.fetch(
        "SELECT * FROM deletion_certificates WHERE district_id = $1 AND scope = 'STUDENT' AND student_id = $2 "
        "ORDER BY deleted_at DESC, id",
        district_id,
        student_id,
    )


# --------------------------------------------------------------- plain JSON


def plain(value: Any) -> Any:
    """A stored value as plain JSON a family can read: ISO dates, string ids."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return str(value)


# JSONB columns (asyncpg hands them over as text).
JSON_COLUMNS = frozenset({"previous", "corrected", "counts"})


def row_dict(row: Row, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Every column of a row but ``skip``, with camelCase keys and plain values."""
    return {_camel(k): _column_value(k, v) for k, v in dict(row).items() if k not in skip}


def _column_value(name: str, value: Any) -> Any:
    if name in JSON_COLUMNS and isinstance(value, str):
        return plain(json.loads(value))
    return plain(value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# ------------------------------------------------------------- the document

ABOUT = (
    "This is everything the service holds about the student, grouped by kind of information. "
    "'disclosures' lists every time someone read or was refused the student's information: who, in what "
    "role, for what purpose, when, and which fields. 'corrections' shows earlier values that were corrected "
    "and any statement of disagreement, which is kept with the record. 'recordsHeld' counts the stored "
    "records each part comes from."
)

# Student columns of ``users`` by the section (and category) they belong to.
DIRECTORY_COLUMNS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "preferred_name": "preferredName",
    "username": "username",
    "grade_level": "gradeLevel",
}
IDENTIFIER_COLUMNS = {
    "student_number": "studentNumber",
    "state_id": "stateId",
    "email": "email",
    "phone": "phone",
    "sourced_id": "rosterSourcedId",
}
DEMOGRAPHIC_COLUMNS = {
    "gender": "gender",
    "birth_date": "birthDate",
    "ethnicity": "ethnicity",
    "english_learner": "englishLearner",
    "special_education": "specialEducation",
    "economically_disadvantaged": "economicallyDisadvantaged",
}
ACCOUNT_COLUMNS = {
    "role": "role",
    "disabled": "disabled",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
    "roster_modified_at": "rosterModifiedAt",
}
# Correctable fields: GraphQL name -> (column, category).
CORRECTABLE = {
    "firstName": ("first_name", "DIRECTORY"),
    "lastName": ("last_name", "DIRECTORY"),
    "preferredName": ("preferred_name", "DIRECTORY"),
    "gradeLevel": ("grade_level", "DIRECTORY"),
    "gender": ("gender", "DEMOGRAPHIC"),
    "birthDate": ("birth_date", "DEMOGRAPHIC"),
}
SECTION_CATEGORIES = {
    "directory": "DIRECTORY",
    "identifiers": "IDENTIFIER",
    "demographics": "DEMOGRAPHIC",
    "performance": "PERFORMANCE",
    "work": "WORK",
    "usage": "USAGE",
    "device": "DEVICE",
    "guardians": "CONTACT",
}
# Tables shown under otherRecords whose rows are data of a category: withheld with it.
OTHER_CATEGORIES = {"report_student_totals": "PERFORMANCE"}
_HANDLED_USER_COLUMNS = {
    "district_id",
    "id",
    "school_id",
    "learning_level",
    "last_active_at",
    *DIRECTORY_COLUMNS,
    *IDENTIFIER_COLUMNS,
    *DEMOGRAPHIC_COLUMNS,
    *ACCOUNT_COLUMNS,
}
# Integrity data of the audit chain: not information about the student.
_AUDIT_INTERNAL = ("district_id", "subject_student_id", "hash", "prev_hash")


def _pick(row: Row, columns: Mapping[str, str]) -> dict[str, Any]:
    return {name: plain(row[column]) for column, name in columns.items() if column in row.keys()}  # noqa: SIM118


def _rest(row: Row, known: set[str] | frozenset[str]) -> dict[str, Any]:
    """Columns a readable section does not show by name (added later): kept, not lost."""
    return {_camel(k): _column_value(k, v) for k, v in dict(row).items() if k not in known and v is not None}


def _with_rest(entry: dict[str, Any], row: Row, known: set[str]) -> dict[str, Any]:
    more = _rest(row, known)
    if more:
        entry["more"] = more
    return entry


def build_document(
    record: StudentRecord,
    district: Row,
    progress: Row | None,
    generated_at: dt.datetime,
    withheld: Mapping[str, str],
) -> dict[str, Any]:
    """The student's record as one JSON document a family can read.

    ``withheld`` maps a category the request may not disclose to the reason;
    its sections say so instead of holding values.
    """
    s = record.student
    t = record.tables
    doc: dict[str, Any] = {
        "about": ABOUT,
        "studentId": str(s["id"]),
        "generatedAt": iso(generated_at),
        "district": {"id": str(district["id"]), "name": district["name"]},
        "school": None if record.school is None else {"id": str(record.school["id"]), "name": record.school["name"]},
    }
    doc["classes"] = [
        _with_rest(
            {
                "classId": str(e["class_id"]),
                "className": record.classes[e["class_id"]]["name"] if e["class_id"] in record.classes else None,
                "subject": record.classes[e["class_id"]]["subject"] if e["class_id"] in record.classes else None,
                "beginDate": plain(e["begin_date"]),
                "endDate": plain(e["end_date"]),
                "rosterSourcedId": e["sourced_id"],
            },
            e,
            {"district_id", "student_id", "class_id", "begin_date", "end_date", "sourced_id"},
        )
        for e in t.get("enrollments", [])
    ]
    doc["directory"] = _pick(s, DIRECTORY_COLUMNS)
    doc["identifiers"] = _pick(s, IDENTIFIER_COLUMNS)
    doc["demographics"] = _pick(s, DEMOGRAPHIC_COLUMNS)

    responses = t.get("responses", [])
    response_known = {
        "district_id",
        "student_id",
        "id",
        "item_id",
        "assignment_id",
        "answer",
        "correct",
        "score",
        "feedback",
        "time_spent_seconds",
        "submitted_at",
        "idempotency_key",
    }
    doc["performance"] = {
        "learningLevel": s["learning_level"],
        "progress": None if progress is None else _progress(progress),
        "responses": [
            _with_rest(
                {
                    "responseId": str(r["id"]),
                    "item": _item(record, r["item_id"]),
                    "assignment": _assignment(record, r["assignment_id"]),
                    "correct": r["correct"],
                    "score": r["score"],
                    "feedback": r["feedback"],
                    "submittedAt": plain(r["submitted_at"]),
                    "requestKey": r["idempotency_key"],
                },
                r,
                response_known,
            )
            for r in responses
        ],
    }
    doc["work"] = {"answers": [{"responseId": str(r["id"]), "answer": r["answer"]} for r in responses]}
    doc["usage"] = {
        "lastActiveAt": plain(s["last_active_at"]),
        "timeSpentOnResponses": [{"responseId": str(r["id"]), "seconds": r["time_spent_seconds"]} for r in responses],
        "activity": [
            _with_rest(
                {
                    "id": str(a["id"]),
                    "kind": a["kind"],
                    "target": a["target"],
                    "occurredAt": plain(a["occurred_at"]),
                    "durationMs": a["duration_ms"],
                    "sessionKey": a["session_key"],
                },
                a,
                {"district_id", "student_id", "id", "kind", "target", "occurred_at", "duration_ms", "session_key"},
            )
            for a in t.get("activity_events", [])
        ],
    }
    device_known = {
        "district_id",
        "student_id",
        "id",
        "session_key",
        "started_at",
        "ip_address",
        "user_agent",
        "browser",
        "operating_system",
        "device_type",
        "referrer",
    }
    doc["device"] = {
        "sessions": [
            _with_rest(
                {
                    "id": str(d["id"]),
                    "startedAt": plain(d["started_at"]),
                    "ipAddress": d["ip_address"],
                    "userAgent": d["user_agent"],
                    "browser": d["browser"],
                    "operatingSystem": d["operating_system"],
                    "deviceType": d["device_type"],
                    "referrer": d["referrer"],
                    "sessionKey": d["session_key"],
                },
                d,
                device_known,
            )
            for d in t.get("device_sessions", [])
        ]
    }
    doc["guardians"] = [_guardian(record, link) for link in t.get("guardian_links", [])]
    doc["account"] = _with_rest(_pick(s, ACCOUNT_COLUMNS), s, _HANDLED_USER_COLUMNS)

    consents = t.get("consents", [])
    doc["consents"] = [
        _with_rest(
            {
                "analyticsOptOut": c["analytics_opt_out"],
                "updatedAt": plain(c["updated_at"]),
                "updatedBy": plain(c["updated_by"]),
            },
            c,
            {"district_id", "student_id", "analytics_opt_out", "updated_at", "updated_by"},
        )
        for c in consents
    ]
    doc["corrections"] = [_correction(c, withheld) for c in t.get("corrections", [])]
    doc["statementsOfDisagreement"] = [
        {"statement": c["statement_of_disagreement"], "madeAt": plain(c["corrected_at"]), "correctionId": str(c["id"])}
        for c in t.get("corrections", [])
        if c["statement_of_disagreement"]
    ]
    doc["dataRequests"] = [
        _with_rest(
            {
                "id": str(r["id"]),
                "kind": r["kind"],
                "requestedBy": r["requested_by"] if "CONTACT" not in withheld else None,
                "receivedAt": plain(r["received_at"]),
                "dueAt": plain(r["due_at"]),
                "status": r["status"],
                "fulfilledAt": plain(r["fulfilled_at"]),
            },
            r,
            {
                "district_id",
                "student_id",
                "id",
                "kind",
                "requested_by",
                "received_at",
                "due_at",
                "status",
                "fulfilled_at",
            },
        )
        for r in t.get("data_requests", [])
    ]
    doc["disclosures"] = [
        {
            "entryId": str(e["id"]),
            "sequence": e["seq"],
            "at": plain(e["at"]),
            "actorId": str(e["actor_id"]),
            "actorRole": e["actor_role"],
            "purpose": e["purpose"],
            "justification": e["justification"],
            "operation": e["operation_name"],
            "requestId": e["request_id"],
            "traceId": e["trace_id"],
            "fields": list(e["fields"]),
            "categories": list(e["categories"]),
            "decision": e["decision"],
            "breakGlass": e["break_glass"],
            **({"more": more} if (more := _rest(e, {*_AUDIT_ENTRY_SHOWN, *_AUDIT_INTERNAL})) else {}),
        }
        for e in t.get("audit_entries", [])
    ]
    doc["supportAccess"] = [
        {
            "grantId": str(g["id"]),
            "ticket": g["ticket"],
            "grantedBy": plain(g["granted_by"]),
            "openedAt": plain(g["created_at"]),
            "expiresAt": plain(g["expires_at"]),
            "revokedAt": plain(g["revoked_at"]),
        }
        for g in record.support_grants
    ]
    doc["deletionCertificates"] = [row_dict(c, ("district_id",)) for c in t.get("deletion_certificates", [])]
    known_tables = {
        "enrollments",
        "responses",
        "activity_events",
        "device_sessions",
        "guardian_links",
        "consents",
        "corrections",
        "data_requests",
        "audit_entries",
        "deletion_certificates",
        "student_progress",  # the performance section's progress
    }
    doc["otherRecords"] = {
        table: [row_dict(r, ("district_id",)) for r in rows] for table, rows in t.items() if table not in known_tables
    }
    for section, category in SECTION_CATEGORIES.items():
        if category in withheld:
            doc[section] = {"withheld": True, "category": category, "reason": withheld[category]}
    for table, category in OTHER_CATEGORIES.items():
        if category in withheld and table in doc["otherRecords"]:
            doc["otherRecords"][table] = {"withheld": True, "category": category, "reason": withheld[category]}
    held = {table: len(rows) for table, rows in t.items()}
    held["users"] = 1
    held["support_grants"] = len(record.support_grants)
    doc["recordsHeld"] = dict(sorted(held.items()))
    doc["withheld"] = dict(sorted(withheld.items()))
    return doc


_AUDIT_ENTRY_SHOWN = {
    "id",
    "seq",
    "at",
    "actor_id",
    "actor_role",
    "purpose",
    "justification",
    "operation_name",
    "request_id",
    "trace_id",
    "fields",
    "categories",
    "decision",
    "break_glass",
}


def _item(record: StudentRecord, item_id: uuid.UUID) -> dict[str, Any]:
    item = record.items.get(item_id)
    if item is None:
        return {"id": str(item_id)}
    return {"id": str(item_id), "prompt": item["prompt"], "skill": item["skill"]}


def _assignment(record: StudentRecord, assignment_id: uuid.UUID | None) -> dict[str, Any] | None:
    if assignment_id is None:
        return None
    assignment = record.assignments.get(assignment_id)
    return {"id": str(assignment_id), "title": None if assignment is None else assignment["title"]}


def _guardian(record: StudentRecord, link: Row) -> dict[str, Any]:
    person = record.guardians.get(link["guardian_id"])
    entry = {
        "guardianId": str(link["guardian_id"]),
        "relationship": link["relationship"],
        "firstName": None if person is None else person["first_name"],
        "lastName": None if person is None else person["last_name"],
        "email": None if person is None else person["email"],
        "phone": None if person is None else person["phone"],
    }
    return _with_rest(entry, link, {"district_id", "guardian_id", "student_id", "relationship"})


def _progress(row: Row) -> dict[str, Any]:
    mastery = row["mastery"]
    mastery = json.loads(mastery) if isinstance(mastery, str) else mastery
    return {
        "assignmentsCompleted": int(row["assignments_completed"] or 0),
        "responsesSubmitted": int(row["responses_submitted"] or 0),
        "averageScore": row["average_score"],  # rounded where it is kept (migration 0018)
        "percentCorrect": row["percent_correct"],
        "mastery": plain(mastery),
    }


def _correction(row: Row, withheld: Mapping[str, str]) -> dict[str, Any]:
    def visible(values: Any) -> Any:
        values = json.loads(values) if isinstance(values, str) else values
        shown = {}
        for name, value in dict(values).items():
            category = CORRECTABLE.get(name, ("", ""))[1]
            shown[name] = {"withheld": withheld[category]} if category in withheld else plain(value)
        return shown

    return _with_rest(
        {
            "id": str(row["id"]),
            "correctedAt": plain(row["corrected_at"]),
            "correctedBy": str(row["corrected_by"]),
            "dataRequestId": plain(row["data_request_id"]),
            "previous": visible(row["previous"]),
            "corrected": visible(row["corrected"]),
            "statementOfDisagreement": row["statement_of_disagreement"],
        },
        row,
        {
            "district_id",
            "student_id",
            "id",
            "corrected_at",
            "corrected_by",
            "data_request_id",
            "previous",
            "corrected",
            "statement_of_disagreement",
        },
    )
