"""The storage provider contract, from the RFC's Go interfaces in Python naming.

Three protocols, each extending the last where the RFC does:

- ``Provider``: Go tapes' ``storage.Driver`` (put, get, has, ancestry, leaves, close, plus list,
  roots and depth), implemented by the ``local``, ``cloud`` and ``hybrid`` providers;
- ``SyncProvider``: sync, pull and sync_status, for providers with a remote (``hybrid``);
- ``TeamProvider``: sharing sessions with teams.

A **session** is a leaf node together with its ancestry; its ID is the leaf's hash.

Every method raises only ``tapes_e2e.errors.TapesError`` subclasses, named in its docstring, so a
caller can report any failure with one ``except TapesError``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from tapes_e2e.errors import ConfigError
from tapes_e2e.node import Node
from tapes_e2e.teams.shared import SharedSession, ShareOptions

__all__ = [
    "DelegatedSharing",
    "Provider",
    "ShareOptions",
    "SharedSession",
    "Sharing",
    "SyncProvider",
    "SyncStatus",
    "TeamProvider",
]


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Where a provider's sync stands (the RFC's ``SyncStatus``)."""

    last_sync_at: datetime | None
    pending_push: int
    pending_pull: int
    remote_version: str


@runtime_checkable
class Provider(Protocol):
    """Where nodes are stored. Content addressing makes every write idempotent."""

    def put(self, node: Node) -> bool:
        """Store ``node``; return True if it was new, False if that hash was already stored.

        The first writer of a hash wins and nothing is rewritten, as in Go tapes. When ``put``
        returns, the node is durable.

        Raises ``InvalidNodeError`` if the node's hash does not match its content,
        ``MissingParentError`` if its parent is not stored, ``StoreError`` on storage failure.
        """
        ...

    def get(self, node_hash: str) -> Node:
        """The node with this hash. Raises ``NodeNotFoundError``, ``StoreError``."""
        ...

    def has(self, node_hash: str) -> bool:
        """Whether a node with this hash is stored. Raises ``StoreError``."""
        ...

    def ancestry(self, node_hash: str) -> builtins.list[Node]:
        """The path from the node to its root: the node first, the root last.

        Raises ``NodeNotFoundError`` if the node is not stored, ``CorruptStoreError`` if the
        stored parent links loop.
        """
        ...

    def leaves(self) -> builtins.list[Node]:
        """Every node without children: the heads of all sessions. Raises ``StoreError``."""
        ...

    def list(self) -> builtins.list[Node]:
        """Every stored node, oldest first (by ``created_at``). Raises ``StoreError``."""
        ...

    def roots(self) -> builtins.list[Node]:
        """Every node without a parent. Raises ``StoreError``."""
        ...

    def depth(self, node_hash: str) -> int:
        """How many ancestors the node has (0 for a root).

        Raises ``NodeNotFoundError``, ``CorruptStoreError``.
        """
        ...

    def close(self) -> None:
        """Release connections and background work. Safe to call twice."""
        ...


@runtime_checkable
class SyncProvider(Provider, Protocol):
    """A provider with a remote copy (hybrid): local writes are pushed, remote ones pulled."""

    def sync(self) -> None:
        """Push local nodes not yet on the remote, then pull what is new there.

        Raises ``TapesError`` subclasses for an unreachable remote, a rejected login, or a remote
        whose data fails verification (nothing unverified is stored).
        """
        ...

    def pull(self) -> None:
        """Fetch remote nodes newer than the stored cursor, verify and store them."""
        ...

    def sync_status(self) -> SyncStatus:
        """Pending push and pull counts and the last sync time, without scanning every node."""
        ...


@runtime_checkable
class Sharing(Protocol):
    """Sharing sessions with teams (the RFC's TeamProvider methods)."""

    def shared_sessions(self, team_id: str) -> Sequence[SharedSession]:
        """Sessions shared with ``team_id`` that the caller may read (live, unexpired shares)."""
        ...

    def share_session(self, session_id: str, team_id: str, options: ShareOptions) -> None:
        """Share the session whose leaf is ``session_id`` with ``team_id``.

        Raises ``NodeNotFoundError`` if the session is not stored, ``TapesError`` subclasses if
        the caller is not a member or the team's plan refuses it.
        """
        ...

    def unshare_session(self, session_id: str, team_id: str) -> None:
        """Withdraw a share. Members lose access from that moment; what they already pulled
        stays on their machines."""
        ...


@runtime_checkable
class TeamProvider(Provider, Sharing, Protocol):
    """A provider that can share sessions with teams."""


class DelegatedSharing:
    """The :class:`TeamProvider` methods of a provider that hands them to ``sharing`` (a
    ``tapes_e2e.teams.sharing.TeamSharing``, set by ``open_provider``), so that the hybrid and
    cloud providers share sessions the same way ``tapes session share`` does."""

    sharing: Sharing | None = None

    def _sharing(self) -> Sharing:
        if self.sharing is None:
            raise ConfigError(
                "this provider was opened without a login, so it cannot share sessions",
                hint="open it with `open_provider` after `tapes auth login`",
            )
        return self.sharing

    def shared_sessions(self, team_id: str) -> Sequence[SharedSession]:
        return self._sharing().shared_sessions(team_id)

    def share_session(self, session_id: str, team_id: str, options: ShareOptions) -> None:
        self._sharing().share_session(session_id, team_id, options)

    def unshare_session(self, session_id: str, team_id: str) -> None:
        self._sharing().unshare_session(session_id, team_id)
