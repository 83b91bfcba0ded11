"""Writing a request's audit entries: one statement, chained per district, before the response leaves.

Each district has one chain: an entry stores its predecessor's hash and its
own, an HMAC-SHA256 over its canonical form under a key the database never
holds, so that whoever can write the table still cannot forge a chain that
verifies. Concurrent requests of one district serialise on a transaction-level
advisory lock while they append.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from server.context import RequestContext

GENESIS = "0" * 64
AuditWriter = Callable[[RequestContext], Awaitable[None]]


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes an entry's hash covers: every stored column but the hash itself."""
    return orjson.dumps(
        {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in entry.items() if k != "hash"},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC,
    )


def entry_hash(key: bytes, entry: dict[str, Any]) -> str:
    return hmac.new(key, canonical(entry), hashlib.sha256).hexdigest()


def lock_id(district_id: uuid.UUID) -> int:
    """A stable 63-bit advisory lock key per district chain."""
    return int.from_bytes(hashlib.sha256(b"audit:" + district_id.bytes).digest()[:8], "big") >> 1


COLUMNS = (
    "district_id",
    "seq",
    "id",
    "at",
    "request_id",
    "trace_id",
    "actor_id",
    "actor_role",
    "purpose",
    "justification",
    "operation_name",
    "subject_student_id",
    "fields",
    "categories",
    "decision",
    "break_glass",
    "prev_hash",
    "hash",
)


TYPES = (
    "uuid",
    "bigint",
    "uuid",
    "timestamptz",
    "text",
    "text",
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "uuid",
    "text",  # text[] columns travel as their literal form, unnest cannot take arrays of arrays
    "text",
    "text",
    "boolean",
    "text",
    "text",
)
# Built at import from the constant column list: no value is ever interpolated.
INSERT = (
    f"INSERT INTO audit_entries ({', '.join(COLUMNS)}) SELECT "  # noqa: S608
    + ", ".join(f"c{i}::text[]" if c in ("fields", "categories") else f"c{i}" for i, c in enumerate(COLUMNS))
    + " FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(TYPES))
    + ") AS t("
    + ", ".join(f"c{i}" for i in range(len(COLUMNS)))
    + ")"
)


def _array_literal(values: list[str]) -> str:
    """A PostgreSQL text[] literal (fields and categories are plain identifiers)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def make_audit_writer(key: bytes) -> AuditWriter:
    async def write_audit(context: RequestContext) -> None:
        pending = context.audit.entries()
        if not pending:
            return
        by_district: dict[uuid.UUID, list[Any]] = {}
        for entry in pending:
            by_district.setdefault(uuid.UUID(entry.district_key), []).append(entry)
        rows: list[tuple[Any, ...]] = []
        break_glass = bool(context.rule.break_glass)
        for district_id in sorted(by_district):
            await context.db.execute("SELECT pg_advisory_xact_lock($1)", lock_id(district_id))
            head = await context.db.fetchrow(
                "SELECT seq, hash FROM audit_entries WHERE district_id = $1 ORDER BY seq DESC LIMIT 1", district_id
            )
            seq = head["seq"] if head else 0
            prev = head["hash"] if head else GENESIS
            for entry in by_district[district_id]:
                seq += 1
                record: dict[str, Any] = {
                    "district_id": district_id,
                    "seq": seq,
                    "id": uuid.uuid4(),
                    "at": context.now,
                    "request_id": context.request_id,
                    "trace_id": None,
                    "actor_id": context.principal.user_id,
                    "actor_role": context.principal.role.value,
                    "purpose": context.purpose.value,
                    "justification": context.justification,
                    "operation_name": context.operation_name,
                    "subject_student_id": entry.subject_id,
                    "fields": list(entry.fields),
                    "categories": list(entry.categories),
                    "decision": "ALLOW" if entry.allowed else "DENY",
                    "break_glass": break_glass,
                    "prev_hash": prev,
                }
                record["hash"] = prev = entry_hash(key, record)
                rows.append(
                    tuple(_array_literal(record[c]) if c in ("fields", "categories") else record[c] for c in COLUMNS)
                )
        # One multi-row INSERT (COPY is refused on tables under row-level security).
        columns = list(zip(*rows, strict=True))
        await context.db.execute(INSERT, *columns)

    return write_audit
