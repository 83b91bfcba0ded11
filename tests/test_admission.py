"""Admission on plain values (permissions/admission.py): no database, no HTTP."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from permissions.admission import NIL_DISTRICT, Admission, admit
from permissions.decide import DistrictConditions
from permissions.enums import Purpose, RequestRefusal, Role
from permissions.policy import load_policy_set
from permissions.principal import Principal, SupportScope

POLICIES = load_policy_set()
ALL = frozenset(Purpose)
REPORTING_ONLY = frozenset({Purpose.REPORTING})
NORTH, SOUTH, EAST = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def district(district_id: uuid.UUID, **changes: object) -> DistrictConditions:
    base = DistrictConditions(
        district_id=str(district_id),
        authorized_purposes=frozenset(Purpose),
        collect_usage=True,
        collect_device=True,
        collect_demographics=True,
        direct_record_access=False,
        accepted_version="2020-04-01",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def person(role: Role, district_id: uuid.UUID | None, **more: object) -> Principal:
    return Principal(user_id=uuid.uuid4(), role=role, district_id=district_id, **more)  # type: ignore[arg-type]


def test_a_teacher_under_instruction_is_admitted_to_its_district_alone() -> None:
    home = {str(NORTH): district(NORTH)}
    admission = admit(POLICIES, person(Role.TEACHER, NORTH), Purpose.INSTRUCTION, ALL, None, home)
    assert isinstance(admission, Admission)
    assert (admission.rule.role, admission.rule.purpose) == (Role.TEACHER, Purpose.INSTRUCTION)
    assert admission.rls_districts == (NORTH,)
    assert not admission.relationships[str(NORTH)].support_grant_active


@pytest.mark.parametrize(
    ("role", "purpose", "token", "refusal"),
    [
        (Role.TEACHER, Purpose.PRODUCT_ANALYTICS, ALL, RequestRefusal.PURPOSE_NOT_ALLOWED),
        (Role.TEACHER, Purpose.INSTRUCTION, REPORTING_ONLY, RequestRefusal.PURPOSE_NOT_ALLOWED),
        (Role.DISTRICT_ADMIN, Purpose.LEGAL_COMPLIANCE, ALL, RequestRefusal.JUSTIFICATION_REQUIRED),
        (Role.STUDENT, Purpose.RECORD_ACCESS, ALL, RequestRefusal.DIRECT_ACCESS_DISABLED),
        # The order of POLICY.md section 3: the purpose before the justification.
        (Role.TEACHER, Purpose.LEGAL_COMPLIANCE, ALL, RequestRefusal.PURPOSE_NOT_ALLOWED),
    ],
)
def test_a_refused_request_gets_the_first_refusal_in_the_policys_order(
    role: Role,
    purpose: Purpose,
    token: frozenset[Purpose],
    refusal: RequestRefusal,
) -> None:
    home = {str(NORTH): district(NORTH)}
    assert admit(POLICIES, person(role, NORTH), purpose, token, None, home) is refusal


def test_a_student_is_admitted_to_record_access_where_the_district_allows_direct_access() -> None:
    home = {str(NORTH): district(NORTH, direct_record_access=True)}
    admission = admit(POLICIES, person(Role.STUDENT, NORTH), Purpose.RECORD_ACCESS, ALL, None, home)
    assert isinstance(admission, Admission) and admission.rls_districts == (NORTH,)


def test_a_justified_legal_compliance_request_is_admitted() -> None:
    home = {str(NORTH): district(NORTH)}
    admission = admit(
        POLICIES, person(Role.DISTRICT_ADMIN, NORTH), Purpose.LEGAL_COMPLIANCE, ALL, "court order 12", home
    )
    assert isinstance(admission, Admission) and admission.rule.purpose is Purpose.LEGAL_COMPLIANCE


def test_an_analysts_transaction_sees_the_districts_of_either_analyst_purpose_and_the_nil_district() -> None:
    conditions = {
        str(NORTH): district(NORTH),
        str(SOUTH): district(SOUTH, authorized_purposes=frozenset(Purpose) - {Purpose.PRODUCT_ANALYTICS}),
        str(EAST): district(
            EAST, authorized_purposes=frozenset(Purpose) - {Purpose.PRODUCT_ANALYTICS, Purpose.REPORTING}
        ),
    }
    admission = admit(POLICIES, person(Role.ANALYST, None), Purpose.PRODUCT_ANALYTICS, ALL, None, conditions)
    assert isinstance(admission, Admission)
    assert set(admission.rls_districts) == {NORTH, SOUTH, NIL_DISTRICT}


def test_support_sees_its_granted_districts_with_the_grant_and_the_nil_district() -> None:
    grants = (SupportScope(NORTH, ()), SupportScope(SOUTH, (uuid.uuid4(),)))
    conditions = {str(NORTH): district(NORTH), str(SOUTH): district(SOUTH)}
    support = person(Role.SUPPORT, None, grants=grants)
    admission = admit(POLICIES, support, Purpose.SUPPORT, ALL, None, conditions)
    assert isinstance(admission, Admission)
    assert admission.rls_districts == (NORTH, SOUTH, NIL_DISTRICT)
    assert all(r.support_grant_active for r in admission.relationships.values())
