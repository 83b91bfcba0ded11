"""The HTTP surface: content types (CSRF), methods, malformed requests, CORS,
request ids, and which status each kind of client gets."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import error_codes

GRAPHQL_RESPONSE = "application/graphql-response+json"
TEACHER = "teacher1@northwind.example"
ORIGIN = "https://app.pledgeql.example"
MUTATION = 'mutation { revokeSupportGrant(id: "00000000-0000-0000-0000-000000000000") { id } }'


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", **extra}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
        "",
    ],
)
async def test_a_post_without_a_json_content_type_is_refused_for_queries_and_mutations(
    client: httpx.AsyncClient, token_for: Callable[..., str], content_type: str
) -> None:
    for query in ("{ me { role } }", MUTATION):
        body = '{"query": "' + query.replace('"', '\\"') + '"}'
        headers = auth(token_for(TEACHER), **({"Content-Type": content_type} if content_type else {}))
        response = await client.post("/graphql", content=body.encode(), headers=headers)
        assert response.status_code == 415, content_type
        assert error_codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]


async def test_json_with_a_charset_is_accepted(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    response = await client.post(
        "/graphql",
        content=b'{"query": "{ me { role } }"}',
        headers=auth(token_for(TEACHER), **{"Content-Type": "application/json; charset=utf-8"}),
    )
    assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "TEACHER"


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
async def test_a_mutation_over_get_is_method_not_allowed(
    client: httpx.AsyncClient, token_for: Callable[..., str], accept: str
) -> None:
    response = await client.get("/graphql", params={"query": MUTATION}, headers=auth(token_for(TEACHER), Accept=accept))
    assert response.status_code == 405
    assert error_codes(response.json()) == ["METHOD_NOT_ALLOWED"]


async def test_a_query_over_get_runs(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    response = await client.get("/graphql", params={"query": "{ me { role } }"}, headers=auth(token_for(TEACHER)))
    assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "TEACHER"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2",
        b'"a string"',
        b"42",
        b'{"query": 5}',
        b'{"variables": "x", "query": "{ me { role } }"}',
    ],
)
@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
async def test_a_malformed_request_is_bad_user_input_with_400_for_every_client(
    client: httpx.AsyncClient, token_for: Callable[..., str], body: bytes, accept: str
) -> None:
    response = await client.post(
        "/graphql",
        content=body,
        headers=auth(token_for(TEACHER), **{"Content-Type": "application/json", "Accept": accept}),
    )
    assert response.status_code == 400, response.text
    assert error_codes(response.json()) == ["BAD_USER_INPUT"]


async def test_a_document_that_does_not_parse_is_bad_user_input(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    for accept, status in ((GRAPHQL_RESPONSE, 400), ("application/json", 200)):
        response = await client.post(
            "/graphql", json={"query": "{ me { role "}, headers=auth(token_for(TEACHER), Accept=accept)
        )
        assert response.status_code == status
        assert error_codes(response.json()) == ["BAD_USER_INPUT"]


async def test_validation_errors_are_400_for_graphql_response_clients_and_200_for_legacy_json(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    for accept, status in ((GRAPHQL_RESPONSE, 400), ("application/json", 200)):
        response = await client.post(
            "/graphql", json={"query": "{ me { rol } }"}, headers=auth(token_for(TEACHER), Accept=accept)
        )
        assert response.status_code == status
        assert error_codes(response.json()) == ["BAD_USER_INPUT"]
        assert response.headers["content-type"].startswith(accept)


async def test_development_validation_messages_may_suggest_fields(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    response = await client.post("/graphql", json={"query": "{ me { rol } }"}, headers=auth(token_for(TEACHER)))
    assert "Did you mean" in response.json()["errors"][0]["message"]


async def test_every_response_carries_the_servers_own_request_id_never_the_clients(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    seen = set()
    for given in ("abc-123", "student1@northwind.example", "a b", None):
        headers = auth(token_for(TEACHER), **({"X-Request-Id": given} if given else {}))
        response = await client.post("/graphql", json={"query": "{ me { role } }"}, headers=headers)
        assert response.status_code == 200
        echoed = response.headers["x-request-id"]
        assert echoed != given and len(echoed) == 32 and int(echoed, 16) >= 0
        seen.add(echoed)
    assert len(seen) == 4
    for path in ("/healthz", "/readyz", "/privacy"):
        response = await client.get(path, headers={"X-Request-Id": "r-42"})
        assert response.headers["x-request-id"] != "r-42" and len(response.headers["x-request-id"]) == 32
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_html_pages_are_not_framed_by_other_sites_and_send_no_referrer(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    for path, accept in (("/privacy", "text/html"), ("/graphql", "text/html")):
        page = await client.get(path, headers={"Accept": accept})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert page.headers["referrer-policy"] == "no-referrer"
    api = await client.post("/graphql", json={"query": "{ me { role } }"}, headers=auth(token_for(TEACHER)))
    assert "x-frame-options" not in api.headers  # JSON is not framed: nothing added to every answer


async def test_a_trailing_slash_is_not_found_never_a_redirect_echoing_the_host(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql/", headers={"Host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers


async def test_the_request_id_is_the_one_the_audit_stores_and_the_clients_is_its_client_request_id(
    client: httpx.AsyncClient, token_for: Callable[..., str], owner: Any
) -> None:
    client_id = "audit-" + uuid.uuid4().hex
    response = await client.post(
        "/graphql",
        json={"query": "{ me { staff { firstName } } }"},
        headers=auth(token_for(TEACHER), **{"X-Request-Id": client_id}),
    )
    assert response.status_code == 200 and response.json()["data"]["me"]["staff"]["firstName"]
    rows = await owner.fetch(
        "SELECT request_id, client_request_id FROM audit_entries WHERE request_id = $1",
        response.headers["x-request-id"],
    )
    assert [tuple(r) for r in rows] == [(response.headers["x-request-id"], client_id)]


async def test_graphql_responses_are_not_cached(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    response = await client.post("/graphql", json={"query": "{ me { role } }"}, headers=auth(token_for(TEACHER)))
    assert response.headers["cache-control"] == "no-store"


async def test_graphiql_is_served_in_development_only_to_browsers(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "GraphiQL" in page.text
    assert page.headers["cache-control"] == "no-store"  # it may hold a development token
    api = await client.get("/graphql", headers={"Accept": "application/json"})
    assert api.status_code == 400 and error_codes(api.json()) == ["BAD_USER_INPUT"]


# --------------------------------------------------------------------- CORS


async def test_cors_is_closed_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/graphql",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-purpose",
        },
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    # Refused as every error is: its code, and the server's request id.
    assert error_codes(preflight.json()) == ["BAD_USER_INPUT"] and len(preflight.headers["x-request-id"]) == 32
    simple = await client.post("/graphql", json={"query": "{ policyVersions }"}, headers={"Origin": ORIGIN})
    assert not [name for name in simple.headers if name.startswith("access-control-")], simple.headers


@pytest_asyncio.fixture(scope="module")
async def cors_client(settings: Settings, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(dataclasses.replace(settings, cors_origins=(ORIGIN,)), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


async def test_a_listed_origin_may_call_with_the_api_headers(cors_client: httpx.AsyncClient) -> None:
    preflight = await cors_client.options(
        "/graphql",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-purpose,x-request-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in preflight.headers
    response = await cors_client.post("/graphql", json={"query": "{ policyVersions }"}, headers={"Origin": ORIGIN})
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


async def test_an_unlisted_origin_is_refused(cors_client: httpx.AsyncClient) -> None:
    preflight = await cors_client.options(
        "/graphql",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert error_codes(preflight.json()) == ["BAD_USER_INPUT"]
    assert "origin" in preflight.json()["errors"][0]["message"]
    response = await cors_client.post(
        "/graphql", json={"query": "{ policyVersions }"}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers
