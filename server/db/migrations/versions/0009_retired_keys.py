"""retired_keys: identity keys an account rotated away from

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 23:50:00

``tapes keys rotate`` replaces an account's identity key (``POST /auth/rekey``). The old key is
kept here so it never logs in or registers again, and so a chain statement that still names it
(the removal of a member who left a team before rotating) finds its account.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_keys",
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("ed25519", sa.LargeBinary(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_retired_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_retired_keys")),
        sa.UniqueConstraint("ed25519", name=op.f("uq_retired_keys_ed25519")),
    )
    op.create_index(op.f("ix_retired_keys_user_id"), "retired_keys", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_retired_keys_user_id"), table_name="retired_keys")
    op.drop_table("retired_keys")
