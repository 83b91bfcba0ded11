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

import strawberry

from permissions.audit import SubjectId
from permissions.decide import Decision
from permissions.enums import DataCategory, DenyReason, Purpose, Role
from permissions.errors import BadUserInput, Forbidden
from resolvers.principal import conditions_from_row, retention_from_row
from resolvers.reads import Row, encode_cursor
from schema.audit import AuditConnection, access_log
from schema.base import Context, Info, Node, PageInfo, check_first, id_argument
from schema.classified import classified
from schema.declare import Relation, column, reads, related, relationship
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


# ------------------------------------------------------------- organisations


@strawberry.type
class RetentionSettings:
    responses_days: int = strawberry.field(metadata=reads("{a}.responses_days"))
    activity_days: int = strawberry.field(metadata=reads("{a}.activity_days"))
    device_days: int = strawberry.field(metadata=reads("{a}.device_days"))
    audit_days: int = strawberry.field(metadata=reads("{a}.audit_days"))


# The Purpose enum's own values, never input.
_AUTHORIZED_PURPOSES = (
    "(SELECT COALESCE(json_agg(e.p ORDER BY e.o), '[]'::json) FROM unnest(ARRAY["  # noqa: S608
    + ", ".join(f"'{p.value}'" for p in Purpose)
    + "]) WITH ORDINALITY e(p, o) WHERE e.p = ANY({a}.authorized_purposes))"
)


@strawberry.type
class DistrictSettings:
    # Over the district's row: the purposes it authorizes that are purposes, once each, in
    # the Purpose enum's order (as from_row gives them).
    authorized_purposes: list[PurposeEnum] = strawberry.field(metadata=reads(_AUTHORIZED_PURPOSES))
    collect_usage: bool = strawberry.field(metadata=reads("{a}.collect_usage"))
    collect_device: bool = strawberry.field(metadata=reads("{a}.collect_device"))
    collect_demographics: bool = strawberry.field(metadata=reads("{a}.collect_demographics"))
    direct_record_access: bool = strawberry.field(metadata=reads("{a}.direct_record_access"))
    retention: RetentionSettings = related(Relation("district_retention"))

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

    id: strawberry.ID = column("id")
    name: str = column("name")

    minimum_group_size: int = column(
        "minimum_group_size", description="k: aggregate groups with fewer students than this are suppressed."
    )

    accepted_policy_version: str = column("accepted_policy_version")

    @relationship(Relation("district_schools", many=True, order="{a}.name, {a}.id"))
    async def schools(self, info: Info) -> list[School]:
        rows = await info.context.reads.schools_of_district(self.row["id"])
        return [School(row=r) for r in rows]

    @relationship(Relation("district_settings"), description="DISTRICT_ADMIN only.")
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

    id: strawberry.ID = column("id")
    name: str = column("name")

    @relationship(Relation("school_district"))
    async def district(self, info: Info) -> District:
        row = await info.context.reads.district(self.row["district_id"])
        return District(row=row)

    @relationship(Relation("school_classes", many=True, order="{a}.name, {a}.id"))
    async def classes(self, info: Info) -> list[Class]:
        rows = await info.context.reads.classes_of_school(self.row["id"])
        return [Class(row=r) for r in rows]

    @relationship(Relation("school_students", arguments=frozenset({"first", "after"})))
    async def students(self, info: Info, first: int | None = 50, after: str | None = None) -> StudentConnection:
        return await student_connection(info, school_id=self.row["id"], first=first, after=after)


@strawberry.type
class Class(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = column("id")
    name: str = column("name")
    subject: str | None = column("subject")
    grade_level: str | None = column("grade_level")

    @relationship(Relation("school"))
    async def school(self, info: Info) -> School:
        row = await info.context.reads.school(self.row["school_id"])
        return School(row=row)

    @relationship(Relation("class_teachers", many=True, order="{a}.id"))
    async def teachers(self, info: Info) -> list[Staff]:
        rows = await info.context.reads.teachers_of_class(self.row["id"])
        return [Staff.of(r) for r in rows]

    @relationship(Relation("class_students", many=True, order="{a}.id"))
    async def students(self, info: Info) -> list[Student]:
        rows = await info.context.reads.students_of_class(self.row["id"])
        return [Student.of(r) for r in rows]

    @relationship(Relation("class_assignments", many=True, order="{a}.due_at NULLS LAST, {a}.id"))
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

    id: strawberry.ID = column("id")
    role: RoleEnum = column("role", convert=RoleEnum)
    first_name: str | None = column("first_name", DataCategory.STAFF)
    last_name: str | None = column("last_name", DataCategory.STAFF)
    email: str | None = column("email", DataCategory.STAFF)


@strawberry.type
class Guardian(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def of(cls, row: Row, child_id: uuid.UUID | None) -> Guardian:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=child_id)

    id: strawberry.ID = column("id")
    first_name: str | None = column("first_name", DataCategory.CONTACT)
    last_name: str | None = column("last_name", DataCategory.CONTACT)
    email: str | None = column("email", DataCategory.CONTACT)
    phone: str | None = column("phone", DataCategory.CONTACT)

    # The link's (Student.guardians); none for a guardian read as the caller (Viewer.guardian).
    @classified(DataCategory.CONTACT, metadata=reads("{a}.relationship"))
    def relationship(self) -> str | None:
        value: str | None = self.row.get("relationship")
        return value


@strawberry.type
class SkillMastery:
    # Over one element of the progress row's mastery (jsonb).
    skill: str = strawberry.field(metadata=reads("{a}->>'skill'"))
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]
    level_value: strawberry.Private[float | None]

    @classified(DataCategory.PERFORMANCE, metadata=reads("{a}->'level'"))
    def level(self) -> float | None:
        return self.level_value


@strawberry.type
class StudentProgress:
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    # The progress row (resolvers.reads.PROGRESS), its averages rounded where it is kept (migration 0018).
    assignments_completed: int | None = column("assignments_completed", DataCategory.PERFORMANCE)
    responses_submitted: int | None = column("responses_submitted", DataCategory.PERFORMANCE)
    average_score: float | None = column("average_score", DataCategory.PERFORMANCE)
    percent_correct: float | None = column("percent_correct", DataCategory.PERFORMANCE)

    # Not a join: the progress row's jsonb, completed with its object (schema.compiled._Builder.obj).
    @relationship(Relation("mastery", many=True), DataCategory.PERFORMANCE)
    def mastery(self) -> list[SkillMastery] | None:
        import json

        raw = self.row["mastery"]
        items = json.loads(raw) if isinstance(raw, str) else raw
        return [
            SkillMastery(
                skill=m["skill"],
                district_key=self.district_key,
                subject_id=self.subject_id,
                level_value=m["level"],
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

    id: strawberry.ID = column("id")

    @relationship(Relation("school"))
    async def school(self, info: Info) -> School:
        row = await info.context.reads.school(self.row["school_id"])
        return School(row=row)

    @relationship(Relation("student_classes", many=True, order="{a}.name, {a}.id"))
    async def classes(self, info: Info) -> list[Class]:
        rows = await info.context.reads.classes_of_student(self.row["id"])
        return [Class(row=r) for r in rows]

    first_name: str | None = column("first_name", DataCategory.DIRECTORY)
    last_name: str | None = column("last_name", DataCategory.DIRECTORY)
    preferred_name: str | None = column("preferred_name", DataCategory.DIRECTORY)
    username: str | None = column("username", DataCategory.DIRECTORY)
    grade_level: str | None = column("grade_level", DataCategory.DIRECTORY)
    student_number: str | None = column("student_number", DataCategory.IDENTIFIER)
    state_id: str | None = column("state_id", DataCategory.IDENTIFIER)
    email: str | None = column("email", DataCategory.IDENTIFIER)
    gender: str | None = column("gender", DataCategory.DEMOGRAPHIC)
    birth_date: dt.date | None = column("birth_date", DataCategory.DEMOGRAPHIC)
    ethnicity: list[str] | None = column("ethnicity", DataCategory.DEMOGRAPHIC, convert=list)
    english_learner: bool | None = column("english_learner", DataCategory.DEMOGRAPHIC)
    special_education: bool | None = column("special_education", DataCategory.DEMOGRAPHIC)
    economically_disadvantaged: bool | None = column("economically_disadvantaged", DataCategory.DEMOGRAPHIC)
    learning_level: str | None = column("learning_level", DataCategory.PERFORMANCE)

    @relationship(Relation("progress", count="jsonb_array_length({a}.mastery)"), DataCategory.PERFORMANCE)
    async def progress(self, info: Info) -> StudentProgress | None:
        row = await info.context.reads.progress(self.row["id"])
        if row is None:
            return None
        return StudentProgress(row=row, district_key=self.district_key, subject_id=self.subject_id)

    @relationship(
        Relation(
            "student_responses",
            many=True,
            order="{a}.submitted_at DESC, {a}.id DESC",
            arguments=frozenset({"first", "assignmentId"}),
        ),
        DataCategory.PERFORMANCE,
        description="Newest first.",
    )
    async def responses(
        self, info: Info, first: int | None = 20, assignment_id: strawberry.ID | None = None
    ) -> list[Response] | None:
        first = check_first(first, default=20)
        assignment = None
        if assignment_id is not None:
            assignment = id_argument(assignment_id, "assignmentId")
        rows = await info.context.reads.responses(self.row["id"], first, assignment)
        return [Response.of(r) for r in rows]

    last_active_at: dt.datetime | None = column("last_active_at", DataCategory.USAGE)

    @relationship(
        Relation(
            "student_activity",
            many=True,
            order="{a}.occurred_at DESC, {a}.id DESC",
            arguments=frozenset({"first", "since"}),
        ),
        DataCategory.USAGE,
        description="Newest first.",
    )
    async def activity(
        self, info: Info, first: int | None = 50, since: dt.datetime | None = None
    ) -> list[ActivityEvent] | None:
        first = check_first(first, default=50)
        rows = await info.context.reads.activity(self.row["id"], first, since)
        return [ActivityEvent.of(r) for r in rows]

    @relationship(
        Relation(
            "student_devices", many=True, order="{a}.started_at DESC, {a}.id DESC", arguments=frozenset({"first"})
        ),
        DataCategory.DEVICE,
        description="Newest first.",
    )
    async def device_sessions(self, info: Info, first: int | None = 20) -> list[DeviceSession] | None:
        first = check_first(first, default=20)
        rows = await info.context.reads.device_sessions(self.row["id"], first)
        return [DeviceSession.of(r) for r in rows]

    @relationship(Relation("student_guardians", many=True, order="{a}.id"), DataCategory.CONTACT)
    async def guardians(self, info: Info) -> list[Guardian] | None:
        rows = await info.context.reads.guardians_of_student(self.row["id"])
        return [Guardian.of(r, self.subject_id) for r in rows]

    @relationship(
        Relation("access_log", arguments=frozenset({"first", "after"})),
        description="Who read or was refused this student's data: the record of disclosures.",
    )
    async def access_log(self, info: Info, first: int | None = 50, after: str | None = None) -> AuditConnection | None:
        return await access_log(info, self.district_key, self.subject_id, first, after)


@strawberry.type
class StudentConnection:
    # The page's students in id order (keyset pages), and where the page ends.
    nodes: list[Student] = related(Relation("page_nodes", many=True, order="{a}.id"))
    page_info: PageInfo = related(Relation("page_info"))
    total_count: int = strawberry.field(metadata=reads("{a}.total_count"))  # the page row's scoped total


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

    id: strawberry.ID = column("id")
    prompt: str = column("prompt")
    choices: list[str] = column("choices", convert=list)
    skill: str = column("skill")


@strawberry.type
class Assessment(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = column("id")
    title: str = column("title")
    subject: str = column("subject")

    @relationship(Relation("assessment_items", many=True, order="{a}.position, {a}.id"))
    async def items(self, info: Info) -> list[Item]:
        rows = await info.context.reads.items_of_assessment(self.row["id"])
        return [Item(row=r) for r in rows]


@strawberry.type
class Assignment(Node):
    row: strawberry.Private[Row]

    id: strawberry.ID = column("id")
    title: str = column("title")

    @relationship(Relation("assignment_class"), name="class")
    async def class_(self, info: Info) -> Class:
        row = await info.context.reads.klass(self.row["class_id"])
        return Class(row=row)

    @relationship(Relation("assessment"))
    async def assessment(self, info: Info) -> Assessment:
        row = await info.context.reads.assessment(self.row["assessment_id"])
        return Assessment(row=row)

    due_at: dt.datetime | None = column("due_at")

    @relationship(Relation("created_by"))
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

    id: strawberry.ID = column("id")

    @relationship(Relation("item"))
    async def item(self, info: Info) -> Item:
        row = await info.context.reads.item(self.row["item_id"])
        return Item(row=row)

    @relationship(Relation("assignment"))
    async def assignment(self, info: Info) -> Assignment | None:
        if self.row["assignment_id"] is None:
            return None
        row = await info.context.reads.assignment(self.row["assignment_id"])
        return None if row is None else Assignment(row=row)

    answer: str | None = column("answer", DataCategory.WORK)
    correct: bool | None = column("correct", DataCategory.PERFORMANCE)
    score: float | None = column("score", DataCategory.PERFORMANCE)
    feedback: str | None = column("feedback", DataCategory.PERFORMANCE)
    submitted_at: dt.datetime | None = column("submitted_at", DataCategory.PERFORMANCE)
    time_spent_seconds: int | None = column("time_spent_seconds", DataCategory.USAGE)


@strawberry.type
class ActivityEvent(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: Row) -> ActivityEvent:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=row["student_id"])

    id: strawberry.ID = column("id")
    kind: ActivityKind | None = column("kind", DataCategory.USAGE, convert=ActivityKind)
    target: str | None = column("target", DataCategory.USAGE)
    occurred_at: dt.datetime | None = column("occurred_at", DataCategory.USAGE)
    duration_ms: int | None = column("duration_ms", DataCategory.USAGE)


@strawberry.type
class DeviceSession(Node):
    row: strawberry.Private[Row]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: Row) -> DeviceSession:
        return cls(row=row, district_key=str(row["district_id"]), subject_id=row["student_id"])

    id: strawberry.ID = column("id")
    started_at: dt.datetime | None = column("started_at", DataCategory.DEVICE)
    ip_address: str | None = column("ip_address", DataCategory.DEVICE)
    user_agent: str | None = column("user_agent", DataCategory.DEVICE)
    browser: str | None = column("browser", DataCategory.DEVICE)
    operating_system: str | None = column("operating_system", DataCategory.DEVICE)
    device_type: str | None = column("device_type", DataCategory.DEVICE)
    referrer: str | None = column("referrer", DataCategory.DEVICE)
