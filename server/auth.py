"""Tokens: minting (development) and verification.

The token says only who the caller is (``sub``) and which purposes its client
application may declare (``purposes``). Role, district and relationships are
read from the database on every request.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from permissions.errors import RequestError
from server.settings import Settings

log = logging.getLogger("pledgeql.auth")

ASYMMETRIC = ("RS256", "ES256")
LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 8192
# Tokens a worker keeps as verified (TokenVerifier.verify): a client sends the
# same token with every request until it expires.
VERIFIED_TOKENS = 1024


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    purposes: frozenset[str]
    # `exp` as a POSIX time: a subscription ends when its token does.
    expires_at: float | None = None


@dataclass(frozen=True)
class VerificationKey:
    key: Any
    algorithm: str


def _unauthenticated(
    message: str = "Sign in again: the token is missing or not valid",
) -> RequestError:
    return RequestError("UNAUTHENTICATED", message)


def _algorithm_of(key: Any) -> str | None:
    """The one algorithm a public key may verify: RS256 for RSA, ES256 for P-256."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256" if key.key_size >= 2048 else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ES256" if isinstance(key.curve, ec.SECP256R1) else None
    return None


def load_public_key(path: str) -> VerificationKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise SystemExit(f"PLEDGEQL_JWT_PUBLIC_KEY_FILE {path}: not a readable PEM public key ({error})") from None
    algorithm = _algorithm_of(key)
    if algorithm is None:
        raise SystemExit(f"PLEDGEQL_JWT_PUBLIC_KEY_FILE {path}: use an RSA key of 2048 bits or more, or a P-256 EC key")
    return VerificationKey(key, algorithm)


def load_jwks(path: str) -> dict[str, VerificationKey]:
    """The signing keys of a JWKS file by ``kid``; keys for other uses or algorithms are left out.

    PyJWT's ``PyJWKSet`` reads the set (skipping keys it cannot use); each key
    keeps the one algorithm its type implies, and a key whose declared ``alg``
    differs from it is left out, so no token can pick another algorithm for it."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"PLEDGEQL_JWKS_FILE {path}: not a readable JSON Web Key Set ({error})") from None
    listed = document.get("keys") if isinstance(document, dict) else None
    try:
        jwk_set = jwt.PyJWKSet(listed if isinstance(listed, list) else [])
    except jwt.PyJWTError:
        jwk_set = None
    keys: dict[str, VerificationKey] = {}
    for jwk in jwk_set.keys if jwk_set is not None else []:
        if not isinstance(jwk.key_id, str) or (jwk.public_key_use or "sig") != "sig":
            continue
        algorithm = _algorithm_of(jwk.key)
        if algorithm is not None and jwk.algorithm_name == algorithm:
            keys[jwk.key_id] = VerificationKey(jwk.key, algorithm)
    if not keys:
        raise SystemExit(f"PLEDGEQL_JWKS_FILE {path}: no RS256 or ES256 signing key with a 'kid'")
    return keys


class TokenVerifier:
    """Verifies bearer tokens against one pinned algorithm family.

    Development: HS256 with the configured or generated secret. Production:
    RS256/ES256 only, against a public key file and/or a JWKS file (one key
    per ``kid``; the file is read again when a token names a ``kid`` it does
    not hold and the file has changed, so keys rotate without a restart), with
    ``iss`` and ``aud`` required and checked. Each key verifies with its own
    algorithm only, so neither ``alg: none`` nor an HS256 token made with a
    public key as its secret gets through.

    A token that verified is kept, with its claims, for its next requests
    (``VERIFIED_TOKENS`` per worker, the oldest dropped first): the signature
    and the claims that held then still hold, except ``exp``, which is checked
    again on each use as PyJWT checks it. Reading the keys again forgets them
    all, so a token is never kept past the key that verified it.
    """

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self._jwks_file = settings.jwks_file
        self._jwks_mtime = 0.0
        self._by_kid: dict[str, VerificationKey] = {}
        self._default: VerificationKey | None = None
        self._verified: dict[str, TokenClaims] = {}
        if settings.jwks_file or settings.jwt_public_key_file:
            self.algorithms = list(ASYMMETRIC)
            if settings.jwks_file:
                self._load_jwks()
            if settings.jwt_public_key_file:
                self._default = load_public_key(settings.jwt_public_key_file)
        else:
            if settings.is_production:
                raise SystemExit(
                    "Production verifies RS256/ES256 tokens only: "
                    "set PLEDGEQL_JWT_PUBLIC_KEY_FILE or PLEDGEQL_JWKS_FILE"
                )
            self.algorithms = ["HS256"]
            self._default = VerificationKey(settings.development_jwt_secret(), "HS256")
        if settings.is_production and not (self.issuer and self.audience):
            raise SystemExit("Production checks who issued a token and for whom: set PLEDGEQL_JWT_ISSUER and _AUDIENCE")

    def _load_jwks(self) -> None:
        if self._jwks_file is None:
            return
        path = Path(self._jwks_file)
        self._jwks_mtime = path.stat().st_mtime if path.exists() else 0.0
        self._by_kid = load_jwks(self._jwks_file)
        self._verified.clear()

    def _reload_if_changed(self) -> None:
        if self._jwks_file is None:
            return
        try:
            mtime = Path(self._jwks_file).stat().st_mtime
        except OSError:
            return
        if mtime != self._jwks_mtime:
            try:
                self._load_jwks()
            except SystemExit as error:  # a half-written file: keep the keys we have
                log.warning("JWKS reload failed: %s", error)

    def _key_for(self, token: str) -> VerificationKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated() from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise _unauthenticated()
        kid = header.get("kid")
        key: VerificationKey | None
        if kid is not None and self._jwks_file is not None:
            if not isinstance(kid, str):
                raise _unauthenticated()
            key = self._by_kid.get(kid)
            if key is None:
                self._reload_if_changed()
                key = self._by_kid.get(kid)
        else:
            key = self._default
        if key is None or key.algorithm != algorithm:
            raise _unauthenticated()
        return key

    def verify(self, authorization: str | None) -> TokenClaims:
        if not authorization:
            raise _unauthenticated("Sign in: this request needs a bearer token")
        if len(authorization) > MAX_TOKEN_BYTES:
            raise _unauthenticated()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("Send the token as 'Authorization: Bearer <token>'")
        token = token.strip()
        kept = self._verified.get(token)
        if kept is not None:
            # PyJWT's test: the expiry, in whole seconds, later than now less the leeway.
            if kept.expires_at is not None and int(kept.expires_at) > time.time() - LEEWAY_SECONDS:
                return kept
            del self._verified[token]
        key = self._key_for(token)
        required = ["exp", "sub"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError:
            raise _unauthenticated() from None
        # RFC 7519: a NumericDate is a JSON number; PyJWT also reads a string of digits.
        if any(not _is_number(claims[name]) for name in ("exp", "nbf", "iat") if name in claims):
            raise _unauthenticated()
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise _unauthenticated() from None
        raw = claims.get("purposes", [])
        if isinstance(raw, str):
            raw = [p for p in raw.replace(",", " ").split() if p]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise _unauthenticated()
        # ``exp`` is required, and a number (checked above).
        verified = TokenClaims(user_id=user_id, purposes=frozenset(raw), expires_at=float(claims["exp"]))
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = verified
        return verified


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
