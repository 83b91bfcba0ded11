"""Writing an import plan: one transaction on the owner connection.

Rows travel by COPY into temporary tables and are merged with set-based
statements, so 20,000 users cost a handful of statements, not 20,000.
Updates touch only rows whose values differ, which is how a second import of
the same package reports everything unchanged. A dry run is the same
transaction rolled back: its counts are exactly what a real run would do.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from server.commands.oneroster.plan import USER_COLUMNS, DistrictState, Existing, Plan

Counts = dict[str, dict[str, int]]

LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('pledgeql.roster/' || $1::text, 0))"


def _n(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def load_state(conn: Any, district_id: uuid.UUID, today: dt.date) -> DistrictState | None:
    district = await conn.fetchrow(
        "SELECT id, name, sourced_id, collect_demographics FROM districts WHERE id = $1", district_id
    )
    if district is None:
        return None
    schools = await conn.fetch(
        "SELECT sourced_id, id, roster_modified_at FROM schools WHERE district_id = $1 AND sourced_id IS NOT NULL",
        district_id,
    )
    classes = await conn.fetch(
        "SELECT sourced_id, id, school_id, roster_modified_at FROM classes "
        "WHERE district_id = $1 AND sourced_id IS NOT NULL",
        district_id,
    )
    users = await conn.fetch(
        "SELECT username, sourced_id, id, role, roster_modified_at FROM users WHERE district_id = $1", district_id
    )
    enrollments = await conn.fetch(
        "SELECT sourced_id, class_id, student_id, roster_modified_at FROM enrollments "
        "WHERE district_id = $1 AND sourced_id IS NOT NULL",
        district_id,
    )
    return DistrictState(
        district_id=district_id,
        name=district["name"],
        sourced_id=district["sourced_id"],
        collect_demographics=district["collect_demographics"],
        schools={r["sourced_id"]: Existing(r["id"], r["roster_modified_at"]) for r in schools},
        classes={
            r["sourced_id"]: Existing(r["id"], r["roster_modified_at"], school_id=r["school_id"]) for r in classes
        },
        users={
            r["sourced_id"]: Existing(r["id"], r["roster_modified_at"], role=r["role"])
            for r in users
            if r["sourced_id"] is not None
        },
        usernames={r["username"]: r["sourced_id"] for r in users},
        enrollments={
            r["sourced_id"]: Existing(r["class_id"], r["roster_modified_at"], pair=(r["class_id"], r["student_id"]))
            for r in enrollments
        },
        today=today,
    )


def _names(columns: str) -> list[str]:
    return [c.strip().split(" ")[0] for c in columns.split(",")]


async def _temp(conn: Any, name: str, columns: str, records: list[tuple[Any, ...]]) -> None:
    await conn.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
    if records:
        await conn.copy_records_to_table(name, records=records, columns=_names(columns))


@dataclass(frozen=True)
class _Merge:
    """A roster table merged by id from a temporary table whose last two columns are ``modified`` and ``new``.

    Every other column of the temporary table is inserted; ``compared`` are the
    ones an import may change, so a row is updated only when one of them differs.
    """

    table: str
    columns: str  # the temporary table's, with their types
    compared: tuple[str, ...]
    timestamps: bool = False  # the table keeps created_at and updated_at: both are the import's time

    @property
    def temp(self) -> str:
        return f"t_{self.table}"

    @property
    def inserted(self) -> str:
        return ", ".join(c for c in _names(self.columns) if c not in ("modified", "new"))


SCHOOLS = _Merge("schools", "id uuid, sourced_id text, name text, modified timestamptz, new boolean", ("name",))
CLASSES = _Merge(
    "classes",
    "id uuid, school_id uuid, name text, subject text, grade_level text, sourced_id text, "
    "modified timestamptz, new boolean",
    ("school_id", "name", "subject", "grade_level"),
)
USERS = _Merge(
    "users",
    "id uuid, role text, sourced_id text, username text, disabled boolean, school_id uuid, first_name text, "
    "last_name text, email text, phone text, preferred_name text, grade_level text, student_number text, "
    "state_id text, modified timestamptz, new boolean",
    USER_COLUMNS,
    timestamps=True,
)


async def _merge(
    conn: Any,
    merge: _Merge,
    d: uuid.UUID,
    now: dt.datetime,
    records: list[tuple[Any, ...]],
    compared: tuple[str, ...] | None = None,
) -> dict[str, int]:
    """Counts of ``records`` created, updated and unchanged; ``compared`` narrows what is compared and updated."""
    columns = merge.compared if compared is None else compared
    # Column names reach the SQL only from the declarations above.
    if not columns or not set(columns) <= set(merge.compared):
        raise ValueError(f"{merge.table}: compare a non-empty subset of {', '.join(merge.compared)}")
    await _temp(conn, merge.temp, merge.columns, records)
    # The import's time is $2, passed only to the statements of a table that keeps timestamps.
    touched, stamp_columns, stamp_values = ", updated_at = $2", ", created_at, updated_at", ", $2, $2"
    args: tuple[Any, ...] = (d, now)
    if not merge.timestamps:
        touched, stamp_columns, stamp_values, args = "", "", "", (d,)
    updated = await conn.execute(
        f"UPDATE {merge.table} r SET "  # noqa: S608  (names from the declarations)
        + ", ".join(f"{c} = t.{c}" for c in columns)
        + f", roster_modified_at = coalesce(t.modified, r.roster_modified_at){touched} FROM {merge.temp} t "
        "WHERE r.district_id = $1 AND r.id = t.id AND NOT t.new AND ("
        + ", ".join(f"r.{c}" for c in columns)
        + ") IS DISTINCT FROM ("
        + ", ".join(f"t.{c}" for c in columns)
        + ")",
        *args,
    )
    created = await conn.execute(
        f"INSERT INTO {merge.table} (district_id, {merge.inserted}, "  # noqa: S608  (names from the declarations)
        f"roster_modified_at{stamp_columns}) SELECT $1, {merge.inserted}, modified{stamp_values} "
        f"FROM {merge.temp} WHERE new",
        *args,
    )
    return _merged(len(records), _n(created), _n(updated))


async def apply_plan(conn: Any, state: DistrictState, plan: Plan, now: dt.datetime) -> Counts:
    d = state.district_id
    yesterday = state.today - dt.timedelta(days=1)
    counts: Counts = defaultdict(dict)

    if plan.district_sourced_id:
        await conn.execute(
            "UPDATE districts SET sourced_id = $2 WHERE id = $1 AND sourced_id IS NULL", d, plan.district_sourced_id
        )

    counts["schools"] = await _merge(
        conn, SCHOOLS, d, now, [(s.id, s.sourced_id, s.name, s.modified, s.new) for s in plan.schools]
    )
    counts["classes"] = await _merge(
        conn,
        CLASSES,
        d,
        now,
        [(c.id, c.school_id, c.name, c.subject, c.grade_level, c.sourced_id, c.modified, c.new) for c in plan.classes],
    )
    if plan.users:
        counts["users"] = await _merge(
            conn,
            USERS,
            d,
            now,
            [(u.id, u.role, u.sourced_id, *(u.values[c] for c in USER_COLUMNS), u.modified, u.new) for u in plan.users],
            # Only the columns the package carries: a 1.1 package has no preferred
            # name to overwrite one with.
            plan.user_columns,
        )
    elif "users.csv" in plan.modes:
        # Nothing to merge; without users.csv there is no column list to merge with.
        counts["users"] = _merged(0, 0, 0)
    if plan.users_disabled:
        status = await conn.execute(
            "UPDATE users SET disabled = true, updated_at = $3 WHERE district_id = $1 AND id = ANY($2::uuid[]) "
            "AND NOT disabled",
            d,
            plan.users_disabled,
            now,
        )
        counts["users"]["disabled (tobedeleted)"] = _n(status)

    # ----------------------------------------------------------- demographics
    if plan.demographics:
        await _temp(
            conn,
            "t_demographics",
            "id uuid, gender text, birth_date date, ethnicity text[]",
            list(plan.demographics),
        )
        status = await conn.execute(
            "UPDATE users u SET gender = t.gender, birth_date = t.birth_date, ethnicity = t.ethnicity, "
            "updated_at = $2 FROM t_demographics t WHERE u.district_id = $1 AND u.id = t.id "
            "AND (u.gender, u.birth_date, u.ethnicity) IS DISTINCT FROM (t.gender, t.birth_date, t.ethnicity)",
            d,
            now,
        )
        counts["demographics"] = {"updated": _n(status), "unchanged": len(plan.demographics) - _n(status)}

    # -------------------------------------------------------- guardian links
    if plan.linked_users:
        guardians = [g for g, _, _ in plan.links]
        students = [s for _, s, _ in plan.links]
        removed = await conn.execute(
            "DELETE FROM guardian_links gl WHERE gl.district_id = $1 "
            "AND (gl.student_id = ANY($2::uuid[]) OR gl.guardian_id = ANY($2::uuid[])) "
            "AND NOT EXISTS (SELECT 1 FROM unnest($3::uuid[], $4::uuid[]) AS k(g, s) "
            "WHERE k.g = gl.guardian_id AND k.s = gl.student_id)",
            d,
            plan.linked_users,
            guardians,
            students,
        )
        rows = await conn.fetch(
            "INSERT INTO guardian_links AS gl (district_id, guardian_id, student_id, relationship) "
            "SELECT $1, g, s, r FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS k(g, s, r) "
            "ON CONFLICT (district_id, guardian_id, student_id) DO UPDATE SET relationship = excluded.relationship "
            "WHERE gl.relationship IS DISTINCT FROM excluded.relationship RETURNING (xmax = 0) AS created",
            d,
            guardians,
            students,
            [r for _, _, r in plan.links],
        )
        made = sum(1 for r in rows if r["created"])
        counts["guardian links"] = {
            "created": made,
            "updated": len(rows) - made,
            "removed": _n(removed),
            "unchanged": len(plan.links) - len(rows),
        }

    # ------------------------------------------------------------ enrollments
    if "enrollments.csv" in plan.modes:
        counts["enrollments"] = _merged(0, 0, 0)
    if plan.enrollments:
        await _temp(
            conn,
            "t_enrollments",
            "class_id uuid, student_id uuid, begin_date date, end_date date, sourced_id text, modified timestamptz",
            [(e.class_id, e.student_id, e.begin_date, e.end_date, e.sourced_id, e.modified) for e in plan.enrollments],
        )
        moved = await conn.execute(
            "UPDATE enrollments e SET sourced_id = NULL, begin_date = least(e.begin_date, $2), "
            "end_date = CASE WHEN e.end_date IS NULL OR e.end_date > $2 THEN $2 ELSE e.end_date END "
            "FROM t_enrollments t WHERE e.district_id = $1 AND e.sourced_id = t.sourced_id "
            "AND (e.class_id, e.student_id) <> (t.class_id, t.student_id)",
            d,
            yesterday,
        )
        updated = await conn.execute(
            "UPDATE enrollments e SET begin_date = coalesce(t.begin_date, e.begin_date), end_date = t.end_date, "
            "sourced_id = t.sourced_id, roster_modified_at = coalesce(t.modified, e.roster_modified_at) "
            "FROM t_enrollments t WHERE e.district_id = $1 AND e.class_id = t.class_id AND e.student_id = t.student_id "
            "AND (coalesce(t.begin_date, e.begin_date), t.end_date, t.sourced_id) "
            "IS DISTINCT FROM (e.begin_date, e.end_date, e.sourced_id)",
            d,
        )
        created = await conn.execute(
            "INSERT INTO enrollments (district_id, class_id, student_id, begin_date, end_date, sourced_id, "
            "roster_modified_at) SELECT $1, t.class_id, t.student_id, coalesce(t.begin_date, $2), t.end_date, "
            "t.sourced_id, t.modified FROM t_enrollments t WHERE NOT EXISTS (SELECT 1 FROM enrollments e "
            "WHERE e.district_id = $1 AND e.class_id = t.class_id AND e.student_id = t.student_id)",
            d,
            state.today,
        )
        counts["enrollments"] = _merged(len(plan.enrollments), _n(created), _n(updated))
        if _n(moved):
            counts["enrollments"]["ended (moved to another class or student)"] = _n(moved)
    ended = await _end_enrollments(conn, d, yesterday, plan.enrollments_ended)
    if ended:
        counts["enrollments"]["ended (tobedeleted)"] = ended
    if plan.classes_closed:
        await _close_classes(conn, d, yesterday, plan.classes_closed, "tobedeleted", counts)

    # --------------------------------------------------------------- teachers
    if plan.teachers:
        added = await conn.execute(
            "INSERT INTO class_teachers (district_id, class_id, teacher_id) SELECT $1, c, t "
            "FROM unnest($2::uuid[], $3::uuid[]) AS k(c, t) ON CONFLICT DO NOTHING",
            d,
            [c for c, _ in plan.teachers],
            [t for _, t in plan.teachers],
        )
        counts["teachers"]["added to a class"] = _n(added)
        counts["teachers"]["unchanged"] = len(plan.teachers) - _n(added)
    if plan.teachers_removed:
        removed = await conn.execute(
            "DELETE FROM class_teachers ct USING unnest($2::uuid[], $3::uuid[]) AS k(c, t) "
            "WHERE ct.district_id = $1 AND ct.class_id = k.c AND ct.teacher_id = k.t",
            d,
            [c for c, _ in plan.teachers_removed],
            [t for _, t in plan.teachers_removed],
        )
        counts["teachers"]["removed (tobedeleted)"] = _n(removed)

    await _deactivate_missing(conn, state, plan, now, yesterday, counts)
    return {k: v for k, v in counts.items() if v}


async def _end_enrollments(
    conn: Any, d: uuid.UUID, yesterday: dt.date, pairs: list[tuple[uuid.UUID, uuid.UUID]]
) -> int:
    if not pairs:
        return 0
    status = await conn.execute(
        "UPDATE enrollments e SET begin_date = least(e.begin_date, $4), end_date = $4 "
        "FROM unnest($2::uuid[], $3::uuid[]) AS k(c, s) WHERE e.district_id = $1 AND e.class_id = k.c "
        "AND e.student_id = k.s AND (e.end_date IS NULL OR e.end_date > $4)",
        d,
        [c for c, _ in pairs],
        [s for _, s in pairs],
        yesterday,
    )
    return _n(status)


async def _close_classes(
    conn: Any, d: uuid.UUID, yesterday: dt.date, classes: list[uuid.UUID], why: str, counts: Counts
) -> None:
    """A closed class ends its enrollments yesterday and loses its teachers; the class row stays."""
    ended = await conn.execute(
        "UPDATE enrollments SET begin_date = least(begin_date, $3), end_date = $3 WHERE district_id = $1 "
        "AND class_id = ANY($2::uuid[]) AND (end_date IS NULL OR end_date > $3)",
        d,
        classes,
        yesterday,
    )
    gone = await conn.execute(
        "DELETE FROM class_teachers WHERE district_id = $1 AND class_id = ANY($2::uuid[])", d, classes
    )
    counts["classes"][f"closed ({why})"] = len(classes)
    counts["enrollments"][f"ended (class {why})"] = _n(ended)
    counts["teachers"][f"removed (class {why})"] = _n(gone)


async def _deactivate_missing(
    conn: Any, state: DistrictState, plan: Plan, now: dt.datetime, yesterday: dt.date, counts: Counts
) -> None:
    """Bulk files are the whole roster: roster records they do not name are deactivated."""
    d = state.district_id
    rule = "missing from the bulk file"
    if plan.bulk_users is not None:
        status = await conn.execute(
            "UPDATE users SET disabled = true, updated_at = $3 WHERE district_id = $1 AND sourced_id IS NOT NULL "
            "AND sourced_id NOT IN (SELECT unnest($2::text[])) AND NOT disabled AND role <> 'DISTRICT_ADMIN'",
            d,
            plan.bulk_users,
            now,
        )
        counts["users"][f"disabled ({rule})"] = _n(status)
    if plan.bulk_classes is not None:
        closed = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM classes WHERE district_id = $1 AND sourced_id IS NOT NULL "
                "AND sourced_id NOT IN (SELECT unnest($2::text[]))",
                d,
                plan.bulk_classes,
            )
        ]
        await _close_classes(conn, d, yesterday, closed, rule, counts)
    if plan.bulk_enrollments is not None:
        status = await conn.execute(
            "UPDATE enrollments SET begin_date = least(begin_date, $3), end_date = $3 WHERE district_id = $1 "
            "AND sourced_id IS NOT NULL AND sourced_id NOT IN (SELECT unnest($2::text[])) "
            "AND (end_date IS NULL OR end_date > $3)",
            d,
            plan.bulk_enrollments,
            yesterday,
        )
        counts["enrollments"][f"ended ({rule})"] = _n(status)
    if plan.bulk_teachers is not None:
        status = await conn.execute(
            "DELETE FROM class_teachers ct USING classes c, users u WHERE ct.district_id = $1 AND c.district_id = $1 "
            "AND c.id = ct.class_id AND c.sourced_id IS NOT NULL AND u.district_id = $1 AND u.id = ct.teacher_id "
            "AND u.sourced_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM unnest($2::uuid[], $3::uuid[]) AS k(c, t) "
            "WHERE k.c = ct.class_id AND k.t = ct.teacher_id)",
            d,
            [c for c, _ in plan.bulk_teachers],
            [t for _, t in plan.bulk_teachers],
        )
        counts["teachers"][f"removed from a class ({rule})"] = _n(status)


def _merged(total: int, created: int, updated: int) -> dict[str, int]:
    return {"created": created, "updated": updated, "unchanged": total - created - updated}
