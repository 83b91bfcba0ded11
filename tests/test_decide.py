"""POLICY.md section 4: the conditions that narrow the matrix, the policy
versions, the loader's checks and the per-request decision table."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from permissions import decide as decide_module
from permissions.decide import (
    Decision,
    DecisionTable,
    DistrictConditions,
    Relationship,
    allowed_purposes,
    check_request,
    decide,
    decide_operation,
)
from permissions.enums import DataCategory, DenyReason, Purpose, RequestRefusal, Role
from permissions.policy import (
    PolicyDocument,
    PolicyError,
    PolicySet,
    UnknownPolicyVersion,
    load_policy_set,
    parse_policy,
)

TEST_POLICIES = Path(__file__).parent / "policies"
SHIPPED_TEXT = (Path(__file__).parent.parent / "permissions" / "policies" / "2020-04-01.toml").read_text("utf-8")

POLICIES = load_policy_set()
VERSIONED = load_policy_set(extra_dirs=[TEST_POLICIES])

DEFAULT = DistrictConditions(
    district_id="d1",
    authorized_purposes=frozenset(Purpose) - {Purpose.LEGAL_COMPLIANCE},
    collect_usage=True,
    collect_device=True,
    collect_demographics=True,
    direct_record_access=False,
    accepted_version="2020-04-01",
)
NO_GRANT = Relationship()
GRANT = Relationship(support_grant_active=True)
ALL_TOKEN = frozenset(Purpose)


def conditions(**changes: object) -> DistrictConditions:
    return dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]


# ------------------------------------------------ 1. authorized purposes


def test_a_purpose_the_district_has_not_authorized_is_denied_on_its_data() -> None:
    district = conditions(authorized_purposes=DEFAULT.authorized_purposes - {Purpose.REPORTING})
    decision = decide(POLICIES, Role.TEACHER, Purpose.REPORTING, DataCategory.PERFORMANCE, district, NO_GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT
    still = decide(POLICIES, Role.TEACHER, Purpose.INSTRUCTION, DataCategory.PERFORMANCE, district, NO_GRANT)
    assert still.allowed


def test_a_category_outside_the_rule_is_denied_before_the_district_is_asked() -> None:
    district = conditions(authorized_purposes=frozenset())
    decision = decide(POLICIES, Role.TEACHER, Purpose.REPORTING, DataCategory.DEVICE, district, NO_GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY


def test_legal_compliance_cannot_be_deauthorized_by_a_district() -> None:
    district = conditions(authorized_purposes=frozenset())
    decision = decide(
        POLICIES,
        Role.DISTRICT_ADMIN,
        Purpose.LEGAL_COMPLIANCE,
        DataCategory.DEMOGRAPHIC,
        district,
        NO_GRANT,
    )
    assert decision.allowed


def test_an_operation_under_an_unauthorized_purpose_is_denied() -> None:
    district = conditions(authorized_purposes=DEFAULT.authorized_purposes - {Purpose.RECORD_ACCESS})
    decision = decide_operation(POLICIES, Role.DISTRICT_ADMIN, Purpose.RECORD_ACCESS, "exportStudentRecord", district)
    assert decision.reason is DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT


def test_governance_still_works_under_a_purpose_the_district_switched_off() -> None:
    district = conditions(authorized_purposes=frozenset({Purpose.INSTRUCTION}))
    decision = decide_operation(POLICIES, Role.DISTRICT_ADMIN, Purpose.REPORTING, "updateDistrictSettings", district)
    assert decision.allowed


# ------------------------------------------------ 2. collection switches


@pytest.mark.parametrize(
    ("switch", "category"),
    [
        ("collect_usage", DataCategory.USAGE),
        ("collect_device", DataCategory.DEVICE),
        ("collect_demographics", DataCategory.DEMOGRAPHIC),
    ],
)
def test_a_collection_switch_turned_off_makes_its_category_not_collected(switch: str, category: DataCategory) -> None:
    role, purpose = Role.DISTRICT_ADMIN, Purpose.RECORD_ACCESS
    assert decide(POLICIES, role, purpose, category, DEFAULT, NO_GRANT).allowed
    off = conditions(**{switch: False})
    decision = decide(POLICIES, role, purpose, category, off, NO_GRANT)
    assert decision.reason is DenyReason.NOT_COLLECTED
    others = [c for c in DataCategory if c is not category]
    assert all(decide(POLICIES, role, purpose, c, off, NO_GRANT).allowed for c in others)


# ------------------------------------------------ 3. direct record access


@pytest.mark.parametrize("role", [Role.STUDENT, Role.GUARDIAN])
def test_record_access_by_students_and_guardians_needs_direct_access(role: Role) -> None:
    refused = check_request(POLICIES, role, Purpose.RECORD_ACCESS, ALL_TOKEN, None, DEFAULT)
    assert refused is RequestRefusal.DIRECT_ACCESS_DISABLED
    on = conditions(direct_record_access=True)
    assert check_request(POLICIES, role, Purpose.RECORD_ACCESS, ALL_TOKEN, None, on) is None


def test_district_admin_record_access_does_not_need_direct_access() -> None:
    refusal = check_request(POLICIES, Role.DISTRICT_ADMIN, Purpose.RECORD_ACCESS, ALL_TOKEN, None, DEFAULT)
    assert refusal is None


def test_direct_access_is_refused_when_the_district_is_unknown() -> None:
    refusal = check_request(POLICIES, Role.STUDENT, Purpose.RECORD_ACCESS, ALL_TOKEN, None, None)
    assert refusal is RequestRefusal.DIRECT_ACCESS_DISABLED


# ------------------------------------------------ 5. support grants


def test_support_without_an_active_grant_sees_nothing() -> None:
    for category in (DataCategory.DIRECTORY, DataCategory.USAGE, DataCategory.DEVICE):
        denied = decide(POLICIES, Role.SUPPORT, Purpose.SUPPORT, category, DEFAULT, NO_GRANT)
        assert denied.reason is DenyReason.NO_SUPPORT_GRANT
        assert decide(POLICIES, Role.SUPPORT, Purpose.SUPPORT, category, DEFAULT, GRANT).allowed


def test_a_grant_does_not_widen_what_support_may_see() -> None:
    decision = decide(POLICIES, Role.SUPPORT, Purpose.SUPPORT, DataCategory.WORK, DEFAULT, GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY


# ------------------------------------------------ 6. justification


@pytest.mark.parametrize("justification", [None, "", "   \t"])
def test_legal_compliance_without_a_justification_is_refused(justification: str | None) -> None:
    refusal = check_request(
        POLICIES,
        Role.DISTRICT_ADMIN,
        Purpose.LEGAL_COMPLIANCE,
        ALL_TOKEN,
        justification,
        DEFAULT,
    )
    assert refusal is RequestRefusal.JUSTIFICATION_REQUIRED


def test_legal_compliance_with_a_justification_is_accepted() -> None:
    refusal = check_request(
        POLICIES,
        Role.DISTRICT_ADMIN,
        Purpose.LEGAL_COMPLIANCE,
        ALL_TOKEN,
        "subpoena 24-118",
        DEFAULT,
    )
    assert refusal is None


# ------------------------------------------------ tokens narrow the purposes


def test_a_purpose_missing_from_the_token_is_not_allowed() -> None:
    teacher_app = frozenset({Purpose.INSTRUCTION, Purpose.REPORTING})
    refusal = check_request(POLICIES, Role.TEACHER, Purpose.COMMUNICATION, teacher_app, None, DEFAULT)
    assert refusal is RequestRefusal.PURPOSE_NOT_ALLOWED
    ok = check_request(POLICIES, Role.TEACHER, Purpose.REPORTING, teacher_app, None, DEFAULT)
    assert ok is None


def test_allowed_purposes_are_the_roles_within_the_tokens() -> None:
    token = frozenset({Purpose.REPORTING, Purpose.INSTRUCTION, Purpose.SUPPORT})
    assert allowed_purposes(POLICIES, Role.TEACHER, token, DEFAULT) == [
        Purpose.INSTRUCTION,
        Purpose.REPORTING,
    ]


def test_internal_users_are_checked_against_the_latest_policy() -> None:
    assert check_request(POLICIES, Role.ANALYST, Purpose.PRODUCT_ANALYTICS, ALL_TOKEN, None, None) is None
    assert (
        check_request(POLICIES, Role.ANALYST, Purpose.INSTRUCTION, ALL_TOKEN, None, None)
        is RequestRefusal.PURPOSE_NOT_ALLOWED
    )


# ------------------------------------------------ 7. policy versions


def test_versions_are_ordered_by_effective_date() -> None:
    assert VERSIONED.versions() == ["2020-04-01", "2098-06-01", "2099-01-01"]
    assert VERSIONED.latest().version == "2099-01-01"


def test_a_newer_non_material_version_governs_without_acceptance() -> None:
    assert VERSIONED.governing("2020-04-01").version == "2098-06-01"
    # 2098-06-01 narrows SUPPORT: no DEVICE any more, for a district that
    # accepted only 2020-04-01.
    decision = decide(VERSIONED, Role.SUPPORT, Purpose.SUPPORT, DataCategory.DEVICE, DEFAULT, GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY
    assert decide(POLICIES, Role.SUPPORT, Purpose.SUPPORT, DataCategory.DEVICE, DEFAULT, GRANT)


def test_a_newer_material_version_does_not_govern_until_accepted() -> None:
    decision = decide(VERSIONED, Role.TEACHER, Purpose.INSTRUCTION, DataCategory.DEMOGRAPHIC, DEFAULT, NO_GRANT)
    assert decision.reason is DenyReason.POLICY_VERSION_NOT_ACCEPTED
    operation = decide_operation(
        VERSIONED,
        Role.GUARDIAN,
        Purpose.RECORD_ACCESS,
        "openDataRequest",
        conditions(direct_record_access=True),
    )
    assert operation.reason is DenyReason.POLICY_VERSION_NOT_ACCEPTED


def test_a_material_version_governs_once_the_district_accepts_it() -> None:
    accepted = conditions(accepted_version="2099-01-01", direct_record_access=True)
    assert VERSIONED.governing("2099-01-01").version == "2099-01-01"
    decision = decide(VERSIONED, Role.TEACHER, Purpose.INSTRUCTION, DataCategory.DEMOGRAPHIC, accepted, NO_GRANT)
    assert decision.allowed
    operation = decide_operation(VERSIONED, Role.GUARDIAN, Purpose.RECORD_ACCESS, "openDataRequest", accepted)
    assert operation.allowed
    # The narrowing of 2098-06-01 stays.
    support = decide(VERSIONED, Role.SUPPORT, Purpose.SUPPORT, DataCategory.DEVICE, accepted, GRANT)
    assert support.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY


def test_a_version_denied_by_every_version_is_not_allowed_for_category() -> None:
    decision = decide(VERSIONED, Role.TEACHER, Purpose.INSTRUCTION, DataCategory.DEVICE, DEFAULT, NO_GRANT)
    assert decision.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY


def test_governing_follows_a_chain_of_non_material_versions_up_to_the_next_material() -> None:
    base = POLICIES.latest()

    def version(name: str, day: int, material: bool) -> PolicyDocument:
        return dataclasses.replace(
            base,
            version=name,
            effective_date=datetime.date(2030, 1, day),
            material=material,
        )

    chain = PolicySet(
        [
            base,
            version("a", 1, False),
            version("b", 2, False),
            version("c", 3, True),
            version("d", 4, False),
        ]
    )
    assert chain.governing("2020-04-01").version == "b"
    assert chain.governing("a").version == "b"
    assert chain.governing("c").version == "d"
    assert chain.governing("d").version == "d"


def test_an_unknown_version_names_the_known_ones() -> None:
    with pytest.raises(UnknownPolicyVersion) as raised:
        VERSIONED.get("1999-01-01")
    assert "2020-04-01" in str(raised.value)
    assert "2099-01-01" in str(raised.value)
    with pytest.raises(KeyError):
        VERSIONED.governing("nope")


def test_a_non_material_version_may_not_grant_a_new_use(tmp_path: Path) -> None:
    text = (TEST_POLICIES / "2099-01-01.toml").read_text("utf-8")
    (tmp_path / "2099-01-01.toml").write_text(text.replace("material = true", "material = false"))
    with pytest.raises(PolicyError, match=r"TEACHER/INSTRUCTION the categories DEMOGRAPHIC"):
        load_policy_set(extra_dirs=[tmp_path])


# ------------------------------------------------ the loader's checks


def test_an_unknown_category_is_refused_and_named() -> None:
    text = SHIPPED_TEXT.replace('categories = ["STAFF"]', 'categories = ["STAF"]', 1)
    with pytest.raises(PolicyError, match=r"unknown DataCategory 'STAF'; use one of DIRECTORY"):
        parse_policy(text)


def test_an_unknown_role_purpose_or_scope_is_refused() -> None:
    for old, new, name in [
        ('role = "TEACHER"', 'role = "TUTOR"', "Role 'TUTOR'"),
        ('purpose = "REPORTING"', 'purpose = "ADVERTISING"', "Purpose 'ADVERTISING'"),
        ('staff_scope = "SCHOOL"', 'staff_scope = "STATE"', "Scope 'STATE'"),
    ]:
        with pytest.raises(PolicyError, match=name):
            parse_policy(SHIPPED_TEXT.replace(old, new, 1))


def test_a_missing_purpose_description_is_refused() -> None:
    entry = '[[purposes]]\npurpose = "COMMUNICATION"\n'
    start = SHIPPED_TEXT.index(entry)
    end = SHIPPED_TEXT.index("[[purposes]]", start + 1)
    with pytest.raises(PolicyError, match=r"no description for the purpose\(s\) COMMUNICATION"):
        parse_policy(SHIPPED_TEXT[:start] + SHIPPED_TEXT[end:])


def test_a_missing_category_description_is_refused() -> None:
    entry = '[[categories]]\ncategory = "CONTACT"\n'
    start = SHIPPED_TEXT.index(entry)
    end = SHIPPED_TEXT.index("# ----", start)
    with pytest.raises(PolicyError, match=r"CONTACT; add a \[\[categories\]\] entry"):
        parse_policy(SHIPPED_TEXT[:start] + SHIPPED_TEXT[end:])


def test_a_duplicate_rule_is_refused() -> None:
    start = SHIPPED_TEXT.index('[[rules]]\nrole = "SUPPORT"')
    with pytest.raises(PolicyError, match=r"two rules for SUPPORT/SUPPORT"):
        parse_policy(SHIPPED_TEXT + "\n" + SHIPPED_TEXT[start:])


def test_an_unknown_key_and_an_unknown_operation_are_refused() -> None:
    with pytest.raises(PolicyError, match=r"unknown key\(s\) categorys"):
        parse_policy(SHIPPED_TEXT.replace("categories = [", "categorys = [", 1))
    with pytest.raises(PolicyError, match=r"unknown operation\(s\) auditlog"):
        parse_policy(SHIPPED_TEXT.replace('operations = ["auditLog"]', 'operations = ["auditlog"]'))


def test_an_unknown_governance_role_is_refused() -> None:
    text = SHIPPED_TEXT.replace('governance_role = "DISTRICT_ADMIN"', 'governance_role = "OWNER"')
    with pytest.raises(PolicyError, match=r"governance_role: unknown Role 'OWNER'"):
        parse_policy(text)


def test_an_analyst_rule_with_a_category_is_refused() -> None:
    old = 'categories = []\naggregates = "ALL_DISTRICTS"'
    text = SHIPPED_TEXT.replace(old, 'categories = ["DIRECTORY"]\naggregates = "ALL_DISTRICTS"')
    with pytest.raises(PolicyError, match=r"ANALYST never reads row-level personal data"):
        parse_policy(text)


def test_a_file_named_differently_from_its_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "2021-01-01.toml").write_text(SHIPPED_TEXT)
    with pytest.raises(PolicyError, match=r"name the file 2020-04-01.toml"):
        load_policy_set(extra_dirs=[tmp_path])


def test_invalid_toml_is_refused_with_its_source() -> None:
    with pytest.raises(PolicyError, match=r"broken.toml is not valid TOML"):
        parse_policy("version = ", source="broken.toml")


# ------------------------------------------------ the per-request table


def test_decision_table_agrees_with_decide() -> None:
    table = DecisionTable(POLICIES, Role.SUPPORT, Purpose.SUPPORT, {"d1": GRANT}, {"d1": DEFAULT, "d2": DEFAULT})
    for category in DataCategory:
        assert table.lookup("d1", category) == decide(POLICIES, Role.SUPPORT, Purpose.SUPPORT, category, DEFAULT, GRANT)
        # d2 has no relationship: no grant.
        assert table.lookup("d2", category) == decide(
            POLICIES, Role.SUPPORT, Purpose.SUPPORT, category, DEFAULT, NO_GRANT
        )


def test_decision_table_decides_once_per_district_and_category(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, DataCategory]] = []
    real = decide_module.decide

    def counting(
        policies: PolicySet,
        role: Role,
        purpose: Purpose,
        category: DataCategory,
        conditions: DistrictConditions,
        relationship: Relationship,
    ) -> Decision:
        calls.append((conditions.district_id, category))
        return real(policies, role, purpose, category, conditions, relationship)

    monkeypatch.setattr(decide_module, "decide", counting)
    asked: list[str] = []

    def relationship_for(district_id: str) -> Relationship:
        asked.append(district_id)
        return NO_GRANT

    other = conditions(district_id="d2", collect_usage=False)
    table = DecisionTable(POLICIES, Role.TEACHER, Purpose.INSTRUCTION, relationship_for, {"d1": DEFAULT, "d2": other})
    for _ in range(30):  # a roster of 30 students
        assert table.lookup("d1", DataCategory.DIRECTORY).allowed
        assert table.lookup("d1", DataCategory.USAGE).allowed
        assert table.lookup("d2", DataCategory.USAGE).reason is DenyReason.NOT_COLLECTED
    assert calls == [
        ("d1", DataCategory.DIRECTORY),
        ("d1", DataCategory.USAGE),
        ("d2", DataCategory.USAGE),
    ]
    assert asked == ["d1", "d1", "d2"]


def test_decision_table_refuses_a_district_it_has_no_settings_for() -> None:
    table = DecisionTable(POLICIES, Role.TEACHER, Purpose.INSTRUCTION, {}, {"d1": DEFAULT})
    with pytest.raises(LookupError, match="d9"):
        table.lookup("d9", DataCategory.DIRECTORY)


def test_a_decision_is_truthy_only_when_allowed() -> None:
    assert Decision.ALLOW
    assert not Decision.deny(DenyReason.NOT_COLLECTED)
    with pytest.raises(ValueError):
        Decision(True, DenyReason.NOT_COLLECTED)
    with pytest.raises(ValueError):
        Decision(False)


def test_no_version_is_in_effect_before_its_effective_date() -> None:
    today = VERSIONED.in_effect(datetime.date(2026, 12, 4))
    assert today.versions() == ["2020-04-01"]
    assert today.latest().version == "2020-04-01"
    # The non-material 2098-06-01 does not govern yet, nor tell of a later grant.
    assert today.governing("2020-04-01").version == "2020-04-01"
    assert today.newer_than("2020-04-01") == ()
    later = VERSIONED.in_effect(datetime.date(2098, 6, 1))
    assert later.versions() == ["2020-04-01", "2098-06-01"]
    assert later.governing("2020-04-01").version == "2098-06-01"
    assert VERSIONED.in_effect(datetime.date(2099, 1, 1)) is VERSIONED


def test_a_version_not_yet_in_effect_gives_no_policy_version_reason() -> None:
    # 2099-01-01 grants TEACHER/INSTRUCTION DEMOGRAPHIC, but only from its date.
    district = dataclasses.replace(DEFAULT, accepted_version="2020-04-01")
    today = VERSIONED.in_effect(datetime.date(2026, 12, 4))
    before = decide(today, Role.TEACHER, Purpose.INSTRUCTION, DataCategory.DEMOGRAPHIC, district, Relationship())
    assert before.reason is DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY
    after = decide(VERSIONED, Role.TEACHER, Purpose.INSTRUCTION, DataCategory.DEMOGRAPHIC, district, Relationship())
    assert after.reason is DenyReason.POLICY_VERSION_NOT_ACCEPTED


def test_a_day_before_every_version_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="No policy version is in effect"):
        VERSIONED.in_effect(datetime.date(2019, 1, 1))
