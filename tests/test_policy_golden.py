"""The shipped policy against a table written by hand from POLICY.md section 3.

GOLDEN is deliberately NOT derived from the TOML or from permissions/: it is
the second, independent reading of the policy that the data must agree with.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from permissions.decide import (
    DistrictConditions,
    Relationship,
    allowed_purposes,
    check_request,
    decide,
    decide_operation,
)
from permissions.enums import (
    AggregateScope,
    DataCategory,
    DenyReason,
    Purpose,
    RequestRefusal,
    Role,
    Scope,
)
from permissions.policy import PolicySet, load_policy_set

R = Role
P = Purpose
DIRECTORY = DataCategory.DIRECTORY
IDENTIFIER = DataCategory.IDENTIFIER
DEMOGRAPHIC = DataCategory.DEMOGRAPHIC
PERFORMANCE = DataCategory.PERFORMANCE
WORK = DataCategory.WORK
USAGE = DataCategory.USAGE
DEVICE = DataCategory.DEVICE
STAFF = DataCategory.STAFF
CONTACT = DataCategory.CONTACT

# POLICY.md section 3, row by row (23 rows; ANALYST rows grant no category).
GOLDEN: dict[tuple[Role, Purpose], set[DataCategory]] = {
    (R.TEACHER, P.INSTRUCTION): {DIRECTORY, IDENTIFIER, PERFORMANCE, WORK, USAGE, STAFF},
    (R.TEACHER, P.REPORTING): {DIRECTORY, IDENTIFIER, PERFORMANCE},
    (R.TEACHER, P.PERSONALIZATION): {STAFF},
    (R.TEACHER, P.COMMUNICATION): {STAFF},
    (R.SCHOOL_ADMIN, P.INSTRUCTION): {DIRECTORY, IDENTIFIER, PERFORMANCE, WORK},
    (R.SCHOOL_ADMIN, P.REPORTING): {DIRECTORY, IDENTIFIER, DEMOGRAPHIC, PERFORMANCE, USAGE},
    (R.SCHOOL_ADMIN, P.PERSONALIZATION): {STAFF},
    (R.SCHOOL_ADMIN, P.COMMUNICATION): {STAFF},
    (R.DISTRICT_ADMIN, P.INSTRUCTION): {DIRECTORY, IDENTIFIER, PERFORMANCE, WORK},
    (R.DISTRICT_ADMIN, P.REPORTING): {DIRECTORY, IDENTIFIER, DEMOGRAPHIC, PERFORMANCE, USAGE},
    (R.DISTRICT_ADMIN, P.PERSONALIZATION): {STAFF},
    (R.DISTRICT_ADMIN, P.COMMUNICATION): {STAFF},
    (R.DISTRICT_ADMIN, P.RECORD_ACCESS): {
        DIRECTORY,
        IDENTIFIER,
        DEMOGRAPHIC,
        PERFORMANCE,
        WORK,
        USAGE,
        DEVICE,
        STAFF,
        CONTACT,
    },
    (R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE): {
        DIRECTORY,
        IDENTIFIER,
        DEMOGRAPHIC,
        PERFORMANCE,
        WORK,
        USAGE,
        DEVICE,
        STAFF,
        CONTACT,
    },
    (R.STUDENT, P.STUDENT_LEARNING): {DIRECTORY, PERFORMANCE, WORK, STAFF},
    (R.STUDENT, P.PERSONALIZATION): {DIRECTORY},
    (R.STUDENT, P.RECORD_ACCESS): {
        DIRECTORY,
        IDENTIFIER,
        DEMOGRAPHIC,
        PERFORMANCE,
        WORK,
        USAGE,
        DEVICE,
    },
    (R.GUARDIAN, P.REPORTING): {DIRECTORY, PERFORMANCE, STAFF},
    (R.GUARDIAN, P.PERSONALIZATION): {CONTACT},
    (R.GUARDIAN, P.RECORD_ACCESS): {
        DIRECTORY,
        IDENTIFIER,
        DEMOGRAPHIC,
        PERFORMANCE,
        WORK,
        USAGE,
        DEVICE,
        CONTACT,
    },
    (R.ANALYST, P.PRODUCT_ANALYTICS): set(),
    (R.ANALYST, P.REPORTING): set(),
    (R.SUPPORT, P.SUPPORT): {DIRECTORY, USAGE, DEVICE, STAFF},
}

ALL_CELLS = list(itertools.product(Role, Purpose, DataCategory))
ALL_PAIRS = list(itertools.product(Role, Purpose))

POLICIES: PolicySet = load_policy_set()

OPEN_DISTRICT = DistrictConditions(
    district_id="d1",
    authorized_purposes=frozenset(Purpose),
    collect_usage=True,
    collect_device=True,
    collect_demographics=True,
    direct_record_access=True,
    accepted_version="2020-04-01",
)
WITH_GRANT = Relationship(support_grant_active=True)


def test_the_golden_table_has_one_entry_per_row_of_the_matrix() -> None:
    assert len(GOLDEN) == 23


def test_the_shipped_policy_is_the_single_version_2020_04_01() -> None:
    assert POLICIES.versions() == ["2020-04-01"]
    doc = POLICIES.latest()
    assert doc.material is True
    assert str(doc.effective_date) == "2020-04-01"


def test_the_policy_has_exactly_the_golden_role_purpose_pairs() -> None:
    doc = POLICIES.latest()
    assert {(r.role, r.purpose) for r in doc.rules} == set(GOLDEN)


@pytest.mark.parametrize(("role", "purpose", "category"), ALL_CELLS)
def test_decide_allows_exactly_the_golden_cells(role: Role, purpose: Purpose, category: DataCategory) -> None:
    decision = decide(POLICIES, role, purpose, category, OPEN_DISTRICT, WITH_GRANT)
    expected = category in GOLDEN.get((role, purpose), set())
    assert decision.allowed is expected
    if not expected:
        assert decision.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY


@pytest.mark.parametrize(("role", "purpose"), ALL_PAIRS)
def test_check_request_refuses_exactly_the_pairs_outside_the_golden_table(role: Role, purpose: Purpose) -> None:
    refusal = check_request(
        POLICIES,
        role,
        purpose,
        token_purposes=frozenset(Purpose),
        justification="court order 2020-17",
        conditions=OPEN_DISTRICT,
    )
    if (role, purpose) in GOLDEN:
        assert refusal is None
    else:
        assert refusal is RequestRefusal.PURPOSE_NOT_ALLOWED


@pytest.mark.parametrize("role", list(Role))
def test_allowed_purposes_are_the_golden_purposes_in_enum_order(role: Role) -> None:
    expected = [p for p in Purpose if (role, p) in GOLDEN]
    assert allowed_purposes(POLICIES, role, frozenset(Purpose), OPEN_DISTRICT) == expected


# Scopes, aggregates and operations of every row, written out by hand from
# POLICY.md sections 2 and 3: (students, staff, guardians, aggregates,
# operations). A scope's staff rows are reachable under every purpose of the
# pair (section 2), STAFF listed or not: TEACHER x REPORTING reaches the
# teachers of its classes, the admins' INSTRUCTION and REPORTING their school's
# or district's staff.
NONE = Scope.NONE
RECORD_OPERATIONS = {
    "auditLog",
    "accessLog",
    "dataRequests",
    "openDataRequest",
    "exportStudentRecord",
    "correctStudentRecord",
    "deleteStudentRecord",
    "setAnalyticsOptOut",
}
EXPECTED_ROWS: dict[tuple[Role, Purpose], tuple[Scope, Scope, Scope, AggregateScope, set[str]]] = {
    (R.TEACHER, P.INSTRUCTION): (Scope.CLASSES, Scope.CLASSES, NONE, AggregateScope.NONE, {"createAssignment"}),
    (R.TEACHER, P.REPORTING): (Scope.CLASSES, Scope.CLASSES, NONE, AggregateScope.CLASSES, set()),
    (R.TEACHER, P.PERSONALIZATION): (NONE, Scope.SELF, NONE, AggregateScope.NONE, set()),
    (R.TEACHER, P.COMMUNICATION): (NONE, Scope.SCHOOL, NONE, AggregateScope.NONE, set()),
    (R.SCHOOL_ADMIN, P.INSTRUCTION): (Scope.SCHOOL, Scope.SCHOOL, NONE, AggregateScope.NONE, set()),
    (R.SCHOOL_ADMIN, P.REPORTING): (Scope.SCHOOL, Scope.SCHOOL, NONE, AggregateScope.SCHOOL, set()),
    (R.SCHOOL_ADMIN, P.PERSONALIZATION): (NONE, Scope.SELF, NONE, AggregateScope.NONE, set()),
    (R.SCHOOL_ADMIN, P.COMMUNICATION): (NONE, Scope.SCHOOL, NONE, AggregateScope.NONE, set()),
    (R.DISTRICT_ADMIN, P.INSTRUCTION): (Scope.DISTRICT, Scope.DISTRICT, NONE, AggregateScope.NONE, set()),
    (R.DISTRICT_ADMIN, P.REPORTING): (Scope.DISTRICT, Scope.DISTRICT, NONE, AggregateScope.DISTRICT, {"auditLog"}),
    (R.DISTRICT_ADMIN, P.PERSONALIZATION): (NONE, Scope.SELF, NONE, AggregateScope.NONE, set()),
    (R.DISTRICT_ADMIN, P.COMMUNICATION): (NONE, Scope.DISTRICT, NONE, AggregateScope.NONE, set()),
    (R.DISTRICT_ADMIN, P.RECORD_ACCESS): (
        Scope.DISTRICT,
        Scope.DISTRICT,
        Scope.DISTRICT,
        AggregateScope.NONE,
        RECORD_OPERATIONS,
    ),
    (R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE): (
        Scope.DISTRICT,
        Scope.DISTRICT,
        Scope.DISTRICT,
        AggregateScope.DISTRICT,
        {"auditLog"},
    ),
    (R.STUDENT, P.STUDENT_LEARNING): (
        Scope.SELF,
        Scope.CLASSES,
        NONE,
        AggregateScope.NONE,
        {"submitResponse", "recordActivity"},
    ),
    (R.STUDENT, P.PERSONALIZATION): (Scope.SELF, NONE, NONE, AggregateScope.NONE, set()),
    (R.STUDENT, P.RECORD_ACCESS): (Scope.SELF, NONE, NONE, AggregateScope.NONE, {"accessLog"}),
    (R.GUARDIAN, P.REPORTING): (Scope.CHILDREN, Scope.CHILDREN, NONE, AggregateScope.NONE, set()),
    (R.GUARDIAN, P.PERSONALIZATION): (NONE, NONE, Scope.SELF, AggregateScope.NONE, set()),
    (R.GUARDIAN, P.RECORD_ACCESS): (
        Scope.CHILDREN,
        NONE,
        Scope.CHILDREN,
        AggregateScope.NONE,
        {"accessLog", "setAnalyticsOptOut"},
    ),
    (R.ANALYST, P.PRODUCT_ANALYTICS): (NONE, NONE, NONE, AggregateScope.AUTHORIZING_DISTRICTS, set()),
    (R.ANALYST, P.REPORTING): (NONE, NONE, NONE, AggregateScope.ALL_DISTRICTS, set()),
    (R.SUPPORT, P.SUPPORT): (Scope.GRANT, Scope.GRANT, NONE, AggregateScope.NONE, set()),
}


def test_every_row_of_the_matrix_has_its_hand_written_scopes() -> None:
    assert set(EXPECTED_ROWS) == set(GOLDEN)


@pytest.mark.parametrize(("pair", "expected"), list(EXPECTED_ROWS.items()))
def test_rows_have_the_hand_written_scopes_aggregates_and_operations(
    pair: tuple[Role, Purpose],
    expected: tuple[Scope, Scope, Scope, AggregateScope, set[str]],
) -> None:
    rule = POLICIES.latest().rule(*pair)
    assert rule is not None
    student, staff, guardian, aggregates, operations = expected
    assert rule.student_scope is student
    assert rule.staff_scope is staff
    assert rule.guardian_scope is guardian
    assert rule.aggregates is aggregates
    assert rule.operations == operations


def test_only_legal_compliance_requires_justification_and_is_break_glass() -> None:
    doc = POLICIES.latest()
    assert {(r.role, r.purpose) for r in doc.rules if r.requires_justification} == {
        (R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE)
    }
    assert {(r.role, r.purpose) for r in doc.rules if r.break_glass} == {(R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE)}


def test_only_student_and_guardian_record_access_require_direct_access() -> None:
    doc = POLICIES.latest()
    assert {(r.role, r.purpose) for r in doc.rules if r.requires_direct_access} == {
        (R.STUDENT, P.RECORD_ACCESS),
        (R.GUARDIAN, P.RECORD_ACCESS),
    }


@pytest.mark.parametrize(
    "operation",
    [
        "updateDistrictSettings",
        "acceptPolicyVersion",
        "openSupportGrant",
        "revokeSupportGrant",
        "supportGrants",
    ],
)
def test_district_governance_is_for_district_admins_under_any_of_their_purposes(
    operation: str,
) -> None:
    for role, purpose in ALL_PAIRS:
        decision = decide_operation(POLICIES, role, purpose, operation, OPEN_DISTRICT)
        expected = role is R.DISTRICT_ADMIN and (role, purpose) in GOLDEN
        assert decision.allowed is expected, (role, purpose)


@pytest.mark.parametrize("operation", ["policy", "policyVersions"])
def test_the_policy_itself_is_public(operation: str) -> None:
    for role, purpose in ALL_PAIRS:
        assert decide_operation(POLICIES, role, purpose, operation, None).allowed


def test_audit_log_is_for_district_admins_under_reporting_record_access_and_legal() -> None:
    allowed = {pair for pair in ALL_PAIRS if decide_operation(POLICIES, *pair, "auditLog", OPEN_DISTRICT).allowed}
    assert allowed == {
        (R.DISTRICT_ADMIN, P.REPORTING),
        (R.DISTRICT_ADMIN, P.RECORD_ACCESS),
        (R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE),
    }


def test_access_log_is_for_record_access_of_admins_students_and_guardians() -> None:
    allowed = {pair for pair in ALL_PAIRS if decide_operation(POLICIES, *pair, "accessLog", OPEN_DISTRICT).allowed}
    assert allowed == {
        (R.DISTRICT_ADMIN, P.RECORD_ACCESS),
        (R.STUDENT, P.RECORD_ACCESS),
        (R.GUARDIAN, P.RECORD_ACCESS),
    }


def test_an_operation_outside_the_rule_is_out_of_scope() -> None:
    decision = decide_operation(POLICIES, R.TEACHER, P.REPORTING, "createAssignment", OPEN_DISTRICT)
    assert decision.reason is DenyReason.OUT_OF_SCOPE_OPERATION
    assert not decide_operation(POLICIES, R.TEACHER, P.INSTRUCTION, "noSuchOperation", OPEN_DISTRICT).allowed


def test_no_purpose_exists_for_advertising_marketing_sale_or_profiling() -> None:
    names = " ".join(p.value for p in Purpose)
    for word in ("ADVERTIS", "MARKETING", "SALE", "SELL", "PROFIL"):
        assert word not in names


# POLICY.md section 3: "For a field: the category in the rule, the district's
# authorized purposes, the policy version, then collection."
VERSIONED: PolicySet = load_policy_set([Path(__file__).with_name("policies")])
CLOSED_DISTRICT = DistrictConditions(
    district_id="d2",
    authorized_purposes=frozenset(),
    collect_usage=False,
    collect_device=False,
    collect_demographics=False,
    direct_record_access=False,
    accepted_version="2020-04-01",
)


def test_the_category_in_the_rule_answers_before_everything_else() -> None:
    decision = decide(POLICIES, R.TEACHER, P.INSTRUCTION, DEVICE, CLOSED_DISTRICT, WITH_GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY


def test_the_districts_authorization_answers_before_the_policy_version_and_collection() -> None:
    # 2099-01-01 (not accepted) would give TEACHER x INSTRUCTION DEMOGRAPHIC.
    decision = decide(VERSIONED, R.TEACHER, P.INSTRUCTION, DEMOGRAPHIC, CLOSED_DISTRICT, WITH_GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT
    usage = decide(POLICIES, R.TEACHER, P.INSTRUCTION, USAGE, CLOSED_DISTRICT, WITH_GRANT)
    assert usage.reason is DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT


def test_the_policy_version_answers_before_collection() -> None:
    authorized = dataclasses.replace(CLOSED_DISTRICT, authorized_purposes=frozenset(Purpose))
    decision = decide(VERSIONED, R.TEACHER, P.INSTRUCTION, DEMOGRAPHIC, authorized, WITH_GRANT)
    assert decision.reason is DenyReason.POLICY_VERSION_NOT_ACCEPTED
    usage = decide(VERSIONED, R.TEACHER, P.INSTRUCTION, USAGE, authorized, WITH_GRANT)
    assert usage.reason is DenyReason.NOT_COLLECTED


def test_a_request_is_refused_for_the_purpose_before_the_justification_and_direct_access() -> None:
    closed = dataclasses.replace(CLOSED_DISTRICT, authorized_purposes=frozenset(Purpose))
    no_token = frozenset({P.REPORTING})
    assert (
        check_request(POLICIES, R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE, no_token, None, closed)
        is RequestRefusal.PURPOSE_NOT_ALLOWED
    )
    assert (
        check_request(POLICIES, R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE, frozenset(Purpose), None, closed)
        is RequestRefusal.JUSTIFICATION_REQUIRED
    )
    assert (
        check_request(POLICIES, R.STUDENT, P.RECORD_ACCESS, frozenset(Purpose), None, closed)
        is RequestRefusal.DIRECT_ACCESS_DISABLED
    )


def test_every_district_authorizes_all_nine_purposes_by_default() -> None:
    from server.models import DEFAULT_PURPOSES

    assert sorted(DEFAULT_PURPOSES) == sorted(p.value for p in Purpose)
