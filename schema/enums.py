"""The policy's enums, exposed to GraphQL under the contract's names."""

from __future__ import annotations

import enum
from typing import TypeAlias

import strawberry

from permissions.enums import DataCategory, Purpose, Role

# ``strawberry.enum`` registers the GraphQL enum on the policy's own class and
# returns that class, so each name below is the policy enum itself.
strawberry.enum(DataCategory, name="DataCategory")
strawberry.enum(Role, name="Role")
strawberry.enum(Purpose, name="Purpose")
DataCategoryEnum: TypeAlias = DataCategory
RoleEnum: TypeAlias = Role
PurposeEnum: TypeAlias = Purpose


@strawberry.enum
class Decision(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@strawberry.enum
class ActivityKind(enum.Enum):
    SESSION_START = "SESSION_START"
    SESSION_END = "SESSION_END"
    VIEW = "VIEW"
    CLICK = "CLICK"
    TOUCH = "TOUCH"
    HOVER = "HOVER"
    NAVIGATE = "NAVIGATE"
    ANSWER = "ANSWER"


@strawberry.enum
class Dimension(enum.Enum):
    DISTRICT = "DISTRICT"
    SCHOOL = "SCHOOL"
    CLASS = "CLASS"
    GRADE_LEVEL = "GRADE_LEVEL"
    SUBJECT = "SUBJECT"
    ASSESSMENT = "ASSESSMENT"
    SKILL = "SKILL"
    WEEK = "WEEK"
    GENDER = "GENDER"
    ETHNICITY = "ETHNICITY"
    ENGLISH_LEARNER = "ENGLISH_LEARNER"
    SPECIAL_EDUCATION = "SPECIAL_EDUCATION"
    ECONOMICALLY_DISADVANTAGED = "ECONOMICALLY_DISADVANTAGED"


@strawberry.enum
class SuppressionReason(enum.Enum):
    SMALL_GROUP = "SMALL_GROUP"
    COMPLEMENTARY = "COMPLEMENTARY"


@strawberry.enum
class DataRequestKind(enum.Enum):
    ACCESS = "ACCESS"
    CORRECTION = "CORRECTION"
    DELETION = "DELETION"


@strawberry.enum
class DataRequestStatus(enum.Enum):
    OPEN = "OPEN"
    FULFILLED = "FULFILLED"
    REJECTED = "REJECTED"
