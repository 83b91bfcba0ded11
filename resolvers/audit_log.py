"""Reading the audit trail back: a page of one district's logical entries, newest first.

Storage keeps a run of one request's entries that share everything but their
subject as one record (migration 0013; ``permissions.audit.runs``), and the
entries written before records existed as rows of their own
(``audit_entries_v1``). This reads both and hands back the logical entries
exactly as they were noted: one per (request, subject, decision), numbered by
``seq``, with the same ids, filters, order and cursors whichever way they are
stored.

Each store is read newest first along an index and cut at the page's size
(a record yields at least one entry, and a subject at most one per record),
so a page costs the same at ten million entries as at a thousand: the chain
index for the district's log, the actor index when filtered by actor, and for one student's record of
disclosures a function that finds their newest records month by month, by the
subjects' GIN index or along the chain, whichever is cheap for that student
(migration 0015; it answers for the caller's own districts: under row-level
security the planner would not use that index).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from permissions.audit import entry_id
from resolvers.db import Db, Params

MAX_SEQ = 2**63 - 1  # the largest seq (bigint); a cursor past it is refused
MAX_SUBJECT_PAGE = 2**31 - 1  # pledgeql_audit_subject_page's limit is an integer; above it, every record

# A record's field or category names from their codes, in order, as
# pledgeql_audit_names (migration 0013) gives them (a code with no name left
# out), but over one map of every code made once per statement (the
# uncorrelated subquery is evaluated once): the function, called twice a
# record, cost a page of fifty records 0.75 ms of its 2 ms.
_NAMES = (
    "ARRAY(SELECT x.n FROM (SELECT (SELECT jsonb_object_agg(code, name) FROM audit_names) ->> u.c::text AS n, u.i "
    "FROM unnest({codes}) WITH ORDINALITY u(c, i)) x WHERE x.n IS NOT NULL ORDER BY x.i)"
)
# The logical entry's columns, read from either store; a stored entry is a
# record of one subject. Names come from their codes (_NAMES).
_RECORDS = (
    "SELECT seq, id, at, request_id, client_request_id, trace_id, actor_id, actor_role, purpose, justification, "
    f"operation_name, subjects, {_NAMES.format(codes='fields')} AS fields, "
    f"{_NAMES.format(codes='categories')} AS categories, decision, break_glass FROM audit_records"
)
_ENTRIES = (
    "SELECT seq, id, at, request_id, client_request_id, trace_id, actor_id, actor_role, purpose, justification, "
    "operation_name, ARRAY[subject_student_id] AS subjects, fields, categories, decision, break_glass "
    "FROM audit_entries_v1"
)


@dataclass(frozen=True)
class AuditFilters:
    """What ``auditLog``'s filter (or ``accessLog``'s student) narrows a page to."""

    subject: uuid.UUID | None = None
    actor: uuid.UUID | None = None
    purpose: str | None = None
    decision: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def page_statement(
    district_id: uuid.UUID, filters: AuditFilters, before_seq: int | None, limit: int, p: Params | None = None
) -> tuple[str, list[Any]]:
    """The statement for up to ``limit`` stored rows of each store, newest first
    (its values bound with ``p`` when given, as part of a larger statement);
    one more past a cursor of one student's entries."""
    bind = Params() if p is None else p
    district = bind(district_id)
    shared: list[str] = []
    if filters.actor is not None:
        shared.append(f"actor_id = {bind(filters.actor)}")
    if filters.purpose is not None:
        shared.append(f"purpose = {bind(filters.purpose)}")
    if filters.decision is not None:
        shared.append(f"decision = {bind(filters.decision)}")
    if filters.since is not None:
        shared.append(f"at >= {bind(filters.since)}")
    if filters.until is not None:
        shared.append(f"at < {bind(filters.until)}")
    if before_seq is not None:
        shared.append(f"seq < {bind(before_seq)}")
    records, entries = [f"district_id = {district}", *shared], [f"district_id = {district}", *shared]
    if filters.subject is not None and before_seq is not None:
        # The cursor is an entry about the student; the record holding it starts at or below
        # it, so it is read again (its entry then left out): one record more keeps a page full.
        limit += 1
    if filters.subject is not None:
        subject = bind(filters.subject)
        # The student's newest records (pledgeql_audit_subject_page, migration 0015:
        # row-level security would keep the planner from the subjects' index), then by seq.
        below = bind(MAX_SEQ if before_seq is None else before_seq)
        # Only the page's newest records, unless the page is narrowed further
        # (then any of the student's records may be among its entries) or whole.
        narrowed = (filters.actor, filters.purpose, filters.decision, filters.since, filters.until) != (None,) * 5
        page = bind(None if narrowed or limit > MAX_SUBJECT_PAGE else limit)
        records.append(
            f"seq = ANY (ARRAY(SELECT pledgeql_audit_subject_page({district}, {subject}, {below}, {page}::integer)))"
        )
        records.append(f"subjects @> ARRAY[{subject}]::uuid[]")
        entries.append(f"subject_student_id = {subject}")
    n = bind(limit)
    sql = (
        f"({_RECORDS} WHERE {' AND '.join(records)} ORDER BY seq DESC LIMIT {n}) "
        f"UNION ALL ({_ENTRIES} WHERE {' AND '.join(entries)} ORDER BY seq DESC LIMIT {n}) "
        f"ORDER BY seq DESC LIMIT {n}"
    )
    return sql, bind.values


def logical_statement(
    district_id: uuid.UUID, filters: AuditFilters, before_seq: int | None, limit: int, p: Params
) -> str:
    """``expand`` in SQL, over ``page_statement``: up to ``limit`` logical
    entries, newest first, each stored row's subjects as entries of their own
    (``lseq``, ``lid``, ``subject``), bound with ``p``."""
    stored, _ = page_statement(district_id, filters, before_seq, limit, p)
    where = []
    if filters.subject is not None:
        where.append(f"e.subject = {p(filters.subject)}")
    if before_seq is not None:
        where.append(f"s.seq + e.i - 1 < {p(before_seq)}")
    return (
        "SELECT s.*, s.seq + e.i - 1 AS lseq, pledgeql_audit_entry_id(s.id, (e.i - 1)::integer) AS lid, "
        f"e.subject FROM ({stored}) s CROSS JOIN LATERAL unnest(s.subjects) WITH ORDINALITY e(subject, i)"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY lseq DESC LIMIT {p(limit)}"
    )


def expand(rows: list[Any], filters: AuditFilters, before_seq: int | None, limit: int) -> list[dict[str, Any]]:
    """The logical entries of stored rows (newest first), at most ``limit``."""
    out: list[dict[str, Any]] = []
    for row in rows:
        base = dict(row)
        subjects = base.pop("subjects")
        first_seq, record_id = base["seq"], base["id"]
        for index in range(len(subjects) - 1, -1, -1):
            subject = subjects[index]
            seq = first_seq + index
            if (filters.subject is not None and subject != filters.subject) or (
                before_seq is not None and seq >= before_seq
            ):
                continue
            out.append({**base, "seq": seq, "id": entry_id(record_id, index), "subject_student_id": subject})
            if len(out) == limit:
                return out
    return out


async def audit_page(
    db: Db, district_id: uuid.UUID, filters: AuditFilters, before_seq: int | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` of the district's logical entries, newest first, with a seq below ``before_seq``."""
    sql, params = page_statement(district_id, filters, before_seq, limit)
    return expand(await db.fetch(sql, *params), filters, before_seq, limit)
