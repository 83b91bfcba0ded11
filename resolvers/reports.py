"""Aggregate reports in SQL: grouped statements only, never a row in Python.

A report is computed over a *universe* (the districts whose students it may
count) as one lattice of grouped tables (``GROUPING SETS`` over every subset
of its dimensions; see resolvers/suppression.py for why all of them). Only the
cells of those tables reach Python, where they are suppressed and sliced to
the caller's scope. No student id, and no value of a single row, ever leaves
the database: ``count(DISTINCT student_id)`` is computed there.

What each dimension means (the value is text; null when the attribute is
missing or, for demographics, not collected by the student's district):

* DISTRICT, SCHOOL, GRADE_LEVEL: the student's district, school and grade
  level (as rostered now).
* CLASS: for performance, the class of the assignment the response answered
  (practice outside an assignment has no class); for usage, every class the
  student was enrolled in on the day of the event (a student in two classes
  counts in both).
* SUBJECT, ASSESSMENT, SKILL (performance only): of the answered item.
* WEEK: the Monday (UTC, ``YYYY-MM-DD``) of the week the response was
  submitted or the event occurred.
* GENDER, ENGLISH_LEARNER, SPECIAL_EDUCATION, ECONOMICALLY_DISADVANTAGED: the
  student's value (``true``/``false`` for the flags).
* ETHNICITY: each of the student's ethnicities; a student with two counts in
  both groups (so groups add up to more than the total), none gives null.

Measures: ``students`` is distinct students; performance adds ``responses``,
``meanScore`` (mean of the 0..1 scores) and ``percentCorrect`` (0..100);
usage adds ``activeMinutes`` (the durations of the activity events, without
the SESSION_START/SESSION_END markers, whose duration is the session's own
length and would count the same time twice, in minutes) and ``sessions``
(distinct device sessions with at least one event in the window).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from resolvers.db import Db, Params, in_transaction
from resolvers.suppression import Count, Key, Overlaps, Reason, View, positions, suppress_jointly


class Kind(enum.StrEnum):
    PERFORMANCE = "PERFORMANCE"
    USAGE = "USAGE"


# Every dimension, in the canonical order of the lattice's keys (the contract's
# order). A fixed order makes the same table suppress the same way whatever
# the order of a request's groupBy.
DIMENSIONS = (
    "DISTRICT",
    "SCHOOL",
    "CLASS",
    "GRADE_LEVEL",
    "SUBJECT",
    "ASSESSMENT",
    "SKILL",
    "WEEK",
    "GENDER",
    "ETHNICITY",
    "ENGLISH_LEARNER",
    "SPECIAL_EDUCATION",
    "ECONOMICALLY_DISADVANTAGED",
)
DEMOGRAPHIC_DIMENSIONS = frozenset(
    {"GENDER", "ETHNICITY", "ENGLISH_LEARNER", "SPECIAL_EDUCATION", "ECONOMICALLY_DISADVANTAGED"}
)
PERFORMANCE_ONLY = frozenset({"SUBJECT", "ASSESSMENT", "SKILL"})
WORK_MEM = "64MB"  # for the report's own statements (transaction-local)
NO_CLASS = "00000000-0000-0000-0000-000000000000"  # report_student_totals.class_id of practice


@dataclass(frozen=True)
class _Dim:
    """How a dimension is computed: per row (grouped in the inner statement,
    ``inner`` over the fact alias) or per student (``outer`` over ``u``)."""

    inner: str | None = None
    outer: str | None = None
    joins: tuple[str, ...] = ()
    multi: bool = False  # a row may fall in several groups


def _demographic(column: str) -> _Dim:
    return _Dim(outer=f"CASE WHEN u.district_id = ANY({{demo}}::uuid[]) THEN u.{column} END")


_STUDENT_DIMS = {
    "DISTRICT": _Dim(outer="u.district_id"),
    "SCHOOL": _Dim(outer="u.school_id"),
    "GRADE_LEVEL": _Dim(outer="u.grade_level"),
    "GENDER": _demographic("gender"),
    "ETHNICITY": _Dim(outer="eth.value", multi=True),
    "ENGLISH_LEARNER": _demographic("english_learner"),
    "SPECIAL_EDUCATION": _demographic("special_education"),
    "ECONOMICALLY_DISADVANTAGED": _demographic("economically_disadvantaged"),
}
_ITEMS = "JOIN items i ON i.id = r.item_id"
_PERFORMANCE_DIMS = {
    **_STUDENT_DIMS,
    "CLASS": _Dim(
        inner="asg.class_id",
        joins=("LEFT JOIN assignments asg ON asg.district_id = r.district_id AND asg.id = r.assignment_id",),
    ),
    "SUBJECT": _Dim(inner="a.subject", joins=(_ITEMS, "JOIN assessments a ON a.id = i.assessment_id")),
    "ASSESSMENT": _Dim(inner="i.assessment_id", joins=(_ITEMS,)),
    "SKILL": _Dim(inner="i.skill", joins=(_ITEMS,)),
    "WEEK": _Dim(inner="date_trunc('week', r.submitted_at AT TIME ZONE 'UTC')::date"),
}
_EVENT_DAY = "(ev.occurred_at AT TIME ZONE 'UTC')::date"
_USAGE_DIMS = {
    **_STUDENT_DIMS,
    "CLASS": _Dim(
        inner="en.class_id",
        joins=(
            "LEFT JOIN enrollments en ON en.district_id = ev.district_id AND en.student_id = ev.student_id "
            f"AND en.begin_date <= {_EVENT_DAY} AND (en.end_date IS NULL OR en.end_date >= {_EVENT_DAY})",
        ),
        multi=True,
    ),
    "WEEK": _Dim(inner="date_trunc('week', ev.occurred_at AT TIME ZONE 'UTC')::date"),
}


@dataclass(frozen=True)
class _Fact:
    table: str
    alias: str
    at: str
    measures: str  # per (student, inner dimensions)
    totals: str  # over a group of those

    def dims(self) -> dict[str, _Dim]:
        return _PERFORMANCE_DIMS if self.alias == "r" else _USAGE_DIMS


_FACTS = {
    Kind.PERFORMANCE: _Fact(
        table="responses r",
        alias="r",
        at="r.submitted_at",
        measures="count(*) AS n, sum(r.score) AS score_sum, count(*) FILTER (WHERE r.correct) AS correct_n",
        totals="sum(b.n)::bigint AS n, sum(b.score_sum)::float8 AS score_sum, sum(b.correct_n)::bigint AS correct_n",
    ),
    Kind.USAGE: _Fact(
        table="activity_events ev",
        alias="ev",
        at="ev.occurred_at",
        measures=(
            "count(*) AS n, "
            "coalesce(sum(ev.duration_ms) FILTER (WHERE ev.kind NOT IN ('SESSION_START', 'SESSION_END')), 0) AS ms, "
            "count(DISTINCT ev.session_key) AS sessions"
        ),
        totals="sum(b.n)::bigint AS n, sum(b.ms)::float8 AS ms, sum(b.sessions)::bigint AS sessions",
    ),
}


@dataclass(frozen=True)
class Universe:
    """Whose data a report counts, and over which window."""

    kind: Kind
    district_ids: tuple[uuid.UUID, ...]
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    exclude_opted_out: bool = False
    # Districts whose demographic values count; others' students have null.
    demographics_from: tuple[uuid.UUID, ...] = ()


@dataclass
class Cell:
    students: int
    rows: int
    measures: dict[str, float | int | None]


@dataclass
class Lattice:
    """The grouped tables of one report: ``tables[mask][key]`` (see suppression.py)."""

    dims: tuple[str, ...]
    tables: dict[int, dict[Key, Cell]] = field(default_factory=dict)

    def counts(self) -> dict[int, dict[Key, Count]]:
        return {m: {k: Count(c.students) for k, c in t.items()} for m, t in self.tables.items()}


def canonical(dims: Sequence[str]) -> tuple[str, ...]:
    wanted = set(dims)
    return tuple(d for d in DIMENSIONS if d in wanted)


@dataclass(frozen=True)
class _Parts:
    """The pieces of a report's statement: the per-student inner statement
    ``b``, the outer FROM/WHERE that joins the students, and each
    dimension's outer expression."""

    params: Params
    inner: str
    outer_from: str
    outer_where: str
    outer_exprs: list[str]
    inner_exprs: list[str]


def _parts(universe: Universe, dims: tuple[str, ...]) -> _Parts:
    fact = _FACTS[universe.kind]
    specs = fact.dims()
    p = Params()
    districts = p(list(universe.district_ids))
    alias = fact.alias
    where = [f"{alias}.district_id = ANY({districts}::uuid[])"]
    if universe.start is not None:
        where.append(f"{fact.at} >= {p(universe.start)}")
    if universe.end is not None:
        where.append(f"{fact.at} < {p(universe.end)}")

    joins: dict[str, None] = {}
    inner_exprs: list[str] = []
    inner_cols: list[str] = []
    outer_exprs: list[str] = []
    demo: str | None = None
    for i, name in enumerate(dims):
        spec = specs[name]
        for join in spec.joins:
            joins[join] = None
        if spec.inner is not None:
            inner_exprs.append(spec.inner)
            inner_cols.append(f"{spec.inner} AS x{i}")
            outer_exprs.append(f"b.x{i}")
        else:
            outer = spec.outer or "NULL"
            if "{demo}" in outer:
                if demo is None:
                    demo = p(list(universe.demographics_from))
                outer = outer.format(demo=demo)
            outer_exprs.append(outer)

    inner_group = ", ".join([f"{alias}.district_id", f"{alias}.student_id", *inner_exprs])
    inner = (
        f"SELECT {alias}.district_id, {alias}.student_id, "
        + "".join(f"{c}, " for c in inner_cols)
        + f"{fact.measures} FROM {fact.table} "
        + " ".join(joins)
        + f" WHERE {' AND '.join(where)} GROUP BY {inner_group}"
    )
    inner_dims = [d for d in dims if specs[d].inner is not None]
    all_time = universe.start is None and universe.end is None
    if universe.kind is Kind.PERFORMANCE and all_time and set(inner_dims) <= {"CLASS"}:
        # All time, by class or by the students' own attributes: the totals
        # per student and class that triggers keep (migration 0008) stand for
        # the responses themselves.
        kept = f"FROM report_student_totals t WHERE t.district_id = ANY({districts}::uuid[])"
        if inner_dims:
            inner = (
                f"SELECT t.district_id, t.student_id, nullif(t.class_id, '{NO_CLASS}'::uuid) AS "
                f"x{dims.index('CLASS')}, t.responses AS n, t.score_sum::float8 AS score_sum, "
                f"t.correct AS correct_n {kept}"
            )
        else:
            inner = (
                "SELECT t.district_id, t.student_id, sum(t.responses) AS n, sum(t.score_sum)::float8 AS score_sum, "
                f"sum(t.correct) AS correct_n {kept} GROUP BY t.district_id, t.student_id"
            )
    outer_from = "b JOIN users u ON u.district_id = b.district_id AND u.id = b.student_id"
    if "ETHNICITY" in dims:
        if demo is None:
            demo = p(list(universe.demographics_from))
        outer_from += (
            f" LEFT JOIN LATERAL unnest(CASE WHEN u.district_id = ANY({demo}::uuid[]) "
            "THEN u.ethnicity END) AS eth(value) ON true"
        )
    outer_where = f" WHERE u.district_id = ANY({districts}::uuid[]) AND u.role = 'STUDENT'"
    if universe.exclude_opted_out:
        outer_where += (
            " AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.district_id = u.district_id "
            "AND c.student_id = u.id AND c.analytics_opt_out)"
        )
    return _Parts(p, inner, outer_from, outer_where, outer_exprs, inner_exprs)


def build_sql(universe: Universe, dims: tuple[str, ...], sets: Sequence[int] | None = None) -> tuple[str, list[Any]]:
    """One statement: the cells of the given subsets of ``dims`` (bit masks;
    every subset when None), as GROUPING SETS."""
    fact = _FACTS[universe.kind]
    specs = fact.dims()
    parts = _parts(universe, dims)
    outer_exprs = parts.outer_exprs
    # Grouped by the columns' own types (uuid, date, boolean: cheaper to sort
    # and hash than text under a collation), turned into text on the way out.
    select_dims = "".join(f"({e})::text AS d{i}, " for i, e in enumerate(outer_exprs))
    grouping = f"GROUPING({', '.join(outer_exprs)})" if outer_exprs else "0"
    # One row of b per student unless a dimension is counted per row or has
    # several values: then a student may repeat within a group.
    once = not parts.inner_exprs and not any(specs[d].multi for d in dims)
    students = "count(*)" if once else "count(DISTINCT b.student_id)"
    sql = (
        f"WITH b AS ({parts.inner}) "
        f"SELECT {select_dims}{grouping} AS grouping_bits, {students} AS students, {fact.totals} "
        f"FROM {parts.outer_from}{parts.outer_where}"
    )
    if outer_exprs:
        masks = range(1 << len(dims)) if sets is None else sets
        listed = ["(" + ", ".join(outer_exprs[i] for i in positions(m, len(dims))) + ")" for m in masks]
        sql += f" GROUP BY GROUPING SETS ({', '.join(listed)})"
    return sql, parts.params.values


def overlap_sql(universe: Universe, dims: tuple[str, ...], multi: int) -> tuple[str, list[Any]]:
    """One statement: for every subset S of the other dimensions and every
    cell of the table grouped by S, how many distinct students fall in two or
    more of its children along ``dims[multi]`` (null is a group of its own)."""
    parts = _parts(universe, dims)
    x = parts.outer_exprs[multi]
    others = [e for i, e in enumerate(parts.outer_exprs) if i != multi]
    groups = "count(DISTINCT " + x + ") + max(CASE WHEN " + x + " IS NULL THEN 1 ELSE 0 END)"
    if others:
        inner_cols = "".join(f"{e} AS o{i}, " for i, e in enumerate(others))
        listed = [
            "(" + ", ".join([*(others[i] for i in positions(m, len(others))), "b.student_id"]) + ")"
            for m in range(1 << len(others))
        ]
        per_student = (
            f"SELECT {inner_cols}GROUPING({', '.join(others)}) AS g, {groups} AS nd "
            f"FROM {parts.outer_from}{parts.outer_where} GROUP BY GROUPING SETS ({', '.join(listed)})"
        )
        cols = ", ".join(f"o{i}" for i in range(len(others)))
        select = "".join(f"o{i}::text AS d{i}, " for i in range(len(others)))
        sql = (
            f"WITH b AS ({parts.inner}) SELECT {select}g AS grouping_bits, count(*) FILTER (WHERE nd > 1) AS overlap "
            f"FROM ({per_student}) s GROUP BY {cols}, g"
        )
    else:
        sql = (
            f"WITH b AS ({parts.inner}) SELECT 0 AS grouping_bits, count(*) FILTER (WHERE nd > 1) AS overlap "
            f"FROM (SELECT {groups} AS nd FROM {parts.outer_from}{parts.outer_where} GROUP BY b.student_id) s"
        )
    return sql, parts.params.values


def is_multi(kind: Kind, dimension: str) -> bool:
    """Whether a student can fall in several groups of ``dimension``: it has
    several values per student, or it is counted per response or event."""
    spec = _FACTS[kind].dims()[dimension]
    return spec.multi or spec.inner is not None


async def load_overlaps(db: Db, universe: Universe, dims: tuple[str, ...]) -> Overlaps:
    """The overlap groups of the lattice over ``dims`` (see suppression.py):
    ``[mask][d][parent key]`` -> distinct students counted more than once."""
    n = len(dims)
    out: dict[int, dict[int, dict[Key, int]]] = {}
    if not universe.district_ids:
        return out
    for d in range(n):
        if not is_multi(universe.kind, dims[d]):
            continue
        others = [i for i in range(n) if i != d]
        sql, args = overlap_sql(universe, dims, d)
        for row in await db.fetch(sql, *args):
            bits = int(row["grouping_bits"])
            m = len(others)
            present = [j for j in range(m) if not bits >> (m - 1 - j) & 1]
            mask = (1 << d) | sum(1 << others[j] for j in present)
            key: Key = tuple(row[f"d{j}"] for j in present)
            out.setdefault(mask, {}).setdefault(d, {})[key] = int(row["overlap"])
    return out


def _measures(kind: Kind, row: Any) -> tuple[int, dict[str, float | int | None]]:
    n = int(row["n"] or 0)
    if kind is Kind.PERFORMANCE:
        score_sum = row["score_sum"]
        correct = int(row["correct_n"] or 0)
        return n, {
            "responses": n,
            "mean_score": round(float(score_sum) / n, 4) if n and score_sum is not None else None,
            "percent_correct": round(100.0 * correct / n, 2) if n else None,
        }
    ms = row["ms"]
    return n, {
        "active_minutes": round(float(ms or 0) / 60000.0, 2),
        "sessions": int(row["sessions"] or 0),
    }


async def load_lattice(db: Db, universe: Universe, dims: tuple[str, ...], sets: Sequence[int] | None = None) -> Lattice:
    """The tables of the lattice over ``dims`` (canonical order) for ``universe``:
    every one, or those whose masks are in ``sets``."""
    n = len(dims)
    lattice = Lattice(dims)
    for mask in range(1 << n) if sets is None else sets:
        lattice.tables[mask] = {}
    if not universe.district_ids:
        return lattice
    sql, args = build_sql(universe, dims, sets)
    for row in await db.fetch(sql, *args):
        bits = int(row["grouping_bits"])
        # GROUPING() sets the bit of an *aggregated* argument, the first
        # argument being the most significant bit.
        mask = sum(1 << i for i in range(n) if not bits >> (n - 1 - i) & 1)
        key: Key = tuple(row[f"d{i}"] for i in positions(mask, n))
        rows, measures = _measures(universe.kind, row)
        lattice.tables[mask][key] = Cell(int(row["students"]), rows, measures)
    return lattice


def has_multi(kind: Kind, dims: Sequence[str]) -> bool:
    specs = _FACTS[kind].dims()
    return any(specs[d].multi for d in dims)


@dataclass(frozen=True)
class Shown:
    """One row of a report: the group's values and its measures, or why not."""

    key: Key
    reason: Reason | None
    students: int | None
    measures: dict[str, float | int | None]


@dataclass(frozen=True)
class Report:
    k: int
    rows: list[Shown]
    total: Shown
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def empty_measures(kind: Kind) -> dict[str, float | int | None]:
    if kind is Kind.PERFORMANCE:
        return {"responses": 0, "mean_score": None, "percent_correct": None}
    return {"active_minutes": 0.0, "sessions": 0}


def _shown(key: Key, cell: Cell | None, reason: Reason | None, kind: Kind) -> Shown:
    if reason is not None:
        return Shown(key, reason, None, {})
    if cell is None:
        return Shown(key, None, 0, empty_measures(kind))
    return Shown(key, None, cell.students, cell.measures)


def _sort_key(key: Key) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, v or "") for v in key)


# ------------------------------------------------------------------ windows

_EPOCH_MONDAY = dt.datetime(1970, 1, 5, tzinfo=dt.UTC)
_WEEK = dt.timedelta(weeks=1)


def week_floor(at: dt.datetime) -> dt.datetime:
    """The Monday 00:00 UTC at or before ``at``."""
    weeks = (at.astimezone(dt.UTC) - _EPOCH_MONDAY) // _WEEK
    return _EPOCH_MONDAY + weeks * _WEEK


def week_ceil(at: dt.datetime) -> dt.datetime:
    """The Monday 00:00 UTC at or after ``at``."""
    floor = week_floor(at)
    return floor if floor == at else floor + _WEEK


class _Window:
    """Which WEEK values (``YYYY-MM-DD`` of a Monday) a widened window holds."""

    def __init__(self, start: dt.datetime | None, end: dt.datetime | None) -> None:
        self.start = None if start is None else start.date().isoformat()
        self.end = None if end is None else end.date().isoformat()

    def __contains__(self, week: object) -> bool:
        if not isinstance(week, str):
            return False  # no event lacks a time
        return (self.start is None or week >= self.start) and (self.end is None or week < self.end)


# ------------------------------------------------------------------ reports


def _mask(dims: tuple[str, ...], of: Sequence[str]) -> int:
    return sum(1 << dims.index(d) for d in of)


async def _measured(db: Db, universe: Universe, level: tuple[str, ...], fixed: dict[str, str]) -> dict[Key, Cell]:
    """The cells of the table grouped by ``level``, counted with only that
    table's own joins, within the ``fixed`` slice."""
    table = await load_lattice(db, universe, level, [(1 << len(level)) - 1])
    cells = table.tables[(1 << len(level)) - 1]
    at = [(level.index(d), v) for d, v in fixed.items() if d in level]
    return {key: cell for key, cell in cells.items() if all(key[i] == v for i, v in at)}


async def run_report(
    db: Db,
    universe: Universe,
    group_by: Sequence[str],
    fixed: dict[str, str],
    k: int,
    counterparts: Sequence[Universe] = (),
) -> Report:
    """The report: rows grouped by ``group_by`` (in that order) within the slice
    ``fixed`` (dimension -> value: the scope below the universe and the
    assessment filter), each shown or suppressed, and the slice's total.

    Without a window, suppression is decided on the lattice over the report's
    own dimensions. With one, the window is widened to whole UTC weeks and
    suppression is decided on the lattice over all time with WEEK added: a
    windowed number is shown only if it follows from the shown cells of that
    lattice (its line along WEEK has no hidden cell inside the window, or has
    all of them inside it while its all-time group is shown). So two windows
    cannot be subtracted to reach a hidden week, nor a window from all time.

    ``counterparts`` are the other universes whose report of the same
    dimensions the caller can also obtain, and their differences (an
    analyst's other purpose: schema/reports.py): suppression is decided
    jointly over all of them (suppression.py, ``suppress_jointly``).
    """
    # Grouping sets with DISTINCT counts sort: let them sort in memory, for the
    # report's statements alone (a query's other statements run without a transaction).
    async with in_transaction(db):
        await db.execute("SELECT set_config('work_mem', $1, true)", WORK_MEM)
        return await _computed(db, universe, group_by, fixed, k, counterparts)


async def _computed(
    db: Db,
    universe: Universe,
    group_by: Sequence[str],
    fixed: dict[str, str],
    k: int,
    counterparts: Sequence[Universe],
) -> Report:
    """``run_report``'s report, under its settings."""
    windowed = universe.start is not None or universe.end is not None
    if windowed:
        universe = Universe(
            kind=universe.kind,
            district_ids=universe.district_ids,
            start=None if universe.start is None else week_floor(universe.start),
            end=None if universe.end is None else week_ceil(universe.end),
            exclude_opted_out=universe.exclude_opted_out,
            demographics_from=universe.demographics_from,
        )
    dims = canonical([*fixed, *group_by])
    level_f = canonical(list(fixed))
    several_districts = len(universe.district_ids) > 1
    lattice_dims = canonical([*dims, *ancestors(dims, several_districts), *(["WEEK"] if windowed else [])])
    all_time = _all_time(universe)
    lattice = await load_lattice(db, all_time, lattice_dims)
    views = [View(lattice.counts(), await load_overlaps(db, all_time, lattice_dims))]
    lattices = [lattice]
    for other in map(_all_time, counterparts):
        other_lattice = await load_lattice(db, other, lattice_dims)
        lattices.append(other_lattice)
        views.append(View(other_lattice.counts(), await load_overlaps(db, other, lattice_dims)))
    hidden = suppress_jointly(views, len(lattice_dims), k)
    window = _Window(universe.start, universe.end)
    hidden_weeks: dict[int, dict[Key, list[str | None]]] = {}

    def weeks_hidden(mask: int) -> dict[Key, list[str | None]]:
        """Per group of the table ``mask``: the hidden cells of its line along WEEK."""
        if mask not in hidden_weeks:
            week_bit = 1 << lattice_dims.index("WEEK")
            at = positions(mask | week_bit, len(lattice_dims)).index(lattice_dims.index("WEEK"))
            lines: dict[Key, list[str | None]] = {}
            for cell in hidden[mask | week_bit]:
                lines.setdefault(cell[:at] + cell[at + 1 :], []).append(cell[at])
            hidden_weeks[mask] = lines
        return hidden_weeks[mask]

    widened: dict[tuple[str, ...], tuple[tuple[str, ...], dict[Key, Key]]] = {}

    def same_cell(level: tuple[str, ...], key: Key) -> tuple[tuple[str, ...], Key] | None:
        """The cell of the table with ``level``'s ancestors added that is this very cell (a
        school's row is its district's school's row), when exactly one is in every universe
        decided together (so that their reports hide alike): its flags hold too."""
        if level not in widened:
            wider = canonical([*level, *ancestors(level, several_districts)])
            at = [wider.index(d) for d in level]
            by_key: dict[Key, Key] = {}
            twice: set[Key] = set()
            for table in (each.tables[_mask(lattice_dims, wider)] for each in lattices) if wider != level else ():
                for ext in table:
                    short = tuple(ext[i] for i in at)
                    if short not in by_key:
                        by_key[short] = ext
                    elif by_key[short] != ext:
                        twice.add(short)  # a row of several wider cells (no class: many schools) is their parent
            widened[level] = (wider, {short: ext for short, ext in by_key.items() if short not in twice})
        wider, same = widened[level]
        return (wider, same[key]) if key in same else None

    def reason(level: tuple[str, ...], key: Key, students: int) -> Reason | None:
        own = flagged(level, key, students)
        if own is not None:
            return own
        same = same_cell(level, key)
        return None if same is None else flagged(*same, students)

    def flagged(level: tuple[str, ...], key: Key, students: int) -> Reason | None:
        if 0 < students < k:
            return Reason.SMALL_GROUP
        mask = _mask(lattice_dims, level)
        if not windowed or "WEEK" in level:
            return hidden[mask].get(key)
        weeks = weeks_hidden(mask).get(key, [])
        inside = [w for w in weeks if w in window]
        if not inside:
            return None
        if len(inside) == len(weeks) and key not in hidden[mask]:
            return None
        return Reason.COMPLEMENTARY

    fixed_key: Key = tuple(fixed[d] for d in level_f)
    if not windowed and not has_multi(universe.kind, [d for d in dims if d not in fixed]):
        total_cell = lattice.tables[_mask(lattice_dims, level_f)].get(fixed_key)
    else:
        # A dimension with several values per student repeats rows in every
        # table of its lattice; the slice's own total is counted without it.
        total_cell = (await _measured(db, universe, level_f, fixed)).get(fixed_key)
    students = total_cell.students if total_cell is not None else 0
    # POLICY section 5: "The total row is itself suppressed when it is below k", an empty one too
    # (the joint suppression treats no students as no group: nothing in it to protect).
    total_reason = Reason.SMALL_GROUP if students < k else reason(level_f, fixed_key, students)
    total = _shown((), total_cell, total_reason, universe.kind)

    rows: list[Shown] = []
    if group_by:
        cells = (
            await _measured(db, universe, dims, fixed)
            if windowed
            else _slice(lattice.tables[_mask(lattice_dims, dims)], dims, fixed)
        )
        order = [dims.index(d) for d in group_by]
        for key, cell in cells.items():
            shown_key: Key = tuple(key[i] for i in order)
            rows.append(_shown(shown_key, cell, reason(dims, key, cell.students), universe.kind))
        rows.sort(key=lambda r: _sort_key(r.key))
    return Report(k=k, rows=rows, total=total, start=universe.start, end=universe.end)


def ancestors(dims: Sequence[str], several_districts: bool) -> list[str]:
    """The dimensions ``dims`` determine by the roster's structure: a class is in one school, a
    school in one district. Suppression is decided with them in the lattice, so that a school's
    cells are protected among their district's as well (an analyst's DISTRICT x ENGLISH_LEARNER
    less SCHOOL x ENGLISH_LEARNER would otherwise give one school's hidden cell back)."""
    added = []
    if "CLASS" in dims:
        added.append("SCHOOL")
    if several_districts and ("SCHOOL" in dims or "CLASS" in dims):
        added.append("DISTRICT")
    return [d for d in added if d not in dims]


def _all_time(universe: Universe) -> Universe:
    """The same universe without a window: what suppression is decided on."""
    return Universe(
        kind=universe.kind,
        district_ids=universe.district_ids,
        exclude_opted_out=universe.exclude_opted_out,
        demographics_from=universe.demographics_from,
    )


def _slice(cells: dict[Key, Cell], dims: tuple[str, ...], fixed: dict[str, str]) -> dict[Key, Cell]:
    at = [(dims.index(d), v) for d, v in fixed.items()]
    return {key: cell for key, cell in cells.items() if all(key[i] == v for i, v in at)}
