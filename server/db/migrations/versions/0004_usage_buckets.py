"""usage_buckets: usage kept at push, so a year of a team's usage reads in milliseconds

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00

One row per vault, 15-minute bucket of when the work happened (the clear ``created_at``, else
the upload time) and uploader, model, provider, agent and project, with the summed node, session
and token counts. Existing nodes are backfilled in one streamed pass with the same function the
push uses (``server.domain.usage.buckets.contributions``), so history lands on the day it
happened, not on the day of the upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from server.domain.usage.buckets import COUNTERS, bindable, contributions, dims_hash

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COUNT = sa.BigInteger().with_variant(sa.Numeric(38, 0), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_nodes = sa.table(
    "nodes", sa.column("vault_id", sa.String), sa.column("parent_id", sa.String),
    sa.column("clear_metadata", _JSON), sa.column("uploader_id", sa.String),
    sa.column("uploaded_at", sa.DateTime(timezone=True)),
)  # fmt: skip


def upgrade() -> None:
    table = op.create_table(
        "usage_buckets",
        sa.Column("vault_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("dims", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=36), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("provider", sa.String(length=512), nullable=False),
        sa.Column("agent", sa.String(length=512), nullable=False),
        sa.Column("project", sa.String(length=512), nullable=False),
        sa.Column("by_upload", sa.Boolean(), nullable=False),
        *(sa.Column(name, _COUNT, nullable=False) for name in COUNTERS),
        sa.ForeignKeyConstraint(
            ["vault_id"], ["teams.id"], name=op.f("fk_usage_buckets_vault_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("vault_id", "bucket", "dims", name=op.f("pk_usage_buckets")),
    )  # fmt: skip
    conn = op.get_bind()
    for vault_id in conn.scalars(sa.select(_nodes.c.vault_id).distinct()).all():
        sums = contributions(_rows(conn, vault_id))
        rows = [
            {
                "vault_id": vault_id, "bucket": key.bucket, "dims": dims_hash(key),
                "member_id": key.member_id, "model": key.model, "provider": key.provider,
                "agent": key.agent, "project": key.project, "by_upload": key.by_upload,
            } | dict(zip(COUNTERS, part, strict=True))
            for key, values in sums.items()
            for part in bindable(values)
        ]  # fmt: skip
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(table), rows[start : start + 5000])


def _rows(
    conn: sa.Connection, vault_id: str
) -> Iterator[tuple[dict[str, object], bool, str, datetime]]:
    query = sa.select(
        _nodes.c.clear_metadata, _nodes.c.parent_id, _nodes.c.uploader_id, _nodes.c.uploaded_at
    ).where(_nodes.c.vault_id == vault_id)
    for metadata, parent_id, uploader_id, uploaded_at in conn.execute(
        query.execution_options(yield_per=5000)
    ):
        yield dict(metadata or {}), parent_id is None, uploader_id, uploaded_at


def downgrade() -> None:
    op.drop_table("usage_buckets")
