"""teams.legal_hold: while on, retention deletes nothing of the vault

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 23:55:00

An owner turns it on and off (``tapes team hold TEAM on|off``, audited); ``tapes-server
retention`` skips a held vault and says so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: batch mode would rebuild ``teams`` on SQLite, and dropping the old
    # table cascades into every table that references it (nodes, usage, chain, ...).
    op.add_column(
        "teams", sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("teams", "legal_hold")  # SQLite 3.35+ drops a column in place
