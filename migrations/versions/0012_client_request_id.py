"""The client's X-Request-Id, kept beside the server's own request id.

``request_id`` is always the server's id for the request (unique, returned in
the response's X-Request-Id header); what the client sent in its own
X-Request-Id is kept in ``client_request_id`` (API.md section 3). The column
is NULL for entries written before this migration and for requests without
the header; the entry's hash covers it only when it is set, so every entry
written before stays verifiable as it was chained (permissions/audit.py).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_entries", sa.Column("client_request_id", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_entries", "client_request_id")
