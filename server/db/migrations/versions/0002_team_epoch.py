"""teams.epoch: the key epoch each vault's verified chain is in

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00

The push path refuses new nodes sealed under any other epoch. Existing vaults are backfilled from
their chain's head statement: a statement's signed ``epoch`` is the epoch in force *after* it
(``keymgmt.chain``), epochs never go down along a chain, and every stored statement was verified
by keymgmt when it was appended, so the head's epoch is the vault's current one. Keyrings are not
used: a rotation is in the chain the moment it is appended, while its keyring may be uploaded
later (or never, for a vault whose readers all left), so the highest keyring epoch can lag
behind. A vault without a chain yet (a personal vault before its first login) keeps 1, the
epoch its genesis will start.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_teams = sa.table(
    "teams", sa.column("id", sa.String), sa.column("chain_seqno", sa.Integer),
    sa.column("epoch", sa.Integer),
)  # fmt: skip
_statements = sa.table(
    "chain_statements", sa.column("team_id", sa.String), sa.column("seqno", sa.Integer),
    sa.column("statement", _JSON),
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.Integer(), server_default="1", nullable=False))
    conn = op.get_bind()
    heads = conn.execute(
        sa.select(_statements.c.team_id, _statements.c.statement).join(
            _teams,
            sa.and_(
                _teams.c.id == _statements.c.team_id,
                _teams.c.chain_seqno == _statements.c.seqno,
            ),
        )
    ).all()
    for team_id, statement in heads:
        epoch = int(json.loads(statement["body"])["epoch"])
        if epoch != 1:
            conn.execute(sa.update(_teams).where(_teams.c.id == team_id).values(epoch=epoch))


def downgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("epoch")
