"""The domain graph: organisations, people, content and the student's data.

Objects wrap database rows. Objects that carry personal data also carry
``district_key`` and ``subject_id`` (the student the data is about, or None)
for the permission check and the audit. Relationship fields load through the
request's scoped loaders, so a row outside the caller's scope never becomes
an object at all.

Rows are untyped (``resolvers.reads.Row``). A field that returns a column as
it is names the column's type on a local variable: the type checker holds the
return to it, and unlike ``typing.cast`` it costs nothing per resolve.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict
from typing import Any

import strawberry

from permissions.audit import SubjectId
from permissions.decide import Decision
from permissions.enums import DataCategory, DenyReason, Purpose, Role
from permissions.errors import BadUserInput, Forbidden
from resolvers.principal import conditions_from_row, retention_from_row
from resolvers.reads import Row, encode_cursor
from schema.audit import AuditConnection, access_log
from schema.base import Context, Info, Node, PageInfo, check_first, field, id_argument
from schema.classified import classified
from schema.enums import ActivityKind, PurposeEnum, RoleEnum


def directory_decision(ctx: Context) -> Decision:
    """Whether this request may match students by name: DIRECTORY in every
    district whose rows it reaches (or, reaching none, what its rule says)."""
    keys = [str(d) for d in ctx.reads.visible_district_ids()]
    if not keys:
        if DataCategory.DIRECTORY in ctx.rule.categories:
            return Decision.ALLOW
        return Decision.deny(DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY)
    for key in keys:
        decision: Decision = ctx.decisions.lookup(key, DataCategory.DIRECTORY)
        if not decision.allowed:
            return decision
    return Decision.ALLOW


SEARCHED_FIELDS = ("Student.firstName", "Student.lastName")


def note_search(ctx: Context, page: list[tuple[str, SubjectId]], total: int) -> None:
    """A name search reads names (API.md section 3): every student in the page it
    returns (district, id) is noted with Student.firstName and Student.lastName,
    whatever the selection asks for. Matches beyond the page, which ``totalCount``
    discloses by number only, are noted once per district without a subject."""
    directory = DataCategory.DIRECTORY.value
    for district_key, subject_id in page:
        allowed = ctx.decisions.lookup(district_key, DataCategory.DIRECTORY).allowed
        for name in SEARCHED_FIELDS:
            ctx.audit.note(district_key, subject_id, name, directory, allowed)
    if total > len(page):
        for key in [str(d) for d in ctx.reads.visible_district_ids()] or [ctx.home_district_key]:
            allowed = ctx.decisions.lookup(key, DataCategory.DIRECTORY).allowed
            for name in SEARCHED_FIELDS:
                ctx.audit.note(key, None, name, directory, allowed)


def row_id(self: Any) -> strawberry.ID:
    """The ``id`` of a type that wraps a database row: the row's id.

    Each such type declares ``id: strawberry.ID = strawberry.field(resolver=row_id)``,
    which the type checker reads as the interface's ``id`` attribute (not a
    constructor argument) and the schema build as a method taking only ``self``
    (a direct resolver, schema/direct.py).
    """
    return strawberry.ID(str(self.row["id"]))


# ------------------------------------------------------------- organisations


@strawberry.type
class RetentionSettings:
    responses_days: int
    activity_days: int
    device_days: int
    audit_days: int


@strawberry.type
class DistrictSettings:
    authorized_purposes: list[PurposeEnum]
    collect_usage: bool
    collect_device: bool
    collect_demographics: bool
    direct_record_access: bool
    retention: RetentionSettings

    @classmethod
    def from_row(cls, row: Row) -> DistrictSettings:
        conditions, retention = conditions_from_row(row), retention_from_row(row)
        return cls(
            # In the order of the Purpose enum, as they are stored.
            authorized_purposes=[PurposeEnum(p.value) for p in Purpose if p in conditions.authorized_purposes],
            collect_usage=conditions.collect_usage,
            collect_device=conditions.collect_device,
            collect_demographics=conditions.collect_demographics,
            direct_record_access=conditions.direct_record_access,
            retention=RetentionSettings(**asdict(retention)),
        )


@strawberry.type
class District(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @field(description="k: aggregate groups with fewer students than this are suppressed.")
    def minimum_group_size(self) -> int:
        return int(self.row["minimum_group_size"])

    @strawberry.field
    def accepted_policy_version(self) -> str:
        return str(self.row["accepted_policy_version"])

    @strawberry.field
    async def schools(self, info: Info) -> list[School]:
        rows = await info.context.reads.schools_of_district(self.row["id"])
        return [School(row=r) for r in rows]

    @field(description="DISTRICT_ADMIN only.")
    def settings(self, info: Info) -> DistrictSettings | None:
        if info.context.principal.role is not Role.DISTRICT_ADMIN:
            raise Forbidden(
                "District settings are for the district's administrators",
                operation="District.settings",
                purpose=info.context.purpose.value,
                reason="OUT_OF_SCOPE_OPERATION",
            )
        return DistrictSettings.from_row(self.row)


@strawberry.type
class School(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field
    async def district(self, info: Info) -> District:
        row = await info.context.reads.district(self.row["district_id"])
        return District(row=row)

    @strawberry.field
    async def classes(self, info: Info) -> list[Class]:
        rows = await info.context.reads.classes_of_school(self.row["id"])
        return [Class(row=r) for r in rows]

    @strawberry.field
    async def students(self, info: Info, first: int | None = 50, after: str | None = None) -> StudentConnection:
        return await student_connection(info, school_id=self.row["id"], first=first, after=after)


@strawberry.type
class Class(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field
    def subject(self) -> str | None:
        value = self.row["subject"]
        return None if value is None else str(value)

    @strawberry.field
    def grade_level(self) -> str | None:
        value = self.row["grade_level"]
        return None if value is None else str(value)

    @strawberry.field
    async def school(self, info: Info) -> School:
        row = await info.context.reads.school(self.row["school_id"])
        return School(row=row)

    @strawberry.field
    async def teachers(self, info: Info) -> list[Staff]:
        rows = await info.context.reads.teachers_of_class(self.row["id"])
        return [Staff.of(r) for r in rows]

    @strawberry.field
    async def students(self, info: Info) -> list[Student]:
        rows = await info.context.reads.students_of_class(self.row["id"])
        return [Student.of(r) for r in rows]

    @strawberry.field
    async def assignments(self, info: Info) -> list[Assignment]:
        rows = await info.context.reads.assignments_of_class(self.row["id"])
        return [Assignment(row=r) for r in rows]


# -------------------------------------------------------------------- people


@strawberry.type
class Staff(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def of(cls, row: Row) -> Staff:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=None)

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def role(self) -> RoleEnum:
        return RoleEnum(self.row["role"])

    @classified(DataCategory.STAFF)
    def first_name(self) -> str | None:
        value: str | None = self.row["first_name"]
        return value

    @classified(DataCategory.STAFF)
    def last_name(self) -> str | None:
        value: str | None = self.row["last_name"]
        return value

    @classified(DataCategory.STAFF)
    def email(self) -> str | None:
        value: str | None = self.row["email"]
        return value


@strawberry.type
class Guardian(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def of(cls, row: Row, child_id: uuid.UUID | None) -> Guardian:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=child_id)

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @classified(DataCategory.CONTACT)
    def first_name(self) -> str | None:
        value: str | None = self.row["first_name"]
        return value

    @classified(DataCategory.CONTACT)
    def last_name(self) -> str | None:
        value: str | None = self.row["last_name"]
        return value

    @classified(DataCategory.CONTACT)
    def email(self) -> str | None:
        value: str | None = self.row["email"]
        return value

    @classified(DataCategory.CONTACT)
    def phone(self) -> str | None:
        value: str | None = self.row["phone"]
        return value

    @classified(DataCategory.CONTACT)
    def relationship(self) -> str | None:
        value: str | None = self.row.get("relationship")
        return value


@strawberry.type
class SkillMastery:
    skill: str
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]
    level_value: strawberry.Private[float | None]

    @classified(DataCategory.PERFORMANCE)
    def level(self) -> float | None:
        return self.level_value


@strawberry.type
class StudentProgress:
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classified(DataCategory.PERFORMANCE)
    def assignments_completed(self) -> int | None:
        return int(self.row["assignments_completed"] or 0)

    @classified(DataCategory.PERFORMANCE)
    def responses_submitted(self) -> int | None:
        return int(self.row["responses_submitted"] or 0)

    @classified(DataCategory.PERFORMANCE)
    def average_score(self) -> float | None:
        value = self.row["average_score"]
        return None if value is None else round(float(value), 4)

    @classified(DataCategory.PERFORMANCE)
    def percent_correct(self) -> float | None:
        value = self.row["percent_correct"]
        return None if value is None else round(float(value), 2)

    @classified(DataCategory.PERFORMANCE)
    def mastery(self) -> list[SkillMastery] | None:
        import json

        raw = self.row["mastery"]
        items = json.loads(raw) if isinstance(raw, str) else raw
        return [
            SkillMastery(
                skill=m["skill"],
                district_key=self.district_key,
                subject_id=self.subject_id,
                level_value=None if m["level"] is None else round(float(m["level"]), 4),
            )
            for m in items
        ]


@strawberry.type
class Student(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: Row) -> Student:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=row["id"])

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    async def school(self, info: Info) -> School:
        row = await info.context.reads.school(self.row["school_id"])
        return School(row=row)

    @strawberry.field
    async def classes(self, info: Info) -> list[Class]:
        rows = await info.context.reads.classes_of_student(self.row["id"])
        return [Class(row=r) for r in rows]

    @classified(DataCategory.DIRECTORY)
    def first_name(self) -> str | None:
        value: str | None = self.row["first_name"]
        return value

    @classified(DataCategory.DIRECTORY)
    def last_name(self) -> str | None:
        value: str | None = self.row["last_name"]
        return value

    @classified(DataCategory.DIRECTORY)
    def preferred_name(self) -> str | None:
        value: str | None = self.row["preferred_name"]
        return value

    @classified(DataCategory.DIRECTORY)
    def username(self) -> str | None:
        value: str | None = self.row["username"]
        return value

    @classified(DataCategory.DIRECTORY)
    def grade_level(self) -> str | None:
        value: str | None = self.row["grade_level"]
        return value

    @classified(DataCategory.IDENTIFIER)
    def student_number(self) -> str | None:
        value: str | None = self.row["student_number"]
        return value

    @classified(DataCategory.IDENTIFIER)
    def state_id(self) -> str | None:
        value: str | None = self.row["state_id"]
        return value

    @classified(DataCategory.IDENTIFIER)
    def email(self) -> str | None:
        value: str | None = self.row["email"]
        return value

    @classified(DataCategory.DEMOGRAPHIC)
    def gender(self) -> str | None:
        value: str | None = self.row["gender"]
        return value

    @classified(DataCategory.DEMOGRAPHIC)
    def birth_date(self) -> dt.date | None:
        value: dt.date | None = self.row["birth_date"]
        return value

    @classified(DataCategory.DEMOGRAPHIC)
    def ethnicity(self) -> list[str] | None:
        value = self.row["ethnicity"]
        return None if value is None else list(value)

    @classified(DataCategory.DEMOGRAPHIC)
    def english_learner(self) -> bool | None:
        value: bool | None = self.row["english_learner"]
        return value

    @classified(DataCategory.DEMOGRAPHIC)
    def special_education(self) -> bool | None:
        value: bool | None = self.row["special_education"]
        return value

    @classified(DataCategory.DEMOGRAPHIC)
    def economically_disadvantaged(self) -> bool | None:
        value: bool | None = self.row["economically_disadvantaged"]
        return value

    @classified(DataCategory.PERFORMANCE)
    def learning_level(self) -> str | None:
        value: str | None = self.row["learning_level"]
        return value

    @classified(DataCategory.PERFORMANCE)
    async def progress(self, info: Info) -> StudentProgress | None:
        row = await info.context.reads.progress(self.row["id"])
        if row is None:
            return None
        return StudentProgress(row=row, district_key=self.district_key, subject_id=self.subject_id)

    @classified(DataCategory.PERFORMANCE, description="Newest first.")
    async def responses(
        self, info: Info, first: int | None = 20, assignment_id: strawberry.ID | None = None
    ) -> list[Response] | None:
        first = check_first(first, default=20)
        assignment = None
        if assignment_id is not None:
            assignment = id_argument(assignment_id, "assignmentId")
        rows = await info.context.reads.responses(self.row["id"], first, assignment)
        return [Response.of(r) for r in rows]

    @classified(DataCategory.USAGE)
    def last_active_at(self) -> dt.datetime | None:
        value: dt.datetime | None = self.row["last_active_at"]
        return value

    @classified(DataCategory.USAGE, description="Newest first.")
    async def activity(
        self, info: Info, first: int | None = 50, since: dt.datetime | None = None
    ) -> list[ActivityEvent] | None:
        first = check_first(first, default=50)
        rows = await info.context.reads.activity(self.row["id"], first, since)
        return [ActivityEvent.of(r) for r in rows]

    @classified(DataCategory.DEVICE, description="Newest first.")
    async def device_sessions(self, info: Info, first: int | None = 20) -> list[DeviceSession] | None:
        first = check_first(first, default=20)
        rows = await info.context.reads.device_sessions(self.row["id"], first)
        return [DeviceSession.of(r) for r in rows]

    @classified(DataCategory.CONTACT)
    async def guardians(self, info: Info) -> list[Guardian] | None:
        rows = await info.context.reads.guardians_of_student(self.row["id"])
        return [Guardian.of(r, self.subject_id) for r in rows]

    @field(description="Who read or was refused this student's data: the record of disclosures.")
    async def access_log(self, info: Info, first: int | None = 50, after: str | None = None) -> AuditConnection | None:
        return await access_log(info, self.district_key, self.subject_id, first, after)


@strawberry.type
class StudentConnection:
    nodes: list[Student]
    page_info: PageInfo
    total_count: int


async def student_connection(
    info: Info,
    *,
    first: int | None,
    after: str | None,
    school_id: uuid.UUID | None = None,
    class_id: uuid.UUID | None = None,
    search: str | None = None,
) -> StudentConnection:
    from resolvers.reads import decode_cursor

    first = check_first(first, default=50)
    try:
        after_id = decode_cursor(after)
    except ValueError:
        raise BadUserInput("Argument 'after' is not a cursor this server issued", field="after") from None
    rows, total = await info.context.reads.students_page(
        school_id=school_id, class_id=class_id, search=search, first=first, after=after_id
    )
    page = rows[:first]
    return StudentConnection(
        nodes=[Student.of(r) for r in page],
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            end_cursor=encode_cursor(page[-1]["id"]) if page else None,
        ),
        total_count=total,
    )


# ------------------------------------------------------------------- content


@strawberry.type
class Item(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def prompt(self) -> str:
        return str(self.row["prompt"])

    @strawberry.field
    def choices(self) -> list[str]:
        return list(self.row["choices"])

    @strawberry.field
    def skill(self) -> str:
        return str(self.row["skill"])


@strawberry.type
class Assessment(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def title(self) -> str:
        return str(self.row["title"])

    @strawberry.field
    def subject(self) -> str:
        return str(self.row["subject"])

    @strawberry.field
    async def items(self, info: Info) -> list[Item]:
        rows = await info.context.reads.items_of_assessment(self.row["id"])
        return [Item(row=r) for r in rows]


@strawberry.type
class Assignment(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    def title(self) -> str:
        return str(self.row["title"])

    @field(name="class")
    async def class_(self, info: Info) -> Class:
        row = await info.context.reads.klass(self.row["class_id"])
        return Class(row=row)

    @strawberry.field
    async def assessment(self, info: Info) -> Assessment:
        row = await info.context.reads.assessment(self.row["assessment_id"])
        return Assessment(row=row)

    @strawberry.field
    def due_at(self) -> dt.datetime | None:
        value: dt.datetime | None = self.row["due_at"]
        return value

    @strawberry.field
    async def created_by(self, info: Info) -> Staff | None:
        if self.row["created_by"] is None:
            return None
        row = await info.context.reads.staff(self.row["created_by"])
        return None if row is None else Staff.of(row)


# ------------------------------------------------------- the student's data


@strawberry.type
class Response(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: Row) -> Response:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=row["student_id"])

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @strawberry.field
    async def item(self, info: Info) -> Item:
        row = await info.context.reads.item(self.row["item_id"])
        return Item(row=row)

    @strawberry.field
    async def assignment(self, info: Info) -> Assignment | None:
        if self.row["assignment_id"] is None:
            return None
        row = await info.context.reads.assignment(self.row["assignment_id"])
        return None if row is None else Assignment(row=row)

    @classified(DataCategory.WORK)
    def answer(self) -> str | None:
        value: str | None = self.row["answer"]
        return value

    @classified(DataCategory.PERFORMANCE)
    def correct(self) -> bool | None:
        value: bool | None = self.row["correct"]
        return value

    @classified(DataCategory.PERFORMANCE)
    def score(self) -> float | None:
        value: float | None = self.row["score"]
        return value

    @classified(DataCategory.PERFORMANCE)
    def feedback(self) -> str | None:
        value: str | None = self.row["feedback"]
        return value

    @classified(DataCategory.PERFORMANCE)
    def submitted_at(self) -> dt.datetime | None:
        value: dt.datetime | None = self.row["submitted_at"]
        return value

    @classified(DataCategory.USAGE)
    def time_spent_seconds(self) -> int | None:
        value: int | None = self.row["time_spent_seconds"]
        return value


@strawberry.type
class ActivityEvent(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: Row) -> ActivityEvent:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=row["student_id"])

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @classified(DataCategory.USAGE)
    def kind(self) -> ActivityKind | None:
        return ActivityKind(self.row["kind"])

    @classified(DataCategory.USAGE)
    def target(self) -> str | None:
        value: str | None = self.row["target"]
        return value

    @classified(DataCategory.USAGE)
    def occurred_at(self) -> dt.datetime | None:
        value: dt.datetime | None = self.row["occurred_at"]
        return value

    @classified(DataCategory.USAGE)
    def duration_ms(self) -> int | None:
        value: int | None = self.row["duration_ms"]
        return value


@strawberry.type
class DeviceSession(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: Row) -> DeviceSession:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=row["student_id"])

    id: strawberry.ID = strawberry.field(resolver=row_id)

    @classified(DataCategory.DEVICE)
    def started_at(self) -> dt.datetime | None:
        value: dt.datetime | None = self.row["started_at"]
        return value

    @classified(DataCategory.DEVICE)
    def ip_address(self) -> str | None:
        value: str | None = self.row["ip_address"]
        return value

    @classified(DataCategory.DEVICE)
    def user_agent(self) -> str | None:
        value: str | None = self.row["user_agent"]
        return value

    @classified(DataCategory.DEVICE)
    def browser(self) -> str | None:
        value: str | None = self.row["browser"]
        return value

    @classified(DataCategory.DEVICE)
    def operating_system(self) -> str | None:
        value: str | None = self.row["operating_system"]
        return value

    @classified(DataCategory.DEVICE)
    def device_type(self) -> str | None:
        value: str | None = self.row["device_type"]
        return value

    @classified(DataCategory.DEVICE)
    def referrer(self) -> str | None:
        value: str | None = self.row["referrer"]
        return value
