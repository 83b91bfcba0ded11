"""CORS as API.md says: closed unless origins are listed; patterns for subdomains; no credentials."""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from server.settings import Settings

ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "X-Purpose",
    "X-Justification",
    "X-Request-Id",
    "Idempotency-Key",
    "X-Session-Id",
    # W3C trace context: a browser's spans join the server's.
    "traceparent",
    "tracestate",
    "baggage",
    # Apollo Client's client awareness headers.
    "apollographql-client-name",
    "apollographql-client-version",
)
EXPOSED_HEADERS = ("X-Request-Id", "Retry-After")
# An origin: scheme, host (a leading "*." for any subdomain), optional port; nothing else.
ORIGIN = re.compile(
    r"(?P<scheme>https?)://(?P<wild>\*\.)?(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?P<port>:\d{1,5})?"
)
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
SUBDOMAINS = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\."


def origin_rules(origins: tuple[str, ...], production: bool) -> tuple[list[str], str | None]:
    """The exact origins, and one regular expression for the patterns (``https://*.example.org``)."""
    if "*" in origins:
        if production:
            raise SystemExit("PLEDGEQL_CORS_ORIGINS may not be '*' in production: list the client origins")
        return ["*"], None
    exact: list[str] = []
    patterns: list[str] = []
    for origin in origins:
        match = ORIGIN.fullmatch(origin.rstrip("/"))
        if match is None:
            raise SystemExit(
                f"PLEDGEQL_CORS_ORIGINS: {origin!r} is not an origin; write scheme://host[:port], "
                "or https://*.example.org for every subdomain"
            )
        host = match["host"] + (match["port"] or "")
        if match["wild"]:
            patterns.append(re.escape(f"{match['scheme']}://") + SUBDOMAINS + re.escape(host))
        else:
            exact.append(f"{match['scheme']}://{host}")
    return exact, ("|".join(f"(?:{p})" for p in patterns) if patterns else None)


def allowed_headers(extra: tuple[str, ...]) -> list[str]:
    for name in extra:
        if not HEADER_NAME.fullmatch(name):
            raise SystemExit(f"PLEDGEQL_CORS_EXTRA_HEADERS: {name!r} is not a header name")
    return list(dict.fromkeys([*ALLOWED_HEADERS, *extra]))


def cors_options(settings: Settings) -> dict[str, Any]:
    """Starlette's CORSMiddleware options for these settings (refusing what API.md refuses)."""
    exact, pattern = origin_rules(settings.cors_origins, settings.is_production)
    return {
        "allow_origins": exact,
        "allow_origin_regex": pattern,
        "allow_methods": ["GET", "POST"],
        "allow_headers": allowed_headers(settings.cors_extra_headers),
        # Closed (no origin listed), no CORS header at all: nothing to expose to a page of any origin.
        "expose_headers": list(EXPOSED_HEADERS) if exact or pattern else [],
        "allow_credentials": False,
        "max_age": 600,
    }


class ApiCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as every error is (API.md section 2):
    JSON with its code, 400, rather than plain text. What it refuses is Starlette's to decide."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        # Starlette's text names what was refused (origin, method, headers), never a value.
        refused = bytes(response.body).decode("utf-8", "replace")
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        body = {
            "errors": [
                {"message": f"The CORS preflight was refused: {refused}", "extensions": {"code": "BAD_USER_INPUT"}}
            ]
        }
        return JSONResponse(body, 400, headers=headers)
