"""Export and import of nodes as JSON Lines, one Go-shaped node per line.

Export writes parents before children. Import is all or nothing: every line is parsed and its hash
recomputed, nodes go into one transaction with foreign-key checks deferred to the commit (so a file
may list a child before its parent), and any malformed line, wrong hash or parent found neither in
the file nor in the store rolls back everything and names the line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import msgspec

from tapes_e2e.errors import ImportFormatError, InvalidNodeError
from tapes_e2e.node import Node, node_from_bytes
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.database import driver, missing_hashes, write
from tapes_e2e.store.rows import INSERT_SQL, node_to_row

__all__ = ["ImportResult", "export_nodes", "import_nodes"]

_BATCH = 2000
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ImportResult:
    lines: int
    new: int

    @property
    def existing(self) -> int:
        return self.lines - self.new


def export_nodes(nodes: Iterable[Node], out: IO[bytes]) -> int:
    """Write ``nodes`` as JSON Lines; return how many were written."""
    count = 0
    for node in nodes:
        out.write(_encoder.encode(node.to_json()))
        out.write(b"\n")
        count += 1
    return count


def _parse(lines: Iterable[bytes]) -> Iterator[tuple[int, Node]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, node_from_bytes(line)
        except InvalidNodeError as exc:
            raise ImportFormatError(number, str(exc)) from exc


def import_nodes(
    store: LocalProvider,
    lines: Iterable[bytes],
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import JSON Lines of nodes into ``store`` in one transaction."""
    seen: set[str] = set()
    # Lines whose parent had not appeared yet: checked once the whole file is read.
    forward: dict[str, int] = {}
    new = count = 0
    with write(store.engine) as conn:
        raw = driver(conn)
        raw.execute("PRAGMA defer_foreign_keys = ON")
        batch: list[Node] = []
        for number, node in _parse(lines):
            count += 1
            if node.parent_hash is not None and node.parent_hash not in seen:
                forward.setdefault(node.parent_hash, number)
            seen.add(node.hash)
            batch.append(node)
            if len(batch) >= _BATCH:
                new += _insert(raw, batch)
                batch.clear()
                if progress is not None:
                    progress(count)
        new += _insert(raw, batch)
        _check_parents(raw, forward, seen)
    return ImportResult(lines=count, new=new)


def _insert(raw: sqlite3.Connection, batch: list[Node]) -> int:
    before = raw.total_changes
    raw.executemany(INSERT_SQL, [node_to_row(n) for n in batch])
    return raw.total_changes - before


def _check_parents(raw: sqlite3.Connection, forward: dict[str, int], seen: set[str]) -> None:
    unresolved = {parent: line for parent, line in forward.items() if parent not in seen}
    missing = missing_hashes(raw, unresolved)
    if missing:
        line, parent = min((unresolved[p], p) for p in missing)
        raise ImportFormatError(line, f"parent {parent} is neither in the file nor in the store")
