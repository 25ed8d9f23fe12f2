"""usage_labels: the models, harnesses and projects a vault's usage itemizes, capped per vault

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 20:00:00

Filled from the labels ``usage_buckets`` already holds, all of them: a vault that named more
than a cap before this keeps them itemized, and counts only new ones under ``(other)``
(``server.domain.usage.labels``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.domain.usage.labels import Kind, label_of

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_buckets = sa.table(
    "usage_buckets", sa.column("vault_id", sa.String), sa.column("model", sa.String),
    sa.column("provider", sa.String), sa.column("agent", sa.String),
    sa.column("project", sa.String),
)  # fmt: skip


def upgrade() -> None:
    vault = sa.ForeignKey(
        "teams.id", name=op.f("fk_usage_labels_vault_id_teams"), ondelete="CASCADE"
    )
    table = op.create_table(
        "usage_labels",
        sa.Column("vault_id", sa.String(length=64), vault, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("vault_id", "kind", "label", name=op.f("pk_usage_labels")),
    )
    conn = op.get_bind()
    b = _buckets.c
    rows = []
    kinds: tuple[tuple[Kind, tuple[sa.ColumnClause[str], ...]], ...] = (
        ("model", (b.model, b.provider)),
        ("agent", (b.agent,)),
        ("project", (b.project,)),
    )
    for kind, columns in kinds:
        for vault_id, *values in conn.execute(sa.select(b.vault_id, *columns).distinct()):
            name = label_of(kind, tuple(values))
            if name is not None:
                rows.append({"vault_id": vault_id, "kind": kind, "label": name})
    for start in range(0, len(rows), 5000):
        conn.execute(sa.insert(table), rows[start : start + 5000])


def downgrade() -> None:
    op.drop_table("usage_labels")
