"""Production tokens: RS256/ES256 against a JWKS file (rotation by kid) or a
public key file, iss and aud checked, a small leeway, and every refusal.

The keys are generated here with `cryptography`; the server runs in
production mode against the module's copy of the demo database.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from permissions.errors import RequestError
from server.app import create_app
from server.auth import LEEWAY_SECONDS, TokenVerifier, load_jwks
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import error_codes

ISSUER = "https://id.pledgeql.example"
AUDIENCE = "pledgeql-api"
QUERY = "query Me { me { id role } }"
GRAPHQL_RESPONSE = "application/graphql-response+json"
TEACHER = "teacher1@northwind.example"


@dataclass
class Keys:
    rsa_private: rsa.RSAPrivateKey
    rsa_next: rsa.RSAPrivateKey
    ec_private: ec.EllipticCurvePrivateKey
    stranger: rsa.RSAPrivateKey
    jwks_file: Path
    public_pem_file: Path
    operations_dir: Path

    @property
    def rsa_public_pem(self) -> bytes:
        return self.rsa_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def write_jwks(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"keys": entries}))
    # A distinct modification time even within the filesystem's timestamp granularity.
    stamp = time.time() + len(entries)
    os.utime(path, (stamp, stamp))


def make_keys(folder: Path) -> Keys:
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = Keys(
        rsa_private=rsa_private,
        rsa_next=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_private=ec.generate_private_key(ec.SECP256R1()),
        stranger=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        jwks_file=folder / "jwks.json",
        public_pem_file=folder / "public.pem",
        operations_dir=folder / "operations",
    )
    write_jwks(keys.jwks_file, [public_jwk(rsa_private, "k1", "RS256"), public_jwk(keys.ec_private, "e1", "ES256")])
    keys.public_pem_file.write_bytes(keys.rsa_public_pem)
    keys.operations_dir.mkdir()
    (keys.operations_dir / "me.graphql").write_text(QUERY + "\n")
    return keys


PRODUCTION_AUDIT_KEY = "production-audit-key-for-tests-0123456789abcdef"


def production(settings: Settings, keys: Keys, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "production",
        "jwt_secret": None,
        "jwks_file": str(keys.jwks_file),
        "jwt_public_key_file": None,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "operations_dir": keys.operations_dir,
        # Production chains under a configured key only (API.md section 5). Queries the
        # planner refuses take the resolver path here, until every read is compiled
        # (issue 13; tests/test_startup_planning.py starts production strictly).
        "extra": {**settings.extra, "audit_key": PRODUCTION_AUDIT_KEY, "unplanned_operations": "resolvers"},
        **changes,
    }
    return dataclasses.replace(settings, **values)


def claims_for(user_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "purposes": ["INSTRUCTION"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: Any, claims: dict[str, Any], kid: str | None = "k1", alg: str = "RS256") -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_hs256(secret: bytes, claims: dict[str, Any], kid: str | None = "k1") -> str:
    """An HS256 token made by hand (PyJWT itself refuses a PEM key as an HMAC secret)."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest_asyncio.fixture(scope="module")
async def prod_client(settings: Settings, db: DatabaseUrls, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(production(settings, keys), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


async def call(client: httpx.AsyncClient, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/graphql",
        json={"query": QUERY},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "Accept": GRAPHQL_RESPONSE},
    )
    return response.status_code, response.json()


async def refused(client: httpx.AsyncClient, token: str) -> None:
    status, body = await call(client, token)
    assert status == 401, body
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert body.get("data") is None


async def test_an_rs256_token_from_the_jwks_is_accepted(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    status, body = await call(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER])))
    assert status == 200, body
    assert body["data"]["me"]["role"] == "TEACHER"


async def test_an_es256_token_from_the_jwks_is_accepted(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    status, body = await call(prod_client, sign(keys.ec_private, claims_for(users[TEACHER]), kid="e1", alg="ES256"))
    assert status == 200, body


async def test_an_expired_token_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    past = int(time.time()) - LEEWAY_SECONDS - 60
    await refused(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER], exp=past, iat=past - 300)))


async def test_a_token_expired_within_the_leeway_is_still_accepted(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    just = int(time.time()) - LEEWAY_SECONDS // 3
    status, body = await call(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER], exp=just)))
    assert status == 200, body


async def test_a_token_not_yet_valid_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    future = int(time.time()) + LEEWAY_SECONDS + 120
    await refused(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER], nbf=future, exp=future + 300)))


async def test_a_token_issued_in_the_future_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    future = int(time.time()) + LEEWAY_SECONDS + 120
    await refused(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER], iat=future, nbf=None)))


async def test_a_token_without_expiry_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    claims = claims_for(users[TEACHER])
    del claims["exp"]
    await refused(prod_client, sign(keys.rsa_private, claims))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_a_time_claim_that_is_not_a_json_number_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID], claim: str
) -> None:
    """RFC 7519: a NumericDate is a JSON number; PyJWT alone reads a string of digits as one."""
    claims = claims_for(users[TEACHER])
    status, body = await call(prod_client, sign(keys.rsa_private, claims))
    assert status == 200, body  # the same token with numbers: accepted
    await refused(prod_client, sign(keys.rsa_private, {**claims, claim: str(claims[claim])}))
    await refused(prod_client, sign(keys.rsa_private, {**claims, claim: True}))


@pytest.mark.parametrize("issuer", ["https://evil.example", "", None])
async def test_a_token_from_another_or_no_issuer_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID], issuer: str | None
) -> None:
    claims = claims_for(users[TEACHER])
    if issuer is None:
        del claims["iss"]
    else:
        claims["iss"] = issuer
    await refused(prod_client, sign(keys.rsa_private, claims))


@pytest.mark.parametrize("audience", ["another-api", ["another-api"], None])
async def test_a_token_for_another_or_no_audience_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID], audience: Any
) -> None:
    claims = claims_for(users[TEACHER])
    if audience is None:
        del claims["aud"]
    else:
        claims["aud"] = audience
    await refused(prod_client, sign(keys.rsa_private, claims))


async def test_a_token_naming_an_unknown_kid_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    await refused(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER]), kid="k-unknown"))


async def test_a_token_without_kid_is_refused_when_only_a_jwks_is_configured(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    await refused(prod_client, sign(keys.rsa_private, claims_for(users[TEACHER]), kid=None))


async def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    await refused(prod_client, sign(keys.stranger, claims_for(users[TEACHER]), kid="k1"))


async def test_an_es256_token_under_an_rsa_kid_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    await refused(prod_client, sign(keys.ec_private, claims_for(users[TEACHER]), kid="k1", alg="ES256"))


async def test_an_hs256_token_is_refused_by_an_rs256_server(
    prod_client: httpx.AsyncClient, settings: Settings, users: dict[str, uuid.UUID]
) -> None:
    secret = settings.jwt_secret or "a-development-secret-of-enough-length-0123"
    token = jwt.encode(claims_for(users[TEACHER]), secret, algorithm="HS256", headers={"kid": "k1"})
    await refused(prod_client, token)


@pytest.mark.parametrize("kid", ["k1", None])
async def test_an_hs256_token_signed_with_the_public_key_as_secret_is_refused(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID], kid: str | None
) -> None:
    await refused(prod_client, forged_hs256(keys.rsa_public_pem, claims_for(users[TEACHER]), kid=kid))


@pytest.mark.parametrize("kid", ["k1", None])
async def test_an_alg_none_token_is_refused(
    prod_client: httpx.AsyncClient, users: dict[str, uuid.UUID], kid: str | None
) -> None:
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    token = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims_for(users[TEACHER])).encode()) + "."
    await refused(prod_client, token)


async def test_a_new_kid_in_the_rewritten_jwks_is_accepted_without_a_restart(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    token = sign(keys.rsa_next, claims_for(users[TEACHER]), kid="k2")
    await refused(prod_client, token)
    original = keys.jwks_file.read_text()
    try:
        write_jwks(
            keys.jwks_file,
            [
                public_jwk(keys.rsa_private, "k1", "RS256"),
                public_jwk(keys.ec_private, "e1", "ES256"),
                public_jwk(keys.rsa_next, "k2", "RS256"),
            ],
        )
        status, body = await call(prod_client, token)
        assert status == 200, body
    finally:
        keys.jwks_file.write_text(original)
        stamp = time.time() + 10
        os.utime(keys.jwks_file, (stamp, stamp))


# ---------------------------------------------------------- the verifier alone


def verifier(settings: Settings, keys: Keys, **changes: Any) -> TokenVerifier:
    return TokenVerifier(production(settings, keys, **changes))


def test_a_public_key_file_accepts_its_own_tokens_with_or_without_kid(
    settings: Settings, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    check = verifier(settings, keys, jwks_file=None, jwt_public_key_file=str(keys.public_pem_file))
    for kid in (None, "anything"):
        claims = check.verify("Bearer " + sign(keys.rsa_private, claims_for(users[TEACHER]), kid=kid))
        assert claims.user_id == users[TEACHER]
    with pytest.raises(RequestError) as refusal:
        check.verify("Bearer " + sign(keys.stranger, claims_for(users[TEACHER]), kid=None))
    assert refusal.value.code == "UNAUTHENTICATED"
    with pytest.raises(RequestError):
        check.verify("Bearer " + forged_hs256(keys.rsa_public_pem, claims_for(users[TEACHER]), kid=None))


def test_production_refuses_to_start_without_a_public_key(settings: Settings, keys: Keys) -> None:
    with pytest.raises(SystemExit, match="RS256/ES256"):
        verifier(settings, keys, jwks_file=None, jwt_secret="an-hs256-secret-of-enough-length-0123456")


@pytest.mark.parametrize("missing", ["jwt_issuer", "jwt_audience"])
def test_production_refuses_to_start_without_issuer_and_audience(settings: Settings, keys: Keys, missing: str) -> None:
    with pytest.raises(SystemExit, match="ISSUER"):
        verifier(settings, keys, **{missing: None})


def test_a_jwks_without_usable_signing_keys_stops_the_server(settings: Settings, tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused on purpose
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(weak, "weak", "RS256")]}))
    with pytest.raises(SystemExit, match="no RS256 or ES256"):
        TokenVerifier(dataclasses.replace(settings, jwks_file=str(path)))


def test_a_jwks_keeps_each_key_to_its_one_algorithm_and_leaves_out_the_rest(tmp_path: Path) -> None:
    good_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good_ec = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = public_jwk(good_rsa, "rsa", "RS256")
    ec_jwk = public_jwk(good_ec, "ec", "ES256")
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    rsa_jwk,
                    ec_jwk,
                    {**rsa_jwk, "kid": "rsa-as-ps256", "alg": "PS256"},  # another algorithm for an RSA key
                    {**rsa_jwk, "kid": "rsa-as-hs256", "alg": "HS256"},  # an RSA key named a shared secret
                    {**ec_jwk, "kid": "ec-for-encryption", "use": "enc"},
                    {"kty": "oct", "k": "c2VjcmV0", "kid": "shared", "alg": "HS256"},
                    {**{k: v for k, v in rsa_jwk.items() if k != "kid"}},  # no kid
                    "not a key",
                ]
            }
        )
    )
    keys = load_jwks(str(path))
    assert {kid: key.algorithm for kid, key in keys.items()} == {"rsa": "RS256", "ec": "ES256"}


def at_time(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    """The clock as the verifier and PyJWT read it, set to ``now``."""

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Clock:
            return cls.fromtimestamp(now, tz)

    monkeypatch.setattr(time, "time", lambda: now)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Clock)


def test_a_verified_token_is_kept_until_it_expires(
    settings: Settings, keys: Keys, users: dict[str, uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    check = verifier(settings, keys)
    expires = int(time.time()) + 120
    token = "Bearer " + sign(keys.rsa_private, claims_for(users[TEACHER], exp=expires))
    first = check.verify(token)
    decoded: list[str] = []
    original = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        decoded.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    assert check.verify(token) is first
    assert decoded == []  # the kept claims, not a second verification
    # Within the leeway after its expiry it is still accepted, as PyJWT accepts it ...
    at_time(monkeypatch, expires + LEEWAY_SECONDS - 1)
    assert check.verify(token) is first
    # ... and refused once past it, kept or not.
    at_time(monkeypatch, expires + LEEWAY_SECONDS + 1)
    with pytest.raises(RequestError) as refusal:
        check.verify(token)
    assert refusal.value.code == "UNAUTHENTICATED"
    assert len(decoded) == 1  # verified again, and refused by PyJWT's own check
    with pytest.raises(RequestError):
        check.verify(token)


def test_a_token_that_fails_is_not_kept_and_a_kept_one_vouches_for_no_other(
    settings: Settings, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    check = verifier(settings, keys)
    claims = claims_for(users[TEACHER])
    good = sign(keys.rsa_private, claims)
    forged = sign(keys.stranger, claims)
    assert check.verify("Bearer " + good).user_id == users[TEACHER]
    for _ in range(2):
        with pytest.raises(RequestError):
            check.verify("Bearer " + forged)
    # The same claims and header with the kept token's signature altered by one character.
    head, payload, signature = good.split(".")
    altered = ".".join((head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]))
    with pytest.raises(RequestError):
        check.verify("Bearer " + altered)


def test_reading_the_keys_again_forgets_the_kept_tokens(
    settings: Settings, keys: Keys, users: dict[str, uuid.UUID], tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [public_jwk(keys.rsa_private, "k1", "RS256")])
    check = verifier(settings, keys, jwks_file=str(jwks))
    old = "Bearer " + sign(keys.rsa_private, claims_for(users[TEACHER]), kid="k1")
    assert check.verify(old).user_id == users[TEACHER]
    # k1 is retired and k2 published; a token under k2 makes the server read the file again.
    write_jwks(jwks, [public_jwk(keys.rsa_next, "k2", "RS256")])
    new = "Bearer " + sign(keys.rsa_next, claims_for(users[TEACHER]), kid="k2")
    assert check.verify(new).user_id == users[TEACHER]
    with pytest.raises(RequestError) as refusal:
        check.verify(old)
    assert refusal.value.code == "UNAUTHENTICATED"
