"""Which vault a sync uses, and what a team vault adds to it.

With ``[storage.cloud] team_id`` set, ``tapes storage sync``, the hybrid provider's background
worker and the cloud provider use that team's vault instead of the personal vault: nodes are
sealed under the team's current epoch and policy, and a pull stores what the server lets this
member read (their own uploads and the ancestry of sessions shared with the team).

Before the first sync of a team, the team is opened through
:func:`~tapes_e2e.teams.access.open_team` (which checks a joiner's chain against their invite
code and pins its head), so the sync's own chain verification starts from this identity's pin
(:mod:`tapes_e2e.vaults`) rather than trusting the first chain it sees.

:class:`TeamPushHooks` then, before each push batch, asks for the chain head (one small
request, only when there is something to push) and follows a moved chain before sealing: after a
removal nothing is sealed under the epoch the removed member holds. After the server acknowledged
a batch, with ``auto_share`` it shares the session leaves in it (:class:`AutoShare`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keymgmt
from tapes_e2e.account import trust_for
from tapes_e2e.client import ApiClient
from tapes_e2e.config import CloudSettings
from tapes_e2e.errors import AlreadySharedError, RemoteError, ServerError
from tapes_e2e.node import Node
from tapes_e2e.remote_sync import VaultHolder, chain_failures
from tapes_e2e.store.database import driver
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.teams import local
from tapes_e2e.teams.access import open_team
from tapes_e2e.vaults import VaultAccess

if TYPE_CHECKING:
    from tapes_e2e.providers.local import LocalProvider

__all__ = [
    "AutoShare",
    "TeamPushHooks",
    "prepare_team_sync",
    "share_leaf",
    "team_sync_hooks",
]

log = logging.getLogger("tapes.teams")

AUTO_NOTE = "shared automatically (auto_share)"
_PENDING_SCOPE = "autoshare-pending:"


def share_leaf(
    api: ApiClient, access: VaultAccess, sharer: keymgmt.Identity, leaf_id: str, root: Node
) -> int | None:
    """Share the session whose leaf is ``leaf_id`` with ``access``'s team, titled by its root's
    text; a leaf the server says is shared already (409) counts as done. Returns the sequence
    number the share took in the vault (None: shared already)."""
    share = keymgmt.create_share(
        state=access.state, keys=access.content_keys(), sharer=sharer, leaf_id=leaf_id,
        title=" ".join(root.bucket.text().split())[:80], note=AUTO_NOTE,
    )  # fmt: skip
    try:
        return api.share(leaf_id, access.state.team, share.to_dict()).seq
    except AlreadySharedError:
        return None


def prepare_team_sync(api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str) -> None:
    """Open the team when this identity has not pinned it yet (or a join, or a removal's
    keyring, is unfinished)."""
    saved = local.load(dotdir)
    unfinished = team in saved.pending_keyrings or any(j.team == team for j in saved.joins.values())
    if trust_for(dotdir, identity).pin(team) is None or unfinished:
        open_team(api, team, identity, dotdir)


class AutoShare:
    """Shares the session leaves of pushed batches with the team, idempotently.

    The leaves go to a pending set in the store's ``e2e_state`` first and leave it once the
    server stored the share or said it exists (409), so a share that failed (offline) is tried
    again after the next push, and a crash loses none.
    """

    def __init__(
        self, api: ApiClient, identity: keymgmt.Identity, store: LocalProvider, team: str
    ) -> None:
        self.api, self.identity, self.store, self.team = api, identity, store, team
        self.state = SyncState(store)
        self.scope = _PENDING_SCOPE + team
        self.shared = 0

    def leaves(self, nodes: Sequence[Node]) -> list[Node]:
        """The nodes of ``nodes`` that no stored node continues."""
        hashes = [n.hash for n in nodes]
        marks = ", ".join("?" * len(hashes))
        with self.store.engine.connect() as conn:
            rows = driver(conn).execute(
                f"SELECT DISTINCT parent_hash FROM nodes WHERE parent_hash IN ({marks})",  # noqa: S608
                hashes,
            )
            continued = {str(parent) for (parent,) in rows}
        return [n for n in nodes if n.hash not in continued]

    def add(self, nodes: Sequence[Node], node_ids: Sequence[str]) -> None:
        by_hash = dict(zip((n.hash for n in nodes), node_ids, strict=True))
        leaves = self.leaves(nodes)
        if leaves:
            self.state.set_values(self.scope, **{n.hash: by_hash[n.hash] for n in leaves})

    def flush(self, access: VaultAccess) -> None:
        """Share every pending leaf; a failure is logged and the leaf stays pending."""
        for leaf_hash, leaf_id in sorted(self.state.values(self.scope).items()):
            try:
                self._share(access, leaf_hash, leaf_id)
            except RemoteError as exc:
                if exc.status in (402, 429) or exc.status >= 500:
                    log.warning("auto-share of %s failed, will retry: %s", leaf_hash, exc.message)
                    continue
                log.warning("auto-share of %s refused: %s", leaf_hash, exc.message)
            except (ServerError, keymgmt.KeymgmtError) as exc:
                log.warning("auto-share of %s failed, will retry: %s", leaf_hash, exc.message)
                continue
            self.state.set_values(self.scope, **{leaf_hash: None})

    def _share(self, access: VaultAccess, leaf_hash: str, leaf_id: str) -> None:
        root = self.store.ancestry(leaf_hash)[-1]
        seq = share_leaf(self.api, access, self.identity, leaf_id, root)
        if seq is not None:  # the number is ours: the pull steps over it (no gap to walk)
            self.state.add_own_seqs(self.team, [(seq, seq, 0)])
        self.shared += 1


class TeamPushHooks:
    """The push hooks of a team vault (see :class:`tapes_e2e.remote_sync.PushHooks`)."""

    def __init__(self, api: ApiClient, auto_share: AutoShare | None) -> None:
        self.api, self.auto_share = api, auto_share

    def before_push(self, holder: VaultHolder) -> None:
        verified = holder.access.state.head.seqno
        with chain_failures():
            holder.follow(self.api.chain(holder.vault, after=verified).head.seqno)

    def after_push(
        self, access: VaultAccess, nodes: Sequence[Node], node_ids: Sequence[str]
    ) -> None:
        if self.auto_share is None:
            return
        try:
            self.auto_share.add(nodes, node_ids)
            self.auto_share.flush(access)
        except Exception:  # the push itself succeeded; sharing is retried after the next one
            log.exception("auto-share failed")


def team_sync_hooks(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, cloud: CloudSettings, *,
    store: LocalProvider, vault: str,
) -> TeamPushHooks | None:  # fmt: skip
    """The push hooks for syncing ``vault`` into ``store``: None for the personal vault; for
    the configured team, after :func:`prepare_team_sync`."""
    if vault != cloud.team_id:
        return None
    prepare_team_sync(api, identity, dotdir, vault)
    auto = AutoShare(api, identity, store, vault) if cloud.auto_share else None
    return TeamPushHooks(api, auto)
