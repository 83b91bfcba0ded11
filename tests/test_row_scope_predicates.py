"""resolvers/scope.py without a database: the SQL predicate and the bind
parameters each kind of person gets for each scope.

The expected strings are written out, so a change to a predicate or to the
order of its parameters (the $n numbering of every statement that embeds it)
shows here as a readable difference.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from permissions.enums import Role, Scope
from permissions.principal import Principal, SupportScope
from resolvers.db import Params
from resolvers.scope import RowScope

DISTRICT = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
OTHER_DISTRICT = uuid.UUID("00000000-0000-4000-8000-0000000000d2")
SCHOOL = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
CLASS = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
CALLER = uuid.UUID("00000000-0000-4000-8000-000000000001")
CHILD = uuid.UUID("00000000-0000-4000-8000-000000000002")
TODAY = dt.date(2026, 3, 1)
ACTIVE = "e.begin_date <= {t} AND (e.end_date IS NULL OR e.end_date >= {t})"

TEACHER = Principal(CALLER, Role.TEACHER, DISTRICT, school_id=SCHOOL, class_ids=(CLASS,))
STUDENT = Principal(CALLER, Role.STUDENT, DISTRICT, school_id=SCHOOL, class_ids=(CLASS,))
GUARDIAN = Principal(CALLER, Role.GUARDIAN, DISTRICT, children_ids=(CHILD,))
ANALYST = Principal(CALLER, Role.ANALYST, None)
SUPPORT = Principal(
    CALLER,
    Role.SUPPORT,
    None,
    grants=(SupportScope(DISTRICT, ()), SupportScope(OTHER_DISTRICT, (CHILD,))),
)
KINDS = ("students", "staff", "guardians")


def predicate(
    principal: Principal, kind: str, scope: Scope, students_scope: Scope = Scope.NONE
) -> tuple[str, list[object]]:
    """The predicate over alias ``u`` for one kind under one scope, and its parameters."""
    scopes = {"students": students_scope, "staff": Scope.NONE, "guardians": Scope.NONE, kind: scope}
    row_scope = RowScope(principal, scopes["students"], scopes["staff"], scopes["guardians"], TODAY)
    p = Params()
    sql = getattr(row_scope, kind)("u", p)
    return sql, p.values


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scope", list(Scope))
def test_every_parameter_a_predicate_binds_appears_in_it_and_no_other(kind: str, scope: Scope) -> None:
    for principal in (TEACHER, STUDENT, GUARDIAN, ANALYST, SUPPORT):
        sql, values = predicate(principal, kind, scope, students_scope=scope)
        assert {int(n) for n in re.findall(r"\$(\d+)", sql)} == set(range(1, len(values) + 1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scope", [s for s in Scope if s is not Scope.GRANT])
def test_a_caller_without_a_district_reaches_no_one_but_through_a_grant(kind: str, scope: Scope) -> None:
    assert predicate(ANALYST, kind, scope) == ("false", [])


@pytest.mark.parametrize("kind", KINDS)
def test_no_scope_reaches_no_one_even_in_the_callers_district(kind: str) -> None:
    assert predicate(TEACHER, kind, Scope.NONE) == ("false", [])


@pytest.mark.parametrize("kind", KINDS)
def test_a_district_scope_reaches_everyone_of_the_kind_in_the_callers_district(kind: str) -> None:
    assert predicate(TEACHER, kind, Scope.DISTRICT) == ("u.district_id = $1", [DISTRICT])


@pytest.mark.parametrize("kind", KINDS)
def test_a_self_scope_reaches_the_caller_only(kind: str) -> None:
    assert predicate(TEACHER, kind, Scope.SELF) == ("(u.district_id = $1 AND u.id = $2)", [DISTRICT, CALLER])


@pytest.mark.parametrize("kind", KINDS)
def test_a_grant_scope_reaches_whole_granted_districts_and_the_users_a_narrowed_grant_names(kind: str) -> None:
    assert predicate(SUPPORT, kind, Scope.GRANT) == (
        "(u.district_id = ANY($1::uuid[]) OR (u.district_id, u.id) IN (SELECT * FROM unnest($2::uuid[], $3::uuid[])))",
        [[DISTRICT], [OTHER_DISTRICT], [CHILD]],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_grant_scope_without_grants_reaches_no_one(kind: str) -> None:
    assert predicate(ANALYST, kind, Scope.GRANT) == ("false", [])


@pytest.mark.parametrize("kind", ["students", "staff"])
def test_a_school_scope_reaches_students_and_staff_of_the_callers_school(kind: str) -> None:
    assert predicate(TEACHER, kind, Scope.SCHOOL) == (
        "(u.district_id = $1 AND u.school_id = ANY($2::uuid[]))",
        [DISTRICT, [SCHOOL]],
    )


def test_a_classes_scope_reaches_the_students_enrolled_today_in_the_callers_classes() -> None:
    assert predicate(TEACHER, "students", Scope.CLASSES) == (
        "(u.district_id = $2 AND EXISTS (SELECT 1 FROM enrollments e "
        "WHERE e.district_id = u.district_id AND e.student_id = u.id "
        "AND e.class_id = ANY($3::uuid[]) AND " + ACTIVE.format(t="$1") + "))",
        [TODAY, DISTRICT, [CLASS]],
    )


def test_a_children_scope_reaches_the_guardians_children() -> None:
    assert predicate(GUARDIAN, "students", Scope.CHILDREN) == (
        "(u.district_id = $1 AND u.id = ANY($2::uuid[]))",
        [DISTRICT, [CHILD]],
    )


def test_a_teachers_classes_scope_reaches_the_co_teachers_and_the_teachers_own_record() -> None:
    assert predicate(TEACHER, "staff", Scope.CLASSES) == (
        "(u.district_id = $1 AND (u.id = $2 OR u.id IN (SELECT ct.teacher_id FROM class_teachers ct "
        "WHERE ct.district_id = $1 AND ct.class_id = ANY($3::uuid[]))))",
        [DISTRICT, CALLER, [CLASS]],
    )


def test_a_students_classes_scope_reaches_the_students_teachers_only() -> None:
    assert predicate(STUDENT, "staff", Scope.CLASSES) == (
        "(u.district_id = $1 AND (u.id IN (SELECT ct.teacher_id FROM class_teachers ct "
        "WHERE ct.district_id = $1 AND ct.class_id = ANY($2::uuid[]))))",
        [DISTRICT, [CLASS]],
    )


def test_a_guardians_children_scope_reaches_the_teachers_of_the_children() -> None:
    assert predicate(GUARDIAN, "staff", Scope.CHILDREN) == (
        "(u.district_id = $1 AND u.id IN (SELECT ct.teacher_id FROM class_teachers ct "
        "JOIN enrollments e ON e.district_id = ct.district_id AND e.class_id = ct.class_id "
        "WHERE ct.district_id = $1 AND e.student_id = ANY($3::uuid[]) AND " + ACTIVE.format(t="$2") + "))",
        [DISTRICT, TODAY, [CHILD]],
    )


def test_a_guardians_children_scope_reaches_the_childrens_guardians_and_the_caller() -> None:
    assert predicate(GUARDIAN, "guardians", Scope.CHILDREN) == (
        "(u.district_id = $1 AND (u.id = $2 OR u.id IN (SELECT gl.guardian_id "
        "FROM guardian_links gl WHERE gl.district_id = $1 AND gl.student_id = ANY($3::uuid[]))))",
        [DISTRICT, CALLER, [CHILD]],
    )


@pytest.mark.parametrize("scope", [Scope.SCHOOL, Scope.CLASSES])
def test_guardians_under_a_school_or_classes_scope_are_those_of_the_students_the_request_reaches(
    scope: Scope,
) -> None:
    assert predicate(TEACHER, "guardians", scope, students_scope=Scope.SCHOOL) == (
        "(u.district_id = $1 AND u.id IN (SELECT gl.guardian_id FROM guardian_links gl "
        "JOIN users su ON su.district_id = gl.district_id AND su.id = gl.student_id "
        "WHERE gl.district_id = $1 AND (su.district_id = $2 AND su.school_id = ANY($3::uuid[]))))",
        [DISTRICT, DISTRICT, [SCHOOL]],
    )


def test_guardians_of_students_the_request_cannot_reach_are_no_one() -> None:
    sql, values = predicate(TEACHER, "guardians", Scope.CLASSES, students_scope=Scope.NONE)
    assert sql.endswith("WHERE gl.district_id = $1 AND false))")
    assert values == [DISTRICT]
