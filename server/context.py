"""The typed per-request context every resolver receives as ``info.context``."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from permissions.audit import AuditCollector
from permissions.decide import DecisionTable, DistrictConditions
from permissions.enums import Purpose
from permissions.policy import PolicySet, Rule
from permissions.principal import Principal
from resolvers.db import Db
from resolvers.reads import Reads
from resolvers.report_cache import ReportCache


@dataclass(frozen=True)
class ClientInfo:
    """Where a request came from: for device sessions, never for decisions."""

    ip_address: str | None = None
    user_agent: str | None = None
    referrer: str | None = None
    idempotency_key: str | None = None
    session_id: str | None = None


@dataclass
class RequestContext:
    principal: Principal
    purpose: Purpose
    rule: Rule
    policies: PolicySet
    decisions: DecisionTable
    conditions: dict[str, DistrictConditions]
    reads: Reads
    db: Db
    request_id: str
    now: dt.datetime
    # The server's computed reports (kept while what they count is unchanged).
    reports: ReportCache
    justification: str | None = None
    # Per district, overriding ``justification`` on that district's entries:
    # SUPPORT's grants' tickets in the district concerned.
    justifications: dict[str, str] = field(default_factory=dict)
    # The X-Request-Id the client sent (``request_id`` is always the server's).
    client_request_id: str | None = None
    operation_name: str | None = None
    audit: AuditCollector = field(default_factory=AuditCollector)
    client: ClientInfo = field(default_factory=ClientInfo)
    # A query (reads only): its audit entries may be written by another
    # query's transaction (server/audit_writer.py, group commit).
    read_only: bool = False
    # The districts its transaction may touch (the row-level security setting).
    rls_key: str = ""
    # With a kept standing: the principal's generation and the row-level
    # security setting its compiled statement must return, or the request is
    # served again (resolvers.principal.Standings). None once confirmed.
    confirm: tuple[int, str] | None = None
    # The events this request's recordActivity calls were sent so far: at most
    # schema.practice.MAX_EVENTS a request, however many aliases share it.
    activity_events: int = 0
    # Run once the request's transaction has ended: with None once it has
    # committed, with the error otherwise.
    after_commit: list[Callable[[BaseException | None], None]] = field(default_factory=list)

    @property
    def home_district_key(self) -> str:
        """The district that entries about no district's student are chained under."""
        if self.principal.district_id is not None:
            return str(self.principal.district_id)
        return str(uuid.UUID(int=0))


@dataclass
class PublicContext:
    """For requests without a token: only the public policy fields resolve."""

    policies: PolicySet
    request_id: str
