"""The trace an operator command leaves in the audit trail (API.md section 3).

``pledgeql export``, ``pledgeql roster import`` and ``pledgeql retention run``
read or change students' data outside any request. Each writes one entry per
district whose data it read or changed (a dry run writes none): actorRole
OPERATOR, actorId the nil UUID, the command as operationName, ``user@host``
of the operating system as justification, the tables as fields, no subject,
breakGlass false. The entries are chained like every other (under the
district's chain lock, with the audit key), in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import uuid
from collections.abc import Iterable, Mapping

from permissions.audit import PendingEntry
from permissions.audit_chain import Origin
from permissions.enums import DataCategory, Purpose, Role
from resolvers.audit_store import write_entries
from server.telemetry import current_trace_id

OPERATOR_ID = uuid.UUID(int=0)


def operator_identity() -> str:
    """``user@host`` of the operating system that runs the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a bare container)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def operator_origin(command: str, purpose: Purpose, now: dt.datetime | None = None) -> Origin:
    return Origin(
        at=now or dt.datetime.now(dt.UTC),
        request_id=uuid.uuid4().hex,
        client_request_id=None,
        actor_id=OPERATOR_ID,
        actor_role=Role.OPERATOR.value,
        purpose=purpose.value,
        justification=operator_identity(),
        operation_name=command,
        break_glass=False,
    )


async def record_operator_command(
    conn: object,
    key: bytes,
    command: str,
    purpose: Purpose,
    tables: Mapping[uuid.UUID, Iterable[str]],
    categories: Mapping[uuid.UUID, Iterable[DataCategory]] | None = None,
) -> None:
    """One entry per district of ``tables`` (district -> the tables read or changed there).

    Call it inside a transaction on the owner connection ``conn``."""
    entries = [
        PendingEntry(
            str(district),
            None,
            True,
            tuple(dict.fromkeys(names)),
            tuple(dict.fromkeys(c.value for c in (categories or {}).get(district, ()))),
        )
        for district, names in tables.items()
    ]
    await write_entries(conn, operator_origin(command, purpose), entries, key, current_trace_id())
