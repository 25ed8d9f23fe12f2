"""server_keys: the server's own Ed25519 signing key, which signs the audit log's head; and an
index that finds a team's newest audit entry in O(log n)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 00:00:00

Clients pin the key (``GET /.well-known/tapes-server-key``) and the last audit head they saw.
The key is made here, once per server, so reads never write.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "server_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_keys")),
    )
    op.create_index("ix_audit_log_team_entry", "audit_log", ["team_id", "id"], unique=False)
    op.bulk_insert(
        table,
        [{"name": "audit", "seed": secrets.token_bytes(32), "created_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_team_entry", table_name="audit_log")
    op.drop_table("server_keys")
