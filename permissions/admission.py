"""Admission, pure: may this caller's request run under its declared purpose,
and if so with which rule, relationships and row-level-security districts.

The transport reads the caller (``Principal``) and the district conditions
from the database and declares the purpose; ``admit`` decides from those
alone, with no database, no HTTP and no GraphQL, so the same decision serves
a request over HTTP and each event of a subscription, and tests can run it
on plain values.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from permissions.decide import DistrictConditions, Relationship, check_request
from permissions.enums import ANALYST_PURPOSES, Purpose, RequestRefusal, Role
from permissions.policy import PolicySet, Rule
from permissions.principal import Principal

# The chain of entries about no district (an internal user's refusals, for one).
NIL_DISTRICT = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class Admission:
    """What an admitted request runs with."""

    rule: Rule
    relationships: dict[str, Relationship]
    # The districts whose rows the request's transaction may touch at all
    # (the RLS setting), the nil district included for internal users.
    rls_districts: tuple[uuid.UUID, ...]


def rls_districts(principal: Principal, purpose: Purpose, conditions: dict[str, DistrictConditions]) -> list[uuid.UUID]:
    """The districts whose rows the request may touch, without the nil district."""
    if principal.district_id is not None:
        return [principal.district_id]
    if principal.role is Role.SUPPORT:
        return list(principal.granted_district_ids)
    if principal.role is not Role.ANALYST:
        return []
    # Analysts: only districts that authorize the declared purpose, and, under
    # one of the analysts' two purposes, those that authorize the other: a
    # report is suppressed jointly with the same report under the other
    # purpose (schema/reports.py), so it counts both universes; it shows only
    # its own.
    wanted = ANALYST_PURPOSES if purpose in ANALYST_PURPOSES else {purpose}
    return [uuid.UUID(key) for key, c in conditions.items() if wanted & c.authorized_purposes]


def admit(
    policies: PolicySet,
    principal: Principal,
    purpose: Purpose,
    token_purposes: frozenset[Purpose],
    justification: str | None,
    conditions: dict[str, DistrictConditions],
) -> RequestRefusal | Admission:
    """The refusal (POLICY.md section 3's order), or the admission.

    ``policies`` are the versions in effect on the request's day;
    ``conditions`` the settings of the districts the caller can reach."""
    home = conditions.get(str(principal.district_id)) if principal.district_id else None
    refusal = check_request(policies, principal.role, purpose, token_purposes, justification, home)
    if refusal is not None:
        return refusal
    document = policies.governing(home.accepted_version) if home else policies.latest()
    rule = document.rule(principal.role, purpose)
    if rule is None:
        return RequestRefusal.PURPOSE_NOT_ALLOWED
    granted = set(map(str, principal.granted_district_ids))
    relationships = {
        key: Relationship(support_grant_active=principal.role is Role.SUPPORT and key in granted) for key in conditions
    }
    rls = rls_districts(principal, purpose, conditions)
    # Only internal users write entries about no district (the nil district's
    # chain); a district user's request touches its district alone.
    if principal.district_id is None:
        rls.append(NIL_DISTRICT)
    return Admission(rule=rule, relationships=relationships, rls_districts=tuple(rls))
