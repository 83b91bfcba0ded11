"""The request headers API.md's header table constrains, each in one small check.

A header that breaks a rule is refused before anything else is read, with
400 BAD_USER_INPUT whatever the client accepts (``HeaderError``). "Printable"
is API.md's word: no control character (U+0000 to U+001F and U+007F).
"""

from __future__ import annotations

from starlette.requests import Request

from permissions.enums import Purpose
from permissions.errors import RequestError, is_printable

MAX_JUSTIFICATION = 500
MAX_CLIENT_REQUEST_ID = 128


class HeaderError(RequestError):
    """A header that breaks API.md's header rules: 400 BAD_USER_INPUT for every client."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_USER_INPUT", message)


def header_text(raw: str) -> str:
    """A header's value as the client wrote it: ASGI servers hand headers over as
    bytes (Starlette decodes them as Latin-1); UTF-8 text is read as UTF-8."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def single_header(request: Request, name: str, label: str) -> str | None:
    """The one value of a header that may be sent once; sent twice is refused."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise HeaderError(f"Send the {label} header once; this request has {len(values)} of them")
    return values[0] if values else None


def authorization_header(request: Request) -> str | None:
    """The bearer credentials, or None (an empty header counts as absent: GraphiQL starts with one).
    Two Authorization headers are two credentials, and the server takes neither: UNAUTHENTICATED."""
    values = [v.strip() for v in request.headers.getlist("authorization") if v.strip()]
    if len(values) > 1:
        raise RequestError("UNAUTHENTICATED", "Send one Authorization header; this request has more than one")
    return values[0] if values else None


def client_request_id(request: Request) -> str | None:
    """The client's X-Request-Id (kept in the audit as clientRequestId), or None; empty counts as absent."""
    return checked_client_request_id(single_header(request, "x-request-id", "X-Request-Id"))


def checked_client_request_id(raw: str | None) -> str | None:
    """A client's request id as sent (an HTTP header, or a subscription's connection_init
    payload), checked against the header's rules; None when absent or empty."""
    if not raw:
        return None
    text = header_text(raw)
    if len(text) > MAX_CLIENT_REQUEST_ID or not is_printable(text):
        raise HeaderError(f"X-Request-Id must be at most {MAX_CLIENT_REQUEST_ID} printable characters")
    return text


def purpose_header(request: Request) -> str | None:
    """X-Purpose as sent: exactly one value (twice, or a list in one header, is refused)."""
    return one_purpose(single_header(request, "x-purpose", "X-Purpose"))


def one_purpose(raw: str | None) -> str | None:
    """An X-Purpose value (a header, or a subscription's connection_init payload): a list is refused."""
    if raw is not None and "," in raw:
        raise HeaderError("X-Purpose takes exactly one purpose, not a list")
    return raw


def justification_header(request: Request, purpose: Purpose) -> str | None:
    """X-Justification: accepted with LEGAL_COMPLIANCE only, at most 500 printable
    characters; an empty header counts as absent."""
    return checked_justification(single_header(request, "x-justification", "X-Justification"), purpose)


def checked_justification(raw: str | None, purpose: Purpose) -> str | None:
    """A justification as sent (an HTTP header, or a subscription's connection_init
    payload), checked against the same rules; None when absent or empty."""
    text = header_text(raw).strip() if raw else ""
    if not text:
        return None
    if purpose is not Purpose.LEGAL_COMPLIANCE:
        raise HeaderError("X-Justification is accepted only with X-Purpose: LEGAL_COMPLIANCE")
    if len(text) > MAX_JUSTIFICATION or not is_printable(text):
        raise HeaderError(f"X-Justification must be at most {MAX_JUSTIFICATION} printable characters")
    return text
