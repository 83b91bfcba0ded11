"""What a request's failure means when its transaction cannot finish: fail closed.

No response leaves unless its audit entries are written. A request whose
audit cannot be written gets AUDIT_UNAVAILABLE; one whose database cannot be
reached gets DATABASE_UNAVAILABLE; any other failure (a refusal, a bug) is
raised as it is. /graphql and the subscriptions both tell these apart here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
import sqlalchemy.exc

from permissions.errors import RequestError

log = logging.getLogger("pledgeql.http")

UNAVAILABLE_MESSAGE = "The database cannot be reached; try again shortly"
AUDIT_UNAVAILABLE_MESSAGE = "The audit trail cannot be written right now, so no data is returned; retry shortly"


class AuditUnavailable(Exception):
    """The audit entries of a request could not be written."""


class TransactionEnded(Exception):
    """A request's transaction ended without committing."""


def raised_during(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` was raised while handling (or because of) an error of ``kind``."""
    seen: BaseException | None = error
    for _ in range(10):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
    return False


def is_connection_error(error: BaseException | None) -> bool:
    """Whether ``error`` means the database cannot be reached (as opposed to a bug or a refusal)."""
    while error is not None:
        if isinstance(
            error,
            OSError
            | asyncio.TimeoutError
            | asyncpg.exceptions.PostgresConnectionError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.AdminShutdownError
            | asyncpg.exceptions.CrashShutdownError
            | asyncpg.exceptions.TooManyConnectionsError
            | sqlalchemy.exc.TimeoutError,
        ):
            return True
        if isinstance(error, asyncpg.exceptions.InterfaceError) and "connection" in str(error).lower():
            return True
        if isinstance(error, asyncpg.exceptions.InternalClientError):
            # The protocol is in a state no statement can leave (for one, "cannot switch to
            # state 15; another operation (2) is in progress": the backend's FATAL arrived
            # while the connection sat idle): the connection is gone, whatever is_closed() says.
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__ or getattr(error, "orig", None)
    return False


def unavailable(error: Exception) -> RequestError | None:
    """The error a request's failed transaction is answered with; None to raise ``error`` as it is.

    AUDIT_UNAVAILABLE when the audit write failed, or when ending the
    transaction failed too while the request was failing for want of its
    audit (the database went away meanwhile); a refusal (RequestError) as
    it is; DATABASE_UNAVAILABLE when the database cannot be reached; any
    other error (a bug) as it is.
    """
    if isinstance(error, AuditUnavailable):
        return RequestError("AUDIT_UNAVAILABLE", AUDIT_UNAVAILABLE_MESSAGE)
    if isinstance(error, RequestError):
        return None
    if raised_during(error, AuditUnavailable):
        return RequestError("AUDIT_UNAVAILABLE", AUDIT_UNAVAILABLE_MESSAGE)
    if not is_connection_error(error):
        return None
    log.warning("Database unreachable: %s", type(error).__name__)
    return RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE)


def end_transaction(after_commit: list[Callable[[BaseException | None], None]], committed: bool) -> None:
    """Tell the queries whose audit entries a transaction wrote (its ``after_commit``
    callbacks, server.audit_writer's group commit) whether it committed, once.

    The list is emptied first: a leader's callback holds its own request's
    context, whose list holds the callback, and that cycle would keep every
    request's objects until the garbage collector found it."""
    outcome = None if committed else TransactionEnded()
    callbacks = after_commit[:]
    after_commit.clear()
    for callback in callbacks:
        callback(outcome)
