"""teams.bytes_stored: the envelope bytes each vault holds, for the plan's byte quota

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 08:00:00

Push adds the stored envelopes' bytes and retention subtracts what it deletes, so checking the
quota costs no scan. Existing vaults are backfilled from their envelopes (one grouped scan).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_teams = sa.table("teams", sa.column("id", sa.String), sa.column("bytes_stored", sa.BigInteger))
_nodes = sa.table("nodes", sa.column("vault_id", sa.String), sa.column("envelope", sa.LargeBinary))


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bytes_stored", sa.BigInteger(), server_default="0", nullable=False)
        )
    conn = op.get_bind()
    sizes = conn.execute(
        sa.select(_nodes.c.vault_id, sa.func.sum(sa.func.length(_nodes.c.envelope))).group_by(
            _nodes.c.vault_id
        )
    ).all()
    for vault_id, size in sizes:
        conn.execute(
            sa.update(_teams).where(_teams.c.id == vault_id).values(bytes_stored=int(size or 0))
        )


def downgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("bytes_stored")
