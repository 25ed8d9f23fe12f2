"""Alembic environment: runs against the engine the server hands over (server/db/migrate.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from server.db.models import Base

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)  # noqa: S101 - migrate.py always passes one

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
