"""The oracle (issue 13, Tests): random documents over the whole read schema, and every query the
clients ship, answer alike on the serving path and on the per-field resolvers.

Documents are generated from the schema itself: any root of ``Query``, any field of each type
reached (to a few levels), named and inline fragments (on the type itself, on ``Node`` and
without a type condition), aliases, ``__typename``, ``@include`` / ``@skip`` with variables, and
every argument with values in and out of range, ids that exist, that the caller may not reach,
that do not exist and that are malformed. Each is sent by a caller drawn from every role and
every purpose, once to the app's endpoint and once with ``compiled=None`` (the resolver path,
the oracle). The bodies, the errors (order-insensitive, by path and code), the statuses and the
audit entries each request wrote must be equal.

Reading the audit trail is the one read two requests cannot answer alike: each request's own
entries change what the next one reads. So ``auditLog`` is always bounded by a ``to`` before the
module started, and ``Student.accessLog`` (which has no such bound) is left to the shared
operations' test, which compares the entries written before the test.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    get_named_type,
    is_leaf_type,
    parse,
    validate,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.corpus import shared_queries
from resolvers.reads import encode_cursor
from server.app import UNPLANNED_ROOTS
from server.documents import root_fields
from tests.conftest import ALL_PURPOSES, justified
from tests.test_compiled import entries, resolver_path_only

EXAMPLES = int(os.environ.get("PLEDGEQL_ORACLE_EXAMPLES", "200"))
OPERATIONS = Path(__file__).with_name("operations")  # the copy of ../shared/operations
PLAN = re.compile(r'plan;desc="(compiled|resolvers)"')

USERS = {
    "teacher1@northwind.example": ["INSTRUCTION", "REPORTING", "PERSONALIZATION", "COMMUNICATION"],
    "teacher2@northwind.example": ["INSTRUCTION"],
    "principal1@northwind.example": ["REPORTING", "INSTRUCTION"],
    "admin@northwind.example": ["REPORTING", "RECORD_ACCESS", "LEGAL_COMPLIANCE", "INSTRUCTION"],
    "admin@riverside.example": ["RECORD_ACCESS", "REPORTING"],
    "student1@northwind.example": ["STUDENT_LEARNING", "PERSONALIZATION"],
    "guardian1@northwind.example": ["REPORTING", "RECORD_ACCESS"],
    "support@pledgeql.example": ["SUPPORT"],
    "analyst@pledgeql.example": ["PRODUCT_ANALYTICS", "REPORTING"],
}
BOUNDED = {("auditLog", "filter")}  # always sent, with its `to` before the module started
HOT_ROOTS = frozenset({"class", "student", "students", "me"})
# Fields no two requests can read alike (module docstring).
UNSTABLE = {("Student", "accessLog")}
# Which pool of ids an ID argument draws from, by its name (or its field's, for `id`).
ID_POOLS = {
    "districtId": "district",
    "schoolId": "school",
    "classId": "class",
    "studentId": "student",
    "subjectStudentId": "student",
    "assignmentId": "assignment",
    "assessmentId": "assessment",
    "actorId": "user",
}
INTS = [0, 1, 3, 20, 100, 501, -1]
STRINGS = {
    "search": ["a", "Zz", "", "%"],
    "subject": ["Math", "Reading", "Nope"],
    "version": ["2024-01", "1.0", "no-such-version"],
    "after": ["bm90LWEtY3Vyc29y", "not a cursor", "0"],
}
DATES = ["2020-01-01T00:00:00+00:00", "2026-06-01T12:00:00Z", "not-a-date"]


# ------------------------------------------------------------------ the documents


class Document:
    """One random document under construction: its variables and its fragments."""

    def __init__(self, schema: GraphQLSchema, draw: Any, pools: dict[str, list[str]], before: str) -> None:
        self.schema = schema
        self.draw = draw
        self.pools = pools
        self.before = before
        self.declared: list[str] = []
        self.values: dict[str, Any] = {}
        self.fragments: list[str] = []
        self.count = 0

    def next(self) -> int:
        self.count += 1
        return self.count

    def variable(self, graphql_type: str, value: Any) -> str:
        name = f"v{self.next()}"
        self.declared.append(f"${name}: {graphql_type}")
        if value is not None:
            self.values[name] = value
        return f"${name}"

    def text(self) -> str:
        roots = self.selection(self.schema.query_type, depth=4, roots=True)  # type: ignore[arg-type]
        head = f"({', '.join(self.declared)})" if self.declared else ""
        return " ".join([f"query Oracle{head} {roots}", *self.fragments])

    # -- selections

    def selection(self, parent: GraphQLObjectType | GraphQLInterfaceType, depth: int, roots: bool = False) -> str:
        draw = self.draw
        names = [n for n in parent.fields if (parent.name, n) not in UNSTABLE]
        leaves = [n for n in names if is_leaf_type(get_named_type(parent.fields[n].type))]
        if depth <= 0:
            names = leaves or ["__typename"]
        # Plain fields more often than relationships, and the hot roots more often than the rest:
        # documents stay small enough to run, and many take the shape the compiled path serves.
        weighted = [*names, *leaves, *leaves, *(n for n in names if roots and n in HOT_ROOTS for _ in range(3))]
        chosen = draw(st.lists(st.sampled_from(weighted), min_size=1, max_size=2 if roots else 5, unique=True))
        items = [self.field(parent, name, depth) for name in chosen]
        if not roots and draw(st.integers(0, 5)) == 0:
            items.append("__typename")
        kind = draw(st.integers(0, 9)) if depth > 0 and not roots else 9
        node = self.schema.get_type("Node")
        if kind == 0:  # a named fragment on the type itself
            name = f"F{self.next()}"
            self.fragments.append(f"fragment {name} on {parent.name} {self.selection(parent, depth - 1)}")
            items.append(f"...{name}")
        elif kind == 1 and isinstance(parent, GraphQLObjectType) and node in parent.interfaces:
            if draw(st.booleans()):  # a named fragment on Node
                name = f"N{self.next()}"
                self.fragments.append(f"fragment {name} on Node {{ id __typename }}")
                items.append(f"...{name}")
            else:
                items.append("... on Node { id }")
        elif kind == 2:  # an inline fragment, typed or not, maybe under a directive
            condition = f" on {parent.name}" if draw(st.booleans()) else ""
            items.append(f"...{condition}{self.directive()} {self.selection(parent, depth - 1)}")
        return "{ " + " ".join(items) + " }"

    def directive(self) -> str:
        choice = self.draw(st.integers(0, 3))
        if choice >= 2:
            return ""
        value = self.draw(st.booleans())
        return f" @{'include' if choice == 0 else 'skip'}(if: {self.variable('Boolean!', value)})"

    def field(self, parent: GraphQLObjectType | GraphQLInterfaceType, name: str, depth: int) -> str:
        if name == "__typename":
            return name
        definition = parent.fields[name]
        arguments = self.arguments(name, definition)
        alias = f"a{self.next()}: " if arguments or self.draw(st.integers(0, 4)) == 0 else ""
        directive = self.directive() if self.draw(st.integers(0, 5)) == 0 else ""
        named = get_named_type(definition.type)
        text = f"{alias}{name}{arguments}{directive}"
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            text += " " + self.selection(named, depth - 1)
        return text

    # -- arguments

    def arguments(self, field_name: str, definition: GraphQLField) -> str:
        given = []
        for name, argument in definition.args.items():
            required = isinstance(argument.type, GraphQLNonNull)
            if not required and (field_name, name) not in BOUNDED and self.draw(st.booleans()):
                continue
            given.append(f"{name}: {self.argument(field_name, name, argument.type)}")
        return f"({', '.join(given)})" if given else ""

    def argument(self, field_name: str, name: str, graphql_type: Any) -> str:
        value = self.value(field_name, name, graphql_type)
        named = get_named_type(graphql_type)
        if isinstance(named, GraphQLEnumType) and isinstance(value, str) and self.draw(st.booleans()):
            return value  # an enum as a literal
        if isinstance(value, int) and not isinstance(value, bool) and self.draw(st.booleans()):
            return str(value)  # an integer as a literal
        return self.variable(str(graphql_type), value)

    def value(self, field_name: str, name: str, graphql_type: Any) -> Any:
        draw = self.draw
        required = isinstance(graphql_type, GraphQLNonNull)
        inner = graphql_type.of_type if required else graphql_type
        if isinstance(inner, GraphQLList):
            return [self.value(field_name, name, inner.of_type)]
        named = get_named_type(graphql_type)
        if isinstance(named, GraphQLInputObjectType):
            value: dict[str, Any] = {}
            for key, item in named.fields.items():
                if isinstance(item.type, GraphQLNonNull) or draw(st.booleans()):
                    value[key] = self.value(field_name, key, item.type)
            if named.name == "AuditFilter":
                value["to"] = self.before  # the trail as it was before this module's requests
            return value
        if isinstance(named, GraphQLEnumType):
            return draw(st.sampled_from(list(named.values)))
        if named.name == "ID":
            pool = ID_POOLS.get(name) or (field_name if field_name in self.pools else "student")
            return draw(st.sampled_from(self.pools[pool]))
        if named.name == "Int":
            return draw(st.sampled_from(INTS))
        if named.name == "Boolean":
            return draw(st.booleans())
        if named.name == "DateTime":
            return draw(st.sampled_from(DATES))
        if name == "after":
            return draw(st.sampled_from(self.pools["after"]))
        return draw(st.sampled_from(STRINGS.get(name, ["x"])))


@st.composite
def documents(draw: Any, schema: GraphQLSchema, pools: dict[str, list[str]], before: str) -> tuple[str, dict[str, Any]]:
    document = Document(schema, draw, pools, before)
    text = document.text()
    # Keep what validates: an invalid document is refused alike before anything runs.
    assume(not validate(schema, parse(text)))
    return text, document.values


# ------------------------------------------------------------------ both paths


def _errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((repr(e.get("path")), str((e.get("extensions") or {}).get("code"))) for e in body.get("errors", []))


def _path(response: httpx.Response) -> str | None:
    match = PLAN.search(response.headers.get("server-timing", ""))
    return match.group(1) if match else None


async def send(
    client: httpx.AsyncClient, token: str, purpose: str, query: str, variables: dict[str, Any]
) -> tuple[httpx.Response, str]:
    request_id = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": purpose, "X-Request-Id": request_id}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={**headers, **justified(purpose)}
    )
    return response, request_id


async def oracle(
    app: Any, client: httpx.AsyncClient, owner: Any, token: str, purpose: str, query: str, variables: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Both answers (the serving path's, the oracle's), checked alike but for the audit trail's
    own reads; and the path that served the first."""
    served, served_id = await send(client, token, purpose, query, variables)
    async with resolver_path_only(app):
        expected, expected_id = await send(client, token, purpose, query, variables)
    assert _path(expected) in (None, "resolvers")
    assert served.status_code == expected.status_code < 500, (served.text, expected.text)
    body, wanted = served.json(), expected.json()
    assert _errors(body) == _errors(wanted)
    written = _stated(await entries(owner, served_id))
    if _path(served) == "resolvers" and any(code != "FORBIDDEN" for _, code in _errors(body)):
        # Both answered by the resolver path, and an error (an argument refused in a
        # non-null field, say) nulled a parent while its siblings were still being read:
        # which of them were read first, and noted, is the event loop's order, not the
        # plan's. There is no compiled answer to compare with.
        return body, wanted, _path(served)
    assert written == _stated(await entries(owner, expected_id))
    return body, wanted, _path(served)


def _stated(rows: list[tuple[Any, ...]]) -> list[str]:
    """Entries as what each states, in any order: who, which decision, and which fields and
    categories were read. Not the order of the fields within an entry: the resolver path notes
    a student's fields as its resolvers finish (a list's DataLoader-read ``responses`` after a
    sibling list's ``firstName`` about the same students), the compiled path in the
    document's order."""
    return sorted(repr((*row[:3], sorted(row[3]), sorted(row[4]), *row[5:])) for row in rows)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def before() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@pytest.fixture(scope="module")
async def pools(owner: Any, users: dict[str, uuid.UUID]) -> dict[str, list[str]]:
    """Ids of each kind: the demo teacher's and student's, another district's, unknown, malformed."""
    teacher, student = users["teacher1@northwind.example"], users["student1@northwind.example"]
    mine = await owner.fetchrow(
        "SELECT c.id AS class, c.school_id AS school, s.district_id AS district FROM class_teachers ct "
        "JOIN classes c ON c.id = ct.class_id JOIN schools s ON s.id = c.school_id "
        "JOIN enrollments e ON e.class_id = c.id WHERE ct.teacher_id = $1 AND e.student_id = $2 LIMIT 1",
        teacher,
        student,
    )
    other = await owner.fetchrow(
        "SELECT c.id AS class, c.school_id AS school, d.id AS district, "
        "(SELECT e.student_id FROM enrollments e WHERE e.class_id = c.id LIMIT 1) AS student "
        "FROM classes c JOIN districts d ON d.id = c.district_id WHERE d.name = 'Riverside Unified' LIMIT 1"
    )
    assignment = await owner.fetchrow(
        "SELECT a.id, a.assessment_id FROM assignments a WHERE a.class_id = $1 LIMIT 1", mine["class"]
    )
    elsewhere = await owner.fetchrow(
        "SELECT a.id, a.assessment_id FROM assignments a WHERE a.district_id = $1 LIMIT 1", other["district"]
    )
    child = await owner.fetchval(
        "SELECT student_id FROM guardian_links WHERE guardian_id = $1", users["guardian1@northwind.example"]
    )
    unknown, malformed = str(uuid.uuid4()), "not-an-id"
    # Families read their child's record themselves (RECORD_ACCESS) only where the district allows it.
    await owner.execute("UPDATE districts SET direct_record_access = true WHERE id = $1", mine["district"])

    def pool(*found: Any) -> list[str]:
        return [*(str(f) for f in found if f is not None), unknown, malformed]

    return {
        "district": pool(mine["district"], other["district"]),
        "school": pool(mine["school"], other["school"]),
        "class": pool(mine["class"], other["class"]),
        "student": pool(student, child, other["student"]),
        "assignment": pool(assignment and assignment["id"], elsewhere and elsewhere["id"]),
        "assessment": pool(assignment and assignment["assessment_id"], elsewhere and elsewhere["assessment_id"]),
        "user": pool(teacher, student),
        # Students' cursors as pages hand them out: within the teacher's own students, of
        # another district's student, and before every id.
        "after": [encode_cursor(uuid.UUID(str(s))) for s in (student, child, other["student"]) if s is not None]
        + [encode_cursor(uuid.UUID(int=0)), *STRINGS["after"]],
    }


SERVED: Counter[str | None] = Counter()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_random_documents_over_the_whole_read_schema_answer_as_the_resolver_path_does(
    data: st.DataObject,
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    token_for: Any,
    pools: dict[str, list[str]],
    before: str,
) -> None:
    schema: GraphQLSchema = app.state.pledgeql.endpoint.schema
    user = data.draw(st.sampled_from(sorted(USERS)), label="user")
    # Mostly a purpose the role may declare (so that something is read), any purpose otherwise.
    purpose = data.draw(st.sampled_from([*USERS[user] * 6, *ALL_PURPOSES]), label="purpose")
    query, variables = data.draw(documents(schema, pools, before), label="document")
    body, wanted, served = await oracle(app, client, owner, token_for(user, ALL_PURPOSES), purpose, query, variables)
    assert {k: v for k, v in body.items() if k != "errors"} == {k: v for k, v in wanted.items() if k != "errors"}
    SERVED[served] += 1


def test_the_random_documents_were_served_and_compared() -> None:
    """Runs after the property (file order): it compared documents that ran, not only refusals."""
    assert sum(SERVED.values()) >= min(EXAMPLES, 50), SERVED
    assert SERVED["compiled"] + SERVED["resolvers"] > 0, SERVED


# ------------------------------------------------------------------ the clients' operations


SHARED = shared_queries(OPERATIONS)
CALLER = {
    "teacher-app": "teacher1@northwind.example",
    "student-client": "student1@northwind.example",
    "family": "guardian1@northwind.example",
    "reporting": "admin@northwind.example",
    "district-admin": "admin@northwind.example",
}


def _caller(source: str, purpose: str) -> str:
    return "analyst@pledgeql.example" if purpose == "PRODUCT_ANALYTICS" else CALLER[source.split("/")[0]]


def _variables(name: str, pools: dict[str, list[str]], before: str) -> dict[str, Any]:
    roster, student, child = pools["class"][0], pools["student"][0], pools["student"][1]
    return {
        "ClassRoster": {"id": roster},
        "ClassResults": {"id": roster},
        "ClassProgress": {"id": roster},
        "StudentDetail": {"id": student},
        "StudentSearch": {"schoolId": pools["school"][0]},
        "ChildProgress": {"id": child},
        "WhoSawMyChild": {"id": child},
        "AssignmentItems": {"id": pools["assignment"][0]},
        "DistrictPerformance": {"districtId": pools["district"][0]},
        "SchoolEquity": {"schoolId": pools["school"][0]},
        "WeeklyUsage": {"districtId": pools["district"][0], "from": "2020-01-01T00:00:00Z", "to": before},
        "AuditReview": {"filter": {"to": before}},
    }.get(name, {})


@pytest.mark.parametrize(("source", "name", "purpose", "text"), SHARED, ids=[s[1] for s in SHARED])
async def test_every_shared_query_validates_and_answers_as_the_resolver_path_does(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    token_for: Any,
    pools: dict[str, list[str]],
    before: str,
    source: str,
    name: str,
    purpose: str,
    text: str,
) -> None:
    schema: GraphQLSchema = app.state.pledgeql.endpoint.schema
    assert validate(schema, parse(text)) == []
    token = token_for(_caller(source, purpose), ALL_PURPOSES)
    body, wanted, _ = await oracle(app, client, owner, token, purpose, text, _variables(name, pools, before))
    assert body.get("data") is not None, body  # the screen's caller reads it
    if "accessLog" in text:
        # The trail read alike, but for what the first of the two requests wrote into it.
        older, expected = _trail(body, before), _trail(wanted, before)
        shown = min(len(older), len(expected))
        assert older[:shown] == expected[:shown]
        return
    assert {k: v for k, v in body.items() if k != "errors"} == {k: v for k, v in wanted.items() if k != "errors"}


def _trail(body: dict[str, Any], before: str) -> list[Any]:
    nodes = body["data"]["student"]["accessLog"]["nodes"]
    return [n for n in nodes if str(n["at"]) < before]


def _needs_plan(text: str) -> bool:
    document = parse(text)
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    return not root_fields(document, operation) <= UNPLANNED_ROOTS


# Every shared query that reads more than the reports or the policy: served compiled.
PLANNED = [pytest.param(*shared, id=shared[1]) for shared in SHARED if _needs_plan(shared[3])]


@pytest.mark.parametrize(("source", "name", "purpose", "text"), PLANNED)
async def test_every_shared_query_is_served_by_the_compiled_path(
    client: httpx.AsyncClient,
    token_for: Any,
    pools: dict[str, list[str]],
    before: str,
    source: str,
    name: str,
    purpose: str,
    text: str,
) -> None:
    token = token_for(_caller(source, purpose), ALL_PURPOSES)
    response, _ = await send(client, token, purpose, text, _variables(name, pools, before))
    assert response.status_code == 200 and response.json().get("data") is not None, response.text
    assert _path(response) == "compiled", response.headers.get("server-timing")


def test_the_shared_queries_that_need_no_plan_read_only_the_reports_or_the_policy() -> None:
    unplanned = sorted(s[1] for s in SHARED if not _needs_plan(s[3]))
    assert unplanned == ["DistrictPerformance", "PlatformSkills", "SchoolEquity", "WeeklyUsage"]
    assert len(PLANNED) + len(unplanned) == len(SHARED) >= 20
