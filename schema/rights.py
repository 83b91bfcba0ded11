"""Families' rights through their district: requests, access, correction, deletion, consent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry
from strawberry.types import Info

from server.errors import NotAvailable

if TYPE_CHECKING:
    from schema.enums import DataRequestStatus
    from schema.governance import (
        Consent,
        CorrectStudentInput,
        DataRequest,
        DataRequestInput,
        DeletionCertificate,
        StudentExport,
    )
    from schema.types import Student


async def open_data_request(info: Info, input: DataRequestInput) -> DataRequest:
    raise NotAvailable("openDataRequest is not available in this release")


async def export_student_record(
    info: Info, student_id: strawberry.ID, data_request_id: strawberry.ID | None
) -> StudentExport:
    raise NotAvailable("exportStudentRecord is not available in this release")


async def correct_student_record(info: Info, input: CorrectStudentInput) -> Student:
    raise NotAvailable("correctStudentRecord is not available in this release")


async def delete_student_record(
    info: Info, student_id: strawberry.ID, reason: str, data_request_id: strawberry.ID | None
) -> DeletionCertificate:
    raise NotAvailable("deleteStudentRecord is not available in this release")


async def set_analytics_opt_out(info: Info, student_id: strawberry.ID, opt_out: bool) -> Consent:
    raise NotAvailable("setAnalyticsOptOut is not available in this release")


async def data_requests(info: Info, status: DataRequestStatus | None) -> list[DataRequest]:
    raise NotAvailable("dataRequests is not available in this release")
