"""Scoped reads, batched per request: one SQL statement per relationship
and level of a query, whatever the number of parents."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from resolvers.db import Db, Params
from resolvers.loader import Loader
from resolvers.scope import STAFF_ROLES, RowScope

# asyncpg records, read by column name (asyncpg ships no type information for them).
Row: TypeAlias = Any

ACTIVE = "e.begin_date <= {t} AND (e.end_date IS NULL OR e.end_date >= {t})"

# A student's progress, over the student's ``users`` alias {u}: one row, whatever its responses
# (the compiled reads use it as it is). Kept in ``student_progress`` by triggers on the rows it is
# computed from (migration 0018, which has its SQL); a student with no responses has no row there.
PROGRESS = (
    "SELECT coalesce(p.responses_submitted, 0) AS responses_submitted, p.average_score, p.percent_correct,"
    " coalesce(p.assignments_completed, 0) AS assignments_completed, coalesce(p.mastery, '[]'::jsonb) AS mastery"
    " FROM (SELECT 1) one LEFT JOIN student_progress p ON p.district_id = {u}.district_id AND p.student_id = {u}.id"
)


def encode_cursor(value: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(b"id:" + value.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> uuid.UUID | None:
    """The id after which a page starts; None for the first page. Raises ValueError."""
    if not cursor:
        return None
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    if not raw.startswith(b"id:") or len(raw) != 19:
        raise ValueError("not a cursor")
    return uuid.UUID(bytes=raw[3:])


def students_matching(
    scope: RowScope, p: Params, *, school_id: uuid.UUID | None, class_id: uuid.UUID | None, search: str | None
) -> str:
    """The scoped students Query.students lists, as a condition over ``users u``:
    of a school, enrolled in a class today, matching a search on their names."""
    where = ["u.role = 'STUDENT'", scope.students("u", p)]
    if school_id is not None:
        where.append(f"u.school_id = {p(school_id)}")
    if class_id is not None:
        t = p(scope.today)
        where.append(
            "EXISTS (SELECT 1 FROM enrollments e WHERE e.district_id = u.district_id "
            f"AND e.student_id = u.id AND e.class_id = {p(class_id)} AND {ACTIVE.format(t=t)})"
        )
    if search:
        pattern = p("%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        where.append(
            f"(u.first_name ILIKE {pattern} OR u.last_name ILIKE {pattern} "
            f"OR u.preferred_name ILIKE {pattern} OR u.username ILIKE {pattern})"
        )
    return " AND ".join(where)


def _group(rows: Sequence[Row], key: str) -> dict[Any, list[Row]]:
    grouped: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row[key]].append(row)
    return grouped


@dataclass(frozen=True)
class Batched:
    """A relationship read for a batch of keys in one statement: its SQL (given the
    request's reads, the parameters and the keys), the column that maps each row back to
    its key, and whether a key has a list of rows or one row (or none)."""

    sql: Callable[[Reads, Params, list[uuid.UUID]], str]
    key: str = "id"
    many: bool = False


def _visible(table: str, column: str, order: str = "", many: bool = False) -> Batched:
    """Rows of a district-owned table whose ``column`` is a key, within the request's districts."""

    def sql(r: Reads, p: Params, ids: list[uuid.UUID]) -> str:
        return (
            f"SELECT * FROM {table} WHERE district_id = ANY({p(r.visible_district_ids())}::uuid[]) "
            f"AND {column} = ANY({p(ids)}::uuid[]){order}"
        )

    return Batched(sql, column, many)


def _districts(r: Reads, p: Params, ids: list[uuid.UUID]) -> str:
    visible = p(r.visible_district_ids())
    return f"SELECT * FROM districts WHERE id = ANY({p(ids)}::uuid[]) AND id = ANY({visible}::uuid[])"


def _classes_of_students(r: Reads, p: Params, ids: list[uuid.UUID]) -> str:
    scope = r.scope.students("u", p)
    t = p(r.scope.today)
    return (
        "SELECT e.student_id, c.* FROM enrollments e "
        "JOIN users u ON u.district_id = e.district_id AND u.id = e.student_id "
        "JOIN classes c ON c.district_id = e.district_id AND c.id = e.class_id "
        f"WHERE e.student_id = ANY({p(ids)}::uuid[]) AND {ACTIVE.format(t=t)} AND {scope} "
        "ORDER BY c.name, c.id"
    )


def _students_of_classes(r: Reads, p: Params, ids: list[uuid.UUID]) -> str:
    scope = r.scope.students("u", p)
    t = p(r.scope.today)
    return (
        "SELECT e.class_id AS enrolled_class_id, u.* FROM enrollments e "
        "JOIN users u ON u.district_id = e.district_id AND u.id = e.student_id "
        f"WHERE e.class_id = ANY({p(ids)}::uuid[]) AND {ACTIVE.format(t=t)} "
        f"AND u.role = 'STUDENT' AND {scope} ORDER BY u.id"
    )


# Never the answer key or the explanation: they reach clients only as grading feedback.
ITEM_COLUMNS = "id, assessment_id, position, prompt, choices, skill"

BATCHED: dict[str, Batched] = {
    "district": Batched(_districts),
    "classes_of_student": Batched(_classes_of_students, key="student_id", many=True),
    "students_of_class": Batched(_students_of_classes, key="enrolled_class_id", many=True),
    "school": _visible("schools", "id"),
    "schools_of_district": Batched(
        lambda r, p, ids: (
            f"SELECT * FROM schools WHERE district_id = ANY({p(ids)}::uuid[]) "
            f"AND district_id = ANY({p(r.visible_district_ids())}::uuid[]) ORDER BY name, id"
        ),
        key="district_id",
        many=True,
    ),
    "class": _visible("classes", "id"),
    "classes_of_school": _visible("classes", "school_id", " ORDER BY name, id", many=True),
    "student": Batched(
        lambda r, p, ids: (
            f"SELECT u.* FROM users u WHERE u.id = ANY({p(ids)}::uuid[]) AND u.role = 'STUDENT' "
            f"AND {r.scope.students('u', p)}"
        )
    ),
    "staff": Batched(
        lambda r, p, ids: (
            f"SELECT u.* FROM users u WHERE u.id = ANY({p(ids)}::uuid[]) "
            f"AND u.role = ANY({p(list(STAFF_ROLES))}::text[]) AND {r.scope.staff('u', p)}"
        )
    ),
    "teachers_of_class": Batched(
        lambda r, p, ids: (
            "SELECT ct.class_id AS taught_class_id, u.* FROM class_teachers ct "
            "JOIN users u ON u.district_id = ct.district_id AND u.id = ct.teacher_id "
            f"WHERE ct.class_id = ANY({p(ids)}::uuid[]) AND {r.scope.staff('u', p)} ORDER BY u.id"
        ),
        key="taught_class_id",
        many=True,
    ),
    "guardians_of_student": Batched(
        lambda r, p, ids: (
            "SELECT gl.student_id AS child_id, gl.relationship, u.* FROM guardian_links gl "
            "JOIN users u ON u.district_id = gl.district_id AND u.id = gl.guardian_id "
            f"WHERE gl.student_id = ANY({p(ids)}::uuid[]) AND {r.scope.guardians('u', p)} ORDER BY u.id"
        ),
        key="child_id",
        many=True,
    ),
    "assessment": Batched(lambda r, p, ids: f"SELECT * FROM assessments WHERE id = ANY({p(ids)}::uuid[])"),
    "items_of_assessment": Batched(
        lambda r, p, ids: (
            f"SELECT {ITEM_COLUMNS} FROM items WHERE assessment_id = ANY({p(ids)}::uuid[]) ORDER BY position, id"
        ),
        key="assessment_id",
        many=True,
    ),
    "item": Batched(lambda r, p, ids: f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ANY({p(ids)}::uuid[])"),
    "assignment": _visible("assignments", "id"),
    "assignments_of_class": _visible("assignments", "class_id", " ORDER BY due_at NULLS LAST, id", many=True),
    "progress": Batched(
        lambda r, p, ids: (
            "SELECT u.id, s.responses_submitted, s.average_score, s.percent_correct, "
            f"s.assignments_completed, s.mastery FROM users u CROSS JOIN LATERAL ({PROGRESS.format(u='u')}) s "
            f"WHERE u.id = ANY({p(ids)}::uuid[]) AND u.role = 'STUDENT' AND {r.scope.students('u', p)}"
        )
    ),
}


class Reads:
    """Every loader of one request. Created per request; caches per request."""

    db: Db
    scope: RowScope

    def __init__(self, db: Db, scope: RowScope) -> None:
        self.db = db
        self.scope = scope
        self.districts = scope.district_ids
        self._loaders: dict[str, Loader[Any, Any]] = {}

    def _loader(self, name: str, fn: Callable[[list[Any]], Awaitable[Sequence[Any]]]) -> Loader[Any, Any]:
        loader = self._loaders.get(name)
        if loader is None:
            loader = self._loaders[name] = Loader(fn)
        return loader

    def _batched(self, name: str) -> Loader[Any, Any]:
        """The request's loader of the relationship ``BATCHED[name]``: one statement per batch of keys."""
        loader = self._loaders.get(name)
        if loader is not None:
            return loader
        batched = BATCHED[name]

        async def fetch(ids: list[uuid.UUID]) -> list[Any]:
            p = Params()
            rows = await self.db.fetch(batched.sql(self, p, ids), *p.values)
            if batched.many:
                grouped = _group(rows, batched.key)
                return [grouped.get(i, []) for i in ids]
            found = {row[batched.key]: row for row in rows}
            return [found.get(i) for i in ids]

        return self._loader(name, fetch)

    async def _one(self, name: str, key: uuid.UUID) -> Row | None:
        row: Row | None = await self._batched(name).load(key)
        return row

    async def _many(self, name: str, key: uuid.UUID) -> list[Row]:
        rows: list[Row] = await self._batched(name).load(key)
        return rows

    # ------------------------------------------------------------ organisations

    def visible_district_ids(self) -> list[uuid.UUID]:
        return [d for d in self.districts if isinstance(d, uuid.UUID)]

    async def district(self, district_id: uuid.UUID) -> Row | None:
        return await self._one("district", district_id)

    async def school(self, school_id: uuid.UUID) -> Row | None:
        return await self._one("school", school_id)

    async def schools_of_district(self, district_id: uuid.UUID) -> list[Row]:
        return await self._many("schools_of_district", district_id)

    async def klass(self, class_id: uuid.UUID) -> Row | None:
        return await self._one("class", class_id)

    async def classes_of_school(self, school_id: uuid.UUID) -> list[Row]:
        return await self._many("classes_of_school", school_id)

    async def classes_of_student(self, student_id: uuid.UUID) -> list[Row]:
        return await self._many("classes_of_student", student_id)

    async def classes_of_viewer(self) -> list[Row]:
        """The caller's own classes: a teacher's and a student's (the principal's
        class ids), a guardian's children's; none for other roles."""
        pr = self.scope.principal
        p = Params()
        if pr.district_id is None:
            return []
        if pr.children_ids:
            t = p(self.scope.today)
            sql = (
                "SELECT c.* FROM classes c WHERE c.district_id = "
                f"{p(pr.district_id)} AND EXISTS (SELECT 1 FROM enrollments e WHERE e.district_id = c.district_id "
                f"AND e.class_id = c.id AND e.student_id = ANY({p(list(pr.children_ids))}::uuid[]) "
                f"AND {ACTIVE.format(t=t)}) ORDER BY c.name, c.id"
            )
        elif pr.class_ids:
            sql = (
                f"SELECT * FROM classes WHERE district_id = {p(pr.district_id)} "
                f"AND id = ANY({p(list(pr.class_ids))}::uuid[]) ORDER BY name, id"
            )
        else:
            return []
        return list(await self.db.fetch(sql, *p.values))

    # ------------------------------------------------------------------ people

    async def student(self, student_id: uuid.UUID) -> Row | None:
        return await self._one("student", student_id)

    async def students_of_class(self, class_id: uuid.UUID) -> list[Row]:
        return await self._many("students_of_class", class_id)

    async def students_page(
        self,
        *,
        school_id: uuid.UUID | None,
        class_id: uuid.UUID | None,
        search: str | None,
        first: int,
        after: uuid.UUID | None,
    ) -> tuple[list[Row], int]:
        """A keyset page of scoped students and the scoped total."""
        p = Params()
        cond = students_matching(self.scope, p, school_id=school_id, class_id=class_id, search=search)
        cond_params = len(p.values)
        page_cond = cond + (f" AND u.id > {p(after)}" if after is not None else "")
        limit = p(first + 1)
        rows = await self.db.fetch(
            f"SELECT u.*, (SELECT count(*) FROM users u WHERE {cond}) AS total_count "
            f"FROM users u WHERE {page_cond} ORDER BY u.id LIMIT {limit}",
            *p.values,
        )
        if rows:
            return list(rows), int(rows[0]["total_count"])
        total = await self.db.fetchval(f"SELECT count(*) FROM users u WHERE {cond}", *p.values[:cond_params])
        return [], int(total)

    async def staff(self, staff_id: uuid.UUID) -> Row | None:
        return await self._one("staff", staff_id)

    async def self_row(self) -> Row | None:
        """The caller's own row, whatever the purpose: the viewer is never out of scope of itself."""
        pr = self.scope.principal
        if pr.district_id is None:
            return await self.db.fetchrow("SELECT * FROM platform_users WHERE id = $1", pr.user_id)
        return await self.db.fetchrow(
            "SELECT * FROM users WHERE district_id = $1 AND id = $2", pr.district_id, pr.user_id
        )

    async def teachers_of_class(self, class_id: uuid.UUID) -> list[Row]:
        return await self._many("teachers_of_class", class_id)

    async def guardians_of_student(self, student_id: uuid.UUID) -> list[Row]:
        return await self._many("guardians_of_student", student_id)

    # ----------------------------------------------------------------- content

    async def assessments(self, subject: str | None) -> list[Row]:
        if subject is None:
            return await self.db.fetch("SELECT * FROM assessments ORDER BY subject, title, id")
        return await self.db.fetch("SELECT * FROM assessments WHERE subject = $1 ORDER BY title, id", subject)

    async def assessment(self, assessment_id: uuid.UUID) -> Row | None:
        return await self._one("assessment", assessment_id)

    async def items_of_assessment(self, assessment_id: uuid.UUID) -> list[Row]:
        return await self._many("items_of_assessment", assessment_id)

    async def item(self, item_id: uuid.UUID) -> Row | None:
        return await self._one("item", item_id)

    async def assignment(self, assignment_id: uuid.UUID) -> Row | None:
        return await self._one("assignment", assignment_id)

    async def assignments_of_class(self, class_id: uuid.UUID) -> list[Row]:
        return await self._many("assignments_of_class", class_id)

    # ----------------------------------------------------- the student's data

    async def _per_student(
        self,
        keys: list[tuple[Any, ...]],
        lateral: Callable[[Params, tuple[Any, ...]], str],
    ) -> list[list[Row]]:
        """Rows of a student-owned table for a batch of (student_id, *args) keys:
        one statement per distinct argument tuple, scoped through the student."""
        by_args: dict[tuple[Any, ...], list[uuid.UUID]] = defaultdict(list)
        for key in keys:
            by_args[key[1:]].append(key[0])
        found: dict[tuple[Any, ...], list[Row]] = {}
        for args, student_ids in by_args.items():
            p = Params()
            inner = lateral(p, args)
            rows = await self.db.fetch(
                f"SELECT u.id AS subject_id, x.* FROM users u CROSS JOIN LATERAL ({inner}) x "
                f"WHERE u.id = ANY({p(student_ids)}::uuid[]) AND u.role = 'STUDENT' "
                f"AND {self.scope.students('u', p)}",
                *p.values,
            )
            grouped = _group(rows, "subject_id")
            for sid in student_ids:
                found[(sid, *args)] = grouped.get(sid, [])
        return [found[k] for k in keys]

    async def responses(self, student_id: uuid.UUID, first: int, assignment_id: uuid.UUID | None) -> list[Row]:
        rows: list[Row] = await self._loader("responses", self._responses).load((student_id, first, assignment_id))
        return rows

    async def _responses(self, keys: list[tuple[Any, ...]]) -> list[list[Row]]:
        def lateral(p: Params, args: tuple[Any, ...]) -> str:
            first, assignment_id = args
            extra = f" AND r.assignment_id = {p(assignment_id)}" if assignment_id is not None else ""
            return (
                "SELECT r.* FROM responses r WHERE r.district_id = u.district_id AND r.student_id = u.id"
                f"{extra} ORDER BY r.submitted_at DESC, r.id DESC LIMIT {p(first)}"
            )

        return await self._per_student(keys, lateral)

    async def activity(self, student_id: uuid.UUID, first: int, since: dt.datetime | None) -> list[Row]:
        rows: list[Row] = await self._loader("activity", self._activity).load((student_id, first, since))
        return rows

    async def _activity(self, keys: list[tuple[Any, ...]]) -> list[list[Row]]:
        def lateral(p: Params, args: tuple[Any, ...]) -> str:
            first, since = args
            extra = f" AND a.occurred_at >= {p(since)}" if since is not None else ""
            return (
                "SELECT a.* FROM activity_events a WHERE a.district_id = u.district_id "
                f"AND a.student_id = u.id{extra} ORDER BY a.occurred_at DESC, a.id DESC LIMIT {p(first)}"
            )

        return await self._per_student(keys, lateral)

    async def device_sessions(self, student_id: uuid.UUID, first: int) -> list[Row]:
        rows: list[Row] = await self._loader("devices", self._devices).load((student_id, first))
        return rows

    async def _devices(self, keys: list[tuple[Any, ...]]) -> list[list[Row]]:
        def lateral(p: Params, args: tuple[Any, ...]) -> str:
            (first,) = args
            return (
                "SELECT d.* FROM device_sessions d WHERE d.district_id = u.district_id "
                f"AND d.student_id = u.id ORDER BY d.started_at DESC, d.id DESC LIMIT {p(first)}"
            )

        return await self._per_student(keys, lateral)

    async def progress(self, student_id: uuid.UUID) -> Row | None:
        return await self._one("progress", student_id)
