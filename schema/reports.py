"""Aggregate reports with small-cell and complementary suppression (POLICY.md section 5).

Who may ask for what follows the rule's ``aggregates`` (POLICY.md section 3):

* CLASSES (TEACHER, REPORTING): a class the teacher teaches;
* SCHOOL (SCHOOL_ADMIN, REPORTING): the administrator's school or one of its classes;
* DISTRICT (DISTRICT_ADMIN, REPORTING and LEGAL_COMPLIANCE): the district, or
  one of its schools or classes;
* ALL_DISTRICTS (ANALYST, REPORTING) and AUTHORIZING_DISTRICTS (ANALYST,
  PRODUCT_ANALYTICS): any district, school or class, or ``allDistricts``;
  only districts that authorize the purpose (and are governed by a policy
  version that gives the analyst aggregates) take part, and students whose
  family opted out are left out whatever the purpose (POLICY.md 4.4), so that
  the same report under two purposes cannot be subtracted to single them out.
  The district's own staff count every student.

Anything else is FORBIDDEN with reason OUT_OF_SCOPE_OPERATION. District staff
also need their district to authorize the purpose, and the report's data to
be a category their purpose allows in their district: PERFORMANCE for
performanceReport, USAGE for usageReport, DEMOGRAPHIC when grouping by a
demographic dimension. The decision table gives the reason when not (so a
teacher under REPORTING, which has no USAGE, gets no usage report, and a
district that does not collect demographics gives NOT_COLLECTED). Analysts
read no category at all; their reports are anonymous totals only, which is
what their rule is for, so they may group by demographics; districts that do
not collect demographics add their students to the null group, and districts
that do not collect usage are left out of usage reports.

The universe a report is computed over is the caller's district (district
staff) or every district that takes part (analysts); a narrower scope and the
assessment filter are dimensions fixed to one value, so that a school's report
is the school's slice of the district's tables and suppressed the same way.
k is the district's minimumGroupSize; for analysts, the largest of the
districts taking part (also when they ask for one district: their reports
are all slices of the same tables). A window (from inclusive, to exclusive)
is widened to whole UTC weeks, Monday to Monday, so that it is a set of WEEK
cells (see resolvers/reports.py for what that protects). groupBy takes at
most five distinct dimensions. ``suppressedRows`` counts the hidden rows, not
the total. Each report is audited as one entry with no subject (it discloses
no one student's data), whose fields name the operation's scope, dimensions
and measures, and whose categories are the ones its measures and dimensions
are counted from (PERFORMANCE or USAGE, and DEMOGRAPHIC for a demographic
dimension); a refused report is audited the same way as a DENY entry.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLResolveInfo

from permissions.decide import DistrictConditions, is_collected, is_purpose_authorized
from permissions.enums import AggregateScope, DataCategory, DenyReason, Purpose, Role
from permissions.errors import BadUserInput, Forbidden, refusal_message
from resolvers.reports import (
    DEMOGRAPHIC_DIMENSIONS,
    DIMENSIONS,
    PERFORMANCE_ONLY,
    Kind,
    Report,
    Shown,
    Universe,
)
from schema.base import Context, Info, id_argument
from schema.enums import Dimension, SuppressionReason
from schema.governance import AggregateReport, AggregateRow, GroupValue, ReportInput, ScopeInput

DEFAULT_K = 10
# Windows are widened to whole weeks: keep them where a week more or less exists.
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 12, 31, tzinfo=dt.UTC)
# Every table below the report's own is computed too (2^n grouping sets), and
# with more dimensions nearly every group falls below k anyway.
MAX_GROUP_BY = 5

_OPERATION = {Kind.PERFORMANCE: "performanceReport", Kind.USAGE: "usageReport"}
_MEASURES = {
    Kind.PERFORMANCE: ("students", "responses", "meanScore", "percentCorrect"),
    Kind.USAGE: ("students", "activeMinutes", "sessions"),
}
_CATEGORY = {Kind.PERFORMANCE: DataCategory.PERFORMANCE, Kind.USAGE: DataCategory.USAGE}
_INTERNAL = frozenset({AggregateScope.ALL_DISTRICTS, AggregateScope.AUTHORIZING_DISTRICTS})
# An analyst's two purposes, each the other's counterpart (POLICY.md 3 and 4.1).
_OTHER_ANALYST_PURPOSE = {
    Purpose.REPORTING: Purpose.PRODUCT_ANALYTICS,
    Purpose.PRODUCT_ANALYTICS: Purpose.REPORTING,
}


async def performance_report(info: Info, input: ReportInput) -> AggregateReport:
    return await report(info.context, input, Kind.PERFORMANCE)


async def usage_report(info: Info, input: ReportInput) -> AggregateReport:
    return await report(info.context, input, Kind.USAGE)


def direct_resolvers() -> dict[str, Callable[..., Awaitable[AggregateReport]]]:
    """The reports' resolvers as the built schema calls them (schema/build.py), without
    Strawberry's wrapper: graphql-core's coerced ``input`` read as Strawberry reads it
    (``report_input``), then the same ``report``. A report request is a handful of
    fields, and that wrapper's argument conversion cost more than the rest of its resolve."""

    def direct(kind: Kind) -> Callable[..., Awaitable[AggregateReport]]:
        async def resolve(_root: Any, info: GraphQLResolveInfo[Any], input: Mapping[str, Any]) -> AggregateReport:
            return await report(info.context, report_input(input), kind)

        return resolve

    return {_OPERATION[kind]: direct(kind) for kind in Kind}


def report_input(raw: Mapping[str, Any]) -> ReportInput:
    """graphql-core's coerced ``input`` argument (names as the schema spells them, enums
    as their members, DateTime parsed) as the ReportInput Strawberry would convert it to."""
    scope = raw["scope"]
    return ReportInput(
        scope=ScopeInput(
            district_id=scope.get("districtId"),
            school_id=scope.get("schoolId"),
            class_id=scope.get("classId"),
            all_districts=scope.get("allDistricts"),
        ),
        group_by=list(raw.get("groupBy") or ()),
        from_=raw.get("from"),
        to=raw.get("to"),
        assessment_id=raw.get("assessmentId"),
    )


# ------------------------------------------------------------------ the input


@dataclass(frozen=True)
class Request:
    scope: str  # CLASS, SCHOOL, DISTRICT or ALL_DISTRICTS
    scope_id: uuid.UUID | None
    group_by: tuple[str, ...]
    start: dt.datetime | None
    end: dt.datetime | None
    assessment_id: uuid.UUID | None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _parse_scope(scope: ScopeInput) -> tuple[str, uuid.UUID | None]:
    given: list[tuple[str, Any]] = [
        (name, value)
        for name, value in (
            ("CLASS", scope.class_id),
            ("SCHOOL", scope.school_id),
            ("DISTRICT", scope.district_id),
        )
        if value is not None
    ]
    if scope.all_districts:
        given.append(("ALL_DISTRICTS", None))
    if len(given) != 1:
        raise BadUserInput(
            "Give exactly one of scope.classId, scope.schoolId, scope.districtId or scope.allDistricts: true",
            field="scope",
        )
    name, value = given[0]
    if value is None:
        return name, None
    field = {"CLASS": "scope.classId", "SCHOOL": "scope.schoolId", "DISTRICT": "scope.districtId"}[name]
    return name, id_argument(value, field)


def parse_request(input: ReportInput, kind: Kind) -> Request:
    scope, scope_id = _parse_scope(input.scope)
    group_by = tuple(d.value if isinstance(d, Dimension) else str(d) for d in input.group_by)
    unknown = [d for d in group_by if d not in DIMENSIONS]
    if unknown:
        raise BadUserInput("'groupBy' names an unknown dimension", field="groupBy")
    repeated = sorted({d for d in group_by if group_by.count(d) > 1})
    if repeated:
        raise BadUserInput(f"'groupBy' lists {', '.join(repeated)} more than once; list each once", field="groupBy")
    if len(group_by) > MAX_GROUP_BY:
        raise BadUserInput(f"'groupBy' takes at most {MAX_GROUP_BY} dimensions", field="groupBy")
    if kind is Kind.USAGE:
        wrong = [d for d in group_by if d in PERFORMANCE_ONLY]
        if wrong:
            raise BadUserInput(
                f"usageReport cannot group by {', '.join(wrong)}: activity is not tied to an item", field="groupBy"
            )
        if input.assessment_id is not None:
            raise BadUserInput("usageReport takes no 'assessmentId': activity is not tied to one", field="assessmentId")
    start, end = _utc(input.from_), _utc(input.to)
    for name, value in (("from", start), ("to", end)):
        if value is not None and not EARLIEST <= value <= LATEST:
            raise BadUserInput(f"'{name}' must fall between the years {EARLIEST.year} and {LATEST.year}", field=name)
    if start is not None and end is not None and start > end:
        raise BadUserInput("'from' is after 'to'", field="from")
    assessment = None if input.assessment_id is None else id_argument(input.assessment_id, "assessmentId")
    return Request(scope, scope_id, group_by, start, end, assessment)


# ------------------------------------------------------------- who may ask


@dataclass(frozen=True)
class Plan:
    universe: Universe
    fixed: dict[str, str]
    k: int
    # The universes of the reports a caller can also obtain and subtract
    # (resolvers/reports.py run_report).
    counterparts: tuple[Universe, ...] = ()


def _refuse(message: str, reason: DenyReason, purpose: Purpose, category: DataCategory | None = None) -> Forbidden:
    extensions: dict[str, str] = {"purpose": purpose.value, "reason": reason.value}
    if category is not None:
        extensions["category"] = category.value
    return Forbidden(message, **extensions)


def _out_of_scope(ctx: Context, what: str) -> Forbidden:
    return _refuse(
        f"{what} is outside the aggregates this role may read under purpose {ctx.purpose.value}",
        DenyReason.OUT_OF_SCOPE_OPERATION,
        ctx.purpose,
    )


def _analyst_refusal(
    ctx: Context, conditions: DistrictConditions, kind: Kind, purpose: Purpose | None = None
) -> DenyReason | None:
    """Why a district takes no part in an analyst's report under ``purpose``
    (the request's by default), or None."""
    purpose = purpose or ctx.purpose
    if not is_purpose_authorized(purpose, conditions):
        return DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT
    rule = ctx.policies.governing(conditions.accepted_version).rule(ctx.principal.role, purpose)
    if rule is None or rule.aggregates not in _INTERNAL:
        return DenyReason.POLICY_VERSION_NOT_ACCEPTED
    if not is_collected(_CATEGORY[kind], conditions):
        return DenyReason.NOT_COLLECTED
    return None


async def _district_of(db: Any, table: str, row_id: uuid.UUID, districts: list[uuid.UUID]) -> Any:
    sql = {
        "schools": "SELECT district_id, id AS school_id FROM schools WHERE id = $1 AND district_id = ANY($2::uuid[])",
        "classes": "SELECT district_id, school_id FROM classes WHERE id = $1 AND district_id = ANY($2::uuid[])",
    }[table]
    return await db.fetchrow(sql, row_id, districts)


async def _plan_internal(ctx: Context, request: Request, kind: Kind) -> Plan:
    principal = ctx.principal
    if principal.role is not Role.ANALYST or principal.district_id is not None:
        raise _out_of_scope(ctx, "This report")
    taking_part = {key: c for key, c in sorted(ctx.conditions.items()) if _analyst_refusal(ctx, c, kind) is None}
    districts = [uuid.UUID(key) for key in taking_part]
    fixed: dict[str, str] = {}
    if request.scope == "DISTRICT":
        key = str(request.scope_id)
        conditions = ctx.conditions.get(key)
        if conditions is None:
            raise _out_of_scope(ctx, "That district")
        reason = _analyst_refusal(ctx, conditions, kind)
        if reason is not None:
            raise _refuse("That district's data takes no part in this purpose's aggregates", reason, ctx.purpose)
        fixed["DISTRICT"] = key
    elif request.scope in ("SCHOOL", "CLASS") and request.scope_id is not None:
        table = "schools" if request.scope == "SCHOOL" else "classes"
        if await _district_of(ctx.db, table, request.scope_id, districts) is None:
            raise _out_of_scope(ctx, "That school" if table == "schools" else "That class")
        fixed[request.scope] = str(request.scope_id)
    # The same report under the analysts' other purpose counts the districts
    # that take part in it, which may differ (POLICY.md 4.1): the two reports,
    # subtracted, would give the students of the districts in one and not the
    # other. Both are suppressed with one hidden set (resolvers/suppression.py,
    # suppress_jointly) and the largest k of either.
    other_purpose = _OTHER_ANALYST_PURPOSE.get(ctx.purpose)
    other_part = (
        {key: c for key, c in sorted(ctx.conditions.items()) if _analyst_refusal(ctx, c, kind, other_purpose) is None}
        if other_purpose is not None
        else taking_part
    )
    both = {**taking_part, **other_part}
    demographics = {uuid.UUID(key) for key, c in both.items() if c.collect_demographics}

    def universe_of(keys: Iterable[str]) -> Universe:
        ids = tuple(sorted(uuid.UUID(key) for key in keys))
        return Universe(
            kind=kind,
            district_ids=ids,
            start=request.start,
            end=request.end,
            # POLICY.md 4.4: whatever the purpose, so that two analysts' reports
            # cannot be subtracted to single out who opted out.
            exclude_opted_out=True,
            demographics_from=tuple(d for d in ids if d in demographics),
        )

    universe = universe_of(taking_part)
    counterparts: tuple[Universe, ...] = ()
    if set(other_part) != set(taking_part):
        counterparts = tuple(
            universe_of(keys)
            for keys in (other_part, set(taking_part) - set(other_part), set(other_part) - set(taking_part))
        )
    sizes = [c.minimum_group_size for c in both.values()]
    return Plan(universe, fixed, max(sizes, default=DEFAULT_K), counterparts)


async def _plan_district(ctx: Context, request: Request, kind: Kind) -> Plan:
    principal = ctx.principal
    aggregates = ctx.rule.aggregates
    home_id = principal.district_id
    if home_id is None:
        raise _out_of_scope(ctx, "This report")
    home: DistrictConditions | None = ctx.conditions.get(str(home_id))
    if home is None:
        raise _out_of_scope(ctx, "This report")
    if not is_purpose_authorized(ctx.purpose, home):
        raise _refuse(
            refusal_message("its data", ctx.purpose.value, DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT.value),
            DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT,
            ctx.purpose,
        )

    fixed: dict[str, str] = {}
    scope, scope_id = request.scope, request.scope_id
    if scope == "ALL_DISTRICTS":
        raise _out_of_scope(ctx, "A report over all districts")
    if scope == "DISTRICT":
        if aggregates is not AggregateScope.DISTRICT or scope_id != home_id:
            raise _out_of_scope(ctx, "That district")
    elif scope == "SCHOOL" and scope_id is not None:
        if aggregates is AggregateScope.SCHOOL:
            allowed = scope_id in principal.school_ids
        else:
            allowed = aggregates is AggregateScope.DISTRICT and (
                await _district_of(ctx.db, "schools", scope_id, [home_id]) is not None
            )
        if not allowed:
            raise _out_of_scope(ctx, "That school")
        fixed["SCHOOL"] = str(scope_id)
    elif scope == "CLASS" and scope_id is not None:
        if aggregates is AggregateScope.CLASSES:
            allowed = scope_id in principal.class_ids
        elif aggregates in (AggregateScope.SCHOOL, AggregateScope.DISTRICT):
            found = await _district_of(ctx.db, "classes", scope_id, [home_id])
            allowed = found is not None and (
                aggregates is AggregateScope.DISTRICT or found["school_id"] in principal.school_ids
            )
        else:
            allowed = False
        if not allowed:
            raise _out_of_scope(ctx, "That class")
        fixed["CLASS"] = str(scope_id)
    else:
        raise _out_of_scope(ctx, "This report")

    for category in report_categories(kind, request):
        decision = ctx.decisions.lookup(str(home_id), category)
        if not decision.allowed:
            reason = decision.reason or DenyReason.PURPOSE_NOT_ALLOWED_FOR_CATEGORY
            raise _refuse(
                f"This report reads {category.value} data. "
                + refusal_message(f"{category.value} data", ctx.purpose.value, reason.value),
                reason,
                ctx.purpose,
                category,
            )
    universe = Universe(
        kind=kind,
        district_ids=(home_id,),
        start=request.start,
        end=request.end,
        # The district's own staff count every student (POLICY.md 4.4).
        exclude_opted_out=False,
        demographics_from=(home_id,) if home.collect_demographics else (),
    )
    return Plan(universe, fixed, home.minimum_group_size)


async def plan_report(ctx: Context, request: Request, kind: Kind) -> Plan:
    aggregates = ctx.rule.aggregates
    if aggregates is AggregateScope.NONE:
        raise _out_of_scope(ctx, "An aggregate report")
    if aggregates in _INTERNAL:
        plan = await _plan_internal(ctx, request, kind)
    else:
        plan = await _plan_district(ctx, request, kind)
    if request.assessment_id is not None:
        plan.fixed["ASSESSMENT"] = str(request.assessment_id)
    return plan


# ----------------------------------------------------------------- the report


def audit_fields(kind: Kind, request: Request | None) -> list[str]:
    operation = _OPERATION[kind]
    fields = [operation]
    if request is not None:
        fields.append(f"{operation}.scope.{request.scope}")
        fields.extend(f"{operation}.groupBy.{d}" for d in request.group_by)
        if request.assessment_id is not None:
            fields.append(f"{operation}.assessmentId")
    fields.extend(f"{operation}.{m}" for m in _MEASURES[kind])
    return fields


def report_categories(kind: Kind, request: Request | None) -> list[DataCategory]:
    """The categories a report is counted from: its measures' and, grouped by a demographic
    dimension, DEMOGRAPHIC. The caller's rule must allow each (``plan``)."""
    categories = [_CATEGORY[kind]]
    if request is not None and any(d in DEMOGRAPHIC_DIMENSIONS for d in request.group_by):
        categories.append(DataCategory.DEMOGRAPHIC)
    return categories


def _record(ctx: Context, kind: Kind, request: Request | None, allowed: bool) -> None:
    """One audit entry of its own: no subject (no one student's data is disclosed), the scope,
    dimensions and measures as its fields, the categories they are counted from as its categories."""
    categories = [c.value for c in report_categories(kind, request)]
    ctx.audit.record(ctx.home_district_key, None, audit_fields(kind, request), categories, allowed)


def _row(kind: Kind, group_by: tuple[str, ...], shown: Shown, labels: Labels | None = None) -> AggregateRow:
    group = [
        GroupValue(dimension=Dimension(d), value=v, label=label_of(d, v, labels or {}))
        for d, v in zip(group_by, shown.key, strict=True)
    ]
    m = shown.measures
    return AggregateRow(
        group=group,
        suppressed=shown.reason is not None,
        suppression_reason=SuppressionReason(shown.reason.value) if shown.reason is not None else None,
        students=shown.students,
        responses=_int(m.get("responses")),
        mean_score=_float(m.get("mean_score")),
        percent_correct=_float(m.get("percent_correct")),
        active_minutes=_float(m.get("active_minutes")),
        sessions=_int(m.get("sessions")),
    )


def _int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def _float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def to_graphql(kind: Kind, group_by: tuple[str, ...], report: Report, labels: Labels | None = None) -> AggregateReport:
    rows = [_row(kind, group_by, r, labels) for r in report.rows]
    return AggregateReport(
        minimum_group_size=report.k,
        rows=rows,
        total=_row(kind, (), report.total),
        suppressed_rows=sum(1 for r in rows if r.suppressed),
    )


async def report(ctx: Context, input: ReportInput, kind: Kind) -> AggregateReport:
    if ctx.rule.aggregates is AggregateScope.NONE:
        _record(ctx, kind, None, False)
        raise _out_of_scope(ctx, "An aggregate report")
    request = parse_request(input, kind)
    try:
        plan = await plan_report(ctx, request, kind)
    except Forbidden:
        _record(ctx, kind, request, False)
        raise
    _record(ctx, kind, request, True)
    # run_report's answer, kept while nothing it counts changes (resolvers/report_cache.py).
    report = await ctx.reports.report(
        ctx.db, plan.universe, request.group_by, plan.fixed, plan.k, plan.counterparts, ctx.confirm
    )
    ctx.confirm = None
    labels = await load_labels(ctx.db, request.group_by, report)
    return ctx.reports.shown(report, labels, lambda: to_graphql(kind, request.group_by, report, labels))


# ----------------------------------------------------------------- the labels

# dimension -> (dimension value -> what a person reads). Names of districts,
# schools, classes and assessments carry no personal data (POLICY.md section
# 1); they are looked up once per report for the groups it shows.
Labels = dict[str, dict[str, str]]

_NAMES = {
    "DISTRICT": "SELECT id::text AS id, name FROM districts WHERE id = ANY($1::uuid[])",
    "SCHOOL": "SELECT id::text AS id, name FROM schools WHERE id = ANY($1::uuid[])",
    "CLASS": "SELECT id::text AS id, name FROM classes WHERE id = ANY($1::uuid[])",
    "ASSESSMENT": "SELECT id::text AS id, title AS name FROM assessments WHERE id = ANY($1::uuid[])",
}
_FLAGS = {
    "ENGLISH_LEARNER": ("English learner", "Not an English learner"),
    "SPECIAL_EDUCATION": ("Special education", "Not in special education"),
    "ECONOMICALLY_DISADVANTAGED": ("Economically disadvantaged", "Not economically disadvantaged"),
}
_NONE = {
    "CLASS": "No class (practice outside an assignment)",
    "DISTRICT": "No district",
    "SCHOOL": "No school",
}


async def load_labels(db: Any, group_by: tuple[str, ...], report: Report) -> Labels:
    """The names of the groups of ``report`` that are looked up: one statement
    per named dimension, whatever the number of rows."""
    labels: Labels = {}
    for index, dimension in enumerate(group_by):
        sql = _NAMES.get(dimension)
        if sql is None:
            continue
        ids = sorted({v for v in (row.key[index] for row in report.rows) if v is not None})
        if not ids:
            continue
        labels[dimension] = {r["id"]: r["name"] for r in await db.fetch(sql, ids)}
    return labels


def label_of(dimension: str, value: str | None, labels: Labels) -> str | None:
    """What a person reads for ``value``: a name, a week's first day, a flag in
    words, or the value itself where that is what a person reads."""
    if value is None:
        return _NONE.get(dimension, "Not recorded")
    if dimension in _NAMES:
        return labels.get(dimension, {}).get(value)
    if dimension == "WEEK":
        return f"Week of {dt.date.fromisoformat(value).strftime('%A %d %B %Y').replace(' 0', ' ')}"
    if dimension in _FLAGS:
        yes, no = _FLAGS[dimension]
        return yes if value == "true" else no
    return value
