"""The sync runner's server calls: seal and push local nodes, pull, verify and open remote ones.

:func:`push_fn` and :func:`pull_fn` build the callables :class:`tapes_e2e.sync.worker.SyncRunner`
drives (see its contract), from an :class:`~tapes_e2e.client.ApiClient` and the vault's verified
chain and opened keys (:class:`~tapes_e2e.account.VaultAccess`). Client failures become the
engine's failure kinds; an envelope that fails verification is rejected (reported, not stored)
without stopping the page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

import keymgmt
from tapes_e2e.account import (
    VaultAccess,
    VaultMaterial,
    fetch_vault_material,
    open_vault_material,
)
from tapes_e2e.client import ApiClient
from tapes_e2e.envelopes import MetadataRecord, open_envelope, seal_envelope
from tapes_e2e.errors import AuthError, ServerError, ServerUnreachableError
from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.sync.engine import EngineConfig, Event
from tapes_e2e.sync.worker import (
    PulledBatch,
    PullFn,
    PushFn,
    PushReceipt,
    RefreshFn,
    SyncError,
    SyncRunner,
)

__all__ = ["PushHooks", "VaultHolder", "pull_fn", "push_fn", "refresh_fn", "vault_runner"]


def _failure(exc: ServerError) -> SyncError:
    if isinstance(exc, ServerUnreachableError):
        return SyncError("offline", exc.message)
    if isinstance(exc, AuthError):
        return SyncError("auth", exc.message)
    return SyncError("server", exc.message)  # an error answer, or one that does not decode


class VaultHolder:
    """The vault's verified chain and opened keys, shared by push and pull and replaced when the
    chain moves. The material (signed chain, sealed keyrings) is cached in the store's
    ``e2e_state`` and verified again on every load, so an up-to-date sync needs no chain
    request: each pull page says where the chain head is, and only a moved head is refetched."""

    def __init__(
        self, api: ApiClient, state: SyncState, vault: str, identity: keymgmt.Identity
    ) -> None:
        self.api, self.state, self.vault, self.identity = api, state, vault, identity
        stored = state.load(vault)
        self._head = keymgmt.ChainHead.from_dict(stored.head) if stored.head else None
        cached = state.values(vault)
        if _CHAIN in cached and _KEYRINGS in cached:
            material = (json.loads(cached[_CHAIN]), json.loads(cached[_KEYRINGS]))
            self.access = self._open(material)
        else:
            self.refresh()

    def _open(self, material: VaultMaterial) -> VaultAccess:
        access = open_vault_material(
            self.vault, material, self.identity, last_verified_head=self._head
        )
        self._head = access.state.head
        return access

    def refresh(self) -> None:
        """Fetch, verify (against the last verified head) and cache the chain and keyrings."""
        material = fetch_vault_material(self.api, self.vault)
        self.access = self._open(material)
        self.state.set_values(
            self.vault,
            **{_CHAIN: json.dumps(material[0]), _KEYRINGS: json.dumps(material[1])},
        )
        self.state.set_head(self.vault, self.access.state.head.to_dict())

    def follow(self, chain_seqno: int) -> None:
        """Refetch when the server says the chain moved past what this client verified."""
        if chain_seqno != self.access.state.head.seqno:
            self.refresh()


_CHAIN, _KEYRINGS = "chain_material", "keyring_material"


class PushHooks(Protocol):
    """What a team vault adds to a push (``tapes_e2e.teams.routing``): ``before_push`` catches up
    with a chain that moved, so nothing is sealed under an epoch a removal ended;
    ``after_push`` runs once the server acknowledged the batch (auto_share)."""

    def before_push(self, holder: VaultHolder) -> None: ...

    def after_push(
        self, access: VaultAccess, nodes: Sequence[Node], node_ids: Sequence[str]
    ) -> None: ...


def push_fn(api: ApiClient, holder: VaultHolder, hooks: PushHooks | None = None) -> PushFn:
    def push(vault: str, nodes: Sequence[Node]) -> PushReceipt:
        if hooks is not None:
            hooks.before_push(holder)
        access = holder.access
        envelopes = [
            seal_envelope(
                node, state=access.state, keys=access.keys, author=holder.identity
            ).to_dict()
            for node in nodes
        ]
        try:
            result = api.push(vault, envelopes)
        except ServerError as exc:
            raise _failure(exc) from exc
        ids = [str(envelope["node_id"]) for envelope in envelopes]
        if set(ids) - set(result.stored) - set(result.existing):
            raise SyncError("server", "the server did not acknowledge every node of the batch")
        if hooks is not None:
            hooks.after_push(access, nodes, ids)
        return PushReceipt(ids, result.first_seq, result.head_seq if result.first_seq else 0)

    return push


def pull_fn(api: ApiClient, holder: VaultHolder) -> PullFn:
    def pull(vault: str, after: int, limit: int) -> PulledBatch:
        try:
            page = api.pull(vault, after, limit)
            holder.follow(page.chain_seqno)
        except ServerError as exc:
            raise _failure(exc) from exc
        except keymgmt.KeymgmtError as exc:  # the moved chain does not verify: refuse it all
            raise SyncError(
                "integrity", f"the server's team chain is refused: {exc.message}"
            ) from exc
        access = holder.access
        nodes: list[tuple[Node, str]] = []
        rejected: list[str] = []
        for item in page.items:
            node_id = item.envelope.node_id
            try:
                opened = open_envelope(
                    msgspec.structs.asdict(item.envelope), state=access.state, keys=access.keys
                )
            except keymgmt.IntegrityError:
                rejected.append(
                    f"integrity: node {node_id[:16]}… failed verification and was not stored"
                )
                continue
            if isinstance(opened, MetadataRecord):
                continue  # a metadata-only vault: usage records, never content to store
            nodes.append((opened, node_id))
        cursor = max([after, page.cursor, *(item.seq for item in page.items)])
        return PulledBatch(nodes=nodes, cursor=cursor, more=page.more, rejected=rejected)

    return pull


def refresh_fn(api: ApiClient) -> RefreshFn:
    def refresh() -> None:
        try:
            api.refresh()
        except ServerError as exc:
            raise _failure(exc) from exc

    return refresh


def vault_runner(
    store: LocalProvider,
    api: ApiClient,
    vault: str,
    identity: keymgmt.Identity,
    *,
    sync_interval: float = 300.0,
    on_integrity: Callable[[str], None] | None = None,
    on_progress: Callable[[Event], None] | None = None,
    hooks: PushHooks | None = None,
) -> SyncRunner:
    """A runner for ``vault`` over ``store``. The chain is verified against the head this store
    verified last (a fork or rollback is refused) and the keys opened, from the cache when the
    store has one; the new head is recorded. ``hooks`` are a team vault's push hooks."""
    state = SyncState(store)
    holder = VaultHolder(api, state, vault, identity)
    return SyncRunner(
        state,
        vault,
        push_fn(api, holder, hooks),
        pull_fn(api, holder),
        refresh_login=refresh_fn(api),
        config=EngineConfig(interval=sync_interval),
        on_integrity=on_integrity,
        on_progress=on_progress,
    )
