"""Subscription: live events of one class (schema.graphql ``classActivity``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncGenerator

import strawberry

from permissions.enums import DataCategory
from permissions.errors import NotAvailable
from schema.base import Info, field, subscription
from schema.classified import classified
from schema.enums import ActivityKind
from schema.types import Response, Student


@strawberry.type
class ClassActivity:
    """One event in a class: a response submitted, a practice session started or ended."""

    student_row: strawberry.Private[Student]
    event_kind: strawberry.Private[ActivityKind]
    event_at: strawberry.Private[dt.datetime]
    response_row: strawberry.Private[Response | None]
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]

    @strawberry.field
    def student(self) -> Student:
        return self.student_row

    @classified(DataCategory.USAGE)
    def kind(self) -> ActivityKind | None:
        return self.event_kind

    @classified(DataCategory.USAGE)
    def at(self) -> dt.datetime | None:
        return self.event_at

    @field(description="The response just submitted; null for other kinds of activity.")
    def response(self) -> Response | None:
        return self.response_row


@strawberry.type(
    description="Live updates, over WebSocket (the graphql-transport-ws protocol) or Server-Sent Events "
    "(the graphql-sse protocol) at /graphql. Each delivered event is decided and audited exactly like a "
    "query that read the same fields."
)
class Subscription:
    @subscription(
        description="What happens in one class the caller may see, as it happens: responses submitted, "
        "practice sessions started and ended."
    )
    async def class_activity(self, info: Info, class_id: strawberry.ID) -> AsyncGenerator[ClassActivity, None]:
        raise NotAvailable("Subscriptions are not served yet")
        yield  # pragma: no cover - makes this an async generator
