"""node_aliases: the IDs nodes had before `tapes team reencrypt` sealed them under a later epoch

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 23:45:00

A node's ID is keyed by its epoch, so sealing history again under the current epoch gives each
node a new ID. Signed shares keep naming a leaf by the ID it had when it was shared, and clients
that synced before name parents by the old IDs: this table resolves an old ID to the node.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_aliases",
        sa.Column("vault_id", sa.String(length=64), nullable=False),
        sa.Column("old_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["vault_id"],
            ["teams.id"],
            name=op.f("fk_node_aliases_vault_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("vault_id", "old_id", name=op.f("pk_node_aliases")),
    )
    op.create_index("ix_node_aliases_node", "node_aliases", ["vault_id", "node_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_node_aliases_node", table_name="node_aliases")
    op.drop_table("node_aliases")
