"""Families' rights through their district: requests, access, correction, deletion, consent.

Who may: DISTRICT_ADMIN under RECORD_ACCESS, for students of the district
(every operation here); GUARDIAN under RECORD_ACCESS, where the district has
turned direct record access on, for setAnalyticsOptOut on their own children.
The policy document's ``operations`` decide (``require_operation``); anyone
else gets FORBIDDEN (OUT_OF_SCOPE_OPERATION) and the refusal is audited. A
student outside the caller's scope, or of another district, is NOT_FOUND
exactly as an id that does not exist.

Every mutation validates all of its input before its first write (a field
error does not roll the request's transaction back by itself), writes in the
request's transaction, and notes itself in the audit with the student it is
about and the categories it read or changed, never their values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import strawberry

from permissions.enums import DataCategory, DenyReason
from permissions.errors import MAX_NAME, BadUserInput, FieldError, Forbidden, NotFound, is_plain_text
from resolvers import rights as sql
from resolvers.reads import Row
from schema.base import Info, id_argument, id_to_look_up
from schema.classified import refusal
from schema.enums import DataRequestKind, DataRequestStatus
from schema.gate import Needs, field_name, gate

if TYPE_CHECKING:
    from schema.governance import (
        Consent,
        CorrectStudentInput,
        DataRequest,
        DataRequestInput,
        DeletionCertificate,
        StudentExport,
    )
    from schema.types import Student

MAX_REQUESTED_BY = 200
MAX_REASON = 1000
MAX_STATEMENT = 5000
# Grades as the platform stores them: OneRoster's codes, numbers without a leading zero.
GRADE_CODES = frozenset({"IT", "PR", "PK", "TK", "KG", "PS", "UG", "OTHER", *(str(n) for n in range(1, 14))})
GENDERS = frozenset({"female", "male", "nonbinary", "other", "unspecified"})
# The categories a student's record holds (STAFF is never about a student).
RECORD_CATEGORIES = tuple(c for c in DataCategory if c is not DataCategory.STAFF)


def _district(info: Info, operation: str) -> uuid.UUID:
    """The caller's district, once the gate lets the caller run ``operation``."""
    district_id: uuid.UUID = gate(info, operation, Needs.DISTRICT_USER)
    return district_id


async def _district_about(info: Info, operation: str, raw_id: Any) -> uuid.UUID:
    """``_district`` for an operation on one student: a refusal's DENY entry is about the
    student named, when the caller's scope reaches them (read once the refusal is decided, for
    the entry alone: the answer is the same either way), so that it shows in their accessLog."""
    try:
        district_id: uuid.UUID = gate(info, operation, Needs.DISTRICT_USER, note_refusal=False)
    except Forbidden:
        ctx = info.context
        reachable = ctx.principal.district_id is not None
        subject = await _subject_if_reachable(info, raw_id) if reachable else None
        ctx.audit.note(ctx.home_district_key, subject, field_name(info), "", False)
        raise
    return district_id


async def _student(info: Info, district_id: uuid.UUID, raw_id: Any) -> Row:
    """The student, if the caller's scope reaches them; locked for this transaction."""
    student_id = id_to_look_up(raw_id, "Student")
    if await info.context.reads.student(student_id) is None:
        raise NotFound("Student not found")
    row = await sql.lock_student(info.context.db, district_id, student_id)
    if row is None:
        raise NotFound("Student not found")
    return row


def _text(value: str, field: str, maximum: int, *, required: bool = True, one_line: bool = False) -> str | None:
    """``value`` trimmed, checked: not empty (when ``required``), at most ``maximum``
    characters, no control character (a line break or tab only where the text may
    run over lines: not in a name, with ``one_line``)."""
    cleaned = value.strip()
    if not cleaned:
        if required:
            raise BadUserInput(f"{field} must not be empty", field=field)
        return None
    if len(cleaned) > maximum:
        raise BadUserInput(f"{field} is longer than {maximum} characters", field=field)
    if not is_plain_text(cleaned, "" if one_line else "\n\t\u2028\u2029"):
        raise BadUserInput(f"{field} contains control characters", field=field)
    return cleaned


async def _open_request(
    info: Info, district_id: uuid.UUID, raw: Any, kind: str, student_id: uuid.UUID
) -> uuid.UUID | None:
    """The open request of ``kind`` about the student this call fulfils, validated."""
    if raw is None:
        return None
    field = "dataRequestId"
    request_id = id_argument(raw, field)
    row = await sql.data_request_for_update(info.context.db, district_id, request_id)
    if row is None:
        raise BadUserInput("dataRequestId names no data request of this district", field=field)
    if row["kind"] != kind:
        raise BadUserInput(
            f"dataRequestId names {row['kind']} request; this operation fulfils {kind} requests", field=field
        )
    if row["student_id"] != student_id:
        raise BadUserInput("dataRequestId names a request about another student", field=field)
    if row["status"] != "OPEN":
        raise BadUserInput(f"dataRequestId names a request that is already {row['status']}", field=field)
    return request_id


def _data_request(row: Row) -> DataRequest:
    from schema.governance import DataRequest

    return DataRequest(
        id=strawberry.ID(str(row["id"])),
        kind=DataRequestKind(row["kind"]),
        student_id=strawberry.ID(str(row["student_id"])),
        received_at=row["received_at"],
        due_at=row["due_at"],
        status=DataRequestStatus(row["status"]),
        fulfilled_at=row["fulfilled_at"],
        district_key=str(row["district_id"]),
        subject_id=row["student_id"],
        requested_by_value=row["requested_by"],
    )


# ----------------------------------------------------------------- requests


async def open_data_request(info: Info, input: DataRequestInput) -> DataRequest:
    ctx = info.context
    district_id = await _district_about(info, "openDataRequest", input.student_id)
    requested_by = _text(input.requested_by, "input.requestedBy", MAX_REQUESTED_BY)
    student = await _student(info, district_id, input.student_id)
    row = await sql.insert_data_request(
        ctx.db, district_id, DataRequestKind(input.kind).value, student["id"], str(requested_by), ctx.now
    )
    ctx.audit.note(str(district_id), student["id"], field_name(info), DataCategory.CONTACT.value, True)
    return _data_request(row)


async def data_requests(info: Info, status: DataRequestStatus | None) -> list[DataRequest]:
    district_id = _district(info, "dataRequests")
    rows = await sql.data_requests(info.context.db, district_id, None if status is None else status.value)
    info.context.audit.note(str(district_id), None, field_name(info), "", True)
    return [_data_request(r) for r in rows]


# ------------------------------------------------------------------- access


async def export_student_record(
    info: Info, student_id: strawberry.ID, data_request_id: strawberry.ID | None
) -> StudentExport:
    from schema.governance import StudentExport

    ctx = info.context
    district_id = await _district_about(info, "exportStudentRecord", student_id)
    student = await _student(info, district_id, student_id)
    key = str(district_id)
    with _audited_refusal(info, key, student["id"], ()):
        request_id = await _open_request(info, district_id, data_request_id, "ACCESS", student["id"])
    # A category the district stopped collecting is still disclosed: what was
    # collected before is held, and the family has the right to see it.
    withheld: dict[str, str] = {}
    for category in RECORD_CATEGORIES:
        decision = ctx.decisions.lookup(key, category)
        if not decision.allowed and decision.reason is not DenyReason.NOT_COLLECTED:
            withheld[category.value] = decision.reason.value if decision.reason else "PURPOSE_NOT_ALLOWED_FOR_CATEGORY"
    district = await ctx.reads.district(district_id)
    if district is None:
        raise NotFound("District not found")
    record = await sql.gather_record(ctx.db, district_id, student)
    progress = await ctx.reads.progress(student["id"]) if "PERFORMANCE" not in withheld else None
    document = sql.build_document(record, district, progress, ctx.now, withheld)
    if request_id is not None:
        await sql.fulfil_data_request(ctx.db, district_id, request_id, ctx.now)
    for category in RECORD_CATEGORIES:
        ctx.audit.note(key, student["id"], field_name(info), category.value, category.value not in withheld)
    return StudentExport(
        student_id=strawberry.ID(str(student["id"])),
        generated_at=ctx.now,
        document=document,  # type: ignore[arg-type]  # strawberry's JSON scalar is any JSON value
    )


# --------------------------------------------------------------- correction


def _correction_input(input: CorrectStudentInput, today: dt.date) -> dict[str, Any]:
    """The fields the input gives (field name -> validated value), from the input
    alone: nothing stored is read. Raises BadUserInput naming the field."""
    given: dict[str, Any] = {}
    for name in ("firstName", "lastName", "preferredName"):
        value = getattr(input, _snake(name))
        if value is not None:
            given[name] = _text(value, f"input.{name}", MAX_NAME, required=name != "preferredName", one_line=True)
    if input.grade_level is not None:
        grade = input.grade_level.strip().upper()
        if grade.isdigit():
            grade = grade.lstrip("0") or grade
        if grade == "K":
            grade = "KG"
        if grade not in GRADE_CODES:
            raise BadUserInput(
                "input.gradeLevel must be a grade: 1 to 13, KG, PK, TK, IT, PR, PS, UG or Other",
                field="input.gradeLevel",
            )
        given["gradeLevel"] = "Other" if grade == "OTHER" else grade
    if input.gender is not None:
        gender = input.gender.strip().lower()
        if gender not in GENDERS:
            raise BadUserInput(f"input.gender must be one of {', '.join(sorted(GENDERS))}", field="input.gender")
        given["gender"] = gender
    if input.birth_date is not None:
        if not dt.date(1900, 1, 1) <= input.birth_date < today:
            raise BadUserInput("input.birthDate must be a past date after 1900", field="input.birthDate")
        given["birthDate"] = input.birth_date
    return given


def _correction_changes(given: dict[str, Any], student: Row) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(column -> new value, field -> previous value, field -> corrected value) of the given fields that change."""
    changes: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    corrected: dict[str, Any] = {}
    for name, value in given.items():
        column, _category = sql.CORRECTABLE[name]
        if student[column] != value:
            changes[column] = value
            previous[name] = student[column]
            corrected[name] = value
    return changes, previous, corrected


def _snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name)


async def _subject_if_reachable(info: Info, raw_id: Any) -> uuid.UUID | None:
    """For a refusal's audit entry only (the answer is decided already): the
    student the call named, when the caller's scope reaches them."""
    try:
        student_id = uuid.UUID(str(raw_id))
    except ValueError:
        return None
    row = await info.context.reads.student(student_id)
    return None if row is None else student_id


@contextlib.contextmanager
def _audited_refusal(info: Info, key: str, subject: uuid.UUID | None, categories: Sequence[str]) -> Iterator[None]:
    """A refusal (any field error) inside the block is a DENY entry about ``subject``."""
    try:
        yield
    except FieldError:
        for category in categories or [""]:
            info.context.audit.note(key, subject, field_name(info), category, False)
        raise


async def correct_student_record(info: Info, input: CorrectStudentInput) -> Student:
    """Decides before it reads (POLICY.md section 3): the categories of every field
    the input gives are decided from the input alone, so a refused caller learns
    nothing about stored values; only then is the record read and compared."""
    from schema.types import Student

    ctx = info.context
    district_id = await _district_about(info, "correctStudentRecord", input.student_id)
    key = str(district_id)
    given = _correction_input(input, ctx.now.date())
    statement = None
    if input.statement_of_disagreement is not None:
        statement = _text(
            input.statement_of_disagreement, "input.statementOfDisagreement", MAX_STATEMENT, required=False
        )
    if not given and statement is None:
        raise BadUserInput("Nothing to correct: give a field to correct or a statement of disagreement", field="input")
    categories = sorted({sql.CORRECTABLE[name][1] for name in given})
    for category in categories:
        decision = ctx.decisions.lookup(key, DataCategory(category))
        if not decision.allowed:
            subject = await _subject_if_reachable(info, input.student_id)
            for refused in categories:
                ctx.audit.note(key, subject, field_name(info), refused, False)
            raise refusal(category, ctx.purpose.value, decision)
    student = await _student(info, district_id, input.student_id)
    with _audited_refusal(info, key, student["id"], categories):
        request_id = await _open_request(info, district_id, input.data_request_id, "CORRECTION", student["id"])
        changes, previous, corrected = _correction_changes(given, student)
        if not changes and statement is None:
            # Every category given is one the caller may read: the comparison discloses nothing new.
            raise BadUserInput(
                "Nothing to correct: give a field whose value differs from the record, or a statement of disagreement",
                field="input",
            )
    row = await sql.correct_student(
        ctx.db,
        district_id,
        student["id"],
        changes,
        previous,
        corrected,
        statement,
        request_id,
        ctx.principal.user_id,
        ctx.now,
    )
    if request_id is not None:
        await sql.fulfil_data_request(ctx.db, district_id, request_id, ctx.now)
    written = sorted({sql.CORRECTABLE[name][1] for name in corrected})
    for category in written or [""]:
        ctx.audit.note(key, student["id"], field_name(info), category, True)
    # What changed (API.md section 3), never the new values: each corrected field by its input
    # field's name (a payload's Student fields, read, are named Student.<field> beside them).
    for name in corrected:
        ctx.audit.note(key, student["id"], f"CorrectStudentInput.{name}", sql.CORRECTABLE[name][1], True)
    if statement is not None:
        ctx.audit.note(key, student["id"], "CorrectStudentInput.statementOfDisagreement", "", True)
    return Student.of(row)


# ----------------------------------------------------------------- deletion


def _certificate(row: Row) -> DeletionCertificate:
    import json

    from schema.governance import DeletedCount, DeletionCertificate

    counts = row["counts"]
    counts = json.loads(counts) if isinstance(counts, str) else counts
    return DeletionCertificate(
        id=strawberry.ID(str(row["id"])),
        student_id=strawberry.ID(str(row["student_id"])),
        deleted_at=row["deleted_at"],
        deleted_by=strawberry.ID(str(row["deleted_by"])),
        reason=row["reason"],
        counts=[DeletedCount(table=table, rows=int(n)) for table, n in sorted(counts.items())],
        digest=row["digest"],
    )


async def delete_student_record(
    info: Info, student_id: strawberry.ID, reason: str, data_request_id: strawberry.ID | None
) -> DeletionCertificate:
    ctx = info.context
    district_id = await _district_about(info, "deleteStudentRecord", student_id)
    why = str(_text(reason, "reason", MAX_REASON))
    student = await _student(info, district_id, student_id)
    with _audited_refusal(info, str(district_id), student["id"], ()):
        request_id = await _open_request(info, district_id, data_request_id, "DELETION", student["id"])
    # The named request, and any other open request about the same record, are closed before
    # the record goes, so that their rows (kept, without who made them) say so: a deletion
    # fulfilled, an access or correction request rejected (nothing is left to export or correct).
    await sql.close_open_requests(ctx.db, district_id, student["id"], ctx.now)
    counts = await sql.delete_record(ctx.db, district_id, student["id"], ctx.now)
    body = sql.certificate_body(
        certificate_id=uuid.uuid4(),
        scope="STUDENT",
        district_id=district_id,
        student_id=student["id"],
        deleted_at=ctx.now,
        deleted_by=ctx.principal.user_id,
        reason=why,
        counts=counts,
        data_request_id=request_id,
        operator=None,
    )
    row = await sql.insert_certificate(ctx.db, body, sql.certificate_digest(body))
    for category in RECORD_CATEGORIES:
        ctx.audit.note(str(district_id), student["id"], field_name(info), category.value, True)
    return _certificate(row)


async def deletion_certificates(info: Info, student_id: strawberry.ID | None) -> list[DeletionCertificate]:
    """The district's certificates of deleted student records, newest first.

    Not in the contract (the printed schema may add fields): whoever may
    delete a record may list the certificates, so the operation checked is
    deleteStudentRecord."""
    district_id = _district(info, "deleteStudentRecord")
    subject = None
    if student_id is not None:
        subject = id_argument(student_id, "studentId")
    rows = await sql.certificates(info.context.db, district_id, subject)
    info.context.audit.note(str(district_id), subject, field_name(info), "", True)
    return [_certificate(r) for r in rows]


# ------------------------------------------------------------------ consent


async def set_analytics_opt_out(info: Info, student_id: strawberry.ID, opt_out: bool) -> Consent:
    from schema.governance import Consent

    ctx = info.context
    district_id = await _district_about(info, "setAnalyticsOptOut", student_id)
    student = await _student(info, district_id, student_id)
    row = await sql.set_consent(ctx.db, district_id, student["id"], bool(opt_out), ctx.principal.user_id, ctx.now)
    ctx.audit.note(str(district_id), student["id"], field_name(info), "", True)
    return Consent(
        student_id=strawberry.ID(str(row["student_id"])),
        analytics_opt_out=row["analytics_opt_out"],
        updated_at=row["updated_at"],
    )
