"""The SQLite schema Go tapes creates, verbatim, so either program can open the other's file.

The DDL is what ent's auto-migration leaves in ``sqlite_master`` at Go tapes b76893c
(vectors/tapes-sqlite-schema.md). We create it exactly so, add no column to ``nodes`` and change
nothing ent would fight; tables of our own are prefixed ``e2e_``.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, Text
from sqlalchemy.types import NullType

__all__ = ["GO_DDL", "NODE_COLUMNS", "REQUIRED_NODE_COLUMNS", "nodes"]

# (object name, DDL) in the order ent creates them.
GO_DDL: tuple[tuple[str, str], ...] = (
    (
        "facets",
        (
            "CREATE TABLE `facets` (`id` text NOT NULL, `session_id` text NOT NULL, "
            "`facets` json NULL, `created_at` datetime NOT NULL DEFAULT (CURRENT_TIMESTAMP), "
            "PRIMARY KEY (`id`))"
        ),
    ),
    ("facet_session_id", "CREATE UNIQUE INDEX `facet_session_id` ON `facets` (`session_id`)"),
    (
        "nodes",
        (
            "CREATE TABLE `nodes` (`hash` text NOT NULL, `bucket` json NULL, `type` text NULL, "
            "`role` text NULL, `content` json NULL, `model` text NULL, `provider` text NULL, "
            "`agent_name` text NULL, `stop_reason` text NULL, `prompt_tokens` integer NULL, "
            "`completion_tokens` integer NULL, `total_tokens` integer NULL, "
            "`cache_creation_input_tokens` integer NULL, `cache_read_input_tokens` integer NULL, "
            "`total_duration_ns` integer NULL, `prompt_duration_ns` integer NULL, "
            "`project` text NULL, "
            "`created_at` datetime NOT NULL DEFAULT (CURRENT_TIMESTAMP), `parent_hash` text NULL, "
            "PRIMARY KEY (`hash`), CONSTRAINT `nodes_nodes_parent` FOREIGN KEY (`parent_hash`) "
            "REFERENCES `nodes` (`hash`) ON DELETE SET NULL)"
        ),
    ),
    ("node_parent_hash", "CREATE INDEX `node_parent_hash` ON `nodes` (`parent_hash`)"),
    ("node_role", "CREATE INDEX `node_role` ON `nodes` (`role`)"),
    ("node_model", "CREATE INDEX `node_model` ON `nodes` (`model`)"),
    ("node_provider", "CREATE INDEX `node_provider` ON `nodes` (`provider`)"),
    ("node_agent_name", "CREATE INDEX `node_agent_name` ON `nodes` (`agent_name`)"),
    ("node_role_model", "CREATE INDEX `node_role_model` ON `nodes` (`role`, `model`)"),
    ("node_project", "CREATE INDEX `node_project` ON `nodes` (`project`)"),
)

_metadata = MetaData()

# Go writes the JSON columns as BLOBs, but rows written as TEXT are valid too (Go reads both), so
# these columns get no type processing: bytes go in as BLOBs and whatever is stored comes out.
_JSON_COLUMN = NullType()

# The columns we read and write. A database with looser DDL (Go accepts it too) works as long as
# these columns exist.
nodes = Table(
    "nodes",
    _metadata,
    Column("hash", Text, primary_key=True),
    Column("bucket", _JSON_COLUMN),
    Column("type", Text),
    Column("role", Text),
    Column("content", _JSON_COLUMN),
    Column("model", Text),
    Column("provider", Text),
    Column("agent_name", Text),
    Column("stop_reason", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("cache_creation_input_tokens", Integer),
    Column("cache_read_input_tokens", Integer),
    Column("total_duration_ns", Integer),
    Column("prompt_duration_ns", Integer),
    Column("project", Text),
    Column("created_at", Text, nullable=False),
    Column("parent_hash", Text),
)

NODE_COLUMNS: tuple[str, ...] = tuple(c.name for c in nodes.columns)
REQUIRED_NODE_COLUMNS = frozenset(NODE_COLUMNS)
