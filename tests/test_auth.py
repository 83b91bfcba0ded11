"""Tokens and purposes: every refusal of API.md section 2 that happens before anything is read."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from server.settings import Settings
from tests.conftest import Gql, error_codes

QUERY = "{ me { id role } }"
GRAPHQL_RESPONSE = "application/graphql-response+json"


async def post(
    client: httpx.AsyncClient, headers: dict[str, str], accept: str = GRAPHQL_RESPONSE
) -> tuple[int, dict[str, Any]]:
    response = await client.post("/graphql", json={"query": QUERY}, headers={"Accept": accept, **headers})
    return response.status_code, response.json()


def signed(settings: Settings, claims: dict[str, Any], key: str | None = None, alg: str = "HS256") -> str:
    return jwt.encode(claims, key or settings.development_jwt_secret(), algorithm=alg)


def fresh_claims(user_id: uuid.UUID, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user_id), "purposes": ["INSTRUCTION"], "iat": now, "exp": now + 300, **extra}


async def expect(client: httpx.AsyncClient, headers: dict[str, str], code: str, status: int) -> dict[str, Any]:
    got_status, body = await post(client, headers)
    assert got_status == status, body
    assert error_codes(body) == [code]
    assert "data" not in body or body["data"] is None
    return body


async def test_a_request_without_a_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    await expect(client, {"X-Purpose": "INSTRUCTION"}, "UNAUTHENTICATED", 401)


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Basic abc", "Bearer not.a.jwt", "Bearer a.b.c", "token"])
async def test_a_malformed_authorization_header_is_unauthenticated(client: httpx.AsyncClient, value: str) -> None:
    await expect(client, {"Authorization": value, "X-Purpose": "INSTRUCTION"}, "UNAUTHENTICATED", 401)


async def test_two_authorization_headers_are_unauthenticated_whichever_comes_first(
    client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    teacher = signed(settings, fresh_claims(users["teacher1@northwind.example"]))
    admin = signed(settings, fresh_claims(users["admin@northwind.example"]))
    for first, second in ((teacher, admin), (admin, teacher), (teacher, teacher)):
        headers = [
            ("Authorization", f"Bearer {first}"),
            ("Authorization", f"Bearer {second}"),
            ("X-Purpose", "INSTRUCTION"),
            ("Accept", GRAPHQL_RESPONSE),
        ]
        response = await client.post("/graphql", json={"query": QUERY}, headers=headers)
        assert response.status_code == 401 and error_codes(response.json()) == ["UNAUTHENTICATED"], response.text
        assert "data" not in response.json() or response.json()["data"] is None


async def test_an_expired_token_is_unauthenticated(
    client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    claims = fresh_claims(users["teacher1@northwind.example"], exp=int(time.time()) - 3600)
    await expect(
        client,
        {"Authorization": f"Bearer {signed(settings, claims)}", "X-Purpose": "INSTRUCTION"},
        "UNAUTHENTICATED",
        401,
    )


async def test_a_token_signed_with_another_secret_is_unauthenticated(
    client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    token = signed(
        settings, fresh_claims(users["teacher1@northwind.example"]), key="another-secret-of-enough-length-0123"
    )
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}, "UNAUTHENTICATED", 401)


async def test_an_unsigned_alg_none_token_is_unauthenticated(
    client: httpx.AsyncClient, users: dict[str, uuid.UUID]
) -> None:
    token = jwt.encode(fresh_claims(users["teacher1@northwind.example"]), None, algorithm="none")
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}, "UNAUTHENTICATED", 401)


async def test_a_token_without_expiry_is_unauthenticated(
    client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    claims = fresh_claims(users["teacher1@northwind.example"])
    del claims["exp"]
    await expect(
        client,
        {"Authorization": f"Bearer {signed(settings, claims)}", "X-Purpose": "INSTRUCTION"},
        "UNAUTHENTICATED",
        401,
    )


async def test_a_token_for_an_unknown_user_is_unauthenticated(client: httpx.AsyncClient, settings: Settings) -> None:
    token = signed(settings, fresh_claims(uuid.uuid4()))
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}, "UNAUTHENTICATED", 401)


async def test_a_disabled_user_loses_access_at_once(
    client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID], owner: Any
) -> None:
    user_id = users["teacher2@northwind.example"]
    token = signed(settings, fresh_claims(user_id))
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}
    status, body = await post(client, headers)
    assert status == 200 and body["data"]["me"]["role"] == "TEACHER"
    await owner.execute("UPDATE users SET disabled = true WHERE id = $1", user_id)
    try:
        await expect(client, headers, "UNAUTHENTICATED", 401)
    finally:
        await owner.execute("UPDATE users SET disabled = false WHERE id = $1", user_id)


async def test_a_missing_purpose_is_purpose_required(client: httpx.AsyncClient, token_for: Any) -> None:
    token = token_for("teacher1@northwind.example")
    await expect(client, {"Authorization": f"Bearer {token}"}, "PURPOSE_REQUIRED", 400)
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": "  "}, "PURPOSE_REQUIRED", 400)


@pytest.mark.parametrize("purpose", ["ADVERTISING", "MARKETING", "instruction", "SALE"])
async def test_a_purpose_outside_the_enum_is_purpose_unknown(
    client: httpx.AsyncClient, token_for: Any, purpose: str
) -> None:
    token = token_for("teacher1@northwind.example")
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": purpose}, "PURPOSE_UNKNOWN", 400)


@pytest.mark.parametrize("purpose", [b"INSTRUCTION\xa0", b"\x85INSTRUCTION", b"INSTRUCTION\xc2\xa0"])
async def test_a_purpose_with_other_than_http_whitespace_around_it_is_purpose_unknown(
    client: httpx.AsyncClient, token_for: Any, purpose: bytes
) -> None:
    # HTTP trims spaces and tabs around a value; a no-break space or NEL is part of it.
    token = token_for("teacher1@northwind.example")
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": purpose, "Accept": GRAPHQL_RESPONSE}
    response = await client.post("/graphql", json={"query": QUERY}, headers=headers)
    assert response.status_code == 400 and error_codes(response.json()) == ["PURPOSE_UNKNOWN"], response.text


async def test_a_purpose_the_role_does_not_have_is_not_allowed(client: httpx.AsyncClient, token_for: Any) -> None:
    token = token_for("teacher1@northwind.example")
    await expect(
        client, {"Authorization": f"Bearer {token}", "X-Purpose": "PRODUCT_ANALYTICS"}, "PURPOSE_NOT_ALLOWED", 403
    )
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": "RECORD_ACCESS"}, "PURPOSE_NOT_ALLOWED", 403)


async def test_a_purpose_the_token_does_not_carry_is_not_allowed(client: httpx.AsyncClient, token_for: Any) -> None:
    token = token_for("teacher1@northwind.example", ["INSTRUCTION"])
    await expect(client, {"Authorization": f"Bearer {token}", "X-Purpose": "REPORTING"}, "PURPOSE_NOT_ALLOWED", 403)


async def test_allowed_purposes_are_the_roles_within_the_tokens(gql: Gql) -> None:
    body = await gql(
        "teacher1@northwind.example",
        "INSTRUCTION",
        "{ me { allowedPurposes } }",
        purposes=["INSTRUCTION", "REPORTING", "SUPPORT"],
    )
    assert body["data"]["me"]["allowedPurposes"] == ["INSTRUCTION", "REPORTING"]


async def test_legal_compliance_without_justification_is_refused(client: httpx.AsyncClient, token_for: Any) -> None:
    token = token_for("admin@northwind.example")
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "LEGAL_COMPLIANCE"}
    await expect(client, headers, "JUSTIFICATION_REQUIRED", 400)
    status, body = await post(client, {**headers, "X-Justification": "Subpoena 2026-114"})
    assert status == 200 and body["data"]["me"]["role"] == "DISTRICT_ADMIN"


async def test_application_json_clients_get_200_for_graphql_level_refusals_but_400_for_headers_and_401_for_tokens(
    client: httpx.AsyncClient, token_for: Any
) -> None:
    token = token_for("teacher1@northwind.example")
    bearer = {"Authorization": f"Bearer {token}"}
    # Header errors answer 400 whatever the Accept header (API.md section 1).
    status, body = await post(client, bearer, accept="application/json")
    assert status == 400 and error_codes(body) == ["PURPOSE_REQUIRED"]
    status, body = await post(client, {**bearer, "X-Purpose": "FUN"}, accept="application/json")
    assert status == 400 and error_codes(body) == ["PURPOSE_UNKNOWN"]
    admin = {"Authorization": f"Bearer {token_for('admin@northwind.example')}", "X-Purpose": "LEGAL_COMPLIANCE"}
    status, body = await post(client, admin, accept="application/json")
    assert status == 400 and error_codes(body) == ["JUSTIFICATION_REQUIRED"]
    # The policy's refusal of a purpose the role does not have is GraphQL-level: 200.
    status, body = await post(client, {**bearer, "X-Purpose": "LEGAL_COMPLIANCE"}, accept="application/json")
    assert status == 200 and error_codes(body) == ["PURPOSE_NOT_ALLOWED"]
    status, body = await post(client, {"X-Purpose": "INSTRUCTION"}, accept="application/json")
    assert status == 401 and error_codes(body) == ["UNAUTHENTICATED"]


async def test_the_public_policy_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ policyVersions policy { version rules { role purpose } } }"}
    )
    body = response.json()
    assert "errors" not in body
    assert "2020-04-01" in body["data"]["policyVersions"]
    assert len(body["data"]["policy"]["rules"]) == 23


async def test_error_messages_carry_no_token_or_personal_data(
    client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    token = signed(
        settings, fresh_claims(users["student1@northwind.example"]), key="wrong-secret-of-enough-length-0123456"
    )
    _, body = await post(client, {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"})
    text = str(body)
    assert token not in text and str(users["student1@northwind.example"]) not in text
    assert "student1" not in text
