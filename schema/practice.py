"""Student practice and classroom work: submitResponse, recordActivity, createAssignment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strawberry.types import Info

from server.errors import NotAvailable

if TYPE_CHECKING:
    from schema.governance import (
        ActivityEventInput,
        CreateAssignmentInput,
        RecordActivityPayload,
        SubmitResponseInput,
        SubmitResponsePayload,
    )
    from schema.types import Assignment


async def submit_response(info: Info, input: SubmitResponseInput) -> SubmitResponsePayload:
    raise NotAvailable("submitResponse is not available in this release")


async def record_activity(info: Info, events: list[ActivityEventInput]) -> RecordActivityPayload:
    raise NotAvailable("recordActivity is not available in this release")


async def create_assignment(info: Info, input: CreateAssignmentInput) -> Assignment:
    raise NotAvailable("createAssignment is not available in this release")
