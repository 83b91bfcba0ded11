"""The personal types, and the data category each of their fields declares,
read from the type definitions themselves (no built schema needed): what
/privacy, the `policy` query and the export list as the fields of each
category. schema/build.py checks the served schema against them.
"""

from __future__ import annotations

import functools

from strawberry.schema.name_converter import NameConverter
from strawberry.types.base import get_object_definition

from permissions.enums import DataCategory
from schema.classified import category_of
from schema.governance import DataRequest
from schema.subscription import ClassActivity
from schema.types import (
    ActivityEvent,
    DeviceSession,
    Guardian,
    Response,
    SkillMastery,
    Staff,
    Student,
    StudentProgress,
)

# Types whose objects are (or belong to) a person's record.
PERSONAL_TYPES: tuple[type, ...] = (
    Student,
    Staff,
    Guardian,
    StudentProgress,
    SkillMastery,
    Response,
    ActivityEvent,
    DeviceSession,
    DataRequest,
    ClassActivity,
)

# The only way out of a category: fields of personal types that carry no
# personal information themselves (ids, links to non-personal objects, and
# fields with their own checks).
NON_PERSONAL_FIELDS = frozenset(
    {
        "Student.id",
        "Student.school",
        "Student.classes",
        "Student.accessLog",  # checked as the accessLog operation, and audited
        "Staff.id",
        "Staff.role",
        "Guardian.id",
        "SkillMastery.skill",
        "Response.id",
        "Response.item",
        "Response.assignment",
        "ActivityEvent.id",
        "DeviceSession.id",
        "DataRequest.id",
        "DataRequest.kind",
        "DataRequest.studentId",
        "DataRequest.receivedAt",
        "DataRequest.dueAt",
        "DataRequest.status",
        "DataRequest.fulfilledAt",
        "ClassActivity.student",
        "ClassActivity.response",
    }
)


PERSONAL_TYPE_NAMES = tuple(get_object_definition(cls, strict=True).name for cls in PERSONAL_TYPES)


@functools.cache
def category_fields() -> dict[str, list[str]]:
    """Category name -> the ``Type.field`` names declared with it, in the
    order of PERSONAL_TYPES and of each type's fields."""
    names = NameConverter()
    result: dict[str, list[str]] = {c.value: [] for c in DataCategory}
    for cls in PERSONAL_TYPES:
        definition = get_object_definition(cls, strict=True)
        for field in definition.fields:
            category = category_of(field)
            if category is not None:
                result[category.value].append(f"{definition.name}.{names.get_graphql_name(field)}")
    return result
