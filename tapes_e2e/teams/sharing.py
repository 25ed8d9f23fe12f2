"""Sharing sessions with a team: share, unshare, and the list of shared sessions, verified.

A share is ``keymgmt.create_share``: signed by the sharer over the team, the session's *keyed*
leaf ID and the time, with the title and note encrypted under the team's current epoch key. The
server makes the leaf's ancestry readable to the team (server-enforced ACL: every holder of the
epoch key could decrypt any node of the vault given its ciphertext).

Listing verifies each share against the verified chain (signature by a current reader, expiry),
checks that it names the session the server says, decrypts the title, and opens the leaf node so
the session is named by its tapes hash as everywhere else; a share that fails any check is
reported and not shown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

import keymgmt
from tapes_e2e.client import ApiClient
from tapes_e2e.envelopes import MetadataRecord, open_envelope, seal_envelope
from tapes_e2e.errors import AlreadySharedError, RemoteError, StaleEpochError, TeamError
from tapes_e2e.node import Node
from tapes_e2e.proof import TeamEvidence
from tapes_e2e.protocol import MAX_BATCH_NODES
from tapes_e2e.protocol.teams import ShareOut
from tapes_e2e.teams.access import open_team
from tapes_e2e.teams.shared import SharedSession, ShareOptions
from tapes_e2e.vaults import VaultAccess

__all__ = [
    "SharedView",
    "TeamSharing",
    "fetch_shared",
    "list_shared",
    "push_session",
    "share_evidence",
    "share_session",
    "unshare_session",
]

log = logging.getLogger("tapes.teams")


def push_session(api: ApiClient, access: VaultAccess, identity: keymgmt.Identity,
                 path: Sequence[Node]) -> None:  # fmt: skip
    """Push a session (``path`` from root to leaf) into the team vault, sealed for its current
    epoch and policy, each node naming its parent as sealed in this epoch. Idempotent within an
    epoch: nodes the vault holds are answered ``existing`` (after a rotation the path is stored
    once more under the new epoch's IDs, since IDs are keyed per epoch)."""
    keys = access.content_keys()
    for start in range(0, len(path), MAX_BATCH_NODES):
        batch = path[start : start + MAX_BATCH_NODES]
        envelopes = [
            seal_envelope(node, state=access.state, keys=keys, author=identity).to_dict()
            for node in batch
        ]
        api.push(access.vault, envelopes)


def share_session(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, path: Sequence[Node],
    *, title: str = "", note: str = "", expires_at: datetime | None = None,
) -> str:  # fmt: skip
    """Push the session into the team vault if needed and share it; returns its keyed leaf ID."""
    access = open_team(api, team, identity, dotdir)
    if expires_at is not None:  # the signed expiry is in whole seconds; the two must agree
        expires_at = expires_at.replace(microsecond=0)
    try:
        push_session(api, access, identity, path)
    except StaleEpochError:
        # the vault left the epoch just opened (a removal since): catch up, seal again, once
        access = open_team(api, team, identity, dotdir)
        push_session(api, access, identity, path)
    keys = access.content_keys()
    leaf_id = keys.node_id(access.state.epoch, path[-1].hash)
    share = keymgmt.create_share(
        state=access.state, keys=keys, sharer=identity, leaf_id=leaf_id, title=title, note=note,
        expires_at=int(expires_at.timestamp()) if expires_at is not None else None,
    )  # fmt: skip
    try:
        api.share(leaf_id, team, share.to_dict(), expires_at)
    except AlreadySharedError:
        raise TeamError(
            f"session {path[-1].hash[:12]} is already shared with team {team}",
            hint="unshare it first to share it again with another title or expiry",
        ) from None
    return leaf_id


def unshare_session(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, leaf_hash: str
) -> None:
    """Withdraw the share of the session whose leaf is ``leaf_hash`` (the leaf may be named
    under any epoch's key it was shared in: each ID it can have is tried, newest first)."""
    access = open_team(api, team, identity, dotdir)
    for leaf_id in access.content_keys().node_ids(leaf_hash, up_to=access.state.epoch):
        try:
            api.unshare(leaf_id, team)
        except RemoteError as exc:
            if exc.status != 404:
                raise
        else:
            return
    raise TeamError(
        f"session {leaf_hash[:12]} is not shared with team {team}",
        hint=f"list the shares with `tapes session shared --team {team}`",
    )


@dataclass(frozen=True)
class SharedView:
    """One verified share: ``session_id`` is the leaf's tapes hash (None when the team keeps
    metadata only and there is no content to name it by), ``leaf_id`` its keyed node ID."""

    team_id: str
    session_id: str | None
    leaf_id: str
    shared_by: str
    title: str
    note: str
    shared_at: datetime
    expires_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "team_id": self.team_id,
            "session_id": self.session_id,
            "leaf_id": self.leaf_id,
            "shared_by": self.shared_by,
            "title": self.title,
            "note": self.note,
            "shared_at": self.shared_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def _when(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _verify(api: ApiClient, access: VaultAccess, share: ShareOut) -> SharedView:
    """Raise keymgmt's ``ShareError``/``IntegrityError`` unless every check passes."""
    verified = keymgmt.verify_share(msgspec.to_builtins(share.statement), state=access.state)
    if verified.leaf_id != share.session_id:
        raise keymgmt.ShareError("the share names another session than the server lists")
    keys = access.content_keys()
    title, note = keymgmt.open_share_text(verified, keys=keys)
    leaf = api.node(verified.leaf_id)  # opening checks its ID is the keyed hash of its content
    opened = open_envelope(leaf.envelope, state=access.state, keys=keys)
    if leaf.envelope.node_id != verified.leaf_id and (
        # sealed again since it was shared (tapes team reencrypt): the ID the sharer signed
        # must still be this very content's ID, under an epoch this member holds
        isinstance(opened, MetadataRecord)
        or verified.leaf_id not in keys.node_ids(opened.hash, up_to=access.state.epoch)
    ):
        raise keymgmt.IntegrityError()
    session = None if isinstance(opened, MetadataRecord) else opened.hash
    shared_at = _when(verified.time) or datetime.now(UTC)
    return SharedView(
        access.vault, session, verified.leaf_id, verified.sharer, title, note, shared_at,
        _when(verified.expires_at),
    )  # fmt: skip


def _team_shares(api: ApiClient, team: str) -> list[ShareOut]:
    shares, after = [], 0
    while True:
        page = api.team_sessions(team, after)
        shares += page.items
        if not page.more:
            return shares
        after = page.cursor


def list_shared(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str | None = None
) -> tuple[list[SharedView], list[str]]:
    """The verified shares of ``team`` (or of every team), and one message per refused share."""
    teams: dict[str, VaultAccess] = {}
    if team is not None:  # the team is verified even when it lists no share
        teams[team] = open_team(api, team, identity, dotdir)
    shares = _team_shares(api, team) if team is not None else api.shared()
    views: list[SharedView] = []
    refused: list[str] = []
    for share in shares:
        if share.team_id not in teams:
            teams[share.team_id] = open_team(api, share.team_id, identity, dotdir)
        try:
            views.append(_verify(api, teams[share.team_id], share))
        except keymgmt.KeymgmtError as exc:
            log.debug("share %s refused: %s", share.share_id, exc.message)
            refused.append(
                f"integrity: the share of {share.session_id[:16]}… in team {share.team_id} "
                f"does not verify ({exc.message}); not shown"
            )
    return views, refused


def share_evidence(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, leaf_hash: str
) -> TeamEvidence:
    """What an offline proof needs to show that a member shared the session ending at
    ``leaf_hash`` with ``team``: the verified chain, the share statement (verified here first,
    as any member's client would), and the key deriving its keyed leaf ID from ``leaf_hash``.

    Revealing that key lets whoever holds the proof test whether a guessed tapes hash has a
    given ID under that one epoch's key (docs/proofs.md); it opens no content."""
    access = open_team(api, team, identity, dotdir)
    keys = access.content_keys()
    candidates = {
        keymgmt.node_id(key, leaf_hash): key
        for key in [
            *(keys.id_key(epoch) for epoch in sorted(keys.epochs)),
            keys.vault_id_key,
        ]
        if key is not None
    }
    for share in _team_shares(api, team):
        if share.session_id not in candidates:
            continue
        statement = msgspec.to_builtins(share.statement)
        verified = keymgmt.verify_share_made(statement, state=access.state)
        if verified.leaf_id != share.session_id:
            raise keymgmt.ShareError("the share names another session than the server lists")
        return TeamEvidence(
            chain=keymgmt.chain_to_wire(access.state.statements),
            share=statement,
            leaf_id_key=candidates[verified.leaf_id],
        )
    raise TeamError(
        f"session {leaf_hash[:12]} is not shared with team {team}",
        hint=f"share it first (`tapes session share {leaf_hash[:12]} --team {team}`), or prove "
        "it without --team",
    )


def _pick(views: list[SharedView], ref: str) -> SharedView:
    """The one verified share ``ref`` names: the start of its session ID or of its leaf ID."""
    found = [v for v in views if (v.session_id or "").startswith(ref) or v.leaf_id.startswith(ref)]
    if len(ref) < 6 or len(found) != 1:
        raise TeamError(
            f"no single session shared with you starts {ref!r}",
            hint="list them with `tapes session shared` and give more of the session ID",
        )
    return found[0]


def fetch_shared(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, ref: str, team: str | None = None
) -> tuple[SharedView, list[Node]]:
    """One shared session, verified node by node, root first: its share verifies against the
    team's chain, every envelope opens under the team keys with its ID the keyed hash of its
    content, each node's parent hash is the next one's hash, and the leaf is the session the
    share names. Nodes of the session the share does not reach are left out at the root end
    (the caller stores what links to what it already holds)."""
    views, _refused = list_shared(api, identity, dotdir, team)
    view = _pick(views, ref)
    access = open_team(api, view.team_id, identity, dotdir)
    keys = access.content_keys()
    nodes: list[Node] = []
    for item in api.ancestry(view.leaf_id):  # the leaf first, each page a continued path
        opened = open_envelope(item.envelope, state=access.state, keys=keys)
        if isinstance(opened, MetadataRecord):
            raise TeamError(
                f"team {view.team_id} keeps metadata only: the session has no content to pull"
            )
        if nodes and nodes[-1].parent_hash != opened.hash:
            raise keymgmt.IntegrityError()
        nodes.append(opened)
    if not nodes or nodes[0].hash != view.session_id:
        raise keymgmt.IntegrityError()
    return view, nodes[::-1]


def _session(view: SharedView) -> SharedSession:
    """A verified share as the RFC's SharedSession; a metadata-only team's session is named by
    its keyed leaf ID (there is no content to name it by)."""
    return SharedSession(
        session_id=view.session_id or view.leaf_id,
        team_id=view.team_id,
        shared_by=view.shared_by,
        title=view.title,
        note=view.note,
        shared_at=view.shared_at,
        expires_at=view.expires_at,
    )


class TeamSharing:
    """The RFC's ``TeamProvider`` operations for a provider (hybrid or cloud) of this client.

    ``ancestry`` is the provider's own (node first, then its ancestors), so a session is shared
    from wherever the provider keeps it. Shares that fail verification are logged and left out
    of :meth:`shared_sessions`, as ``tapes session shared`` reports them.
    """

    def __init__(
        self,
        api: ApiClient,
        identity: keymgmt.Identity,
        dotdir: Path,
        ancestry: Callable[[str], Sequence[Node]],
    ) -> None:
        self.api, self.identity, self.dotdir, self._ancestry = api, identity, dotdir, ancestry

    def shared_sessions(self, team_id: str) -> list[SharedSession]:
        views, refused = list_shared(self.api, self.identity, self.dotdir, team_id)
        for message in refused:
            log.error("%s", message)
        return [_session(view) for view in views]

    def share_session(self, session_id: str, team_id: str, options: ShareOptions) -> None:
        path = list(reversed(self._ancestry(session_id)))
        share_session(
            self.api, self.identity, self.dotdir, team_id, path,
            title=options.title, note=options.note, expires_at=options.expires_at,
        )  # fmt: skip

    def unshare_session(self, session_id: str, team_id: str) -> None:
        unshare_session(self.api, self.identity, self.dotdir, team_id, session_id)
