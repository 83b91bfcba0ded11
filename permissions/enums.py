"""The words of the policy. Each value equals its name, as in schema.graphql."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    DISTRICT_ADMIN = "DISTRICT_ADMIN"
    SCHOOL_ADMIN = "SCHOOL_ADMIN"
    TEACHER = "TEACHER"
    STUDENT = "STUDENT"
    GUARDIAN = "GUARDIAN"
    ANALYST = "ANALYST"
    SUPPORT = "SUPPORT"
    # A person running pledgeql's commands on the server: never a GraphQL
    # caller (no policy rule names it), it appears only as an audit actor.
    OPERATOR = "OPERATOR"


class Purpose(enum.StrEnum):
    """Why data is used. There is deliberately no purpose for advertising,
    marketing, sale or profiling."""

    INSTRUCTION = "INSTRUCTION"
    STUDENT_LEARNING = "STUDENT_LEARNING"
    REPORTING = "REPORTING"
    PERSONALIZATION = "PERSONALIZATION"
    COMMUNICATION = "COMMUNICATION"
    SUPPORT = "SUPPORT"
    PRODUCT_ANALYTICS = "PRODUCT_ANALYTICS"
    RECORD_ACCESS = "RECORD_ACCESS"
    LEGAL_COMPLIANCE = "LEGAL_COMPLIANCE"


class DataCategory(enum.StrEnum):
    DIRECTORY = "DIRECTORY"
    IDENTIFIER = "IDENTIFIER"
    DEMOGRAPHIC = "DEMOGRAPHIC"
    PERFORMANCE = "PERFORMANCE"
    WORK = "WORK"
    USAGE = "USAGE"
    DEVICE = "DEVICE"
    STAFF = "STAFF"
    CONTACT = "CONTACT"


class Scope(enum.StrEnum):
    """Whose records a caller can reach at all (POLICY.md section 2)."""

    CLASSES = "CLASSES"
    SCHOOL = "SCHOOL"
    DISTRICT = "DISTRICT"
    SELF = "SELF"
    CHILDREN = "CHILDREN"
    GRANT = "GRANT"
    NONE = "NONE"


class AggregateScope(enum.StrEnum):
    """Over which students a caller may see anonymous counts."""

    NONE = "NONE"
    CLASSES = "CLASSES"
    SCHOOL = "SCHOOL"
    DISTRICT = "DISTRICT"
    ALL_DISTRICTS = "ALL_DISTRICTS"
    AUTHORIZING_DISTRICTS = "AUTHORIZING_DISTRICTS"


class DenyReason(enum.StrEnum):
    """Why a field resolved to null (extensions.reason of a FORBIDDEN error)."""

    PURPOSE_NOT_ALLOWED_FOR_CATEGORY = "PURPOSE_NOT_ALLOWED_FOR_CATEGORY"
    PURPOSE_NOT_AUTHORIZED_BY_DISTRICT = "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT"
    NO_SUPPORT_GRANT = "NO_SUPPORT_GRANT"
    POLICY_VERSION_NOT_ACCEPTED = "POLICY_VERSION_NOT_ACCEPTED"
    NOT_COLLECTED = "NOT_COLLECTED"
    OUT_OF_SCOPE_OPERATION = "OUT_OF_SCOPE_OPERATION"


class RequestRefusal(enum.StrEnum):
    """Why a whole request was refused before anything was read (an error code)."""

    PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED"
    JUSTIFICATION_REQUIRED = "JUSTIFICATION_REQUIRED"
    DIRECT_ACCESS_DISABLED = "DIRECT_ACCESS_DISABLED"


# The roles a request can be made as: every role but OPERATOR.
CALLER_ROLES: tuple[Role, ...] = tuple(r for r in Role if r is not Role.OPERATOR)

# The purposes under which an ANALYST receives its internal aggregates
# (POLICY.md 3); the same report under both is suppressed as one.
ANALYST_PURPOSES: frozenset[Purpose] = frozenset({Purpose.REPORTING, Purpose.PRODUCT_ANALYTICS})
