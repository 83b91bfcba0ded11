"""Row scope as SQL: whose records a request can reach at all.

Every query that returns people (students, staff, guardians) or their data
adds one of these predicates, so rows outside the caller's relationship are
never read: lists leave them out, counts do not include them, and a lookup
by id finds nothing, exactly as for an id that does not exist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from permissions.enums import Role, Scope
from permissions.principal import Principal
from resolvers.db import Params

STAFF_ROLES = ("TEACHER", "SCHOOL_ADMIN", "DISTRICT_ADMIN")

_ACTIVE = "e.begin_date <= {today} AND (e.end_date IS NULL OR e.end_date >= {today})"


@dataclass(frozen=True)
class RowScope:
    principal: Principal
    students_scope: Scope
    staff_scope: Scope
    guardians_scope: Scope
    today: dt.date

    @property
    def district_ids(self) -> tuple[object, ...]:
        """Districts whose rows this request may touch (the RLS setting)."""
        p = self.principal
        if p.district_id is not None:
            return (p.district_id,)
        if p.role is Role.SUPPORT:
            return p.granted_district_ids
        return ()

    @property
    def few_students(self) -> bool:
        """Whether the students in scope are the caller's own few (its classes',
        its children, itself): few enough to read all of them in one pass."""
        return self.students_scope in (Scope.CLASSES, Scope.CHILDREN, Scope.SELF, Scope.NONE)

    def _grant(self, a: str, p: Params) -> str:
        """Users of districts with a whole-district grant, and the users a narrowed
        grant names, each in the district of the grant that names them."""
        whole = list(self.principal.whole_district_grants)
        named = [(g.district_id, u) for g in self.principal.grants if g.user_ids for u in g.user_ids]
        parts = []
        if whole:
            parts.append(f"{a}.district_id = ANY({p(whole)}::uuid[])")
        if named:
            districts = p([d for d, _ in named])
            users = p([u for _, u in named])
            parts.append(f"({a}.district_id, {a}.id) IN (SELECT * FROM unnest({districts}::uuid[], {users}::uuid[]))")
        if not parts:
            return "false"
        return "(" + " OR ".join(parts) + ")"

    def _shared(self, s: Scope, a: str, p: Params) -> str | None:
        """The scopes that read alike for students, staff and guardians; None for the others."""
        pr = self.principal
        if s is Scope.NONE or (pr.district_id is None and s is not Scope.GRANT):
            return "false"
        if s is Scope.DISTRICT:
            return f"{a}.district_id = {p(pr.district_id)}"
        if s is Scope.SELF:
            return f"({a}.district_id = {p(pr.district_id)} AND {a}.id = {p(pr.user_id)})"
        if s is Scope.GRANT:
            return self._grant(a, p)
        return None

    def _school(self, a: str, p: Params) -> str:
        pr = self.principal
        return f"({a}.district_id = {p(pr.district_id)} AND {a}.school_id = ANY({p(list(pr.school_ids))}::uuid[]))"

    def students(self, a: str, p: Params) -> str:
        """Predicate over a ``users`` alias ``a`` holding students."""
        pr = self.principal
        s = self.students_scope
        shared = self._shared(s, a, p)
        if shared is not None:
            return shared
        if s is Scope.SCHOOL:
            return self._school(a, p)
        if s is Scope.CHILDREN:
            return f"({a}.district_id = {p(pr.district_id)} AND {a}.id = ANY({p(list(pr.children_ids))}::uuid[]))"
        if s is Scope.CLASSES:
            today = p(self.today)
            return (
                f"({a}.district_id = {p(pr.district_id)} AND EXISTS (SELECT 1 FROM enrollments e "
                f"WHERE e.district_id = {a}.district_id AND e.student_id = {a}.id "
                f"AND e.class_id = ANY({p(list(pr.class_ids))}::uuid[]) AND " + _ACTIVE.format(today=today) + "))"
            )
        return "false"

    def students_of_class(self, a: str, klass: str, p: Params) -> str:
        """``students`` over a ``users`` alias ``a`` holding the students enrolled
        today in the class whose id is the SQL ``klass`` (by an enrollment the
        caller joins). Under CLASSES, a class of the caller's own answers for
        all of them, in the caller's district, without looking for another
        enrollment: the one joined is already in one of its classes."""
        pr = self.principal
        if self.students_scope is not Scope.CLASSES or pr.district_id is None:
            return self.students(a, p)
        mine = f"{klass} = ANY({p(list(pr.class_ids))}::uuid[])"
        return f"(({a}.district_id = {p(pr.district_id)} AND {mine}) OR {self.students(a, p)})"

    def staff_of_class(self, a: str, klass: str, p: Params) -> str:
        """``staff`` over a ``users`` alias ``a`` holding the teachers of the class
        whose id is the SQL ``klass`` (by a ``class_teachers`` row the caller
        joins on ``a``'s district). Under CLASSES, a class of the caller's own
        answers for all of them, in the caller's district: the row joined is
        the one the scope looks for."""
        pr = self.principal
        if self.staff_scope is not Scope.CLASSES or pr.district_id is None:
            return self.staff(a, p)
        mine = f"{klass} = ANY({p(list(pr.class_ids))}::uuid[])"
        return f"(({a}.district_id = {p(pr.district_id)} AND {mine}) OR {self.staff(a, p)})"

    def staff(self, a: str, p: Params) -> str:
        """Predicate over a ``users`` alias ``a`` holding staff."""
        pr = self.principal
        s = self.staff_scope
        shared = self._shared(s, a, p)
        if shared is not None:
            return shared
        if s is Scope.SCHOOL:
            return self._school(a, p)
        d = p(pr.district_id)
        if s is Scope.CLASSES:
            # A teacher's co-teachers and the teacher's own record (whether or
            # not it teaches a class yet), or a student's own teachers.
            own = f"{a}.id = {p(pr.user_id)} OR " if pr.role is Role.TEACHER else ""
            return (
                f"({a}.district_id = {d} AND ({own}{a}.id IN (SELECT ct.teacher_id FROM class_teachers ct "
                f"WHERE ct.district_id = {d} AND ct.class_id = ANY({p(list(pr.class_ids))}::uuid[]))))"
            )
        if s is Scope.CHILDREN:
            # The teachers of a guardian's children.
            today = p(self.today)
            return (
                f"({a}.district_id = {d} AND {a}.id IN (SELECT ct.teacher_id FROM class_teachers ct "
                f"JOIN enrollments e ON e.district_id = ct.district_id AND e.class_id = ct.class_id "
                f"WHERE ct.district_id = {d} AND e.student_id = ANY({p(list(pr.children_ids))}::uuid[]) "
                f"AND " + _ACTIVE.format(today=today) + "))"
            )
        return "false"

    def guardians(self, a: str, p: Params) -> str:
        """Predicate over a ``users`` alias ``a`` holding guardians."""
        pr = self.principal
        s = self.guardians_scope
        shared = self._shared(s, a, p)
        if shared is not None:
            return shared
        d = p(pr.district_id)
        if s is Scope.CHILDREN:
            # The children's guardians, the caller included (linked or not).
            return (
                f"({a}.district_id = {d} AND ({a}.id = {p(pr.user_id)} OR {a}.id IN (SELECT gl.guardian_id "
                f"FROM guardian_links gl WHERE gl.district_id = {d} "
                f"AND gl.student_id = ANY({p(list(pr.children_ids))}::uuid[]))))"
            )
        # Guardians of the students this request can reach.
        inner = self.students("su", p)
        return (
            f"({a}.district_id = {d} AND {a}.id IN (SELECT gl.guardian_id FROM guardian_links gl "
            f"JOIN users su ON su.district_id = gl.district_id AND su.id = gl.student_id "
            f"WHERE gl.district_id = {d} AND {inner}))"
        )
