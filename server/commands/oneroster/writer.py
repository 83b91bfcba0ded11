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


async def _temp(conn: Any, name: str, columns: str, records: list[tuple[Any, ...]]) -> None:
    await conn.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
    if records:
        names = [c.strip().split(" ")[0] for c in columns.split(",")]
        await conn.copy_records_to_table(name, records=records, columns=names)


async def apply_plan(conn: Any, state: DistrictState, plan: Plan, now: dt.datetime) -> Counts:
    d = state.district_id
    yesterday = state.today - dt.timedelta(days=1)
    counts: Counts = defaultdict(dict)

    if plan.district_sourced_id:
        await conn.execute(
            "UPDATE districts SET sourced_id = $2 WHERE id = $1 AND sourced_id IS NULL", d, plan.district_sourced_id
        )

    # ---------------------------------------------------------------- schools
    await _temp(
        conn,
        "t_schools",
        "id uuid, sourced_id text, name text, modified timestamptz, new boolean",
        [(s.id, s.sourced_id, s.name, s.modified, s.new) for s in plan.schools],
    )
    updated = await conn.execute(
        "UPDATE schools s SET name = t.name, roster_modified_at = coalesce(t.modified, s.roster_modified_at) "
        "FROM t_schools t WHERE s.district_id = $1 AND s.id = t.id AND NOT t.new AND s.name IS DISTINCT FROM t.name",
        d,
    )
    created = await conn.execute(
        "INSERT INTO schools (district_id, id, name, sourced_id, roster_modified_at) "
        "SELECT $1, id, name, sourced_id, modified FROM t_schools WHERE new",
        d,
    )
    counts["schools"] = _merged(len(plan.schools), _n(created), _n(updated))

    # ---------------------------------------------------------------- classes
    await _temp(
        conn,
        "t_classes",
        "id uuid, school_id uuid, name text, subject text, grade_level text, sourced_id text, "
        "modified timestamptz, new boolean",
        [(c.id, c.school_id, c.name, c.subject, c.grade_level, c.sourced_id, c.modified, c.new) for c in plan.classes],
    )
    updated = await conn.execute(
        "UPDATE classes c SET school_id = t.school_id, name = t.name, subject = t.subject, "
        "grade_level = t.grade_level, roster_modified_at = coalesce(t.modified, c.roster_modified_at) FROM t_classes t "
        "WHERE c.district_id = $1 AND c.id = t.id AND NOT t.new AND (c.school_id, c.name, c.subject, c.grade_level) "
        "IS DISTINCT FROM (t.school_id, t.name, t.subject, t.grade_level)",
        d,
    )
    created = await conn.execute(
        "INSERT INTO classes (district_id, id, school_id, name, subject, grade_level, sourced_id, roster_modified_at) "
        "SELECT $1, id, school_id, name, subject, grade_level, sourced_id, modified FROM t_classes WHERE new",
        d,
    )
    counts["classes"] = _merged(len(plan.classes), _n(created), _n(updated))

    # ------------------------------------------------------------------ users
    await _temp(
        conn,
        "t_users",
        "id uuid, role text, sourced_id text, username text, disabled boolean, school_id uuid, first_name text, "
        "last_name text, email text, phone text, preferred_name text, grade_level text, student_number text, "
        "state_id text, modified timestamptz, new boolean",
        [(u.id, u.role, u.sourced_id, *(u.values[c] for c in USER_COLUMNS), u.modified, u.new) for u in plan.users],
    )
    # Only the columns the package carries: a 1.1 package has no preferred name
    # to overwrite one with.
    cols = plan.user_columns
    if "users.csv" in plan.modes:
        counts["users"] = _merged(0, 0, 0)
    if plan.users:
        updated = await conn.execute(
            "UPDATE users u SET "  # noqa: S608  (column names from the constant USER_COLUMNS)
            + ", ".join(f"{c} = t.{c}" for c in cols)
            + ", roster_modified_at = coalesce(t.modified, u.roster_modified_at), updated_at = $2 "
            "FROM t_users t WHERE u.district_id = $1 AND u.id = t.id AND NOT t.new AND ("
            + ", ".join(f"u.{c}" for c in cols)
            + ") IS DISTINCT FROM ("
            + ", ".join(f"t.{c}" for c in cols)
            + ")",
            d,
            now,
        )
        created = await conn.execute(
            "INSERT INTO users (district_id, id, role, sourced_id, "  # noqa: S608  (constant column names)
            + ", ".join(USER_COLUMNS)
            + ", roster_modified_at, created_at, updated_at) SELECT $1, id, role, sourced_id, "
            + ", ".join(USER_COLUMNS)
            + ", modified, $2, $2 FROM t_users WHERE new",
            d,
            now,
        )
        counts["users"] = _merged(len(plan.users), _n(created), _n(updated))
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
        status = await conn.execute(
            "UPDATE enrollments SET begin_date = least(begin_date, $3), end_date = $3 WHERE district_id = $1 "
            "AND class_id = ANY($2::uuid[]) AND (end_date IS NULL OR end_date > $3)",
            d,
            plan.classes_closed,
            yesterday,
        )
        gone = await conn.execute(
            "DELETE FROM class_teachers WHERE district_id = $1 AND class_id = ANY($2::uuid[])", d, plan.classes_closed
        )
        counts["classes"]["closed (tobedeleted)"] = len(plan.classes_closed)
        counts["enrollments"]["ended (class tobedeleted)"] = _n(status)
        counts["teachers"]["removed (class tobedeleted)"] = _n(gone)

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
        status = await conn.execute(
            "UPDATE enrollments SET begin_date = least(begin_date, $3), end_date = $3 WHERE district_id = $1 "
            "AND class_id = ANY($2::uuid[]) AND (end_date IS NULL OR end_date > $3)",
            d,
            closed,
            yesterday,
        )
        gone = await conn.execute(
            "DELETE FROM class_teachers WHERE district_id = $1 AND class_id = ANY($2::uuid[])", d, closed
        )
        counts["classes"][f"closed ({rule})"] = len(closed)
        counts["enrollments"][f"ended (class {rule})"] = _n(status)
        counts["teachers"][f"removed (class {rule})"] = _n(gone)
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
