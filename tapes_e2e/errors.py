"""Errors of the tapes client, written for the person at the terminal.

Every error carries a one-line ``message`` and, where there is something to do about it, a
``hint``. The CLI prints them as ``tapes: error: …`` / ``tapes: hint: …`` and exits non-zero.

::

    TapesError
    ├── ConfigError               config.toml or a command-line setting is invalid
    ├── StoreError                the local database
    │   ├── NotATapesDatabaseError   the file is not SQLite, or has no usable nodes table
    │   ├── NodeNotFoundError        no node with that hash
    │   ├── MissingParentError       a node's parent is not stored (parents go first)
    │   ├── CorruptStoreError        the stored DAG is inconsistent (cycle, bad row)
    │   └── StoreBusyError           another writer held the database for too long
    ├── InvalidNodeError          a node's fields are malformed or its hash does not match
    └── ImportFormatError         an import file is malformed (names the line)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptStoreError",
    "ImportFormatError",
    "InvalidNodeError",
    "MissingParentError",
    "NodeNotFoundError",
    "NotATapesDatabaseError",
    "StoreBusyError",
    "StoreError",
    "TapesError",
]


class TapesError(Exception):
    """Base of every error the client reports to a user."""

    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint


class ConfigError(TapesError):
    default_hint = "check ~/.tapes/config.toml (or the file under --config-dir / TAPES_HOME)"


class StoreError(TapesError):
    pass


class NotATapesDatabaseError(StoreError):
    default_hint = "point --db (or TAPES_SQLITE) at a tapes SQLite database"


class NodeNotFoundError(StoreError):
    default_hint = "list what is stored with `tapes session list`"

    def __init__(self, node_hash: str) -> None:
        super().__init__(f"no node {node_hash} in the store")
        self.node_hash = node_hash


class MissingParentError(StoreError):
    default_hint = "store (or import) the parent node before its children"


class CorruptStoreError(StoreError):
    default_hint = "run `tapes verify` to list the damaged nodes"


class StoreBusyError(StoreError):
    default_hint = "another program is writing to the database; try again"


class InvalidNodeError(TapesError):
    pass


class ImportFormatError(TapesError):
    default_hint = "nothing was imported; fix the line and run the import again"

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
