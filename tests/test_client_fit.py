"""What the clients' tooling relies on over HTTP (issue 16): `extensions.purpose`, CORS as API.md
says, FORBIDDEN naming the refused operation, the Idempotency-Key and X-Session-Id limits, and
GraphiQL's page and assets served from the package."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.db import DatabaseUrls
from server.graphiql import ASSETS
from server.settings import Settings
from tests.conftest import Gql, error_codes

TEACHER = "teacher1@northwind.example"
STUDENT = "student1@northwind.example"
ADMIN = "admin@northwind.example"
GRAPHQL_RESPONSE = "application/graphql-response+json"
RECORD = "mutation Record($events: [ActivityEventInput!]!) { recordActivity(events: $events) { accepted } }"


# ------------------------------------------------------------ extensions.purpose


@pytest.mark.parametrize("purpose", ["INSTRUCTION", "REPORTING"])
async def test_every_response_to_an_authenticated_request_carries_its_purpose(gql: Gql, purpose: str) -> None:
    body = await gql(TEACHER, purpose, "{ me { role } }")
    assert body["extensions"] == {"purpose": purpose}
    denied = await gql(TEACHER, purpose, "{ auditLog(first: 1) { nodes { id } } }")
    assert error_codes(denied) == ["FORBIDDEN"] and denied["extensions"]["purpose"] == purpose


async def test_a_response_built_by_the_compiled_path_carries_its_purpose_too(gql: Gql) -> None:
    classes = await gql(TEACHER, "INSTRUCTION", "{ me { classes { id } } }")
    class_id = classes["data"]["me"]["classes"][0]["id"]
    query = "query Roster($id: ID!) { class(id: $id) { id students { id firstName } } }"
    body = await gql(TEACHER, "INSTRUCTION", query, {"id": class_id})
    assert body["data"]["class"]["students"] and body["extensions"] == {"purpose": "INSTRUCTION"}


async def test_a_refused_request_carries_its_declared_purpose_and_an_anonymous_one_none(
    gql: Gql, client: httpx.AsyncClient
) -> None:
    refused = await gql(TEACHER, "LEGAL_COMPLIANCE", "{ me { role } }")
    assert refused["extensions"]["purpose"] == "LEGAL_COMPLIANCE" and error_codes(refused)
    public = (await client.post("/graphql", json={"query": "{ policyVersions }"})).json()
    assert "extensions" not in public


# --------------------------------------------------- FORBIDDEN names the operation


async def test_an_operation_refusal_names_the_operation_and_no_category(gql: Gql) -> None:
    body = await gql(TEACHER, "INSTRUCTION", "{ audit: auditLog(first: 1) { nodes { id } } }")
    extensions = body["errors"][0]["extensions"]
    assert extensions["code"] == "FORBIDDEN" and extensions["operation"] == "auditLog"
    assert "category" not in extensions and extensions["purpose"] == "INSTRUCTION" and extensions["reason"]


async def test_district_settings_refused_to_a_teacher_names_the_operation(gql: Gql) -> None:
    body = await gql(
        TEACHER, "INSTRUCTION", "{ me { classes { school { district { name settings { collectUsage } } } } } }"
    )
    forbidden = [e for e in body.get("errors", []) if e["extensions"]["code"] == "FORBIDDEN"]
    assert forbidden, body
    assert forbidden[0]["extensions"]["operation"] == "District.settings"
    assert "category" not in forbidden[0]["extensions"]


async def test_a_denied_category_still_names_its_category_and_no_operation(gql: Gql) -> None:
    body = await gql(STUDENT, "PERSONALIZATION", "{ me { student { firstName } } }")
    denied = [e["extensions"] for e in body.get("errors", []) if e["extensions"]["code"] == "FORBIDDEN"]
    for extensions in denied:
        assert "category" in extensions and "operation" not in extensions


# ------------------------------------------------ Idempotency-Key and X-Session-Id


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Session-Id"])
@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
async def test_a_client_header_over_128_characters_or_with_a_control_character_is_refused_with_400(
    client: httpx.AsyncClient, token_for: Callable[..., str], header: str, accept: str, owner: Any
) -> None:
    before = await owner.fetchval("SELECT count(*) FROM device_sessions")
    base = {"Authorization": f"Bearer {token_for(STUDENT)}", "X-Purpose": "STUDENT_LEARNING", "Accept": accept}
    for value in ("k" * 129, "key\twith a tab", "key\x7f"):
        response = await client.post(
            "/graphql", json={"query": RECORD, "variables": {"events": []}}, headers={**base, header: value}
        )
        assert response.status_code == 400, value
        assert error_codes(response.json()) == ["BAD_USER_INPUT"] and "data" not in response.json()
        assert "128 printable characters" in response.json()["errors"][0]["message"]
        assert value not in response.text
    assert await owner.fetchval("SELECT count(*) FROM device_sessions") == before


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Session-Id"])
async def test_a_client_header_of_128_printable_characters_is_accepted(
    client: httpx.AsyncClient, token_for: Callable[..., str], header: str
) -> None:
    base = {"Authorization": f"Bearer {token_for(STUDENT)}", "X-Purpose": "STUDENT_LEARNING"}
    value = f"a key, with spaces & punctuation: {uuid.uuid4()}".ljust(128, "~")
    response = await client.post(
        "/graphql", json={"query": RECORD, "variables": {"events": []}}, headers={**base, header: value}
    )
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body


async def test_a_client_header_sent_twice_is_refused(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    headers = [
        ("Authorization", f"Bearer {token_for(STUDENT)}"),
        ("X-Purpose", "STUDENT_LEARNING"),
        ("Idempotency-Key", "one"),
        ("Idempotency-Key", "two"),
    ]
    response = await client.post("/graphql", json={"query": RECORD, "variables": {"events": []}}, headers=headers)
    assert response.status_code == 400 and error_codes(response.json()) == ["BAD_USER_INPUT"]


async def test_the_same_idempotency_key_with_different_content_is_bad_user_input(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    key = f"k-{uuid.uuid4()}"
    base = {"Authorization": f"Bearer {token_for(STUDENT)}", "X-Purpose": "STUDENT_LEARNING", "Idempotency-Key": key}
    event = {"kind": "VIEW", "occurredAt": "2026-12-04T10:00:00Z", "target": "home"}
    first = await client.post("/graphql", json={"query": RECORD, "variables": {"events": [event]}}, headers=base)
    assert "errors" not in first.json(), first.json()
    again = await client.post("/graphql", json={"query": RECORD, "variables": {"events": [event]}}, headers=base)
    assert again.json()["data"] == first.json()["data"]
    other = {**event, "target": "elsewhere"}
    changed = await client.post("/graphql", json={"query": RECORD, "variables": {"events": [other]}}, headers=base)
    assert error_codes(changed.json()) == ["BAD_USER_INPUT"]


# ------------------------------------------------------------------------ CORS


def cors_client(settings: Settings, db: DatabaseUrls, **changes: Any) -> httpx.AsyncClient:
    application = create_app(dataclasses.replace(settings, **changes), db)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://pledgeql.test")


async def preflight(http: httpx.AsyncClient, origin: str, headers: str) -> httpx.Response:
    return await http.options(
        "/graphql",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers},
    )


BROWSER_HEADERS = (
    "authorization,content-type,x-purpose,x-justification,x-request-id,idempotency-key,x-session-id,"
    "traceparent,tracestate,baggage,apollographql-client-name,apollographql-client-version"
)


async def test_a_subdomain_pattern_admits_subdomains_with_every_header_the_clients_send(
    settings: Settings, db: DatabaseUrls
) -> None:
    async with cors_client(settings, db, cors_origins=("https://*.example.org", "http://localhost:3000")) as http:
        for origin in ("https://teach.example.org", "https://a.b.example.org", "http://localhost:3000"):
            response = await preflight(http, origin, BROWSER_HEADERS)
            assert response.status_code == 200, (origin, response.text)
            assert response.headers["access-control-allow-origin"] == origin
            assert "access-control-allow-credentials" not in response.headers
            allowed = response.headers["access-control-allow-headers"].lower()
            for header in BROWSER_HEADERS.split(","):
                assert header in allowed
        simple = await http.get("/healthz", headers={"Origin": "https://teach.example.org"})
        exposed = simple.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed and "retry-after" in exposed


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.org",
        "https://evilexample.org",
        "https://example.org.evil.net",
        "http://teach.example.org",
        "https://teach.example.org:8443",
        "http://localhost:3001",
    ],
)
async def test_origins_outside_the_list_and_its_patterns_are_refused(
    settings: Settings, db: DatabaseUrls, origin: str
) -> None:
    async with cors_client(settings, db, cors_origins=("https://*.example.org", "http://localhost:3000")) as http:
        response = await preflight(http, origin, "authorization,x-purpose")
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        simple = await http.get("/healthz", headers={"Origin": origin})
        assert "access-control-allow-origin" not in simple.headers


async def test_extra_headers_are_allowed_only_when_listed(settings: Settings, db: DatabaseUrls) -> None:
    origin = "https://app.example.org"
    async with cors_client(settings, db, cors_origins=(origin,)) as http:
        assert (await preflight(http, origin, "x-tenant-hint")).status_code == 400
    async with cors_client(settings, db, cors_origins=(origin,), cors_extra_headers=("X-Tenant-Hint",)) as http:
        assert (await preflight(http, origin, "x-tenant-hint,traceparent")).status_code == 200


@pytest.mark.parametrize(
    ("origins", "extra", "message"),
    [
        (("https://*example.org",), (), "not an origin"),
        (("https://example.org/path",), (), "not an origin"),
        (("ftp://example.org",), (), "not an origin"),
        (("https://app.example.org",), ("X Bad",), "not a header name"),
    ],
)
def test_a_malformed_cors_setting_stops_the_server_saying_what_to_write(
    settings: Settings, db: DatabaseUrls, origins: tuple[str, ...], extra: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        create_app(dataclasses.replace(settings, cors_origins=origins, cors_extra_headers=extra), db)


# --------------------------------------------------------------------- GraphiQL


async def test_graphiql_is_served_with_its_assets_from_the_package_and_an_empty_authorization(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "GraphiQL" in page.text
    assert "unpkg" not in page.text and "https://" not in page.text
    assert '\\"Authorization\\": \\"\\"' in page.text and "<token>" not in page.text
    for name in ASSETS:
        assert f'"/graphiql/{name}"' in page.text
        asset = await client.get(f"/graphiql/{name}")
        assert asset.status_code == 200 and len(asset.content) > 5000
    assert (await client.get("/graphiql/../settings.py")).status_code == 404
    assert (await client.get("/graphiql/LICENSE.react")).status_code == 404


def test_graphiql_under_serve_demo_starts_with_the_demo_token(settings: Settings, db: DatabaseUrls) -> None:
    from server.graphiql import graphiql_page

    page = graphiql_page("header.payload.signature").body.decode()
    assert "Bearer header.payload.signature" in page and "query Me" in page
    hostile = graphiql_page("</script><script>alert(1)</script>").body.decode()
    assert "</script><script>alert" not in hostile


async def test_an_open_cors_in_development_admits_any_origin_without_credentials(
    settings: Settings, db: DatabaseUrls
) -> None:
    async with cors_client(settings, db, cors_origins=("*",)) as http:
        response = await preflight(http, "http://localhost:5173", BROWSER_HEADERS)
        assert response.status_code == 200
        assert "access-control-allow-credentials" not in response.headers
        simple = await http.get("/healthz", headers={"Origin": "http://localhost:5173"})
        assert simple.headers["access-control-allow-origin"] == "*"
