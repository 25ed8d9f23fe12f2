"""A read-only view of verified nodes held in memory, for the ``cloud`` provider's listings.

With ``provider = "cloud"`` nothing but keys is kept on disk, so ``tapes session list|show|export``
fetch the vault from the server (every node opened and verified as a pull verifies it) and answer
from this view: the same summaries, prefix lookup, ancestry and export order as the local store
gives, computed in memory and never written anywhere.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator

from tapes_e2e.errors import NodeNotFoundError
from tapes_e2e.node import Node
from tapes_e2e.providers.local import SessionSummary, only_match, session_prefix

__all__ = ["NodeView"]


class NodeView:
    """Verified nodes by hash, with the local store's read methods."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self._nodes = {node.hash: node for node in nodes}
        self._parents = {n.parent_hash for n in self._nodes.values() if n.parent_hash}

    def close(self) -> None:
        self._nodes.clear()

    def get(self, node_hash: str) -> Node:
        try:
            return self._nodes[node_hash]
        except KeyError:
            raise NodeNotFoundError(node_hash) from None

    def get_many(self, hashes: Iterable[str]) -> dict[str, Node]:
        return {h: self._nodes[h] for h in hashes if h in self._nodes}

    def ancestry(self, node_hash: str) -> builtins.list[Node]:
        """The node and its ancestors, leaf first (stops at a parent the view lacks)."""
        path, seen = [self.get(node_hash)], {node_hash}
        while (parent := path[-1].parent_hash) is not None and parent in self._nodes:
            if parent in seen:  # pragma: no cover - hashes chain content, so no cycle verifies
                break
            seen.add(parent)
            path.append(self._nodes[parent])
        return path

    def resolve_prefix(self, prefix: str) -> str:
        prefix = session_prefix(prefix)
        return only_match(prefix, [h for h in self._nodes if h.startswith(prefix)][:2])

    def leaves(self) -> builtins.list[Node]:
        return [n for n in self._nodes.values() if n.hash not in self._parents]

    def sessions(self, limit: int = 50) -> builtins.list[SessionSummary]:
        """The ``limit`` most recent sessions, newest first (as the local store orders them)."""
        newest = sorted(self.leaves(), key=lambda n: n.created_at, reverse=True)[:limit]
        summaries = []
        for leaf in newest:
            path = self.ancestry(leaf.hash)
            root = path[-1] if path[-1].parent_hash is None else None
            usages = [n.usage for n in path if n.usage is not None]
            summaries.append(
                SessionSummary(
                    session_id=leaf.hash,
                    root_hash=root.hash if root is not None else None,
                    node_count=len(path),
                    prompt_tokens=sum(u.prompt_tokens or 0 for u in usages),
                    completion_tokens=sum(u.completion_tokens or 0 for u in usages),
                    total_tokens=sum(u.total_tokens or 0 for u in usages),
                    started_at=min(n.created_at for n in path),
                    last_at=max(n.created_at for n in path),
                    model=leaf.bucket.model or "",
                )
            )
        return sorted(summaries, key=lambda s: s.last_at, reverse=True)

    def counts(self) -> tuple[int, int, int]:
        """(nodes, sessions, roots)."""
        roots = sum(1 for n in self._nodes.values() if n.parent_hash is None)
        return len(self._nodes), len(self.leaves()), roots

    def iter_topological(self) -> Iterator[Node]:
        """Every node, parents before children."""
        done: set[str] = set()
        for node in sorted(self._nodes.values(), key=lambda n: n.created_at):
            for item in reversed(self.ancestry(node.hash)):
                if item.hash not in done:
                    done.add(item.hash)
                    yield item
