"""Mutation: the contract's writes."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

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
from server.errors import NotAvailable


def _unavailable(name: str) -> NotAvailable:
    return NotAvailable(f"{name} is not available in this release")


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def submit_response(self, info: Info, input: SubmitResponseInput) -> SubmitResponsePayload:
        raise _unavailable("submitResponse")

    @strawberry.mutation
    async def record_activity(self, info: Info, events: list[ActivityEventInput]) -> RecordActivityPayload:
        raise _unavailable("recordActivity")

    @strawberry.mutation
    async def create_assignment(self, info: Info, input: CreateAssignmentInput) -> Assignment:
        raise _unavailable("createAssignment")

    @strawberry.mutation
    async def open_data_request(self, info: Info, input: DataRequestInput) -> DataRequest:
        raise _unavailable("openDataRequest")

    @strawberry.mutation
    async def export_student_record(
        self, info: Info, student_id: strawberry.ID, data_request_id: strawberry.ID | None = None
    ) -> StudentExport:
        raise _unavailable("exportStudentRecord")

    @strawberry.mutation
    async def correct_student_record(self, info: Info, input: CorrectStudentInput) -> Student:
        raise _unavailable("correctStudentRecord")

    @strawberry.mutation
    async def delete_student_record(
        self, info: Info, student_id: strawberry.ID, reason: str, data_request_id: strawberry.ID | None = None
    ) -> DeletionCertificate:
        raise _unavailable("deleteStudentRecord")

    @strawberry.mutation
    async def set_analytics_opt_out(self, info: Info, student_id: strawberry.ID, opt_out: bool) -> Consent:
        raise _unavailable("setAnalyticsOptOut")

    @strawberry.mutation
    async def update_district_settings(self, info: Info, input: DistrictSettingsInput) -> DistrictSettings:
        raise _unavailable("updateDistrictSettings")

    @strawberry.mutation
    async def accept_policy_version(self, info: Info, version: str) -> District:
        raise _unavailable("acceptPolicyVersion")

    @strawberry.mutation
    async def open_support_grant(self, info: Info, input: SupportGrantInput) -> SupportGrant:
        raise _unavailable("openSupportGrant")

    @strawberry.mutation
    async def revoke_support_grant(self, info: Info, id: strawberry.ID) -> SupportGrant:
        raise _unavailable("revokeSupportGrant")
