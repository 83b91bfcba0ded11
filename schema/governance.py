"""Governance, rights and reports: the contract's remaining object and input types."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import strawberry
from strawberry.scalars import JSON

from permissions.enums import DataCategory
from schema.base import Node
from schema.classified import classified
from schema.declare import Relation, reads, related, timestamp
from schema.enums import ActivityKind, DataRequestKind, DataRequestStatus, Dimension, PurposeEnum, SuppressionReason
from schema.types import Response, Staff


@strawberry.type
class SupportGrant(Node):
    id: strawberry.ID = strawberry.field(metadata=reads("{a}.id::text"))
    ticket: str = strawberry.field(metadata=reads("{a}.ticket"))
    granted_by: Staff | None = related(Relation("granted_by"))
    expires_at: dt.datetime = strawberry.field(metadata=reads(timestamp("expires_at")))
    revoked_at: dt.datetime | None = strawberry.field(metadata=reads(timestamp("revoked_at")))
    user_ids: list[strawberry.ID] = strawberry.field(
        description="Empty means every user of the district.",
        metadata=reads("COALESCE(to_json({a}.user_ids::text[]), '[]'::json)"),
    )


@strawberry.type
class DataRequest(Node):
    id: strawberry.ID = strawberry.field(metadata=reads("{a}.id::text"))
    kind: DataRequestKind = strawberry.field(metadata=reads("{a}.kind"))
    student_id: strawberry.ID = strawberry.field(metadata=reads("{a}.student_id::text"))
    received_at: dt.datetime = strawberry.field(metadata=reads(timestamp("received_at")))
    due_at: dt.datetime = strawberry.field(metadata=reads(timestamp("due_at")))
    status: DataRequestStatus = strawberry.field(metadata=reads("{a}.status"))
    fulfilled_at: dt.datetime | None = strawberry.field(metadata=reads(timestamp("fulfilled_at")))
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[object]
    requested_by_value: strawberry.Private[str]

    @classified(DataCategory.CONTACT, metadata=reads("{a}.requested_by"))
    def requested_by(self) -> str:
        return self.requested_by_value


@strawberry.type
class StudentExport:
    student_id: strawberry.ID
    generated_at: dt.datetime
    document: JSON = strawberry.field(description="Everything held about the student, by category.")


@strawberry.type
class DeletedCount:
    table: str
    rows: int


@strawberry.type
class DeletionCertificate:
    id: strawberry.ID
    student_id: strawberry.ID
    deleted_at: dt.datetime
    deleted_by: strawberry.ID
    reason: str
    counts: list[DeletedCount]
    digest: str = strawberry.field(description="sha256 over the certificate's canonical JSON.")


@strawberry.type
class Consent:
    student_id: strawberry.ID
    analytics_opt_out: bool
    updated_at: dt.datetime


@strawberry.type
class GroupValue:
    dimension: Dimension
    value: str | None
    label: str | None = strawberry.field(
        default=None,
        description="What a person reads for the value: a school's, class's, district's or assessment's name, "
        "a week's first day; never personal data.",
    )


@strawberry.type
class AggregateRow:
    group: list[GroupValue]
    suppressed: bool
    suppression_reason: SuppressionReason | None
    students: int | None = strawberry.field(description="All measures are null when suppressed.")
    responses: int | None
    mean_score: float | None
    percent_correct: float | None
    active_minutes: float | None
    sessions: int | None


@strawberry.type
class AggregateReport:
    minimum_group_size: int
    rows: list[AggregateRow]
    total: AggregateRow
    suppressed_rows: int
    # Its completed forms, per shape of selection (schema.direct.PlainCompletion): a
    # report kept for many requests (resolvers/report_cache.py) is completed once per shape.
    completions: strawberry.Private[dict[Any, Any]] = dataclasses.field(default_factory=dict)


@strawberry.input(description="Exactly one of the fields; allDistricts is for internal roles only.")
class ScopeInput:
    district_id: strawberry.ID | None = None
    school_id: strawberry.ID | None = None
    class_id: strawberry.ID | None = None
    all_districts: bool | None = None


@strawberry.input
class ReportInput:
    scope: ScopeInput
    group_by: list[Dimension] = strawberry.field(default_factory=list)
    from_: dt.datetime | None = strawberry.field(name="from", default=None)
    to: dt.datetime | None = None
    assessment_id: strawberry.ID | None = None


@strawberry.input
class SubmitResponseInput:
    item_id: strawberry.ID
    answer: str
    assignment_id: strawberry.ID | None = None
    time_spent_seconds: int | None = None


@strawberry.type
class SubmitResponsePayload:
    response: Response
    correct: bool
    feedback: str | None


@strawberry.input
class ActivityEventInput:
    kind: ActivityKind
    occurred_at: dt.datetime
    target: str | None = None
    duration_ms: int | None = None


@strawberry.type
class RecordActivityPayload:
    accepted: int
    dropped_reason: str | None = strawberry.field(
        description="Set when the district does not collect usage or device data."
    )


@strawberry.input
class CreateAssignmentInput:
    class_id: strawberry.ID
    assessment_id: strawberry.ID
    title: str
    due_at: dt.datetime | None = None


@strawberry.input
class CorrectStudentInput:
    student_id: strawberry.ID
    data_request_id: strawberry.ID | None = None
    first_name: str | None = None
    last_name: str | None = None
    preferred_name: str | None = None
    grade_level: str | None = None
    gender: str | None = None
    birth_date: dt.date | None = None
    statement_of_disagreement: str | None = strawberry.field(
        default=None, description="Kept with the record and disclosed with it."
    )


@strawberry.input
class DistrictSettingsInput:
    authorized_purposes: list[PurposeEnum] | None = None
    collect_usage: bool | None = None
    collect_device: bool | None = None
    collect_demographics: bool | None = None
    direct_record_access: bool | None = None
    minimum_group_size: int | None = None
    responses_days: int | None = None
    activity_days: int | None = None
    device_days: int | None = None
    audit_days: int | None = None


@strawberry.input
class SupportGrantInput:
    ticket: str
    expires_at: dt.datetime
    user_ids: list[strawberry.ID] | None = None


@strawberry.input
class DataRequestInput:
    kind: DataRequestKind
    student_id: strawberry.ID
    requested_by: str
