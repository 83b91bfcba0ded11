"""Error codes of API.md section 2, and the exceptions that carry them."""

from __future__ import annotations

import unicodedata
from typing import Any

# code -> HTTP status when the client accepts application/graphql-response+json
STATUS = {
    "UNAUTHENTICATED": 401,
    "PURPOSE_REQUIRED": 400,
    "PURPOSE_UNKNOWN": 400,
    "PURPOSE_NOT_ALLOWED": 403,
    "JUSTIFICATION_REQUIRED": 400,
    "DIRECT_ACCESS_DISABLED": 403,
    "FORBIDDEN": 200,
    "NOT_FOUND": 200,
    "BAD_USER_INPUT": 400,
    "QUERY_TOO_COMPLEX": 400,
    "OPERATION_NOT_ALLOWED": 400,
    "PERSISTED_QUERY_NOT_FOUND": 404,
    "RATE_LIMITED": 429,
    "AUDIT_UNAVAILABLE": 503,
    "DATABASE_UNAVAILABLE": 503,
    "INTERNAL": 500,
    "METHOD_NOT_ALLOWED": 405,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "PAYLOAD_TOO_LARGE": 413,
}

# Statuses every client gets, whatever it accepts: failures of the transport,
# of authentication, or of the server itself, not of the GraphQL document.
TRANSPORT_CODES = frozenset(
    {
        "UNAUTHENTICATED",
        "RATE_LIMITED",
        "AUDIT_UNAVAILABLE",
        "DATABASE_UNAVAILABLE",
        "INTERNAL",
        "METHOD_NOT_ALLOWED",
        "UNSUPPORTED_MEDIA_TYPE",
        "PAYLOAD_TOO_LARGE",
    }
)


class RequestError(Exception):
    """A request refused before execution: one error, no data."""

    def __init__(self, code: str, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions

    def body(self) -> dict[str, Any]:
        return {"errors": [{"message": self.message, "extensions": self.extensions_dict()}]}

    def extensions_dict(self) -> dict[str, Any]:
        return {"code": self.code, **self.extensions}


class FieldError(Exception):
    """An error on one field: the field is null, the rest of the response stands."""

    code = "INTERNAL"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.extensions = {"code": self.code, **extensions}


class NotFound(FieldError):
    code = "NOT_FOUND"


class Forbidden(FieldError):
    code = "FORBIDDEN"


# A FORBIDDEN's sentence by its reason: what stands in the way differs, and so does what the caller
# can do about it (ask under another purpose, ask the district, wait for a grant).
_REFUSALS = {
    "PURPOSE_NOT_ALLOWED_FOR_CATEGORY": "The policy does not allow {what} for purpose {purpose}",
    "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT": "The district has not authorized purpose {purpose} for {what}",
    "POLICY_VERSION_NOT_ACCEPTED": "{what} for purpose {purpose} needs a policy version the district has not accepted",
    "NOT_COLLECTED": "The district does not collect {what}",
    "NO_SUPPORT_GRANT": "{what} is open to support only under the district's active support grant",
    "OUT_OF_SCOPE_OPERATION": "{what} is not part of purpose {purpose} for this role",
}


def refusal_message(what: str, purpose: str, reason: str) -> str:
    """The message of a FORBIDDEN about ``what`` ("DIRECTORY data", "operation exportStudentRecord")."""
    sentence = _REFUSALS.get(reason, _REFUSALS["PURPOSE_NOT_ALLOWED_FOR_CATEGORY"]).format(what=what, purpose=purpose)
    return sentence[0].upper() + sentence[1:]


class BadUserInput(FieldError):
    code = "BAD_USER_INPUT"


def is_printable(text: str) -> bool:
    """API.md's "printable": no control character (U+0000 to U+001F and U+007F). The rule of
    its client headers, and of the text a caller gives that the audit records."""
    return not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


# A person's name (a correction's, a roster's): one line of at most this many characters.
MAX_NAME = 100


def is_plain_text(text: str, breaks: str = "") -> bool:
    """No control character (C0 or C1) and no line or paragraph separator, but those in
    ``breaks`` (where a text may run over lines). Letters, marks and joiners of any script pass."""
    return not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch not in breaks for ch in text)


class NotAvailable(FieldError):
    code = "NOT_IMPLEMENTED"
