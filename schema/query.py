"""Query: the read API's roots. Each root applies the caller's scope in SQL."""

from __future__ import annotations

import strawberry

from permissions.errors import BadUserInput, NotFound
from schema import governance_ops, reports, rights
from schema.audit import AuditConnection, AuditFilter, audit_log
from schema.base import Info, PublicInfo, field, id_argument, id_to_look_up
from schema.declare import Relation, relationship
from schema.enums import DataRequestStatus
from schema.governance import AggregateReport, DataRequest, DeletionCertificate, ReportInput, SupportGrant
from schema.policy import PolicyDocument
from schema.types import (
    Assessment,
    Assignment,
    Class,
    District,
    School,
    Student,
    StudentConnection,
    directory_decision,
    note_search,
    student_connection,
)
from schema.viewer import Viewer


@strawberry.type
class Query:
    @relationship(Relation("me"))
    def me(self) -> Viewer:
        return Viewer()

    @relationship(Relation("district_by_id", arguments=frozenset({"id"})))
    async def district(self, info: Info, id: strawberry.ID) -> District | None:
        row = await info.context.reads.district(id_to_look_up(id, "District"))
        if row is None:
            raise NotFound("District not found")
        return District(row=row)

    @relationship(Relation("school_by_id", arguments=frozenset({"id"})))
    async def school(self, info: Info, id: strawberry.ID) -> School | None:
        row = await info.context.reads.school(id_to_look_up(id, "School"))
        if row is None:
            raise NotFound("School not found")
        return School(row=row)

    @relationship(Relation("class", arguments=frozenset({"id"})), name="class")
    async def class_(self, info: Info, id: strawberry.ID) -> Class | None:
        row = await info.context.reads.klass(id_to_look_up(id, "Class"))
        if row is None:
            raise NotFound("Class not found")
        return Class(row=row)

    @relationship(Relation("student", arguments=frozenset({"id"})))
    async def student(self, info: Info, id: strawberry.ID) -> Student | None:
        row = await info.context.reads.student(id_to_look_up(id, "Student"))
        if row is None:
            raise NotFound("Student not found")
        return Student.of(row)

    @relationship(Relation("students", arguments=frozenset({"schoolId", "classId", "search", "first", "after"})))
    async def students(
        self,
        info: Info,
        school_id: strawberry.ID | None = None,
        class_id: strawberry.ID | None = None,
        search: str | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> StudentConnection:
        from permissions.errors import Forbidden, refusal_message

        if search is not None:
            # Matching on names reveals names: searching needs DIRECTORY.
            ctx = info.context
            decision = directory_decision(ctx)
            if not decision.allowed:
                reason = decision.reason.value if decision.reason else "PURPOSE_NOT_ALLOWED_FOR_CATEGORY"
                raise Forbidden(
                    "Searching by name reads DIRECTORY data. "
                    + refusal_message("DIRECTORY data", ctx.purpose.value, reason),
                    category="DIRECTORY",
                    purpose=ctx.purpose.value,
                    reason=reason,
                )
            if len(search) > 100:
                raise BadUserInput("Argument 'search' is longer than 100 characters", field="search")
        connection = await student_connection(
            info,
            first=first,
            after=after,
            school_id=None if school_id is None else id_argument(school_id, "schoolId"),
            class_id=None if class_id is None else id_argument(class_id, "classId"),
            search=search or None,
        )
        if search:
            note_search(
                info.context, [(s.district_key, s.subject_id) for s in connection.nodes], connection.total_count
            )
        return connection

    @relationship(
        Relation("assessments", many=True, order="{a}.subject, {a}.title, {a}.id", arguments=frozenset({"subject"}))
    )
    async def assessments(self, info: Info, subject: str | None = None) -> list[Assessment]:
        rows = await info.context.reads.assessments(subject)
        return [Assessment(row=r) for r in rows]

    @relationship(Relation("assignment", arguments=frozenset({"id"})))
    async def assignment(self, info: Info, id: strawberry.ID) -> Assignment | None:
        row = await info.context.reads.assignment(id_to_look_up(id, "Assignment"))
        if row is None:
            raise NotFound("Assignment not found")
        return Assignment(row=row)

    @strawberry.field
    async def performance_report(self, info: Info, input: ReportInput) -> AggregateReport:
        return await reports.performance_report(info, input)

    @strawberry.field
    async def usage_report(self, info: Info, input: ReportInput) -> AggregateReport:
        return await reports.usage_report(info, input)

    @field(description="Public: needs no token. The current version unless one is named.")
    def policy(self, info: PublicInfo, version: str | None = None) -> PolicyDocument:
        from permissions.policy import UnknownPolicyVersion
        from schema.catalog import category_fields

        policies = info.context.policies
        try:
            doc = policies.latest() if version is None else policies.get(version)
        except UnknownPolicyVersion:
            raise BadUserInput(
                f"Unknown policy version; known versions: {', '.join(policies.versions())}", field="version"
            ) from None
        return PolicyDocument.from_data(doc, category_fields())

    @strawberry.field
    def policy_versions(self, info: PublicInfo) -> list[str]:
        return list(info.context.policies.versions())

    @relationship(Relation("audit_log", arguments=frozenset({"filter", "first", "after"})))
    async def audit_log(
        self, info: Info, filter: AuditFilter | None = None, first: int | None = 100, after: str | None = None
    ) -> AuditConnection:
        return await audit_log(info, filter, first, after)

    @relationship(
        Relation(
            "data_requests", many=True, order="{a}.due_at, {a}.received_at, {a}.id", arguments=frozenset({"status"})
        )
    )
    async def data_requests(self, info: Info, status: DataRequestStatus | None = None) -> list[DataRequest]:
        return await rights.data_requests(info, status)

    @field(description="Certificates of deleted student records (not in the contract; schema/rights.py).")
    async def deletion_certificates(
        self, info: Info, student_id: strawberry.ID | None = None
    ) -> list[DeletionCertificate]:
        return await rights.deletion_certificates(info, student_id)

    @relationship(Relation("support_grants", many=True, order="{a}.created_at DESC, {a}.id"))
    async def support_grants(self, info: Info) -> list[SupportGrant]:
        return await governance_ops.support_grants(info)
