"""The audit trail as GraphQL: entries, the district's log and a student's record of disclosures.

Both readers are operations of the policy (``auditLog``, ``accessLog`` in the
rules' ``operations``), newest entry first, paged by ``seq`` cursors, and are
themselves audited: reading a student's access log is an entry about that
student, reading the district's log an entry about no one (or about the
student it was filtered to); a refused read is a DENY entry.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import strawberry

from permissions.errors import BadUserInput, Forbidden
from resolvers.audit_log import MAX_SEQ, AuditFilters, audit_page
from schema.base import Info, Node, PageInfo, check_first, id_argument
from schema.declare import Relation, reads, related, timestamp
from schema.enums import DataCategoryEnum, Decision, PurposeEnum, RoleEnum
from schema.gate import Needs, gate


@strawberry.type
class AuditEntry(Node):
    # Each over a logical entry (resolvers.audit_log.logical_statement), as from_row gives it.
    id: strawberry.ID = strawberry.field(metadata=reads("{a}.lid::text"))
    at: dt.datetime = strawberry.field(metadata=reads(timestamp("at")))
    request_id: str = strawberry.field(
        description="The server's own id for the request: unique, never taken from the client.",
        metadata=reads("{a}.request_id"),
    )
    client_request_id: str | None = strawberry.field(
        description="The X-Request-Id the client sent, if any, as sent.", metadata=reads("{a}.client_request_id")
    )
    trace_id: str | None = strawberry.field(metadata=reads("{a}.trace_id"))
    actor_id: strawberry.ID = strawberry.field(metadata=reads("{a}.actor_id::text"))
    actor_role: RoleEnum = strawberry.field(metadata=reads("{a}.actor_role"))
    purpose: PurposeEnum = strawberry.field(metadata=reads("{a}.purpose"))
    justification: str | None = strawberry.field(metadata=reads("{a}.justification"))
    operation_name: str | None = strawberry.field(metadata=reads("{a}.operation_name"))
    subject_student_id: strawberry.ID | None = strawberry.field(
        description="Null for entries about no single student (aggregates, staff data).",
        metadata=reads("{a}.subject::text"),
    )
    fields: list[str] = strawberry.field(
        description="Type.field names, e.g. Student.firstName.", metadata=reads("to_json({a}.fields)")
    )
    categories: list[DataCategoryEnum] = strawberry.field(metadata=reads("to_json({a}.categories)"))
    decision: Decision = strawberry.field(metadata=reads("{a}.decision"))
    break_glass: bool = strawberry.field(metadata=reads("{a}.break_glass"))

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        return cls(
            id=strawberry.ID(str(row["id"])),
            at=row["at"],
            request_id=row["request_id"],
            client_request_id=row.get("client_request_id"),
            trace_id=row["trace_id"],
            actor_id=strawberry.ID(str(row["actor_id"])),
            actor_role=RoleEnum(row["actor_role"]),
            purpose=PurposeEnum(row["purpose"]),
            justification=row["justification"],
            operation_name=row["operation_name"],
            subject_student_id=None
            if row["subject_student_id"] is None
            else strawberry.ID(str(row["subject_student_id"])),
            fields=list(row["fields"]),
            categories=[DataCategoryEnum(c) for c in row["categories"]],
            decision=Decision(row["decision"]),
            break_glass=row["break_glass"],
        )


@strawberry.type
class AuditConnection:
    # The district's logical entries, newest first, and where the page ends.
    nodes: list[AuditEntry] = related(Relation("audit_nodes", many=True, order="{a}.lseq DESC"))
    page_info: PageInfo = related(Relation("audit_page_info"))


@strawberry.input
class AuditFilter:
    subject_student_id: strawberry.ID | None = None
    actor_id: strawberry.ID | None = None
    purpose: PurposeEnum | None = None
    decision: Decision | None = None
    from_: dt.datetime | None = strawberry.field(name="from", default=None)
    to: dt.datetime | None = None


def encode_seq(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_seq(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("seq:") or not raw[4:].isdigit():
            raise ValueError
        seq = int(raw[4:])
        if seq > MAX_SEQ:
            raise ValueError
        return seq
    except (ValueError, UnicodeDecodeError):
        raise BadUserInput("Argument 'after' is not a cursor this server issued", field="after") from None


def as_utc(value: dt.datetime) -> dt.datetime:
    """A filter bound without a zone is read as UTC, like every stored time."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def read_audit(
    info: Info, district_id: uuid.UUID, filters: AuditFilters, first: int | None, after: str | None, default: int
) -> AuditConnection:
    """A page of one district's entries, newest first (``resolvers.audit_log``); ``first``
    null means the field's own default (``default``)."""
    size = check_first(first, default=default)
    rows = await audit_page(info.context.db, district_id, filters, decode_seq(after), size + 1)
    page = rows[:size]
    return AuditConnection(
        nodes=[AuditEntry.from_row(r) for r in page],
        page_info=PageInfo(has_next_page=len(rows) > size, end_cursor=encode_seq(page[-1]["seq"]) if page else None),
    )


async def access_log(
    info: Info, district_key: str, subject_id: uuid.UUID, first: int | None, after: str | None
) -> AuditConnection | None:
    """One student's access log (``Student.accessLog``)."""
    gate(info, "accessLog", Needs.RULE_AUDITED, subject=subject_id, district_key=district_key)
    return await read_audit(info, uuid.UUID(district_key), AuditFilters(subject=subject_id), first, after, 50)


async def audit_log(info: Info, filter: AuditFilter | None, first: int | None, after: str | None) -> AuditConnection:
    ctx = info.context
    filters = AuditFilters()
    if filter is not None:
        filters = AuditFilters(
            subject=None
            if filter.subject_student_id is None
            else id_argument(filter.subject_student_id, "filter.subjectStudentId"),
            actor=None if filter.actor_id is None else id_argument(filter.actor_id, "filter.actorId"),
            purpose=None if filter.purpose is None else filter.purpose.value,
            decision=None if filter.decision is None else filter.decision.value,
            since=None if filter.from_ is None else as_utc(filter.from_),
            until=None if filter.to is None else as_utc(filter.to),
        )
    subject = filters.subject
    # Reading the log filtered to one student discloses that student's record
    # of disclosures: the entry is about them.
    gate(info, "auditLog", Needs.RULE_AUDITED, subject=subject)
    district_id = ctx.principal.district_id
    if district_id is None:
        raise Forbidden(
            "The audit log is read by a district's administrators",
            purpose=ctx.purpose.value,
            reason="OUT_OF_SCOPE_OPERATION",
        )
    return await read_audit(info, district_id, filters, first, after, 100)
