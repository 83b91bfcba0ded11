"""Compiled reads: a query document as one SQL statement that returns its JSON.

The resolver path reads a class roster field by field: 30 students with 20
responses each is some two thousand resolver calls, and most of a request's
CPU. For the documents this module understands, a plan is made once per
document: each field becomes a column expression, each relationship a
correlated LATERAL subquery, and a request runs one statement whose result is
the response's ``data``, built by PostgreSQL as JSON (the approach of
PostGraphile and Hasura).

What it understands:

* roots: ``district(id:)``, ``school(id:)``, ``class(id:)``, ``student(id:)``, ``assignment(id:)``,
  ``assessments(subject:)``, ``students(schoolId:, classId:, search:, first:,
  after:)`` (its ``nodes``, ``totalCount`` and ``pageInfo``: the keyset page of
  ``resolvers.reads.students_page``, cursors as ``encode_cursor`` writes them,
  a search's names noted as ``schema.types.note_search`` notes them),
  ``auditLog(filter:, first:, after:)`` (read alone: the district's logical
  entries of ``resolvers.audit_log.logical_statement``, which expands the
  stored records as ``expand`` does, its cursors as ``schema.audit.encode_seq``
  writes them, and the log's own entry noted as ``schema.gate.gate`` notes it;
  the same for ``accessLog(first:, after:)`` of the ``student(id:)`` root,
  noted with the student's other relationships)
  ``dataRequests(status:)`` and ``supportGrants`` (each root's own entry noted
  once its rows are read, as ``schema.rights`` and ``schema.governance_ops``
  note it; a grant's ``grantedBy`` as ``reads.staff`` finds it) and ``me``,
  any number side by side (each its own LATERAL subquery of the one
  statement), with ``policyVersions`` (answered from the policy in memory) and
  ``__typename`` beside them; the Viewer's ``id``, ``role``, ``purpose``, its
  own row as ``staff``, ``student`` or ``guardian``, its ``classes`` and its
  ``district`` (with the district's ``schools``, their ``classes``, and for
  its administrators its ``settings``);
* the plain fields of Class, School, District, Student, Staff, Guardian,
  Response, Assignment, Assessment and Item, read from their one declaration
  (``schema.declare.column``, ``declared_sql``), those of StudentProgress,
  SkillMastery and the other types that are not rows of their own from the
  SQL declared on the field (``schema.declare.reads``), and ``__typename``;
* relationships (declared on their fields, ``schema.declare.relationship``;
  ``_Builder.rows`` finds each one's rows), any number side by side and nested to any
  depth: a class's ``school``, ``teachers``, ``students`` and
  ``assignments``; a student's ``school``, ``classes``, ``progress`` (with
  its ``mastery``: the loader's SQL, ``resolvers.reads.PROGRESS``, a read
  of the row migration 0018 keeps) and
  ``responses(first:, assignmentId:)``, ``activity(first:, since:)``,
  ``deviceSessions(first:)`` and ``guardians`` (with the link's
  ``relationship``); a response's ``item`` and ``assignment``; an
  assignment's ``class``, ``assessment`` and ``createdBy``; an assessment's
  ``items``; a school's ``classes``, ``district`` and ``students(first:,
  after:)`` (the students root's page, of the school). A relationship may be
  read again anywhere: under aliases, under another object, a type inside
  itself (the resolver path's loaders read a key asked again in its level's
  batch, resolvers/loader.py); asked under one key in several places, by two
  fragments say, it is one relationship whose selection is theirs in turn, as
  graphql-core merges them. So the order in which the resolver path notes its
  audit is known in advance: root after root (the resolver path completes a
  query's roots one after another, ``server.graphql_http.SerialRoots``), and
  within a root level by level;
* fragments (named and inline) on the type they are spread in or on an
  interface it implements (``... on Node``);
* ``@include`` and ``@skip`` on fields and fragments, with literals or
  variables: a plan is made for the values the request gives the variables
  they read (``condition_variables``), each set of values planned once;
* aliases, and a plain field asked twice under one key (answered once, where
  first asked, as graphql-core merges it).

Anything else in a document (another root or field, another directive) leaves
the document to the resolver path.

The policy is enforced exactly as on the resolver path, from the same parts:

* decisions: before the statement is built, each classified category of the
  plan is looked up in the request's decision table. A denied field is null in
  the statement (a denied relationship reads nothing below it), and the
  response carries one FORBIDDEN error per occurrence, built with the
  permission class's own ``refusal`` at the paths the statement's output
  gives;
* row scope: the joins carry the same ``RowScope`` predicates, and the same
  ordering, as the loaders' statements (resolvers/reads.py);
* audit: the statement also returns, for every level whose rows carry
  classified fields (students, staff, a student's responses and progress), whose rows it
  read and where. Every classified field is noted for each of them, allowed
  or denied, level by level in the order the resolver path reaches them (each
  relationship one await further than its parent: breadth first), so the
  collector groups the same entries, with their fields in the same order.

A request that would end in another error (an argument out of range, an id
that finds nothing) takes the resolver path: it has the messages. Values are
formatted by PostgreSQL as the resolver path's scalars serialize them (ids as
text, timestamps in Python's ISO form); ``tests/test_compiled.py`` and
``tests/test_compiled_oracle.py`` compare the two paths' bodies, errors and
audit entries.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    Visitor,
    get_named_type,
    located_error,
    print_ast,
    visit,
)
from graphql.execution.values import VariableValues, get_argument_values, get_directive_values

from permissions.audit import SubjectId
from permissions.decide import Decision, decide_operation
from permissions.enums import DataCategory, Role
from permissions.errors import BadUserInput
from resolvers.audit_log import AuditFilters, logical_statement
from resolvers.db import Params
from resolvers.principal import CONFIRMING, confirm
from resolvers.reads import ACTIVE, PROGRESS, decode_cursor, students_matching
from resolvers.scope import STAFF_ROLES, RowScope
from schema.audit import as_utc, decode_seq
from schema.base import Context, check_first
from schema.classified import category_of, refusal
from schema.declare import Relation, declared_column, declared_expression, declared_relation, timestamp
from schema.types import note_search

NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
# A PostgreSQL function takes at most 100 arguments: json_build_object 50 keys.
MAX_ARGUMENTS = 100

# The types whose classified fields are about a subject the statement can name:
# a student (its own row), staff (no subject), a student's responses and
# progress (the student whose field holds them), a progress's mastery.
OWNERS = {"Student", "Staff", "Guardian", "DataRequest"}
# The column of an owner's row that names the student its entries are about (none: no one).
SUBJECT = {"Student": "id", "DataRequest": "student_id"}
SEARCH = ""  # Plan.marks: a search's names
# Roots that are operations of the policy with an entry of their own once their rows
# are read (schema.rights.data_requests, schema.governance_ops.support_grants): the
# operation, and whether it is the district administrators' only.
ROOT_ENTRIES = {"data_requests": ("dataRequests", False), "support_grants": ("supportGrants", True)}
ABOUT_PARENT = {
    "Guardian": "Student",  # a student's guardians; a guardian read as the caller is its own owner
    "Response": "Student",
    "ActivityEvent": "Student",
    "DeviceSession": "Student",
    "StudentProgress": "Student",
    "SkillMastery": "StudentProgress",
}


# Viewer.staff, .student and .guardian: the caller's own row, for these roles only.
VIEWER_ROLES = {
    "viewer_staff": (Role.TEACHER, Role.SCHOOL_ADMIN, Role.DISTRICT_ADMIN),
    "viewer_student": (Role.STUDENT,),
    "viewer_guardian": (Role.GUARDIAN,),
}


# Relationships one key away from their parent row: the table, its column, the
# parent's column it equals, and whether the rows are confined to the request's
# visible districts (the loaders' own predicates; content has no district).
KEYED = {
    "school": ("schools", "id", "school_id", True),
    "class_assignments": ("assignments", "class_id", "id", True),
    "assignment": ("assignments", "id", "assignment_id", True),
    "assignment_class": ("classes", "id", "class_id", True),
    "item": ("items", "id", "item_id", False),
    "assessment": ("assessments", "id", "assessment_id", False),
    "assessment_items": ("items", "assessment_id", "id", False),
    "district_schools": ("schools", "district_id", "id", True),
    "school_classes": ("classes", "school_id", "id", True),
}
# The page cursors as the resolvers write them: URL-safe base64, unpadded, of "id:"
# and the last student's 16 bytes (resolvers.reads.encode_cursor), or of "seq:" and
# the last entry's seq (schema.audit.encode_seq).
_B64URL = "rtrim(translate(encode({bytes}, 'base64'), '+/', '-_'), '=')"
STUDENT_CURSOR = _B64URL.format(bytes="'\\x69643a'::bytea || uuid_send({c})")
SEQ_CURSOR = _B64URL.format(bytes="convert_to('seq:' || {c}::text, 'UTF8')")
# Relationships that are operations of the policy (schema.gate.gate with Needs.RULE_AUDITED):
# the rule must have the operation, and its allowed read is an entry with no category.
GATED = {"Student.accessLog": "accessLog"}
# Roots answered from memory, not read (a parameter of the statement): the policy's versions.
STATIC_ROOTS = {"Query.policyVersions"}


class NotCompiled(Exception):
    """This document, or this request, takes the resolver path."""


@dataclass(frozen=True)
class Member:
    """One response key of an object: a column, a relationship or ``__typename``."""

    key: str
    name: str  # "Type.field"
    category: DataCategory | None
    sql: str | None = None  # a column's expression over "{a}"
    relation: Relation | None = None
    child: Node | None = None
    field_def: GraphQLField | None = None
    field_node: FieldNode | None = None
    # Every node the field was asked at under its key (its errors' locations).
    field_nodes: tuple[FieldNode, ...] = ()
    typename: str | None = None
    static: bool = False  # a root answered from memory (STATIC_ROOTS)
    # An operation of the policy whose allowed read is an entry of its own, with no
    # category (schema.gate.gate, Needs.RULE_AUDITED): Student.accessLog.
    gated: bool = False


@dataclass(frozen=True)
class Node:
    type_name: str
    members: tuple[Member, ...]

    @functools.cached_property
    def plain_noted(self) -> tuple[Member, ...]:
        """Classified fields noted as the object completes (its plain fields)."""
        return tuple(m for m in self.members if m.category is not None and m.child is None)

    @functools.cached_property
    def related_noted(self) -> tuple[Member, ...]:
        """Classified and gated relationships: noted when their resolvers start, after the object completes."""
        return tuple(m for m in self.members if (m.category is not None or m.gated) and m.child is not None)


@dataclass(frozen=True)
class Slot:
    """Where the statement reports the rows of one owner node: the owner's
    path from the root (response keys, and whether each is a list), and, for
    the rows of a list about the owner (its responses), that list's member."""

    path: tuple[tuple[str, bool], ...]
    owner: Node
    about: Member | None = None


@dataclass(frozen=True)
class Level:
    """Classified fields noted together for each row of a slot, in the resolver path's order."""

    slot: int
    members: tuple[Member, ...]
    # The relationship the members sit under, when the level's rows are those
    # of a list about the owner (its responses); None for the owner's own rows.
    under: Member | None = None
    # Members noted right after the one named, when the row's count is not 0:
    # a progress's mastery levels, completed with the progress.
    inline: tuple[str, tuple[Member, ...]] | None = None

    def noted(self, row: list[Any]) -> tuple[Member, ...]:
        if self.inline is None or len(row) < 3 or not row[2]:
            return self.members
        return self.widened

    @functools.cached_property
    def widened(self) -> tuple[Member, ...]:
        """The members with the inline ones after the one named."""
        if self.inline is None:
            return self.members
        after, members = self.inline
        out: list[Member] = []
        for m in self.members:
            out.append(m)
            if m.key == after:
                out.extend(members)
        return tuple(out)


# A level's fields as noted per decision (decision, fields, categories), and its denied members.
Shape = tuple[list[tuple[bool, dict[str, None], dict[str, None]]], list[Member]]


@dataclass(frozen=True)
class Plan:
    roots: tuple[Member, ...]  # the root fields that read, in the document's order
    members: tuple[Member, ...]  # the response's keys: the roots, policyVersions, any __typename
    categories: frozenset[DataCategory]
    slots: tuple[Slot, ...]
    levels: tuple[Level, ...]  # in the order the resolver path notes them
    # The operations of the policy the document runs (auditLog, accessLog, dataRequests, supportGrants).
    operations: frozenset[str] = frozenset()
    # What a root notes before its own levels, and where among the levels, in the roots'
    # order: its own entry once its rows are read (its field, about no one), or (SEARCH)
    # a search's names.
    marks: tuple[tuple[int, str], ...] = ()
    # ``shape``'s answers, kept with the plan (which is made once per document).
    _shapes: dict[tuple[int, int, frozenset[DataCategory]], Shape] = field(
        default_factory=dict, compare=False, repr=False
    )

    def shape(
        self,
        level: int,
        members: tuple[Member, ...],
        decisions: dict[DataCategory, Decision],
        denied: frozenset[DataCategory],
    ) -> Shape:
        """``_shape`` of a level's members (of a width: a progress's mastery levels
        noted or not) under decisions that deny ``denied``: the same for every
        request with the same denied categories."""
        key = (level, len(members), denied)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = _shape(members, decisions)
        return shape


CONDITIONS = frozenset({"include", "skip"})


def condition_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables ``@include`` and ``@skip`` read anywhere in the document, in order, once each.
    A plan holds for one set of their values (``Planner.plan``)."""
    names: dict[str, None] = {}

    class Conditions(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            if node.name.value in CONDITIONS:
                for argument in node.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        names[argument.value.name.value] = None

    visit(document, Conditions())
    return tuple(names)


class Planner:
    """Makes a document's plan; the caller keeps it with the parsed document
    (one per set of values of its ``condition_variables``)."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema

    def plan(
        self, document: DocumentNode, operation: OperationDefinitionNode, variables: VariableValues | None = None
    ) -> Plan | None:
        """The operation's plan, with ``@include`` and ``@skip`` decided by ``variables``
        (the request's coerced values; only those of ``condition_variables`` are read)."""
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        try:
            return _Compilation(self.schema, fragments, variables).compile(operation)
        except NotCompiled:
            return None


class _Compilation:
    """One document's planning: its fragments, the relationships already used, the categories read."""

    def __init__(
        self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], variables: VariableValues | None
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.categories: set[DataCategory] = set()
        self.used: set[str] = set()  # the relationships read (for the operations they gate)
        # A field asked under one key more than once: every node it was asked at (``merged``).
        self.located: dict[int, tuple[FieldNode, ...]] = {}

    def included(self, selection: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> bool:
        """Whether ``@include`` / ``@skip`` keep the selection, as graphql-core decides it."""
        if not selection.directives:
            return True
        if any(d.name.value not in CONDITIONS for d in selection.directives):
            raise NotCompiled
        try:
            skip = get_directive_values(GraphQLSkipDirective, selection, self.variables)
            include = get_directive_values(GraphQLIncludeDirective, selection, self.variables)
        except Exception:
            raise NotCompiled from None  # a condition graphql-core refuses: its error, on the resolver path
        return not (skip is not None and skip["if"] is True) and not (include is not None and include["if"] is False)

    def compile(self, operation: OperationDefinitionNode) -> Plan:
        if operation.operation is not OperationType.QUERY or operation.directives:
            raise NotCompiled
        query_type = self.schema.query_type
        if query_type is None:
            raise NotCompiled
        members = tuple(self.member(query_type, f) for f in self.fields(query_type, operation.selection_set))
        roots = tuple(m for m in members if m.typename is None and not m.static)
        if not roots or any(m.child is None or m.relation is None for m in roots):
            raise NotCompiled
        # The resolver path completes one root after another (server.graphql_http.SerialRoots):
        # each root's levels, breadth first, after the previous root's.
        slots: list[Slot] = []
        levels: list[Level] = []
        marks: list[tuple[int, str]] = []
        operations: set[str] = set()
        for root in roots:
            if root.relation is not None and root.relation.name == "audit_log":
                if len(roots) > 1:
                    raise NotCompiled  # the log's own entry is noted by its root: read alone
                operations.add("auditLog")
            entry = ROOT_ENTRIES.get(root.relation.name) if root.relation is not None else None
            if entry is not None:
                operations.add(entry[0])
                marks.append((len(levels), root.name))
            if root.relation is not None and root.relation.name == "students":
                # A search by name needs DIRECTORY (schema.types.directory_decision), selected or not.
                self.categories.add(DataCategory.DIRECTORY)
                marks.append((len(levels), SEARCH))
            _audit_levels(root, slots, levels)
        operations |= {GATED[name] for name in self.used if name in GATED}
        return Plan(
            roots,
            members,
            frozenset(self.categories),
            tuple(slots),
            tuple(levels),
            frozenset(operations),
            tuple(marks),
        )

    def fields(self, parent: GraphQLObjectType, selection_set: SelectionSetNode) -> list[FieldNode]:
        """The selection's fields, fragments on the parent type flattened; one per response key."""
        out: list[FieldNode] = []
        for selection in selection_set.selections:
            if not isinstance(selection, (FieldNode, InlineFragmentNode, FragmentSpreadNode)):
                raise NotCompiled
            if not self.included(selection):
                continue
            if isinstance(selection, FieldNode):
                out.append(selection)
                continue
            if isinstance(selection, InlineFragmentNode):
                condition, inner = selection.type_condition, selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is None or getattr(selection, "arguments", None) or fragment.directives:
                    raise NotCompiled
                condition, inner = fragment.type_condition, fragment.selection_set
            else:
                raise NotCompiled
            # On the parent's own type, or on an interface it implements (``... on Node``):
            # the fragment applies to every object here. Any other condition: the resolver path.
            if condition is not None and condition.name.value not in _applies_to(parent):
                raise NotCompiled
            out.extend(self.fields(parent, inner))
        keyed: dict[str, list[FieldNode]] = {}
        for f in out:
            keyed.setdefault((f.alias or f.name).value, []).append(f)
        return [nodes[0] if len(nodes) == 1 else self.merged(nodes) for nodes in keyed.values()]

    def merged(self, nodes: list[FieldNode]) -> FieldNode:
        """The fields asked under one key, as graphql-core executes them: once, at
        the first's place. A leaf asked twice is that leaf; a relationship asked
        twice (by two fragments, say) reads once, its selection the selections of
        each in turn (graphql-core's collect_subfields order). Either way an error
        of the field is located at every one of them (``located``)."""
        first = nodes[0]
        if any(n.name.value != first.name.value for n in nodes):
            raise NotCompiled  # validation merges only the same field
        if all(_leaf(n) for n in nodes):
            selection_set = None
        elif (
            all(n.selection_set is not None for n in nodes)
            and len({tuple(print_ast(a) for a in n.arguments or ()) for n in nodes}) == 1
        ):
            selections = tuple(s for n in nodes if n.selection_set is not None for s in n.selection_set.selections)
            selection_set = SelectionSetNode(selections=selections)
        else:
            raise NotCompiled
        # A node of its own (a fragment's nodes are shared by every place it is spread).
        kept = FieldNode(
            alias=first.alias,
            name=first.name,
            arguments=first.arguments,
            directives=(),  # each one's @include / @skip decided already (``fields``)
            selection_set=selection_set,
            loc=first.loc,
        )
        self.located[id(kept)] = tuple(nodes)
        return kept

    def member(self, parent: GraphQLObjectType, node: FieldNode) -> Member:
        field_name = node.name.value
        key = (node.alias or node.name).value
        if not NAME.fullmatch(key):
            raise NotCompiled
        if field_name == "__typename":
            if node.arguments or node.selection_set is not None:
                raise NotCompiled
            return Member(key, "", None, typename=parent.name)
        field_def = parent.fields.get(field_name)
        if field_def is None:
            raise NotCompiled
        category = category_of(field_def.extensions.get("strawberry-definition"))
        if category is not None:
            self.categories.add(category)
        name = f"{parent.name}.{field_name}"
        if name in STATIC_ROOTS:
            if node.arguments or node.selection_set is not None:
                raise NotCompiled
            return Member(key, name, category, static=True)
        column = declared_sql(field_def)
        if column is not None:
            if node.selection_set is not None or node.arguments:
                raise NotCompiled
            return Member(key, name, category, sql=column, field_node=node, field_nodes=self.nodes_of(node))
        relation = declared_relation(field_def.extensions.get("strawberry-definition"))
        child_type = get_named_type(field_def.type)
        if relation is None or node.selection_set is None or not isinstance(child_type, GraphQLObjectType):
            raise NotCompiled
        if any(a.name.value not in relation.arguments for a in node.arguments or ()):
            raise NotCompiled
        self.used.add(name)
        selected = self.fields(child_type, node.selection_set)
        child = Node(child_type.name, tuple(self.member(child_type, f) for f in selected))
        classified = any(m.category is not None for m in child.members)
        if classified and child.type_name not in OWNERS and ABOUT_PARENT.get(child.type_name) != parent.name:
            raise NotCompiled  # classified fields about a subject this plan cannot name
        gated = name in GATED
        return Member(
            key,
            name,
            category,
            relation=relation,
            child=child,
            field_def=field_def,
            field_node=node,
            field_nodes=self.nodes_of(node),
            gated=gated,
        )

    def nodes_of(self, node: FieldNode) -> tuple[FieldNode, ...]:
        """Where the field was asked: at every node merged into ``node``, or at ``node``."""
        return self.located.get(id(node), (node,))


def declared_sql(field_def: GraphQLField) -> str | None:
    """The SQL of a field declared as a column (``schema.declare.column``), over
    the row's alias ``{a}``, as the resolver path would serialize it: ids as
    text, timestamps as Strawberry writes them, lists as JSON arrays."""
    definition = field_def.extensions.get("strawberry-definition")
    expression = declared_expression(definition)
    if expression is not None:
        return expression.sql
    found = declared_column(definition)
    if found is None:
        return None
    output = field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) else field_def.type
    if isinstance(output, GraphQLList):
        return f"to_json({{a}}.{found.name})"
    if getattr(output, "name", None) == "ID":
        return f"{{a}}.{found.name}::text"
    if getattr(output, "name", None) == "DateTime":
        return timestamp(found.name)
    return f"{{a}}.{found.name}"


def _applies_to(parent: GraphQLObjectType) -> set[str]:
    """The type conditions a fragment may name to apply to every object of ``parent``."""
    return {parent.name, *(i.name for i in parent.interfaces)}


def _page_size(args: dict[str, Any], default: int) -> int:
    """A ``first`` argument as the resolvers read it (``check_first``: null is the field's
    default); one they refuse is NotCompiled (their error, on the resolver path)."""
    try:
        return check_first(args.get("first"), default=default)
    except BadUserInput:
        raise NotCompiled from None


def _enum_value(value: Any) -> str | None:
    """An enum argument as the resolvers read it: its value (graphql-core gives the Python enum)."""
    return None if value is None else str(getattr(value, "value", value))


def _leaf(node: FieldNode) -> bool:
    """A field without arguments or a selection: asked twice under one key, it is answered once."""
    return not node.arguments and node.selection_set is None


def _audit_levels(root: Member, slots: list[Slot], levels: list[Level]) -> None:
    """The slots the statement reports for one root, and the levels noted over
    them, breadth first (added to ``slots`` and ``levels``): the resolver path
    completes each relationship one await after its parent, level by level, and
    within a level in the document's order."""
    many = root.relation is not None and root.relation.many
    queue: list[tuple[Member, tuple[tuple[str, bool], ...], int | None]] = [(root, ((root.key, many),), None)]
    while queue:
        member, path, parent_slot = queue.pop(0)
        node = member.child
        if node is None:
            continue
        own: int | None = None
        about_parent = ABOUT_PARENT.get(node.type_name) == member.name.partition(".")[0]
        if node.type_name in OWNERS and not about_parent and (node.plain_noted or node.related_noted):
            own = len(slots)
            slots.append(Slot(path, node))
            if node.plain_noted:
                levels.append(Level(own, node.plain_noted))
            if node.related_noted:
                levels.append(Level(own, node.related_noted))
        elif about_parent and node.type_name != "SkillMastery":
            noted = tuple(m for m in node.members if m.category is not None)
            if noted:
                if parent_slot is None:
                    raise NotCompiled
                owner = slots[parent_slot]
                about = len(slots)
                slots.append(Slot(owner.path, owner.owner, member))
                mastery = next((m for m in noted if m.relation is not None and m.relation.name == "mastery"), None)
                inline = None
                if mastery is not None and mastery.child is not None:
                    inline = (mastery.key, tuple(m for m in mastery.child.members if m.category is not None))
                levels.append(Level(about, noted, member if member.relation and member.relation.many else None, inline))
        for m in node.members:
            if m.relation is not None and m.relation.name == "mastery":
                continue  # completed with its progress, noted inline
            if m.child is not None and m.relation is not None:
                step = (m.key, m.relation.many)
                queue.append((m, (*path, step), own))


# ------------------------------------------------------------------ statement


@dataclass
class Statement:
    sql: str
    params: list[Any]
    # The result's column 0 is the data, 1 whether the root was found, 2 the
    # slots' rows (a JSON array, one value per slot of the plan, null for a
    # slot under a denied relationship; then, for a search, the page's
    # students and the total: see CompiledReads.note).
    slots: int
    search: bool = False
    # Query.auditLog's own entry (Plan.operations has auditLog): the student its filter names, or None.
    audit_subject: uuid.UUID | None = None


@dataclass(frozen=True)
class _AuditPage:
    """Query.auditLog's arguments: the district, the filters, where the page
    starts and its size; ``sql`` its logical entries, up to a limit."""

    district: uuid.UUID
    filters: AuditFilters
    before: int | None
    size: int
    p: Params

    def sql(self, limit: int) -> str:
        return logical_statement(self.district, self.filters, self.before, limit, self.p)

    def page_row(self, a: str) -> str:
        """The page's one row, as alias ``a``: whether an entry follows it, and its last entry's seq."""
        size = self.p(self.size)
        return (
            f"(SELECT count(*) > {size} AS has_next, "
            f"(array_agg(q.lseq ORDER BY q.lseq DESC))[LEAST(count(*), {size})] AS last_seq "
            f"FROM audit_page q) {a}"
        )


@dataclass(frozen=True)
class _Page:
    """Query.students's arguments as SQL over ``users u``: the scoped students
    that match (``matching``), those of them after the cursor (``after``), its
    size, and whether the caller's students are few (``RowScope.few_students``)."""

    matching: str
    after: str
    first: str
    search: bool
    few: bool

    def row(self, a: str) -> str:
        """The connection's row: the total, the page's ids (its nodes read them by
        id), its last id, whether there is a next, and (a search) the page's
        students as the audit notes them."""
        first = self.first
        if self.few:
            # A caller's own students, read once: counted, and the page's ids and one
            # more (whether there is a next) taken from them in order.
            found = (
                "(SELECT json_agg(json_build_array(z.d, z.i) ORDER BY z.o) "
                f"FROM unnest(m.dids, m.ids[1:{first}]) WITH ORDINALITY z(d, i, o))"
                if self.search
                else "NULL::json"
            )
            return (
                f"(SELECT m.total_count, m.ids[least(cardinality(m.ids), {first})] AS last_id, {found} AS found, "
                f"m.ids[1:{first}] AS ids, coalesce(cardinality(m.ids), 0) > {first} AS has_next "
                "FROM (SELECT count(*) AS total_count, "
                f"(array_agg(u.id ORDER BY u.id) FILTER (WHERE {self.after}))[1:{first} + 1] AS ids, "
                f"(array_agg(u.district_id ORDER BY u.id) FILTER (WHERE {self.after}))[1:{first}] AS dids "
                f"FROM users u WHERE {self.matching}) m) {a}"
            )
        # Many (a district's, a school's): counted, and the page read by its own ordered scan.
        in_page = f"q.n <= {first}"
        found = (
            f"json_agg(json_build_array(q.district_id, q.id) ORDER BY q.id) FILTER (WHERE {in_page})"
            if self.search
            else "NULL::json"
        )
        return (
            f"(SELECT c.total_count, l.ids[least(cardinality(l.ids), {first})] AS last_id, l.found, "
            f"l.ids[1:{first}] AS ids, coalesce(cardinality(l.ids), 0) > {first} AS has_next "
            f"FROM (SELECT count(*) AS total_count FROM users u WHERE {self.matching}) c "
            f"CROSS JOIN (SELECT array_agg(q.id ORDER BY q.id) AS ids, {found} AS found "
            f"FROM (SELECT u.id, u.district_id, row_number() OVER (ORDER BY u.id) AS n "
            f"FROM users u WHERE {self.matching} AND {self.after} ORDER BY u.id LIMIT {first} + 1) q) l) {a}"
        )


class _Builder:
    """Writes the statement: each relationship a correlated LATERAL subquery of
    its parent row (index lookups, one pass); a list aggregated into a JSON array.

    Each slot's rows travel up beside the data: at the owner's row a JSON array
    (district, subject, and for a list about it the list's length), aggregated
    in the list's order at each level above, so that the root's row carries,
    per slot, nested arrays whose positions are the response's."""

    def __init__(
        self, plan: Plan, scope: RowScope, variables: VariableValues | None, denied: set[DataCategory], purpose: str
    ):
        self.scope = scope
        self.purpose = purpose
        self.variables = variables
        self.denied = denied
        self.p = Params()
        self.pages: dict[str, _Page] = {}  # a students connection's row alias -> its page
        self.audit: _AuditPage | None = None
        self.root_student: tuple[str, uuid.UUID] | None = None  # the student(id:) root's alias and id
        # The aliases of student rows read under the caller's student scope (RowScope.students)
        # in this statement: a relationship of theirs that asks it of them again need not.
        self.student_scoped: set[str] = set()
        self.aliases = 0
        self.slot_of: dict[int, int] = {}  # id(node) -> its own slot
        self.about_of: dict[int, int] = {}  # id(member) -> the slot of the rows about the owner under it
        for index, slot in enumerate(plan.slots):
            if slot.about is None:
                self.slot_of[id(slot.owner)] = index
            else:
                self.about_of[id(slot.about)] = index

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

    def visible(self) -> str:
        return f"ANY({self.p([d for d in self.scope.district_ids if isinstance(d, uuid.UUID)])}::uuid[])"

    def rows(self, member: Member, a: str, parent: str | None) -> tuple[str, str]:
        """FROM and WHERE of a relationship's rows, as alias ``a``, for the parent row ``parent``
        (the root's when None): the loader's statement for one parent."""
        relation = member.relation
        if relation is None:
            raise NotCompiled
        p, scope, name = self.p, self.scope, relation.name
        args = self.arguments(member)
        if parent is None and name == "me":
            pr = scope.principal
            caller = f"{p(str(pr.user_id))}::text AS id, {p(pr.role.value)}::text AS role"
            return f"(SELECT {caller}, {p(self.purpose)}::text AS purpose) {a}", "true"
        if name in VIEWER_ROLES:
            # The caller's own row, whatever the purpose (reads.self_row), for the roles the field is for.
            pr = scope.principal
            rows = "(SELECT u.*, NULL::text AS relationship FROM users u)" if name == "viewer_guardian" else "users"
            if pr.district_id is None or pr.role not in VIEWER_ROLES[name]:
                return f"{rows} {a}", "false"
            return f"{rows} {a}", f"{a}.district_id = {p(pr.district_id)} AND {a}.id = {p(pr.user_id)}"
        if name == "viewer_district":
            # reads.district of the caller's own district (Viewer.district); none for platform users.
            pr = scope.principal
            if pr.district_id is None:
                return f"districts {a}", "false"
            return f"districts {a}", f"{a}.id = {p(pr.district_id)} AND {a}.id = {self.visible()}"
        if name in ("district_settings", "district_retention"):
            if scope.principal.role is not Role.DISTRICT_ADMIN:
                raise NotCompiled  # District.settings is refused, with its error, on the resolver path
            return f"(SELECT {parent}.*) {a}", "true"
        if name == "viewer_classes":
            # reads.classes_of_viewer
            pr = scope.principal
            if pr.district_id is None or pr.role not in (Role.TEACHER, Role.STUDENT, Role.GUARDIAN):
                return f"classes {a}", "false"
            if pr.children_ids:
                t = p(scope.today)
                return f"classes {a}", (
                    f"{a}.district_id = {p(pr.district_id)} AND EXISTS (SELECT 1 FROM enrollments e "
                    f"WHERE e.district_id = {a}.district_id AND e.class_id = {a}.id "
                    f"AND e.student_id = ANY({p(list(pr.children_ids))}::uuid[]) AND {ACTIVE.format(t=t)})"
                )
            if pr.class_ids:
                return f"classes {a}", (
                    f"{a}.district_id = {p(pr.district_id)} AND {a}.id = ANY({p(list(pr.class_ids))}::uuid[])"
                )
            return f"classes {a}", "false"
        if parent is None and name == "assessments":
            # reads.assessments: the catalog, of one subject or of all (content: no district).
            subject = args.get("subject")
            if subject is None:
                return f"assessments {a}", "true"
            if not isinstance(subject, str):
                raise NotCompiled
            return f"assessments {a}", f"{a}.subject = {p(subject)}"
        if (parent is None and name == "students") or name == "school_students":
            # Query.students, or a school's (School.students: the same page, of the parent school)
            self.pages[a] = page = self.students_page(args, None if parent is None else f"{parent}.id")
            return page.row(a), "true"
        if name == "page_nodes" and parent in self.pages:
            # The page's rows, by the ids its connection read (in scope: they are of its page,
            # whose students match RowScope.students: resolvers.reads.students_matching).
            self.student_scoped.add(a)
            return f"(SELECT u.* FROM users u WHERE u.id = ANY ({parent}.ids) ORDER BY u.id) {a}", "true"
        if name == "page_info":
            cursor = STUDENT_CURSOR.format(c=f"{parent}.last_id")
            return f"(SELECT {parent}.has_next, {cursor} AS end_cursor) {a}", "true"
        if parent is None and name == "audit_log":
            self.audit = audit = self.audit_page(args)
            return audit.page_row(a), "true"
        if parent is None and name in ROOT_ENTRIES:
            pr = scope.principal
            if pr.district_id is None or (ROOT_ENTRIES[name][1] and pr.role is not Role.DISTRICT_ADMIN):
                raise NotCompiled  # refused, with its entry and error, on the resolver path
            if name == "support_grants":
                return f"support_grants {a}", f"{a}.district_id = {p(pr.district_id)}"
            status = _enum_value(args.get("status"))
            where = f"{a}.district_id = {p(pr.district_id)}"
            return f"data_requests {a}", where if status is None else f"{where} AND {a}.status = {p(status)}"
        if name in ("granted_by", "created_by"):
            # reads.staff: scoped staff, by the parent's column of the relationship's name
            return (
                f"users {a}",
                f"{a}.id = {parent}.{name} AND {a}.role = ANY({p(list(STAFF_ROLES))}::text[]) AND {scope.staff(a, p)}",
            )
        if name == "student_guardians":
            # reads.guardians_of_student: the student's guardians in scope, with the link's relationship
            return (
                "(SELECT gl.student_id AS child_id, gl.relationship, u.* FROM guardian_links gl "
                f"JOIN users u ON u.district_id = gl.district_id AND u.id = gl.guardian_id) {a}",
                f"{a}.child_id = {parent}.id AND {scope.guardians(a, p)}",
            )
        if name == "school_district":
            # reads.district: the school's district, among the request's
            return f"districts {a}", f"{a}.id = {parent}.district_id AND {a}.id = {self.visible()}"
        if name == "access_log":
            # Student.accessLog of the student(id:) root only: the student is the argument.
            if self.root_student is None or self.root_student[0] != parent or self.audit is not None:
                raise NotCompiled
            district = scope.principal.district_id
            first = _page_size(args, 50)
            if district is None:
                raise NotCompiled
            try:
                before = decode_seq(args.get("after"))
            except BadUserInput:
                raise NotCompiled from None
            self.audit = audit = _AuditPage(district, AuditFilters(subject=self.root_student[1]), before, first, p)
            return audit.page_row(a), "true"
        if name == "audit_nodes" and self.audit is not None:
            return f"(SELECT * FROM audit_page ORDER BY lseq DESC LIMIT {p(self.audit.size)}) {a}", "true"
        if name == "audit_page_info":
            cursor = SEQ_CURSOR.format(c=f"{parent}.last_seq")
            return f"(SELECT {parent}.has_next, {cursor} AS end_cursor) {a}", "true"
        if parent is None:
            try:
                wanted = uuid.UUID(str(args.get("id")))
            except ValueError:
                raise NotCompiled from None  # not found, with its message, on the resolver path
            if name == "class":
                return f"classes {a}", f"{a}.district_id = {self.visible()} AND {a}.id = {p(wanted)}"
            if name == "student":
                self.root_student = (a, wanted)
                self.student_scoped.add(a)
                return f"users {a}", f"{a}.id = {p(wanted)} AND {a}.role = 'STUDENT' AND {scope.students(a, p)}"
            if name == "assignment":
                return f"assignments {a}", f"{a}.district_id = {self.visible()} AND {a}.id = {p(wanted)}"
            if name == "district_by_id":
                return f"districts {a}", f"{a}.id = {p(wanted)} AND {a}.id = {self.visible()}"
            if name == "school_by_id":
                return f"schools {a}", f"{a}.district_id = {self.visible()} AND {a}.id = {p(wanted)}"
            raise NotCompiled
        keyed = KEYED.get(name)
        if keyed is not None:
            table, column, parent_column, in_districts = keyed
            on = f"{a}.{column} = {parent}.{parent_column}"
            return f"{table} {a}", f"{a}.district_id = {self.visible()} AND {on}" if in_districts else on
        if name == "class_students":
            t = p(scope.today)
            return (
                f"enrollments e JOIN users {a} ON {a}.district_id = e.district_id AND {a}.id = e.student_id",
                f"e.district_id = {parent}.district_id AND e.class_id = {parent}.id AND {ACTIVE.format(t=t)} "
                f"AND {a}.role = 'STUDENT' AND {scope.students_of_class(a, f'{parent}.id', p)}",
            )
        if name == "class_teachers":
            return (
                f"class_teachers ct JOIN users {a} ON {a}.district_id = ct.district_id AND {a}.id = ct.teacher_id",
                f"ct.class_id = {parent}.id AND {scope.staff_of_class(a, f'{parent}.id', p)}",
            )
        if name == "student_classes":
            # reads.classes_of_student: the enrollments' student is the parent row (a users row)
            # itself, so its scope is asked of the parent, once for all of its classes; not again
            # of a parent this statement read under that very scope.
            t = p(scope.today)
            in_scope = "" if parent in self.student_scoped else f" AND {scope.students(parent, p)}"
            return (
                f"enrollments e JOIN classes {a} ON {a}.district_id = e.district_id AND {a}.id = e.class_id",
                f"e.district_id = {parent}.district_id AND e.student_id = {parent}.id AND {ACTIVE.format(t=t)}"
                + in_scope,
            )
        if name == "student_responses":
            first = _page_size(args, 20)
            extra = ""
            assignment_id = args.get("assignmentId")
            if assignment_id is not None:
                try:
                    assignment = uuid.UUID(str(assignment_id))
                except ValueError:
                    raise NotCompiled from None
                extra = f" AND r.assignment_id = {p(assignment)}"
            return (
                f"(SELECT r.* FROM responses r "
                f"WHERE r.district_id = {parent}.district_id AND r.student_id = {parent}.id{extra} "
                f"ORDER BY r.submitted_at DESC, r.id DESC LIMIT {p(first)}) {a}",
                "true",
            )
        if name == "student_activity":
            # reads.activity: newest first, from ``since`` when given
            first = _page_size(args, 50)
            since = args.get("since")
            extra = "" if since is None else f" AND e.occurred_at >= {p(since)}"
            return (
                f"(SELECT e.* FROM activity_events e "
                f"WHERE e.district_id = {parent}.district_id AND e.student_id = {parent}.id{extra} "
                f"ORDER BY e.occurred_at DESC, e.id DESC LIMIT {p(first)}) {a}",
                "true",
            )
        if name == "student_devices":
            # reads.device_sessions: newest first
            first = _page_size(args, 20)
            return (
                f"(SELECT d.* FROM device_sessions d "
                f"WHERE d.district_id = {parent}.district_id AND d.student_id = {parent}.id "
                f"ORDER BY d.started_at DESC, d.id DESC LIMIT {p(first)}) {a}",
                "true",
            )
        if name == "progress":
            return f"({PROGRESS.format(u=parent)}) {a}", "true"
        raise NotCompiled

    def audit_page(self, args: dict[str, Any]) -> _AuditPage:
        """Query.auditLog's page as schema.audit.audit_log reads it; any argument
        the resolver would refuse is NotCompiled. The caller must be a district's
        user whose rule has the operation (CompiledReads.run checks it)."""
        district = self.scope.principal.district_id
        if district is None:
            raise NotCompiled
        first = _page_size(args, 100)
        given = args.get("filter") or {}
        try:
            before = decode_seq(args.get("after"))
            subject, actor = (
                None if given.get(k) is None else uuid.UUID(str(given[k])) for k in ("subjectStudentId", "actorId")
            )
        except (ValueError, TypeError, BadUserInput):
            raise NotCompiled from None
        since, until = given.get("from"), given.get("to")
        filters = AuditFilters(
            subject=subject,
            actor=actor,
            purpose=_enum_value(given.get("purpose")),
            decision=_enum_value(given.get("decision")),
            since=None if since is None else as_utc(since),
            until=None if until is None else as_utc(until),
        )
        return _AuditPage(district, filters, before, first, self.p)

    def students_page(self, args: dict[str, Any], school_row: str | None = None) -> _Page:
        """Query.students's page as resolvers.reads.students_page reads it (of
        the school whose id is the SQL ``school_row``, for School.students); any
        argument the resolver would refuse (a search this purpose may not make, a
        size out of range, a cursor or an id it cannot read) is NotCompiled."""
        p, scope = self.p, self.scope
        search = args.get("search")
        if search is not None:
            visible = [d for d in scope.district_ids if isinstance(d, uuid.UUID)]
            if (
                not isinstance(search, str)
                or len(search) > 100
                or DataCategory.DIRECTORY in self.denied
                or visible != [scope.principal.district_id]
            ):
                raise NotCompiled
        first = _page_size(args, 50)
        try:
            after = decode_cursor(args.get("after"))
            school = None if args.get("schoolId") is None else uuid.UUID(str(args["schoolId"]))
            klass = None if args.get("classId") is None else uuid.UUID(str(args["classId"]))
        except (ValueError, TypeError):
            raise NotCompiled from None
        matching = students_matching(scope, p, school_id=school, class_id=klass, search=search or None)
        if school_row is not None:
            matching += f" AND u.school_id = {school_row}"
        after_cursor = "true" if after is None else f"u.id > {p(after)}"
        return _Page(matching, after_cursor, p(first), bool(search), scope.few_students)

    def obj(self, node: Node, a: str) -> tuple[str, str, dict[int, str]]:
        """An object's JSON over the row alias ``a``, the LATERAL joins of its
        relationships, and its subtree's slots as expressions over this row."""
        parts: list[str] = []
        joins: list[str] = []
        slots: dict[int, str] = {}
        own = self.slot_of.get(id(node))
        if own is not None:
            subject = f", {a}.{SUBJECT[node.type_name]}" if node.type_name in SUBJECT else ""
            slots[own] = f"json_build_array({a}.district_id{subject})"
        for m in node.members:
            # Response keys are the client's text (aliases): parameters, never SQL text.
            parts.append(f"{self.p(m.key)}::text")
            if m.typename is not None:
                parts.append(f"'{m.typename}'::text")
            elif m.category is not None and m.category in self.denied:
                parts.append("NULL")
            elif m.sql is not None:
                parts.append(m.sql.format(a=a))
            elif m.child is not None and m.relation is not None and m.relation.name == "mastery":
                e = self.alias()
                inner, _, _ = self.obj(m.child, f"{e}.m")
                parts.append(
                    f"(SELECT COALESCE(json_agg({inner} ORDER BY {e}.o), '[]'::json) "
                    f"FROM jsonb_array_elements({a}.mastery) WITH ORDINALITY {e}(m, o))"
                )
            elif m.child is not None and m.relation is not None:
                joined = self.alias()
                sub, inner_slots = self.related(m, a)
                joins.append(f" LEFT JOIN LATERAL ({sub}) {joined} ON true")
                if m.relation.many:
                    parts.append(f"COALESCE({joined}.items, '[]'::json)")
                else:
                    parts.append(f"{joined}.item")
                for index in inner_slots:
                    slots[index] = f"{joined}.s{index}"
                about = self.about_of.get(id(m))
                if about is not None:
                    found, count = (
                        (f"{joined}.items", f"json_array_length({joined}.items)")
                        if m.relation.many
                        else (f"{joined}.item", f"{joined}.n" if m.relation.count else "0")
                    )
                    slots[about] = (
                        f"CASE WHEN {found} IS NOT NULL THEN json_build_array({a}.district_id, {a}.id, {count}) END"
                    )
            else:
                raise NotCompiled
        return _json("json_build_object", parts), "".join(joins), slots

    def related(self, member: Member, parent: str) -> tuple[str, list[int]]:
        """A relationship of the parent row as a subquery: its JSON (``items``, an
        array, null when empty; or ``item``), then its subtree's slots s<n>."""
        if member.child is None or member.relation is None:
            raise NotCompiled
        a = self.alias()
        tables, where = self.rows(member, a, parent)
        inner, joins, slots = self.obj(member.child, a)
        if member.relation.many:
            order = member.relation.order.format(a=a)
            columns = [f"json_agg({inner} ORDER BY {order}) AS items"]
            columns += [f"json_agg({expr} ORDER BY {order}) AS s{i}" for i, expr in slots.items()]
            return f"SELECT {', '.join(columns)} FROM {tables}{joins} WHERE {where}", list(slots)
        columns = [f"{inner} AS item", *[f"{expr} AS s{i}" for i, expr in slots.items()]]
        if member.relation.count:
            columns.append(f"{member.relation.count.format(a=a)} AS n")
        return f"SELECT {', '.join(columns)} FROM {tables}{joins} WHERE {where} LIMIT 1", list(slots)


def statement(
    plan: Plan,
    scope: RowScope,
    variables: VariableValues | None,
    denied: set[DataCategory] | None = None,
    purpose: str = "",
    policy_versions: list[str] | None = None,
) -> Statement:
    """The request's one statement; raises NotCompiled when the request must take the resolver path.
    ``policy_versions`` answers a ``policyVersions`` root beside the one that reads."""
    b = _Builder(plan, scope, variables, denied or set(), purpose)
    joins: list[str] = []
    data: dict[int, str] = {}  # id(root) -> its JSON, over its row r<n>
    found: list[str] = []
    reported: dict[int, str] = {}  # slot -> its rows, over a root's row
    search = ""
    for n, root in enumerate(plan.roots):
        if root.child is None or root.relation is None:
            raise NotCompiled
        a = b.alias()
        tables, where = b.rows(root, a, None)
        inner, below, slots = b.obj(root.child, a)
        limit = " LIMIT 1"
        if root.relation.many:
            # A list at the root: its rows aggregated, in the loader's order; always found.
            order = root.relation.order.format(a=a)
            inner = f"COALESCE(json_agg({inner} ORDER BY {order}), '[]'::json)"
            slots = {i: f"json_agg({expr} ORDER BY {order})" for i, expr in slots.items()}
            limit = ""
        columns = [f"{inner} AS data", *(f"{expr} AS s{i}" for i, expr in slots.items())]
        r = f"r{n}"
        if root.relation.name == "students" and a in b.pages and b.pages[a].search:
            columns.append(f"json_build_array({a}.found, {a}.total_count) AS search")
            search = f"{r}.search"
        joins.append(
            f" LEFT JOIN LATERAL (SELECT {', '.join(columns)} FROM {tables}{below} WHERE {where}{limit}) {r} ON true"
        )
        data[id(root)] = f"{r}.data"
        found.append(f"{r}.data IS NOT NULL")
        reported.update({i: f"{r}.s{i}" for i in slots})
    rows = [reported.get(i, "NULL") for i in range(len(plan.slots))] + ([search] if search else [])
    parts: list[str] = []
    for member in plan.members:
        if member.static:
            if policy_versions is None:
                raise NotCompiled
            value = f"{b.p(orjson.dumps(policy_versions).decode())}::json"
        else:
            value = f"'{member.typename}'::text" if member.typename is not None else data[id(member)]
        parts += [f"{b.p(member.key)}::text", value]
    # As text: the pool's connections decode json with the standard library; orjson is quicker.
    # An audit page is read once, one row past its size (is there a next page?), for its
    # nodes and its page info both.
    page = "" if b.audit is None else f"WITH audit_page AS MATERIALIZED ({b.audit.sql(b.audit.size + 1)}) "
    sql = (
        f"{page}SELECT {_json('json_build_object', parts)}::text, {' AND '.join(found)}, "
        f"{_json('json_build_array', rows)}::text, {CONFIRMING} "
        f"FROM (SELECT 1) one{''.join(joins)}"
    )
    subject = b.audit.filters.subject if b.audit is not None and "auditLog" in plan.operations else None
    return Statement(sql, b.p.values, len(plan.slots), bool(search), subject)


def _json(function: str, arguments: list[str]) -> str:
    """``function(arguments)``, json_build_object or json_build_array. Past the 100 arguments a
    function takes, one call per 100 (an object's keys with their values), their JSON texts
    spliced into one, in order: ``{"a" : 1}`` and ``{"b" : 2}`` make ``{"a" : 1, "b" : 2}``."""
    if len(arguments) <= MAX_ARGUMENTS:
        return f"{function}({', '.join(arguments)})"
    texts = [
        f"{function}({', '.join(arguments[i : i + MAX_ARGUMENTS])})::text"
        for i in range(0, len(arguments), MAX_ARGUMENTS)
    ]
    last = len(texts) - 1
    # Each text without its closing bracket but the last, without its opening one but the first.
    cut = [
        f"left({t}, -1)" if i == 0 else f"substr({t}, 2)" if i == last else f"substr(left({t}, -1), 2)"
        for i, t in enumerate(texts)
    ]
    spliced = " || ', ' || ".join(cut)
    return f"({spliced})::json"


def _rows(value: Any, path: tuple[tuple[str, bool], ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    """A slot's rows: (the owner row's response path, its reported array), in order."""
    level: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    for key, many in path:
        below: list[tuple[tuple[str | int, ...], Any]] = []
        for at, item in level:
            if item is None:
                continue
            if many:
                below += [((*at, key, index), each) for index, each in enumerate(item)]
            else:
                below.append(((*at, key), item))
        level = below
    return [(at, item) for at, item in level if item is not None]


def _reported(value: Any, path: tuple[tuple[str, bool], ...]) -> list[Any]:
    """A slot's reported arrays, in order: ``_rows`` without the response paths,
    which only a denied field's errors need."""
    level: list[Any] = [value]
    for _, many in path:
        below: list[Any] = []
        for item in level:
            if item is None:
                continue
            if many:
                below += item
            else:
                below.append(item)
        level = below
    return [item for item in level if item is not None]


@dataclass
class Compiled:
    """A compiled request's answer: its ``data`` (JSON, passed through as
    PostgreSQL wrote it) and its FORBIDDEN errors, in the resolver path's order:
    each the field's one located error (the permission class's ``refusal``,
    with the field's location), and the path of the occurrence."""

    data: orjson.Fragment | dict[str, Any]
    errors: list[tuple[GraphQLError, list[str | int]]]


def _frozen(value: Any) -> Any:
    """A variable's coerced value as part of a key: its objects and lists as tuples."""
    if isinstance(value, dict):
        return tuple(sorted((name, _frozen(inner)) for name, inner in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(inner) for inner in value)
    return value


class CompiledReads:
    """Runs a plan for one request: decisions first, then the statement, then the audit notes.

    ``statement`` is a function of its inputs alone (the plan, the row scope
    with its principal and day, the variables' values, the denied categories,
    the purpose, the policy versions): the statements last built are kept
    (``STATEMENTS``), and a request with the same inputs as one of them (a
    screen loaded again) runs it without building it again. The key holds
    every input, so a principal whose classes changed, a new day or another
    variable value builds its own."""

    STATEMENTS = 512

    def __init__(self) -> None:
        self._statements: OrderedDict[tuple[Any, ...], tuple[Plan, Statement]] = OrderedDict()

    def forget_statements(self) -> None:
        self._statements.clear()

    def statement(
        self,
        plan: Plan,
        scope: RowScope,
        variables: VariableValues | None,
        denied: set[DataCategory],
        purpose: str,
        policy_versions: list[str] | None,
    ) -> Statement:
        """``statement`` of these inputs: kept, or built now (and kept)."""
        coerced = None if variables is None else _frozen(variables.coerced)
        versions = None if policy_versions is None else tuple(policy_versions)
        # The plan by identity: the entry holds it, so its id is not another's while kept.
        key = (id(plan), scope, coerced, frozenset(denied), purpose, versions)
        try:
            kept = self._statements.get(key)
        except TypeError:  # a value that cannot be a key: built each time
            return statement(plan, scope, variables, denied, purpose, policy_versions)
        if kept is not None and kept[0] is plan:
            self._statements.move_to_end(key)
            return kept[1]
        built = statement(plan, scope, variables, denied, purpose, policy_versions)
        self._statements[key] = (plan, built)
        self._statements.move_to_end(key)
        while len(self._statements) > self.STATEMENTS:
            self._statements.popitem(last=False)
        return built

    def decisions(self, plan: Plan, ctx: Context) -> dict[DataCategory, Decision] | None:
        """The request's decision for each category of the plan (one district: a
        district user's own, which the row scope confines it to), or None."""
        district = ctx.principal.district_id
        if district is None:
            return None
        key = str(district)
        lookup = ctx.decisions.lookup
        return {category: lookup(key, category) for category in plan.categories}

    def note(
        self,
        plan: Plan,
        ctx: Context,
        reported: list[Any],
        decisions: dict[DataCategory, Decision],
        search: bool = False,
    ) -> list[tuple[GraphQLError, list[str | int]]] | None:
        """Note every classified field of each level for each row the statement
        read there; the denied ones' errors. None (nothing noted) if a row is of
        another district than the request's decisions. A search by name notes
        its page's names first, as the students root does before its fields
        complete (``schema.types.note_search``)."""
        district = str(ctx.principal.district_id)
        found: list[tuple[Level, list[Any]]] = []
        for level in plan.levels:
            rows = _reported(reported[level.slot], plan.slots[level.slot].path)
            for row in rows:
                if row[0] != district:
                    return None
            found.append((level, rows))
        page: list[tuple[str, SubjectId]] = []
        total = 0
        if search:
            matched, total = reported[len(plan.slots)]
            page = [(row[0], row[1]) for row in matched or ()]
            if any(key != district for key, _ in page):
                return None
        audit = ctx.audit
        errors: list[tuple[GraphQLError, list[str | int]]] = []
        # One error per denied field, shared by its occurrences: only the path differs.
        refused: dict[int, GraphQLError] = {}
        denied_categories = frozenset(c for c, d in decisions.items() if d.allowed is not True)
        for index, (level, rows) in enumerate(found):
            self.before_level(plan, ctx, index, page, total, search)
            if level.inline is None:
                # Every row resolves the level's members: noted together, in row order.
                noted, denied = plan.shape(index, level.members, decisions, denied_categories)
                audit.note_rows(district, [_subject(row) for row in rows], noted)
            else:
                # Each row's width (its mastery levels or none): a run of rows of one width noted together.
                denied = []
                run: list[SubjectId] = []
                run_noted: list[tuple[bool, dict[str, None], dict[str, None]]] = []
                for row in rows:
                    noted, row_denied = plan.shape(index, level.noted(row), decisions, denied_categories)
                    if noted is not run_noted and run:
                        audit.note_rows(district, run, run_noted)
                        run = []
                    run_noted = noted
                    run.append(_subject(row))
                    denied = denied or row_denied
                if run:
                    audit.note_rows(district, run, run_noted)
            if not denied:
                continue
            # The rows' paths in the response, for the denied fields' errors.
            for path, row in _rows(reported[level.slot], plan.slots[level.slot].path):
                _, denied = plan.shape(index, level.noted(row), decisions, denied_categories)
                if not denied:
                    continue
                places = [path] if level.under is None else [(*path, level.under.key, i) for i in range(row[2])]
                for m in denied:
                    if m.category is not None and id(m) not in refused:
                        error = refusal(m.category.value, ctx.purpose.value, decisions[m.category])
                        refused[id(m)] = located_error(error, list(m.field_nodes) or None)
                for place in places:
                    for m in denied:
                        errors.append((refused[id(m)], [*place, m.key]))
        # After the last level: what the last roots note, if they have no level of their own.
        self.before_level(plan, ctx, len(found), page, total, search)
        return errors

    @staticmethod
    def before_level(
        plan: Plan, ctx: Context, index: int, page: list[tuple[str, SubjectId]], total: int, search: bool
    ) -> None:
        """What the roots note before the level ``index`` (Plan.marks)."""
        for at, name in plan.marks:
            if at != index:
                continue
            if name != SEARCH:
                ctx.audit.note(str(ctx.principal.district_id), None, name, "", True)
            elif search:
                note_search(ctx, page, total)

    async def run(self, plan: Plan, ctx: Context, variables: VariableValues | None) -> Compiled | None:
        """The response's ``data`` and errors, or None for the resolver path.
        Nothing is noted unless data is returned."""
        decisions = self.decisions(plan, ctx)
        if decisions is None:
            return None
        # schema.gate.require_operation: the rule must have each operation, or the resolver path refuses it.
        conditions = ctx.conditions.get(ctx.home_district_key)
        for operation in plan.operations:
            if not decide_operation(ctx.policies, ctx.principal.role, ctx.purpose, operation, conditions).allowed:
                return None
        denied = {c for c, d in decisions.items() if d.allowed is not True}
        try:
            versions = list(ctx.policies.versions()) if any(m.static for m in plan.members) else None
            built = self.statement(plan, ctx.reads.scope, variables, denied, ctx.purpose.value, versions)
        except NotCompiled:
            return None
        row = await ctx.db.fetchrow(built.sql, *built.params)
        if ctx.confirm is not None:
            # A kept standing stands only if its generation and setting are the statement's own.
            confirm(ctx.confirm, *(row[3:5] if row is not None else (0, None)))
            ctx.confirm = None
        if row is None or not row[1]:
            return None  # nothing found: the resolver path says so, with its error
        errors = self.note(plan, ctx, orjson.loads(row[2]), decisions, built.search)
        if errors is None:
            return None
        if "auditLog" in plan.operations:
            # schema.gate.gate's entry for an allowed read of the log (Needs.RULE_AUDITED): the
            # only one (an entry has no classified field, and the log is read alone).
            ctx.audit.note(ctx.home_district_key, built.audit_subject, "Query.auditLog", "", True)
        return Compiled(orjson.Fragment(row[0]), errors)


def _subject(row: list[Any]) -> str | None:
    """A reported row's student: the id as PostgreSQL wrote it, or None (a row of no student)."""
    return row[1] if len(row) > 1 else None


def _shape(members: tuple[Member, ...], decisions: dict[DataCategory, Decision]) -> Shape:
    """A level's fields as the collector groups them (per decision, in order of
    first appearance), and its denied members."""
    out: dict[bool, tuple[dict[str, None], dict[str, None]]] = {}
    denied: list[Member] = []
    for m in members:
        if m.category is None:
            if m.gated:  # allowed (CompiledReads.run checked the operation), with no category
                out.setdefault(True, ({}, {}))[0][m.name] = None
            continue
        allowed = decisions[m.category].allowed
        fields, categories = out.setdefault(allowed, ({}, {}))
        fields[m.name] = None
        categories[m.category.value] = None
        if not allowed:
            denied.append(m)
    return [(allowed, fields, categories) for allowed, (fields, categories) in out.items()], denied
