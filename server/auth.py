"""Tokens: minting (development) and verification.

The token says only who the caller is (``sub``) and which purposes its client
application may declare (``purposes``). Role, district and relationships are
read from the database on every request.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from server.errors import RequestError
from server.settings import Settings

ASYMMETRIC = ("RS256", "ES256")
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    purposes: frozenset[str]


def _unauthenticated(
    message: str = "Sign in again: the token is missing or not valid",
) -> RequestError:
    return RequestError("UNAUTHENTICATED", message)


class TokenVerifier:
    """Verifies bearer tokens with one pinned algorithm family."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self._keys: dict[str | None, Any] = {}
        if settings.jwks_file or settings.jwt_public_key_file:
            self.algorithms = list(ASYMMETRIC)
            if settings.jwks_file:
                jwks = json.loads(Path(settings.jwks_file).read_text())
                for jwk in jwks.get("keys", []):
                    key = jwt.PyJWK(jwk)
                    self._keys[jwk.get("kid")] = key.key
            if settings.jwt_public_key_file:
                self._keys[None] = Path(settings.jwt_public_key_file).read_bytes()
        else:
            if settings.is_production and not settings.jwt_secret:
                raise SystemExit(
                    "Production needs PLEDGEQL_JWT_PUBLIC_KEY_FILE or PLEDGEQL_JWKS_FILE "
                    "(or, for HS256, PLEDGEQL_JWT_SECRET)"
                )
            self.algorithms = ["HS256"]
            self._keys[None] = settings.development_jwt_secret()

    def _key_for(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated() from None
        if header.get("alg") not in self.algorithms:
            raise _unauthenticated()
        kid = header.get("kid")
        if kid is not None and kid in self._keys:
            return self._keys[kid]
        if kid is not None and None not in self._keys:
            raise _unauthenticated()
        if None in self._keys:
            return self._keys[None]
        raise _unauthenticated()

    def verify(self, authorization: str | None) -> TokenClaims:
        if not authorization:
            raise _unauthenticated("Sign in: this request needs a bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("Send the token as 'Authorization: Bearer <token>'")
        token = token.strip()
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError:
            raise _unauthenticated() from None
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise _unauthenticated() from None
        raw = claims.get("purposes", [])
        if isinstance(raw, str):
            raw = [p for p in raw.replace(",", " ").split() if p]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise _unauthenticated()
        return TokenClaims(user_id=user_id, purposes=frozenset(raw))


def mint_token(settings: Settings, user_id: uuid.UUID, purposes: list[str], ttl_seconds: int = 3600) -> str:
    """A development HS256 token; refused in production."""
    if settings.is_production:
        raise SystemExit("Token minting is off in production: tokens come from the identity provider")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "purposes": purposes,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.development_jwt_secret(), algorithm="HS256")
