"""Mutation: the contract's writes.

Every attempt is audited (API.md section 3): a mutation refused for any
reason once it reached its resolver (FORBIDDEN, NOT_FOUND, BAD_USER_INPUT)
leaves a DENY entry, noted by the resolver itself where it knows more (the
student, the category) and by ``attempt`` otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import strawberry

from permissions.errors import FieldError
from schema import governance_ops, practice, rights
from schema.base import Info
from schema.governance import (
    ActivityEventInput,
    Consent,
    CorrectStudentInput,
    CreateAssignmentInput,
    DataRequest,
    DataRequestInput,
    DeletionCertificate,
    DistrictSettingsInput,
    RecordActivityPayload,
    StudentExport,
    SubmitResponseInput,
    SubmitResponsePayload,
    SupportGrant,
    SupportGrantInput,
)
from schema.types import Assignment, District, DistrictSettings, Student

T = TypeVar("T")


async def attempt(info: Info, work: Awaitable[T]) -> T:
    """Run a mutation's resolver; a refusal it did not audit itself is a DENY entry."""
    try:
        return await work
    except FieldError:
        ctx = info.context
        field = f"Mutation.{info.field_name}"
        if not ctx.audit.has_denial(field):
            ctx.audit.note(ctx.home_district_key, None, field, "", False)
        raise


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def submit_response(self, info: Info, input: SubmitResponseInput) -> SubmitResponsePayload:
        return await attempt(info, practice.submit_response(info, input))

    @strawberry.mutation
    async def record_activity(self, info: Info, events: list[ActivityEventInput]) -> RecordActivityPayload:
        return await attempt(info, practice.record_activity(info, events))

    @strawberry.mutation
    async def create_assignment(self, info: Info, input: CreateAssignmentInput) -> Assignment:
        return await attempt(info, practice.create_assignment(info, input))

    @strawberry.mutation
    async def open_data_request(self, info: Info, input: DataRequestInput) -> DataRequest:
        return await attempt(info, rights.open_data_request(info, input))

    @strawberry.mutation
    async def export_student_record(
        self, info: Info, student_id: strawberry.ID, data_request_id: strawberry.ID | None = None
    ) -> StudentExport:
        return await attempt(info, rights.export_student_record(info, student_id, data_request_id))

    @strawberry.mutation
    async def correct_student_record(self, info: Info, input: CorrectStudentInput) -> Student:
        return await attempt(info, rights.correct_student_record(info, input))

    @strawberry.mutation
    async def delete_student_record(
        self, info: Info, student_id: strawberry.ID, reason: str, data_request_id: strawberry.ID | None = None
    ) -> DeletionCertificate:
        return await attempt(info, rights.delete_student_record(info, student_id, reason, data_request_id))

    @strawberry.mutation
    async def set_analytics_opt_out(self, info: Info, student_id: strawberry.ID, opt_out: bool) -> Consent:
        return await attempt(info, rights.set_analytics_opt_out(info, student_id, opt_out))

    @strawberry.mutation
    async def update_district_settings(self, info: Info, input: DistrictSettingsInput) -> DistrictSettings:
        return await attempt(info, governance_ops.update_district_settings(info, input))

    @strawberry.mutation
    async def accept_policy_version(self, info: Info, version: str) -> District:
        return await attempt(info, governance_ops.accept_policy_version(info, version))

    @strawberry.mutation
    async def open_support_grant(self, info: Info, input: SupportGrantInput) -> SupportGrant:
        return await attempt(info, governance_ops.open_support_grant(info, input))

    @strawberry.mutation
    async def revoke_support_grant(self, info: Info, id: strawberry.ID) -> SupportGrant:
        return await attempt(info, governance_ops.revoke_support_grant(info, id))
