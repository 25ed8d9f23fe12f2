"""The ``cloud`` provider: every operation goes to the server (RFC "Cloud Provider").

Nothing is stored locally but the identity key and the login. Nodes are sealed on ``put`` and
opened and verified on every read, exactly as a pull verifies them. ``get``/``has``/``ancestry``
/``depth`` are one request each (``ancestry`` uses the server's ancestry endpoint); ``list``,
``leaves`` and ``roots`` page through the vault (the server has no way to answer them for
content it cannot read, beyond the keyed parent links).

Node IDs are keyed per epoch, so a node's ID depends on the epoch it was sealed in: a node this
provider has not seen yet is looked up under each ID it can have, the current epoch's first
(one request when it was written in this epoch), and the ID found is remembered.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keymgmt
from tapes_e2e.account import open_vault, trust_for
from tapes_e2e.client import ApiClient
from tapes_e2e.config import CloudSettings
from tapes_e2e.envelopes import MetadataRecord, open_envelope, seal_envelope
from tapes_e2e.errors import (
    InvalidNodeError,
    MissingParentError,
    NodeNotFoundError,
    ParentNotStoredError,
    RemoteError,
    StaleEpochError,
)
from tapes_e2e.node import Node
from tapes_e2e.protocol import NodeOut, PackedNodeOut
from tapes_e2e.providers.base import DelegatedSharing
from tapes_e2e.teams.access import open_team
from tapes_e2e.teams.routing import share_leaf
from tapes_e2e.vaults import Trust, VaultAccess

__all__ = ["CloudProvider", "TeamCloudProvider", "team_cloud_provider"]

PAGE = 1000


@contextmanager
def _absent_as_not_found(node_hash: str) -> Iterator[None]:
    """The server's 404 for a node as the Provider contract's ``NodeNotFoundError``."""
    try:
        yield
    except RemoteError as exc:
        if exc.status == 404:
            raise NodeNotFoundError(node_hash) from exc
        raise


class CloudProvider(DelegatedSharing):
    """A vault on the server, read and written through an :class:`ApiClient`; sharing with
    teams through ``sharing`` (see :class:`~tapes_e2e.providers.base.DelegatedSharing`)."""

    def __init__(self, api: ApiClient, access: VaultAccess, trust: Trust) -> None:
        self.api, self.access, self.trust = api, access, trust
        self.identity = trust.identity
        self._ids: dict[str, str] = {}  # tapes hash -> the node ID the vault holds it under

    @property
    def vault(self) -> str:
        return self.access.vault

    def _fetch(self, node_hash: str) -> NodeOut:
        """The vault's record of ``node_hash``, under whichever epoch's ID it was sealed."""
        known = self._ids.get(node_hash)
        keys = self.access.content_keys()
        candidates = [known] if known else keys.node_ids(node_hash, up_to=self.access.state.epoch)
        for node_id in candidates:
            try:
                item = self.api.node(node_id)
            except RemoteError as exc:
                if exc.status != 404:
                    raise
                continue
            self._ids[node_hash] = node_id
            return item
        raise NodeNotFoundError(node_hash)

    def _node_id(self, node_hash: str) -> str:
        """The ID the vault holds ``node_hash`` under (``NodeNotFoundError`` if it holds none)."""
        if node_hash not in self._ids:
            self._fetch(node_hash)
        return self._ids[node_hash]

    def _open(self, item: NodeOut | PackedNodeOut) -> Node:
        opened = open_envelope(
            item.envelope, state=self.access.state, keys=self.access.content_keys()
        )
        if isinstance(opened, MetadataRecord):
            raise InvalidNodeError("this vault keeps metadata only: there is no content to read")
        self._ids[opened.hash] = item.envelope.node_id
        return opened

    def put(self, node: Node) -> bool:
        """Seal and push ``node``. A 409 means the vault moved to another key epoch (a removal)
        since this provider verified its chain: it catches up (verifying from the head it had)
        and seals the node again, once."""
        if not node.verify():
            raise InvalidNodeError(f"node {node.hash} does not match its content")
        try:
            return self._push(node)
        except StaleEpochError:
            pass
        self.access = open_vault(self.api, self.vault, self.trust)  # from the pin, never back
        return self._push(node)

    def _push(self, node: Node) -> bool:
        parent_id = None
        if node.parent_hash is not None:
            try:
                parent_id = self._node_id(node.parent_hash)
            except NodeNotFoundError:
                raise MissingParentError(f"parent {node.parent_hash} is not stored") from None
        envelope = seal_envelope(
            node, state=self.access.state, keys=self.access.content_keys(), author=self.identity,
            parent_id=parent_id,
        )  # fmt: skip
        try:
            result = self.api.push(self.vault, [envelope.to_dict()])
        except ParentNotStoredError as exc:
            raise MissingParentError(f"parent {node.parent_hash} is not stored") from exc
        self._ids[node.hash] = envelope.node_id
        return envelope.node_id in result.stored

    def get(self, node_hash: str) -> Node:
        node = self._open(self._fetch(node_hash))
        if node.hash != node_hash:  # pragma: no cover - open_envelope checked the keyed id
            raise keymgmt.IntegrityError()
        return node

    def has(self, node_hash: str) -> bool:
        try:
            self.get(node_hash)
        except NodeNotFoundError:
            return False
        return True

    def ancestry(self, node_hash: str) -> builtins.list[Node]:
        """The path from ``node_hash`` to its root, page by page, each page verified before
        the next is asked for: a server cannot splice another chain in (each node must be the
        parent of the one before) nor keep a client walking fabricated pages."""
        node_id = self._node_id(node_hash)
        path: builtins.list[Node] = []
        expected: str | None = node_hash
        with _absent_as_not_found(node_hash):
            for page in self.api.ancestry_pages(node_id):
                for item in page:
                    node = self._open(item)
                    if node.hash != expected:
                        raise keymgmt.IntegrityError()
                    path.append(node)
                    expected = node.parent_hash
        return path

    def depth(self, node_hash: str) -> int:
        return len(self.ancestry(node_hash)) - 1

    def _all(self) -> Iterator[Node]:
        after = 0
        while True:
            page = self.api.pull(self.vault, after, PAGE)
            for item in page.items:
                yield self._open(item)
            after = page.cursor
            if not page.more:
                return

    def list(self) -> builtins.list[Node]:
        return sorted(self._all(), key=lambda n: n.created_at)

    def roots(self) -> builtins.list[Node]:
        return [n for n in self._all() if n.parent_hash is None]

    def leaves(self) -> builtins.list[Node]:
        nodes = builtins.list(self._all())
        parents = {n.parent_hash for n in nodes}
        return [n for n in nodes if n.hash not in parents]

    def close(self) -> None:
        """Nothing to release: the injected HTTP client belongs to the caller."""


class TeamCloudProvider(CloudProvider):
    """The cloud provider on a team vault; with ``auto_share``, the leaves of the sessions put
    through it are shared when it closes (nothing is stored locally to do it later)."""

    def __init__(
        self, api: ApiClient, access: VaultAccess, trust: Trust, *, auto_share: bool
    ) -> None:
        access.content_keys()  # a viewer holds none: refused before anything is put
        super().__init__(api, access, trust)
        self.auto_share = auto_share
        self._put: dict[str, Node] = {}

    def put(self, node: Node) -> bool:
        inserted = super().put(node)
        self._put[node.hash] = node
        return inserted

    def close(self) -> None:
        if self.auto_share and self._put:
            parents = {n.parent_hash for n in self._put.values()}
            for node in self._put.values():
                if node.hash not in parents:
                    self._share_leaf(node)
            self._put.clear()
        super().close()

    def _share_leaf(self, leaf: Node) -> None:
        root = self.ancestry(leaf.hash)[-1]
        share_leaf(self.api, self.access, self.identity, self._node_id(leaf.hash), root)


def team_cloud_provider(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, cloud: CloudSettings
) -> TeamCloudProvider:
    """The cloud provider on the configured team's vault, opened and verified."""
    team = cloud.team_id or ""
    access = open_team(api, team, identity, dotdir)
    trust = trust_for(dotdir, identity)
    return TeamCloudProvider(api, access, trust, auto_share=cloud.auto_share)
