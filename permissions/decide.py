"""The one decision function, and the per-request table that caches it.

Everything here takes plain values and returns a decision with its reason:
no GraphQL, no database. The order of the checks fixes which reason a
caller sees when several apply (POLICY.md sections 3 and 4).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from permissions.enums import DataCategory, DenyReason, Purpose, RequestRefusal, Role
from permissions.policy import PolicyDocument, PolicySet, Rule


@dataclass(frozen=True, slots=True)
class DistrictConditions:
    """A district's settings that narrow the matrix (POLICY.md section 4)."""

    district_id: str
    authorized_purposes: frozenset[Purpose]
    collect_usage: bool
    collect_device: bool
    collect_demographics: bool
    direct_record_access: bool
    accepted_version: str
    minimum_group_size: int = 10


@dataclass(frozen=True, slots=True)
class Relationship:
    """The caller's standing towards the district whose data is read."""

    support_grant_active: bool = False  # only meaningful for SUPPORT


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DenyReason | None = None

    ALLOW: ClassVar[Decision]

    def __post_init__(self) -> None:
        if self.allowed == (self.reason is not None):
            raise ValueError("A Decision allows with no reason or denies with one")

    def __bool__(self) -> bool:
        # `if table.lookup(...):` must mean "if allowed", never "if not None".
        return self.allowed

    @staticmethod
    def deny(reason: DenyReason) -> Decision:
        return _DENIALS[reason]


Decision.ALLOW = Decision(True)
_DENIALS = {reason: Decision(False, reason) for reason in DenyReason}
_NO_RELATIONSHIP = Relationship()

# What each collection switch turns off.
_COLLECTION_SWITCH: dict[DataCategory, str] = {
    DataCategory.USAGE: "collect_usage",
    DataCategory.DEMOGRAPHIC: "collect_demographics",
    DataCategory.DEVICE: "collect_device",
}


def is_purpose_authorized(purpose: Purpose, conditions: DistrictConditions) -> bool:
    """Whether the district lets its data be used for ``purpose``. LEGAL_COMPLIANCE
    cannot be switched off. A district for which this is false is also left
    out of internal aggregates under ``purpose``."""
    return purpose is Purpose.LEGAL_COMPLIANCE or purpose in conditions.authorized_purposes


def is_collected(category: DataCategory, conditions: DistrictConditions) -> bool:
    switch = _COLLECTION_SWITCH.get(category)
    return switch is None or bool(getattr(conditions, switch))


def _granted_later(
    policies: PolicySet,
    governing: PolicyDocument,
    role: Role,
    purpose: Purpose,
    grants: Callable[[Rule], bool],
) -> bool:
    for doc in policies.newer_than(governing.version):
        rule = doc.rule(role, purpose)
        if rule is not None and grants(rule):
            return True
    return False


def decide(
    policies: PolicySet,
    role: Role,
    purpose: Purpose,
    category: DataCategory,
    conditions: DistrictConditions,
    relationship: Relationship,
) -> Decision:
    """May ``role`` under ``purpose`` read a field of ``category`` of this district?"""
    governing = policies.governing(conditions.accepted_version)
    rule = governing.rule(role, purpose)
    accepted = rule is not None and category in rule.categories
    # POLICY.md section 3 fixes which reason answers: the category in the rule
    # (of any version in effect), the district's authorized purposes, the
    # version the district accepted, then collection.
    if not accepted and not _granted_later(policies, governing, role, purpose, lambda r: category in r.categories):
        return _DENIALS[DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY]
    if not is_purpose_authorized(purpose, conditions):
        return _DENIALS[DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT]
    if not accepted:
        return _DENIALS[DenyReason.POLICY_VERSION_NOT_ACCEPTED]
    # Not returned over HTTP: without a grant SUPPORT reaches no row at all.
    if role is Role.SUPPORT and not relationship.support_grant_active:
        return _DENIALS[DenyReason.NO_SUPPORT_GRANT]
    if not is_collected(category, conditions):
        return _DENIALS[DenyReason.NOT_COLLECTED]
    return Decision.ALLOW


def _document(policies: PolicySet, conditions: DistrictConditions | None) -> PolicyDocument:
    # Internal users (ANALYST, SUPPORT) belong to no district: the latest terms.
    if conditions is None:
        return policies.latest()
    return policies.governing(conditions.accepted_version)


def decide_operation(
    policies: PolicySet,
    role: Role,
    purpose: Purpose,
    operation: str,
    conditions: DistrictConditions | None,
) -> Decision:
    """May ``role`` under ``purpose`` run ``operation`` (a root field name) at all?

    Row scope and the fields it returns are checked separately."""
    doc = _document(policies, conditions)
    if operation in doc.public_operations:
        return Decision.ALLOW
    rule = doc.rule(role, purpose)
    if rule is not None:
        if operation in doc.governance_operations and role is doc.governance_role:
            # Governance reads and writes no student's personal data, so a
            # district's authorized purposes do not restrict it: an admin can
            # always re-authorize a purpose the district switched off.
            return Decision.ALLOW
        if operation in rule.operations:
            if conditions is not None and not is_purpose_authorized(purpose, conditions):
                return _DENIALS[DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT]
            return Decision.ALLOW
    if _granted_later(policies, doc, role, purpose, lambda r: operation in r.operations):
        # The same order as for a field: the district's authorization first.
        if conditions is not None and not is_purpose_authorized(purpose, conditions):
            return _DENIALS[DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT]
        return _DENIALS[DenyReason.POLICY_VERSION_NOT_ACCEPTED]
    return _DENIALS[DenyReason.OUT_OF_SCOPE_OPERATION]


def check_request(
    policies: PolicySet,
    role: Role,
    purpose: Purpose,
    token_purposes: frozenset[Purpose],
    justification: str | None,
    conditions: DistrictConditions | None,
) -> RequestRefusal | None:
    """Why the whole request must be refused before anything is read, or None."""
    rule = _document(policies, conditions).rule(role, purpose)
    if rule is None or purpose not in token_purposes:
        return RequestRefusal.PURPOSE_NOT_ALLOWED
    if rule.requires_justification and (justification is None or not justification.strip()):
        return RequestRefusal.JUSTIFICATION_REQUIRED
    if rule.requires_direct_access and (conditions is None or not conditions.direct_record_access):
        return RequestRefusal.DIRECT_ACCESS_DISABLED
    return None


def allowed_purposes(
    policies: PolicySet,
    role: Role,
    token_purposes: frozenset[Purpose],
    conditions: DistrictConditions | None,
) -> list[Purpose]:
    """The purposes this caller may declare: the role's within the token's."""
    doc = _document(policies, conditions)
    return [p for p in doc.purposes_for(role) if p in token_purposes]


class DecisionTable:
    """The decisions of one request, computed once per (district, category).

    Role and purpose are fixed for a request, so after the first field of a
    category in a district, every further check is one dict lookup.
    """

    __slots__ = ("_cache", "_conditions", "_policies", "_relationship_for", "purpose", "role")

    def __init__(
        self,
        policies: PolicySet,
        role: Role,
        purpose: Purpose,
        relationship_for: Callable[[str], Relationship] | Mapping[str, Relationship],
        conditions: Mapping[str, DistrictConditions],
    ) -> None:
        self._policies = policies
        self.role = role
        self.purpose = purpose
        if isinstance(relationship_for, Mapping):
            relationships = relationship_for
            self._relationship_for: Callable[[str], Relationship] = lambda district_id: relationships.get(
                district_id, _NO_RELATIONSHIP
            )
        else:
            self._relationship_for = relationship_for
        self._conditions = conditions
        self._cache: dict[str, dict[DataCategory, Decision]] = {}

    def lookup(self, district_id: str, category: DataCategory) -> Decision:
        # Two plain dict lookups; a (district, category) tuple key costs more
        # to build and hash than the second lookup.
        row = self._cache.get(district_id)
        if row is not None:
            decision = row.get(category)
            if decision is not None:
                return decision
        return self._compute(district_id, category)

    def _compute(self, district_id: str, category: DataCategory) -> Decision:
        conditions = self._conditions.get(district_id)
        if conditions is None:
            raise LookupError(
                f"No settings for district {district_id!r} in this request's DecisionTable; "
                "load the district's conditions before resolving its fields"
            )
        decision = decide(
            self._policies,
            self.role,
            self.purpose,
            category,
            conditions,
            self._relationship_for(district_id),
        )
        self._cache.setdefault(district_id, {})[category] = decision
        return decision
