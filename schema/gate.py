"""The operation gate: one check for every root field that is an operation of
the policy (API.md and POLICY.md section 3's "operations" column).

Each such field names its operation and who may run it (``Needs``) in one
call of ``gate``; the policy decides, and a refused attempt is noted as a
DENY audit entry (no values, no category) before the FORBIDDEN error leaves.
``check_operations`` (at schema build) proves that every operation a policy
can name is a field of the schema, and ``gate`` refuses to check an
operation no policy can name, so the two lists cannot drift apart.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

from permissions.enums import Role
from permissions.errors import Forbidden, refusal_message
from permissions.policy import KNOWN_OPERATIONS
from schema.base import Info


class Needs(enum.Enum):
    """Who, besides the policy's rule, may run an operation."""

    # The rule alone; the allowed attempt is audited too (the audit reads).
    RULE_AUDITED = "rule, audited"
    # A district's own users: the operation reads or writes its district.
    DISTRICT_USER = "district user"
    # The district's administrators: governance.
    DISTRICT_ADMIN = "district admin"


_REFUSED = {
    Needs.DISTRICT_USER: "Operation {operation} is for a district's own users",
    Needs.DISTRICT_ADMIN: "Operation {operation} is for the district's administrators",
}


def field_name(info: Info) -> str:
    """The resolving field as ``Type.field``, as audit entries name it."""
    return f"{info.path.typename}.{info.field_name}"


def require_operation(info: Info, operation: str) -> None:
    """The policy's word on ``operation`` for the caller's role, purpose and district."""
    from permissions.decide import decide_operation

    ctx = info.context
    conditions = ctx.conditions.get(ctx.home_district_key)
    decision = decide_operation(ctx.policies, ctx.principal.role, ctx.purpose, operation, conditions)
    if not decision.allowed:
        reason = decision.reason.value if decision.reason else "OUT_OF_SCOPE_OPERATION"
        raise Forbidden(
            refusal_message(f"operation {operation}", ctx.purpose.value, reason),
            operation=operation,
            purpose=ctx.purpose.value,
            reason=reason,
        )


def gate(
    info: Info,
    operation: str,
    needs: Needs,
    *,
    subject: uuid.UUID | None = None,
    district_key: str | None = None,
    note_refusal: bool = True,
) -> Any:
    """Let the caller run ``operation`` or raise FORBIDDEN, auditing a refusal
    (and, for ``RULE_AUDITED``, the allowed attempt) under ``district_key``
    (the caller's district by default) and ``subject``. Returns the caller's
    district id (None for an internal user under ``RULE_AUDITED``)."""
    if operation not in KNOWN_OPERATIONS:
        raise ValueError(f"{operation} is not an operation the policy can name (permissions.policy.KNOWN_OPERATIONS)")
    ctx = info.context
    key = district_key if district_key is not None else ctx.home_district_key
    role = ctx.principal.role
    district_id = ctx.principal.district_id
    try:
        require_operation(info, operation)
        refused = (needs is Needs.DISTRICT_USER and district_id is None) or (
            needs is Needs.DISTRICT_ADMIN and (role is not Role.DISTRICT_ADMIN or district_id is None)
        )
        if refused:
            raise Forbidden(
                _REFUSED[needs].format(operation=operation),
                purpose=ctx.purpose.value,
                reason="OUT_OF_SCOPE_OPERATION",
            )
    except Forbidden:
        if note_refusal:  # else the caller notes it (schema.rights, once it knows the subject)
            ctx.audit.note(key, subject, field_name(info), "", False)
        raise
    if needs is Needs.RULE_AUDITED:
        ctx.audit.note(key, subject, field_name(info), "", True)
    return district_id


def check_operations(fields: set[str]) -> list[str]:
    """The operations a policy can name that are no field of the schema (``fields``: their names)."""
    return [f"operation {name} is no field of the schema" for name in sorted(KNOWN_OPERATIONS - fields)]
