"""team_members.left_at: a member who left on their own, until an admin's signed removal

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:30:00

Leaving ends the member's access on the server at once (``removed_at`` is set too); the signed
chain still lists them until an owner or admin removes them, which starts a new key epoch and
clears ``left_at``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("team_members") as batch:
        batch.add_column(sa.Column("left_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("team_members") as batch:
        batch.drop_column("left_at")
