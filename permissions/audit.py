"""The audit trail's core: the per-request collector and the keyed hash chain.

The collector is one request's record of what was resolved about whom. Every
resolve of a classified field notes (district, subject, Type.field, category,
decision); notes are grouped per (district, subject, decision), so a roster of
30 students read once is 30 entries whatever its field count. Values are
never seen here.

The chain: each district's entries are numbered by ``seq``. They are stored as
records (migration 0013): a record holds a run of one request's consecutive
entries that share everything but their subject, numbered ``seq`` to ``seq +
len(subjects) - 1``, and stores its predecessor's hash and its own, an
HMAC-SHA256 over a canonical form of every other value, under a key the
database never holds. Entries written before records existed were chained
one by one (``entry_hash``); a district's chain runs through those, then on
through its records (``record_hash``). Whoever can write the
table but lacks the key can neither alter an entry nor rewrite the chain from
that entry on without ``ChainVerifier`` noticing. Everything here is pure: no
database, no GraphQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from permissions.enums import DataCategory

GENESIS = "0" * 64
NIL_DISTRICT = uuid.UUID(int=0)

# The columns an entry's hash covers, in the order of the canonical form:
# every stored column but the hash itself.
HASHED_COLUMNS = (
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
)
# Columns added after the chain's first entries were written (migration 0012):
# the hash covers each one, after HASHED_COLUMNS, only when it is set, so an
# entry written before the column existed keeps the canonical form it was
# chained with, and a value added to or removed from a stored entry changes
# its canonical form (a list one longer or shorter) and breaks its hash.
OPTIONAL_HASHED_COLUMNS = ("client_request_id",)
# AuditEntry.categories is [DataCategory!]!: nothing else may be stored there.
CATEGORY_VALUES = frozenset(c.value for c in DataCategory)
_ENTRY_DOMAIN = b"pledgeql.audit.entry.v1\n"
_ANCHOR_DOMAIN = b"pledgeql.audit.anchor.v1\n"


# ------------------------------------------------------------------ collector


# The student an entry is about: a UUID, or its canonical text as PostgreSQL
# writes it (the compiled reads pass that, saving a parse per row); None for no one.
SubjectId = uuid.UUID | str | None


class PendingEntry(NamedTuple):
    """One logical entry before it is chained: who it is about, what was resolved, allowed or not.
    A named tuple: a class view makes one per student, and a tuple is the cheapest to make."""

    district_key: str
    subject_id: SubjectId
    allowed: bool
    fields: tuple[str, ...]
    categories: tuple[str, ...]


_Group = tuple[dict[str, None], dict[str, None]]  # fields, categories: dicts as ordered sets


class AuditCollector:
    """What one request resolved, grouped per (district, subject, decision).

    ``note`` runs once per resolve of a classified field, so it does as little
    as it can: one tuple, one dict lookup, two dict stores. Fields and
    categories keep their first-seen order (dicts as ordered sets).
    """

    __slots__ = ("_groups", "_last", "_separate")

    def __init__(self) -> None:
        self._groups: dict[tuple[str, SubjectId, bool], _Group] = {}
        self._separate: list[PendingEntry] = []
        # The group of the previous note, by the identity of its key's parts:
        # the fields of one object arrive one after another, and hashing a
        # UUID (a Python-level __hash__) is most of what a note costs.
        self._last: tuple[object, object, object, _Group | None] = (None, None, None, None)

    def note(self, district_key: str, subject_id: SubjectId, field: str, category: str, allowed: bool) -> None:
        """One resolve of ``field`` (``Type.field``) of ``category`` (a DataCategory value, or "" for none)."""
        last = self._last
        group = last[3]
        if group is None or subject_id is not last[1] or district_key is not last[0] or allowed is not last[2]:
            key = (district_key, subject_id, allowed)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = ({}, {})
            self._last = (district_key, subject_id, allowed, group)
        group[0][field] = None
        if category:
            group[1][category] = None

    def note_rows(
        self,
        district_key: str,
        subjects: list[SubjectId],
        noted: list[tuple[bool, dict[str, None], dict[str, None]]],
    ) -> None:
        """Several resolves at once, as ``note`` would group them: for each of
        ``subjects`` in order, each of ``noted`` (decision, fields, categories;
        dicts as ordered sets) in order. The rows of one level of a compiled
        read, which all resolve the same fields; a subject's later rows (a
        student's responses after the first) add nothing, and are skipped."""
        groups = self._groups
        for subject_id in dict.fromkeys(subjects):
            for allowed, fields, categories in noted:
                key = (district_key, subject_id, allowed)
                group = groups.get(key)
                if group is None:
                    groups[key] = (fields.copy(), categories.copy())
                else:
                    group[0].update(fields)
                    group[1].update(categories)
        self._last = (None, None, None, None)

    def record(
        self,
        district_key: str,
        subject_id: SubjectId,
        fields: Iterable[str],
        categories: Iterable[str],
        allowed: bool,
    ) -> None:
        """One entry of its own, never merged with the noted ones: an aggregate
        report (its dimensions as fields) or a mutation (what it changed)."""
        kept = tuple(dict.fromkeys(categories))
        unknown = [c for c in kept if c not in CATEGORY_VALUES]
        if unknown:
            raise ValueError(f"Audit categories must be DataCategory values; got {', '.join(unknown)}")
        self._separate.append(PendingEntry(district_key, subject_id, allowed, tuple(dict.fromkeys(fields)), kept))

    def __len__(self) -> int:
        return len(self._groups) + len(self._separate)

    def has_denial(self, field: str) -> bool:
        """Whether a denied resolve of ``field`` was noted or recorded (a refused mutation's entry)."""
        if any(not allowed and field in group[0] for (_, _, allowed), group in self._groups.items()):
            return True
        return any(not e.allowed and field in e.fields for e in self._separate)

    def entries(self) -> list[PendingEntry]:
        grouped = [
            PendingEntry(district, subject, allowed, tuple(fields), tuple(categories))
            for (district, subject, allowed), (fields, categories) in self._groups.items()
        ]
        return grouped + self._separate


# ---------------------------------------------------------------------- chain


def _canonical_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        # Whatever zone the value carries, the form is UTC with microseconds,
        # exactly as PostgreSQL's timestamptz gives it back.
        utc = value.astimezone(dt.UTC) if value.tzinfo is not None else value
        # YYYY-MM-DDTHH:MM:SS.ffffffZ (isoformat: a fifth of strftime's time).
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value


_AT = HASHED_COLUMNS.index("at")
_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def canonical_values(values: list[Any]) -> bytes:
    """The bytes an entry's hash covers, from its values in HASHED_COLUMNS order
    followed by those of OPTIONAL_HASHED_COLUMNS that are set (``hashed_values``).

    UUIDs (uuid's or asyncpg's, or already strings) in their hyphenated form,
    the time in UTC as PostgreSQL gives it back, arrays as lists."""
    at = values[_AT]
    if isinstance(at, dt.datetime) and at.tzinfo is not None and at.tzinfo is not dt.UTC:
        values = [*values[:_AT], at.astimezone(dt.UTC), *values[_AT + 1 :]]
    return _ENTRY_DOMAIN + orjson.dumps(values, default=str, option=_JSON)


def hashed_values(entry: Mapping[str, Any]) -> list[Any]:
    """The values an entry's hash covers: every HASHED_COLUMNS value, then each
    OPTIONAL_HASHED_COLUMNS value that is set (absent or NULL: left out)."""
    values = [entry[c] for c in HASHED_COLUMNS]
    values += [v for v in (entry.get(c) for c in OPTIONAL_HASHED_COLUMNS) if v is not None]
    return values


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The same bytes from a mapping: the dict of a new entry or a row read back."""
    return canonical_values(hashed_values(entry))


_MACS: dict[bytes, hmac.HMAC] = {}


def _mac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` in hex (the standard library's ``hmac``).

    The keyed HMAC object is made once per key and copied per message, which
    keeps the key's set-up out of every entry's hash: 1.20 us per MAC of a
    320-byte entry against 1.81 us for the one-shot ``hmac.digest`` (and 0.76 us
    for SHA-256 states copied by hand, which this replaced: about 13 us more per
    request of 30 entries)."""
    keyed = _MACS.get(key)
    if keyed is None:
        keyed = hmac.new(key, digestmod=hashlib.sha256)
        if len(_MACS) < 8:  # one audit key per process, a few in tests
            _MACS[key] = keyed
    mac = keyed.copy()
    mac.update(message)
    return mac.hexdigest()


def values_hash(key: bytes, values: list[Any]) -> str:
    return _mac(key, canonical_values(values))


def entry_hash(key: bytes, entry: Mapping[str, Any]) -> str:
    return values_hash(key, hashed_values(entry))


# A record's canonical form (migration 0013): its values in this order, the
# subjects as a list (None: an entry about no one), fields and categories by
# name, the previous hash in hex.
RECORD_COLUMNS = (
    "district_id",
    "seq",
    "id",
    "at",
    "request_id",
    "client_request_id",
    "trace_id",
    "actor_id",
    "actor_role",
    "purpose",
    "justification",
    "operation_name",
    "subjects",
    "fields",
    "categories",
    "decision",
    "break_glass",
    "prev_hash",
)
_RECORD_DOMAIN = b"pledgeql.audit.record.v2\n"
_RECORD_AT = RECORD_COLUMNS.index("at")
_RECORD_SUBJECTS = RECORD_COLUMNS.index("subjects")


def record_values_hash(key: bytes, values: list[Any]) -> str:
    """The HMAC (hex) of a record from its values in RECORD_COLUMNS order."""
    values = list(values)
    at = values[_RECORD_AT]
    if isinstance(at, dt.datetime):
        values = [*values[:_RECORD_AT], _canonical_value(at), *values[_RECORD_AT + 1 :]]
    subjects = values[_RECORD_SUBJECTS]
    values[_RECORD_SUBJECTS] = [None if s is None else str(s) for s in subjects]
    return _mac(key, _RECORD_DOMAIN + orjson.dumps(values, default=str))


def record_hash(key: bytes, record: Mapping[str, Any]) -> str:
    return record_values_hash(key, [record[c] for c in RECORD_COLUMNS])


def is_record(row: Mapping[str, Any]) -> bool:
    """Whether a stored row is a record (it has ``subjects``) rather than an entry chained alone."""
    try:
        return row["subjects"] is not None
    except KeyError:
        return False


def entry_id(record_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id of a record's ``index``-th entry (from 0): the record's id with its
    last four bytes XORed with the index (SQL ``pledgeql_audit_entry_id``)."""
    raw = bytearray(record_id.bytes)
    raw[12:16] = (int.from_bytes(raw[12:16], "big") ^ index).to_bytes(4, "big")
    return uuid.UUID(bytes=bytes(raw))


def runs(entries: list[PendingEntry]) -> list[list[PendingEntry]]:
    """A request's entries as the records that store them: each run of
    consecutive entries that share everything but their subject (district,
    decision, fields, categories), in order."""
    out: list[list[PendingEntry]] = []
    run: list[PendingEntry] = []
    shared: tuple[Any, ...] | None = None
    for entry in entries:
        mine = (entry.district_key, entry.allowed, entry.fields, entry.categories)
        if mine == shared:
            run.append(entry)
        else:
            run = [entry]
            out.append(run)
            shared = mine
    return out


@dataclass(frozen=True)
class Anchor:
    """Where a district's chain starts after retention removed its oldest
    entries: the seq and hash of the last removed entry, and its time.

    ``mac`` is an HMAC under the audit key, so only a holder of the key (the
    retention job) can move the start of a chain."""

    district_id: uuid.UUID
    seq: int
    hash: str
    at: dt.datetime
    mac: str


def anchor_mac(key: bytes, district_id: uuid.UUID, seq: int, last_hash: str, at: dt.datetime) -> str:
    body = orjson.dumps([str(district_id), seq, last_hash, _canonical_value(at)])
    return hmac.digest(key, _ANCHOR_DOMAIN + body, "sha256").hex()


@dataclass(frozen=True)
class ChainBreak:
    """The first place a chain does not verify."""

    district_id: uuid.UUID
    seq: int
    entry_id: uuid.UUID | None
    kind: str  # altered | deleted | reordered | anchor
    detail: str

    def describe(self) -> str:
        entry = f"entry seq {self.seq}" + (f" id {self.entry_id}" if self.entry_id else "")
        return f"district {self.district_id}: {entry}: {self.kind}: {self.detail}"


class ChainVerifier:
    """Checks one district's chain, fed its stored rows in seq order: the
    entries chained one by one, then the records.

    Without an anchor the chain must start at seq 1 from GENESIS; with a
    valid anchor it must continue from the anchor's seq and hash (rows the
    anchor already covers, which retention has yet to remove, are passed
    over). Every row's HMAC must match its content, its seq must follow its
    predecessor's last entry and its prev_hash must be its predecessor's
    hash. ``feed`` returns the first break and the verifier stops there.
    """

    def __init__(
        self,
        key: bytes,
        district_id: uuid.UUID,
        anchor: Anchor | None = None,
        last_seq: int = 0,
        known_head: tuple[int, str] | None = None,
    ) -> None:
        self.key = key
        self.district_id = district_id
        self.anchor = anchor
        self.last_seq = last_seq  # the highest seq stored: bounds the search for a moved entry
        # A head an earlier verify saw (kept outside the database): the chain
        # must still reach it, with the same hash, unless retention moved past it.
        self.known_head = known_head
        self._known_seen = False
        self.count = 0
        self.first_seq: int | None = None
        self.broken: ChainBreak | None = None
        self._expected_seq = 1
        self._prev = GENESIS

    def start(self) -> ChainBreak | None:
        """Check the anchor, if any; call before feeding entries."""
        anchor = self.anchor
        if anchor is None:
            return None
        expected = anchor_mac(self.key, anchor.district_id, anchor.seq, anchor.hash, anchor.at)
        if anchor.district_id != self.district_id or not hmac.compare_digest(expected, anchor.mac):
            self.broken = ChainBreak(
                self.district_id,
                anchor.seq,
                None,
                "anchor",
                "the retention anchor (where the chain starts after old entries were removed) does not match its "
                "key-signed form: it was altered or written without the audit key",
            )
            return self.broken
        self._expected_seq = anchor.seq + 1
        self._prev = anchor.hash
        return None

    def feed(self, row: Mapping[str, Any]) -> ChainBreak | None:
        if self.broken is not None:
            return self.broken
        seq = int(row["seq"])
        record = is_record(row)
        last = seq + len(row["subjects"]) - 1 if record else seq  # the seq of its last entry
        if self.anchor is not None and last <= self.anchor.seq and self.count == 0:
            # Retention moved the anchor past it and has yet to remove it.
            return None
        if self.first_seq is None:
            self.first_seq = seq
        entry_id = row["id"]
        stored = str(row["hash"])
        if not hmac.compare_digest(_stored_hash(self.key, row, record), stored):
            moved_from = self._written_as(row)
            if moved_from is not None:
                self.broken = ChainBreak(
                    self.district_id, seq, entry_id, "reordered", f"this entry was written as seq {moved_from}"
                )
            else:
                self.broken = ChainBreak(
                    self.district_id,
                    seq,
                    entry_id,
                    "altered",
                    "its hash does not match its content (changed, or written without the audit key)",
                )
        elif seq != self._expected_seq:
            missing = (
                f"seq {self._expected_seq}"
                if seq == self._expected_seq + 1
                else f"seq {self._expected_seq} to {seq - 1}"
            )
            if seq < self._expected_seq:
                self.broken = ChainBreak(
                    self.district_id, seq, entry_id, "reordered", f"expected seq {self._expected_seq} here"
                )
            elif self._expected_seq == 1 and self.anchor is None:
                self.broken = ChainBreak(
                    self.district_id,
                    seq,
                    entry_id,
                    "deleted",
                    f"entries {missing} are missing at the start of the chain; no retention anchor accounts for them",
                )
            else:
                self.broken = ChainBreak(
                    self.district_id, seq, entry_id, "deleted", f"entries {missing} before this one are missing"
                )
        elif not hmac.compare_digest(str(row["prev_hash"]), self._prev):
            self.broken = ChainBreak(
                self.district_id,
                seq,
                entry_id,
                "deleted",
                "its prev_hash is not the hash of the entry before it: that entry was removed or replaced",
            )
        elif self.known_head is not None and seq <= self.known_head[0] <= last:
            self._known_seen = True
            if not hmac.compare_digest(stored, self.known_head[1]):
                self.broken = ChainBreak(
                    self.district_id,
                    seq,
                    entry_id,
                    "altered",
                    "its hash differs from the one an earlier verify recorded for this seq: the chain was rewritten",
                )
        if self.broken is not None:
            return self.broken
        self.count += last - seq + 1
        self._expected_seq = last + 1
        self._prev = stored
        return None

    def finish(self) -> ChainBreak | None:
        """After the last entry: does the chain still reach the known head?"""
        if self.broken is not None or self.known_head is None or self._known_seen:
            return self.broken
        seq, known = self.known_head
        anchor = self.anchor
        if anchor is not None and anchor.seq >= seq:
            if anchor.seq == seq and not hmac.compare_digest(anchor.hash, known):
                self.broken = ChainBreak(
                    self.district_id,
                    seq,
                    None,
                    "anchor",
                    "the retention anchor's hash differs from the one an earlier verify recorded for this seq",
                )
            return self.broken  # retention removed the entries up to and past it
        if seq == 0:
            return None
        end = self._expected_seq - 1
        self.broken = ChainBreak(
            self.district_id,
            seq,
            None,
            "deleted",
            f"an earlier verify saw the chain reach seq {seq}; it now ends at seq {end}: "
            f"{'its newest entries were' if end < seq else 'entries were'} removed",
        )
        return self.broken

    def _written_as(self, row: Mapping[str, Any]) -> int | None:
        """The seq under which this entry's hash does verify, if any: an entry
        moved to another place in the chain. Runs once, at the first break."""
        probe = dict(row)
        stored = str(row["hash"])
        record = is_record(row)
        low = self.anchor.seq + 1 if self.anchor else 1
        for candidate in range(low, max(self.last_seq, int(row["seq"])) + 1):
            if candidate == int(row["seq"]):
                continue
            probe["seq"] = candidate
            if hmac.compare_digest(_stored_hash(self.key, probe, record), stored):
                return candidate
        return None

    @property
    def head(self) -> tuple[int, str]:
        """The seq and hash the next entry must continue from."""
        return self._expected_seq - 1, self._prev


def _stored_hash(key: bytes, row: Mapping[str, Any], record: bool) -> str:
    """The hash a stored row must carry: a record's, or an entry's chained alone."""
    return record_hash(key, row) if record else entry_hash(key, row)
