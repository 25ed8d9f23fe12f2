"""GitHub binding: users.github_login beside the existing github_id, and pending device flows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:00:00

GitHub vouches for a handle, never for a key: a bound GitHub account is a label on the account
(to find teammates by their GitHub login), not a way to log in. A pending bind keeps GitHub's
device code until the user approves it or it expires; no GitHub access token is ever stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("github_login", sa.String(length=40), nullable=True))
    op.create_table(
        "github_binds",
        sa.Column("id", sa.String(length=43), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("device_code", sa.String(length=100), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_github_binds_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_binds")),
    )


def downgrade() -> None:
    op.drop_table("github_binds")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("github_login")
