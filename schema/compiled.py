"""Compiled reads: the hot queries as one SQL statement that returns their JSON.

The resolver path reads a class roster field by field: 30 students with 20
responses each is some two thousand resolver calls, and most of a request's
CPU. For the documents this module understands, a plan is made once per
document: each field becomes a column expression, each relationship a join,
and a request runs one statement whose result is the response's ``data``,
built by PostgreSQL as JSON (the approach of PostGraphile and Hasura).

It understands ``class(id:)`` and ``student(id:)``, and below them a class's
plain fields and ``students``, a student's plain personal fields and
``responses(first:, assignmentId:)``, a response's plain fields, and
``__typename``. Anything else in a document (another field, a directive, a
fragment on another type) leaves the document to the resolver path.

The policy is enforced exactly as on the resolver path, from the same parts:

* decisions: before the statement runs, every classified field of the plan is
  looked up in the request's decision table; if any is denied, the request
  takes the resolver path, which answers with the per-occurrence FORBIDDEN
  errors the contract describes;
* row scope: the statement's joins carry the same ``RowScope`` predicates as
  the loaders' statements;
* audit: the statement also returns, per level of the plan, whose rows it
  read, and every classified field is noted for each of them, in the order the
  resolver path notes them, so the collector groups the same entries.

A request that would end in an error (an argument out of range, an id that
finds nothing) also takes the resolver path: it has the messages. Values
are formatted by PostgreSQL as the resolver path's scalars serialize them
(ids as text, timestamps in Python's ISO form); ``tests/test_compiled.py``
compares the two paths' bodies and audit entries.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)
from graphql.execution.values import VariableValues, get_argument_values

from permissions.enums import DataCategory
from resolvers.db import Params
from resolvers.reads import ACTIVE
from resolvers.scope import RowScope
from schema.base import MAX_PAGE
from schema.classified import category_of

NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
# json_build_object takes at most 100 arguments: 50 keys.
MAX_KEYS = 50

# A timestamptz as Python's isoformat() gives it for a UTC datetime (what the
# DateTime scalar serializes): microseconds only when there are any.
_TIMESTAMP = (
    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
    "CASE WHEN extract(microseconds FROM {c})::bigint % 1000000 = 0 THEN '' "
    "ELSE to_char({c} AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)


def _timestamp(column: str) -> str:
    return _TIMESTAMP.replace("{c}", "{a}." + column)


# Per type: the fields that are one column (an SQL expression over the row's
# alias ``{a}``), and the relationships (field -> relation name).
COLUMNS: dict[str, dict[str, str]] = {
    "Class": {
        "id": "{a}.id::text",
        "name": "{a}.name",
        "subject": "{a}.subject",
        "gradeLevel": "{a}.grade_level",
    },
    "Student": {
        "id": "{a}.id::text",
        "firstName": "{a}.first_name",
        "lastName": "{a}.last_name",
        "preferredName": "{a}.preferred_name",
        "username": "{a}.username",
        "gradeLevel": "{a}.grade_level",
        "studentNumber": "{a}.student_number",
        "stateId": "{a}.state_id",
        "email": "{a}.email",
        "gender": "{a}.gender",
        "birthDate": "{a}.birth_date",
        "ethnicity": "to_json({a}.ethnicity)",
        "englishLearner": "{a}.english_learner",
        "specialEducation": "{a}.special_education",
        "economicallyDisadvantaged": "{a}.economically_disadvantaged",
        "learningLevel": "{a}.learning_level",
        "lastActiveAt": _timestamp("last_active_at"),
    },
    "Response": {
        "id": "{a}.id::text",
        "answer": "{a}.answer",
        "correct": "{a}.correct",
        "score": "{a}.score",
        "feedback": "{a}.feedback",
        "submittedAt": _timestamp("submitted_at"),
        "timeSpentSeconds": "{a}.time_spent_seconds",
    },
}
RELATIONS: dict[str, dict[str, str]] = {
    "Query": {"class": "class", "student": "student"},
    "Class": {"students": "class_students"},
    "Student": {"responses": "student_responses"},
}
# How each list relation's rows are ordered in the response, over the row's alias.
ORDER = {
    "class_students": "{a}.id",
    "student_responses": "{a}.submitted_at DESC, {a}.id DESC",
}


class NotCompiled(Exception):
    """This document, or this request, takes the resolver path."""


@dataclass(frozen=True)
class Member:
    """One response key of an object: a column, a relationship or ``__typename``."""

    key: str
    name: str  # "Type.field"
    category: DataCategory | None
    sql: str | None = None  # a column's expression over "{a}"
    relation: str | None = None
    child: Node | None = None
    field_def: GraphQLField | None = None
    field_node: FieldNode | None = None
    typename: str | None = None


@dataclass(frozen=True)
class Node:
    type_name: str
    members: tuple[Member, ...]

    @functools.cached_property
    def noted(self) -> tuple[Member, ...]:
        """The classified members, in the order the resolver path notes them:
        the plain fields as each object completes, then the relationships,
        whose resolvers run afterwards."""
        plain = [m for m in self.members if m.category is not None and m.child is None]
        related = [m for m in self.members if m.category is not None and m.child is not None]
        return (*plain, *related)

    @functools.cached_property
    def noted_sets(self) -> tuple[dict[str, None], dict[str, None]]:
        """The noted fields and their categories, as the audit collector keeps them (ordered sets)."""
        fields = dict.fromkeys(m.name for m in self.noted)
        categories = dict.fromkeys(m.category.value for m in self.noted if m.category is not None)
        return fields, categories


@dataclass(frozen=True)
class Plan:
    root: Member  # the one root field that reads
    members: tuple[Member, ...]  # the root's response keys: it and any __typename
    categories: frozenset[DataCategory]


def _unwrap(graphql_type: Any) -> Any:
    while hasattr(graphql_type, "of_type"):
        graphql_type = graphql_type.of_type
    return graphql_type


class Planner:
    """Makes a document's plan; the caller keeps it with the parsed document."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema

    def plan(self, document: DocumentNode, operation: OperationDefinitionNode) -> Plan | None:
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        try:
            return self._compile(operation, fragments)
        except NotCompiled:
            return None

    def _compile(self, operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]) -> Plan:
        if operation.operation is not OperationType.QUERY or operation.directives:
            raise NotCompiled
        query_type = self.schema.query_type
        if query_type is None:
            raise NotCompiled
        categories: set[DataCategory] = set()
        members = tuple(
            self._member(query_type, f, fragments, categories)
            for f in self._fields(query_type, operation.selection_set, fragments)
        )
        reading = [m for m in members if m.typename is None]
        if len(reading) != 1 or reading[0].child is None:
            raise NotCompiled
        return Plan(reading[0], members, frozenset(categories))

    def _fields(
        self, parent: GraphQLObjectType, selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]
    ) -> list[FieldNode]:
        """The selection's fields, fragments on the parent type flattened; one per response key."""
        out: list[FieldNode] = []
        for selection in selection_set.selections:
            if selection.directives:
                raise NotCompiled
            if isinstance(selection, FieldNode):
                out.append(selection)
                continue
            if isinstance(selection, InlineFragmentNode):
                condition, inner = selection.type_condition, selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is None or getattr(selection, "arguments", None) or fragment.directives:
                    raise NotCompiled
                condition, inner = fragment.type_condition, fragment.selection_set
            else:
                raise NotCompiled
            if condition is not None and condition.name.value != parent.name:
                raise NotCompiled
            out.extend(self._fields(parent, inner, fragments))
        keys = [(f.alias or f.name).value for f in out]
        if len(set(keys)) != len(keys) or len(keys) > MAX_KEYS:
            raise NotCompiled  # merged fields and very wide objects: the resolver path
        return out

    def _member(
        self,
        parent: GraphQLObjectType,
        node: FieldNode,
        fragments: dict[str, FragmentDefinitionNode],
        categories: set[DataCategory],
    ) -> Member:
        field_name = node.name.value
        key = (node.alias or node.name).value
        if not NAME.fullmatch(key):
            raise NotCompiled
        if field_name == "__typename":
            return Member(key, "", None, typename=parent.name)
        field_def = parent.fields.get(field_name)
        if field_def is None:
            raise NotCompiled
        category = category_of(field_def.extensions.get("strawberry-definition"))
        if category is not None:
            categories.add(category)
        name = f"{parent.name}.{field_name}"
        column = COLUMNS.get(parent.name, {}).get(field_name)
        if column is not None:
            if node.selection_set is not None or node.arguments:
                raise NotCompiled
            return Member(key, name, category, sql=column)
        relation = RELATIONS.get(parent.name, {}).get(field_name)
        child_type = _unwrap(field_def.type)
        if relation is None or node.selection_set is None or not isinstance(child_type, GraphQLObjectType):
            raise NotCompiled
        child = Node(
            child_type.name,
            tuple(
                self._member(child_type, f, fragments, categories)
                for f in self._fields(child_type, node.selection_set, fragments)
            ),
        )
        if sum(1 for m in child.members if m.child is not None) > 1:
            # Sibling relationships: the resolver path interleaves their audit
            # notes in an order a single chain of levels does not reproduce.
            raise NotCompiled
        return Member(key, name, category, relation=relation, child=child, field_def=field_def, field_node=node)


# ------------------------------------------------------------------ statement


@dataclass
class Statement:
    sql: str
    params: list[Any]
    # The audited levels (their nodes). The result's column 0 is the data, 1
    # whether the root was found, and from 2 on each level's district ids and
    # subject ids, in this order.
    audited: list[Node]


COLUMN = re.compile(r"\{a\}\.([a-z_]+)")


def _columns(node: Node, relation: str) -> list[str]:
    """The table columns a level reads: its keys, its order, and its members' columns."""
    wanted = ["district_id", "id", *COLUMN.findall(ORDER[relation])]
    for m in node.members:
        if m.sql is not None:
            wanted += COLUMN.findall(m.sql)
    return list(dict.fromkeys(wanted))


class _Builder:
    """Writes the statement: each relationship a correlated LATERAL subquery of
    its parent row (index lookups, one pass), aggregated into a JSON array.

    Whose rows were read is aggregated where the students are: a student's own
    row, and a response's student (the parent row, where its array is not
    empty). Those arrays travel up as extra columns of the root's row.
    """

    def __init__(self, scope: RowScope, variables: VariableValues | None) -> None:
        self.scope = scope
        self.variables = variables
        self.p = Params()
        self.aliases = 0
        self.audited: list[Node] = []
        self.audit_columns: dict[str, int] = {}  # per LATERAL list: how many audit columns it has

    def alias(self) -> str:
        self.aliases += 1
        return f"x{self.aliases}"

    def arguments(self, member: Member) -> dict[str, Any]:
        if member.field_def is None or member.field_node is None:
            return {}
        try:
            return get_argument_values(member.field_def, member.field_node, self.variables)
        except Exception:
            raise NotCompiled from None

    def rows(self, member: Member, a: str, parent: str | None) -> tuple[str, str]:
        """FROM and WHERE of a relationship's rows, as alias ``a``, for the parent row ``parent``."""
        if member.child is None or member.relation is None:
            raise NotCompiled
        p = self.p
        args = self.arguments(member)
        if member.relation in ("class", "student") and parent is None:
            try:
                wanted = uuid.UUID(str(args.get("id")))
            except ValueError:
                raise NotCompiled from None  # not found, with its message, on the resolver path
            if member.relation == "class":
                visible = [d for d in self.scope.district_ids if isinstance(d, uuid.UUID)]
                return f"classes {a}", f"{a}.district_id = ANY({p(visible)}::uuid[]) AND {a}.id = {p(wanted)}"
            return f"users {a}", f"{a}.id = {p(wanted)} AND {a}.role = 'STUDENT' AND {self.scope.students(a, p)}"
        if member.relation == "class_students" and parent is not None:
            t = p(self.scope.today)
            return (
                f"enrollments e JOIN users {a} ON {a}.district_id = e.district_id AND {a}.id = e.student_id",
                f"e.district_id = {parent}.district_id AND e.class_id = {parent}.id AND {ACTIVE.format(t=t)} "
                f"AND {a}.role = 'STUDENT' AND {self.scope.students(a, p)}",
            )
        if member.relation == "student_responses" and parent is not None:
            first = args.get("first")
            first = 20 if first is None else first
            if not isinstance(first, int) or first < 0 or first > MAX_PAGE:
                raise NotCompiled
            extra = ""
            assignment_id = args.get("assignmentId")
            if assignment_id is not None:
                try:
                    assignment = uuid.UUID(str(assignment_id))
                except ValueError:
                    raise NotCompiled from None
                extra = f" AND r.assignment_id = {p(assignment)}"
            columns = _columns(member.child, member.relation)
            return (
                f"(SELECT {', '.join('r.' + c for c in columns)} FROM responses r "
                f"WHERE r.district_id = {parent}.district_id AND r.student_id = {parent}.id{extra} "
                f"ORDER BY r.submitted_at DESC, r.id DESC LIMIT {p(first)}) {a}",
                "true",
            )
        raise NotCompiled

    def obj(self, node: Node, a: str) -> tuple[str, str, Member | None, str]:
        """An object's JSON over the row alias ``a``; the LATERAL join of its
        relationship (at most one), that relationship's member and join alias."""
        parts: list[str] = []
        join = ""
        related: Member | None = None
        joined = ""
        for m in node.members:
            parts.append(f"'{m.key}'")
            if m.typename is not None:
                parts.append(f"'{m.typename}'::text")
            elif m.sql is not None:
                parts.append(m.sql.format(a=a))
            elif m.child is not None and related is None:
                related, joined = m, self.alias()
                join = f" LEFT JOIN LATERAL ({self.items(m, a, joined)}) {joined} ON true"
                parts.append(f"COALESCE({joined}.items, '[]'::json)")
            else:
                raise NotCompiled
        return "json_build_object(" + ", ".join(parts) + ")", join, related, joined

    def subjects(self, node: Node, a: str, related: Member | None, joined: str, many: bool) -> list[str]:
        """Audit columns over the rows of ``node`` (alias ``a``): its own
        subjects when it is a student, then its relationship's when those are
        responses (about the student: this row, where the array is not empty).
        ``many``: aggregated over a list's rows, else of the one root row."""

        def pair(condition: str | None) -> list[str]:
            if many:
                where = f" FILTER (WHERE {condition})" if condition else ""
                return [f"array_agg({a}.{c} ORDER BY {a}.id){where}" for c in ("district_id", "id")]
            if condition:
                return [f"CASE WHEN {condition} THEN ARRAY[{a}.{c}] END" for c in ("district_id", "id")]
            return [f"ARRAY[{a}.{c}]" for c in ("district_id", "id")]

        out: list[str] = []
        if node.noted and node.type_name != "Response":  # a response's subject is noted by its parent
            if node.type_name != "Student":
                raise NotCompiled
            self.audited.append(node)
            out += pair(None)
        child = related.child if related is not None else None
        if child is not None and child.noted and child.type_name != "Student":  # students note their own
            if node.type_name != "Student" or child.type_name != "Response":
                raise NotCompiled
            self.audited.append(child)
            out += pair(f"{joined}.items IS NOT NULL")
        return out

    def items(self, member: Member, parent: str, name: str) -> str:
        """A list relationship of the parent row, as the LATERAL subquery ``name``:
        its JSON array (null when empty), then its audit columns c0, c1, ..."""
        if member.child is None or member.relation is None:
            raise NotCompiled
        a = self.alias()
        source = self.rows(member, a, parent)
        inner, join, related, joined = self.obj(member.child, a)
        if self.audit_columns.get(joined):
            raise NotCompiled  # subjects two levels down would have to travel up twice
        audit = self.subjects(member.child, a, related, joined, many=True)
        self.audit_columns[name] = len(audit)
        order = ORDER[member.relation].format(a=a)
        columns = [f"json_agg({inner} ORDER BY {order}) AS items", *[f"{c} AS c{i}" for i, c in enumerate(audit)]]
        return f"SELECT {', '.join(columns)} FROM {_joined(source, join)}"


def _joined(source: tuple[str, str], join: str) -> str:
    """FROM (with the LATERAL join of a relationship, if any) and WHERE."""
    tables, where = source
    return f"{tables}{join} WHERE {where}"


def statement(plan: Plan, scope: RowScope, variables: VariableValues | None) -> Statement:
    """The request's one statement; raises NotCompiled when the request must take the resolver path."""
    b = _Builder(scope, variables)
    root = plan.root
    if root.child is None:
        raise NotCompiled
    a = b.alias()
    source = b.rows(root, a, None)
    inner, join, related, joined = b.obj(root.child, a)
    audit = b.subjects(root.child, a, related, joined, many=False)
    # A class's student list carries its audit columns up to the root's row.
    audit += [f"{joined}.c{i}" for i in range(b.audit_columns.get(joined, 0))]
    root_columns = ", ".join([f"{inner} AS data", *[f"{c} AS c{i}" for i, c in enumerate(audit)]])
    parts: list[str] = []
    for member in plan.members:
        parts += [f"'{member.key}'", f"'{member.typename}'::text" if member.typename is not None else "r.data"]
    # As text: the pool's connections decode json with the standard library; orjson is quicker.
    columns = [
        "json_build_object(" + ", ".join(parts) + ")::text",
        "r.data IS NOT NULL",
        *[f"r.c{i}" for i in range(len(audit))],
    ]
    sql = (
        f"SELECT {', '.join(columns)} FROM (SELECT 1) one "
        f"LEFT JOIN LATERAL (SELECT {root_columns} FROM {_joined(source, join)} LIMIT 1) r ON true"
    )
    return Statement(sql, b.p.values, b.audited)


class CompiledReads:
    """Runs a plan for one request: decisions first, then the statement, then the audit notes."""

    def authorize(self, plan: Plan, ctx: Any) -> bool:
        """Whether every classified field of the plan is allowed for this request
        (one district: a district user's own, which the row scope confines it to)."""
        district = ctx.principal.district_id
        if district is None:
            return False
        key = str(district)
        lookup = ctx.decisions.lookup
        return all(lookup(key, category).allowed is True for category in plan.categories)

    def note(self, ctx: Any, statement: Statement, row: Any) -> None:
        """Note every classified field of each level for each subject the statement read there."""
        audit = ctx.audit
        keys: dict[Any, str] = {}
        for index, node in enumerate(statement.audited):
            districts = row[2 + 2 * index] or ()
            subjects = row[3 + 2 * index] or ()
            fields, categories = node.noted_sets
            for district, subject in zip(districts, subjects, strict=True):
                key = keys.get(district)
                if key is None:
                    key = keys[district] = str(district)
                audit.note_fields(key, subject, fields, categories, True)

    async def run(self, plan: Plan, ctx: Any, variables: VariableValues | None) -> orjson.Fragment | None:
        """The response's ``data`` (JSON, passed through as PostgreSQL wrote it), or
        None for the resolver path. Nothing is noted unless data is returned."""
        if not self.authorize(plan, ctx):
            return None
        try:
            built = statement(plan, ctx.reads.scope, variables)
        except NotCompiled:
            return None
        row = await ctx.db.fetchrow(built.sql, *built.params)
        if row is None or not row[1]:
            return None  # nothing found: the resolver path says so, with its error
        self.note(ctx, built, row)
        return orjson.Fragment(row[0])
