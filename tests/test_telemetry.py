"""OpenTelemetry: the spans and metrics an operator gets, and the proof that
none of them carries a student's name, number, email or answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.app import create_app
from server.auth import mint_token
from server.db import DatabaseUrls
from server.settings import Settings
from server.telemetry import Telemetry
from tests.conftest import ALL_PURPOSES

ADMIN = "admin@northwind.example"
TOKEN_SPLIT = re.compile(r"[\s,()\[\]{}=<>:;'\"|]+")

STUDENT_FIELDS = (
    "id firstName lastName preferredName username gradeLevel studentNumber stateId email gender birthDate "
    "learningLevel responses(first: 5) { answer score feedback } guardians { firstName lastName email phone }"
)
# (username, purpose, query, variables): reads that return every kind of personal value,
# refusals, a search by a student's name (a variable), and a literal name in the document.
WORKLOAD: list[tuple[str, str, str, dict[str, Any] | None]] = [
    (ADMIN, "RECORD_ACCESS", f"query Everything {{ students(first: 60) {{ nodes {{ {STUDENT_FIELDS} }} }} }}", None),
    (ADMIN, "REPORTING", f"query Reporting {{ students(first: 30) {{ nodes {{ {STUDENT_FIELDS} }} }} }}", None),
    (
        "teacher1@northwind.example",
        "INSTRUCTION",
        f"{{ students(first: 40) {{ nodes {{ {STUDENT_FIELDS} }} }} }}",
        None,
    ),
    ("student1@northwind.example", "STUDENT_LEARNING", f"{{ me {{ student {{ {STUDENT_FIELDS} }} }} }}", None),
    ("guardian1@northwind.example", "REPORTING", "{ me { guardian { firstName email } } }", None),
    ("teacher1@riverside.example", "INSTRUCTION", "{ students(first: 40) { nodes { firstName email } } }", None),
]


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest_asyncio.fixture(scope="module")
async def traced_client(
    settings: Settings, db: DatabaseUrls, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> AsyncIterator[httpx.AsyncClient]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    application = create_app(settings, db, telemetry=telemetry)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


@pytest_asyncio.fixture(scope="module")
async def personal_values(owner: Any) -> dict[str, set[str]]:
    """Every demo student's name, number, email and answer, read as the owner."""
    rows = await owner.fetch(
        "SELECT first_name, last_name, preferred_name, username, email, student_number, state_id "
        "FROM users WHERE role = 'STUDENT'"
    )
    values: dict[str, set[str]] = {"name": set(), "number": set(), "email": set(), "answer": set()}
    for row in rows:
        values["name"].update(v for v in (row["first_name"], row["last_name"], row["preferred_name"]) if v)
        values["number"].update(v for v in (row["student_number"], row["state_id"]) if v)
        values["email"].update(v for v in (row["email"], row["username"]) if v)
    values["answer"].update(r["answer"] for r in await owner.fetch("SELECT DISTINCT answer FROM responses"))
    assert all(values.values()), "the demo data should have every kind of personal value"
    return values


def strings_of(span: ReadableSpan) -> Iterator[tuple[str, str]]:
    """(where, text) for every text an exporter would send for a span: name, attributes, events, status.

    Numeric attributes are left out: the server sets them from counts and statuses only
    (entries written, an HTTP status), which would otherwise collide with numeric answers."""
    yield "name", span.name
    for key, value in (span.attributes or {}).items():
        yield "key", key
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, str):
                yield key, item
    for event in span.events:
        yield "event", event.name
        for key, value in (event.attributes or {}).items():
            yield "event", f"{key}={value}"
    for link in span.links:
        yield from (("link", str(v)) for v in (link.attributes or {}).values())
    if span.status.description:
        yield "status", span.status.description


def leaks(texts: list[tuple[str, str]], values: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(kind, value) of each personal value found as a whole token, or as a substring when long enough
    to be distinctive. Values of one or two characters (answers such as "1" or "B") are looked for
    everywhere but in SQL text, whose literal numbers come from the code."""
    tokens = {token for _, text in texts for token in TOKEN_SPLIT.split(text) if token}
    short_tokens = {
        token for where, text in texts if where != "db.query.text" for token in TOKEN_SPLIT.split(text) if token
    }
    joined = "\n".join(text for _, text in texts)
    found = []
    for kind, kind_values in values.items():
        for value in kind_values:
            short = len(value) <= 2
            if (short and value in short_tokens) or (
                not short and (value in tokens or (len(value) >= 6 and value in joined))
            ):
                found.append((kind, value))
    return found


async def run_workload(client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]) -> None:
    for username, purpose, query, variables in WORKLOAD:
        token = mint_token(settings, users[username], ALL_PURPOSES)
        headers = {"Authorization": f"Bearer {token}", "X-Purpose": purpose}
        response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
        assert response.status_code == 200, response.text


async def test_no_span_attribute_or_event_carries_a_students_name_number_email_or_answer(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    personal_values: dict[str, set[str]],
    settings: Settings,
    users: dict[str, uuid.UUID],
    owner: Any,
) -> None:
    exporter.clear()
    await run_workload(traced_client, settings, users)
    # The workload did return personal data...
    first = await owner.fetchval("SELECT first_name FROM users WHERE username = 'student1@northwind.example'")
    token = mint_token(settings, users[ADMIN], ALL_PURPOSES)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "RECORD_ACCESS"}
    search = "query Find($name: String) { students(search: $name, first: 5) { nodes { firstName email } } }"
    response = await traced_client.post(
        "/graphql", json={"query": search, "variables": {"name": first}}, headers=headers
    )
    assert first in response.text
    # ...and a document that spells a name out, sent over GET so that it is in the URL.
    literal = f'{{ students(search: "{first}", first: 5) {{ nodes {{ lastName studentNumber }} }} }}'
    response = await traced_client.get("/graphql", params={"query": literal}, headers=headers)
    assert response.status_code == 200 and response.json()["data"]["students"]["nodes"]

    spans = exporter.get_finished_spans()
    assert len(spans) > 50
    texts = [text for span in spans for text in strings_of(span)]
    numeric = {k for span in spans for k, v in (span.attributes or {}).items() if not isinstance(v, str)}
    assert numeric <= {"http.response.status_code", "pledgeql.audit.entries"}
    found = leaks(texts, personal_values)
    values = {v for _, v in found}
    assert found == [], [(w, t) for w, t in texts if values & set(TOKEN_SPLIT.split(t))][:10]
    assert not [t for _, t in texts if "students(" in t or "firstName" in t], "no document text in spans"


def test_the_leak_check_finds_a_planted_value(personal_values: dict[str, set[str]]) -> None:
    name = sorted(personal_values["name"])[0]
    email = sorted(personal_values["email"])[0]
    answer = sorted(personal_values["answer"])[0]
    assert leaks([("db.query.text", f"SELECT 1 WHERE x = '{name}'")], personal_values) == [("name", name)]
    assert ("email", email) in leaks([("http.route", f"to={email}")], personal_values)
    assert ("answer", answer) in leaks([("event", f"answer {answer}")], personal_values)
    assert ("answer", "1") in leaks([("event", "answer 1")], personal_values)
    sql = "SELECT * FROM users u WHERE u.id = ANY($1::uuid[]) LIMIT 1"
    assert leaks([("db.query.text", sql)], personal_values) == []


async def test_each_request_has_an_http_span_an_operation_span_root_field_spans_and_database_spans(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    settings: Settings,
    users: dict[str, uuid.UUID],
    owner: Any,
) -> None:
    exporter.clear()
    token = mint_token(settings, users[ADMIN], ALL_PURPOSES)
    query = "query Roster { students(first: 3) { nodes { firstName } } me { role } }"
    request_id = "traced-" + uuid.uuid4().hex
    response = await traced_client.post(
        "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "REPORTING", "X-Request-Id": request_id},
    )
    assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    # The audit entries of the request name its trace.
    trace_ids = {
        r["trace_id"]
        for r in await owner.fetch("SELECT trace_id FROM audit_entries WHERE client_request_id = $1", request_id)
    }
    assert trace_ids == {format(spans["POST /graphql"].context.trace_id, "032x")}
    http = spans["POST /graphql"]
    operation = spans["graphql query"]
    assert http.attributes is not None and http.attributes["http.response.status_code"] == 200
    assert http.attributes["url.path"] == "/graphql"
    assert operation.parent is not None and operation.parent.span_id == http.context.span_id
    assert operation.attributes is not None
    assert operation.attributes["graphql.operation.name"] == "Roster"
    assert operation.attributes["graphql.operation.type"] == "query"
    assert re.fullmatch(r"[0-9a-f]{64}", str(operation.attributes["graphql.document.sha256"]))
    roots = {name for name in spans if name.startswith("resolve ")}
    assert roots == {"resolve Query.students", "resolve Query.me"}
    assert spans["resolve Query.students"].parent.span_id == operation.context.span_id  # type: ignore[union-attr]
    database = [s for s in exporter.get_finished_spans() if s.name.startswith("db ")]
    assert database and all(s.attributes and s.attributes["db.system.name"] == "postgresql" for s in database)
    audit = spans["audit write"]
    assert audit.attributes is not None and audit.attributes["pledgeql.audit.entries"] == 3
    # No span below the root fields: one span per field would cost more than the field.
    assert not [name for name in spans if "firstName" in name or "Student." in name]


@pytest.mark.parametrize("well_formed", [True, False])
async def test_a_callers_w3c_trace_context_is_continued_and_a_malformed_one_ignored(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    settings: Settings,
    users: dict[str, uuid.UUID],
    owner: Any,
    well_formed: bool,
) -> None:
    exporter.clear()
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{span_id}-01" if well_formed else f"00-{trace_id}-zz-01"
    request_id = "traceparent-" + uuid.uuid4().hex
    response = await traced_client.post(
        "/graphql",
        json={"query": "{ students(first: 2) { nodes { firstName } } }"},
        headers={
            "Authorization": f"Bearer {mint_token(settings, users[ADMIN], ALL_PURPOSES)}",
            "X-Purpose": "REPORTING",
            "X-Request-Id": request_id,
            "traceparent": traceparent,
        },
    )
    assert response.status_code == 200 and "errors" not in response.json()
    http = next(span for span in exporter.get_finished_spans() if span.name == "POST /graphql")
    served = format(http.context.trace_id, "032x")
    stored = {
        r["trace_id"]
        for r in await owner.fetch("SELECT trace_id FROM audit_entries WHERE client_request_id = $1", request_id)
    }
    assert stored == {served}
    if well_formed:
        assert served == trace_id
        assert http.parent is not None and format(http.parent.span_id, "016x") == span_id
        assert http.parent.is_remote
    else:
        assert served != trace_id and http.parent is None


async def test_a_failed_statement_leaves_its_error_type_but_not_its_message(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    response = await traced_client.get("/nowhere")
    assert response.status_code == 404
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET other"]
    assert all(not s.events for s in exporter.get_finished_spans())


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_metrics_count_requests_errors_denials_and_audit_entries(
    traced_client: httpx.AsyncClient, reader: InMemoryMetricReader, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    token = mint_token(settings, users["teacher1@northwind.example"], ALL_PURPOSES)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "PERSONALIZATION"}
    # PERSONALIZATION grants a teacher no student category: every name is a FORBIDDEN denial.
    response = await traced_client.post(
        "/graphql", json={"query": "{ students(first: 2) { nodes { firstName } } }"}, headers=headers
    )
    assert response.status_code == 200
    await traced_client.post("/graphql", json={"query": "{ me { role } }"}, headers={"X-Purpose": "INSTRUCTION"})
    points = metric_points(reader)
    requests = {p.attributes["http.response.status_code"]: p.value for p in points["pledgeql.http.requests"]}
    assert requests[200] >= 1 and requests[401] >= 1
    errors = {p.attributes["code"]: p.value for p in points["pledgeql.errors"]}
    assert errors["FORBIDDEN"] >= 2 and errors["UNAUTHENTICATED"] >= 1
    denials = {p.attributes["reason"]: p.value for p in points["pledgeql.denials"]}
    assert denials["PURPOSE_NOT_ALLOWED_FOR_CATEGORY"] >= 2 and denials["UNAUTHENTICATED"] >= 1
    assert sum(p.value for p in points["pledgeql.audit.entries"]) >= 2
    assert sum(p.count for p in points["pledgeql.audit.write.duration"]) >= 1
    for name, data_points in points.items():
        for point in data_points:
            assert all(isinstance(v, str | int) for v in point.attributes.values()), name


def test_without_otel_variables_nothing_is_recorded() -> None:
    telemetry = Telemetry.from_env({})
    assert not telemetry.enabled
    with telemetry.span("anything") as span:
        assert span is None


def test_the_standard_otel_endpoint_variable_turns_export_on() -> None:
    telemetry = Telemetry.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SERVICE_NAME": "pq"})
    try:
        assert telemetry.enabled
        assert (
            Telemetry.from_env(
                {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}
            ).enabled
            is False
        )
    finally:
        telemetry.shutdown()


async def test_an_app_without_telemetry_records_nothing_though_the_root_fields_are_wrapped(
    traced_client: httpx.AsyncClient,
    client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    settings: Settings,
    users: dict[str, uuid.UUID],
) -> None:
    token = mint_token(settings, users[ADMIN], ALL_PURPOSES)
    exporter.clear()
    response = await client.post(
        "/graphql",
        json={"query": "{ me { role } }"},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "REPORTING"},
    )
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("traceparent", ["well-formed", "malformed", None])
async def test_without_telemetry_a_request_stays_in_its_callers_trace_and_its_audit_says_which(
    client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    settings: Settings,
    users: dict[str, uuid.UUID],
    owner: Any,
    traceparent: str | None,
) -> None:
    exporter.clear()
    trace_id = uuid.uuid4().hex
    headers = {
        "Authorization": f"Bearer {mint_token(settings, users[ADMIN], ALL_PURPOSES)}",
        "X-Purpose": "REPORTING",
        "X-Request-Id": "untraced-" + uuid.uuid4().hex,
    }
    if traceparent is not None:
        span_id = uuid.uuid4().hex[:16] if traceparent == "well-formed" else "zz"
        headers["traceparent"] = f"00-{trace_id}-{span_id}-01"
    response = await client.post(
        "/graphql", json={"query": "{ students(first: 2) { nodes { firstName } } }"}, headers=headers
    )
    assert response.status_code == 200 and "errors" not in response.json()
    stored = {
        r["trace_id"]
        for r in await owner.fetch(
            "SELECT trace_id FROM audit_entries WHERE client_request_id = $1", headers["X-Request-Id"]
        )
    }
    assert stored == ({trace_id} if traceparent == "well-formed" else {None})
    assert exporter.get_finished_spans() == ()  # still no span made or exported
