"""The sync runner's server calls: seal and push local nodes, pull, verify and open remote ones.

:func:`push_fn` and :func:`pull_fn` build the callables :class:`tapes_e2e.sync.worker.SyncRunner`
drives (see its contract), from an :class:`~tapes_e2e.client.ApiClient` and the vault's verified
chain and opened keys (:class:`~tapes_e2e.account.VaultAccess`). Client failures become the
engine's failure kinds; an envelope that fails verification is rejected (reported, not stored)
without stopping the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

import keymgmt
from tapes_e2e.account import VaultAccess, open_vault
from tapes_e2e.client import ApiClient
from tapes_e2e.client_errors import AuthError, ProtocolError, RemoteError, ServerUnreachableError
from tapes_e2e.envelopes import MetadataRecord, open_envelope, seal_envelope
from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.sync.engine import EngineConfig
from tapes_e2e.sync.worker import (
    PulledBatch,
    PullFn,
    PushFn,
    RefreshFn,
    SyncError,
    SyncRunner,
)

__all__ = ["pull_fn", "push_fn", "refresh_fn", "vault_runner"]


def _failure(exc: Exception) -> SyncError:
    if isinstance(exc, ServerUnreachableError):
        return SyncError("offline", exc.message)
    if isinstance(exc, AuthError):
        return SyncError("auth", exc.message)
    if isinstance(exc, RemoteError | ProtocolError):
        return SyncError("server", exc.message)
    raise exc


def push_fn(api: ApiClient, access: VaultAccess, identity: keymgmt.Identity) -> PushFn:
    def push(vault: str, nodes: Sequence[Node]) -> Sequence[str]:
        envelopes = [
            seal_envelope(node, state=access.state, keys=access.keys, author=identity).to_dict()
            for node in nodes
        ]
        try:
            result = api.push(vault, envelopes)
        except (ServerUnreachableError, AuthError, RemoteError, ProtocolError) as exc:
            raise _failure(exc) from exc
        ids = [str(envelope["node_id"]) for envelope in envelopes]
        if set(ids) - set(result.stored) - set(result.existing):
            raise SyncError("server", "the server did not acknowledge every node of the batch")
        return ids

    return push


def pull_fn(api: ApiClient, access: VaultAccess) -> PullFn:
    def pull(vault: str, after: int, limit: int) -> PulledBatch:
        try:
            page = api.pull(vault, after, limit)
        except (ServerUnreachableError, AuthError, RemoteError, ProtocolError) as exc:
            raise _failure(exc) from exc
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
        except (ServerUnreachableError, AuthError, RemoteError, ProtocolError) as exc:
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
) -> SyncRunner:
    """A runner for ``vault`` over ``store``: the chain verified against the head this store
    verified last (a fork or rollback is refused), the keys opened, the new head recorded."""
    state = SyncState(store)
    stored = state.load(vault)
    head = keymgmt.ChainHead.from_dict(stored.head) if stored.head else None
    access = open_vault(api, vault, identity, last_verified_head=head)
    state.set_head(vault, access.state.head.to_dict())
    return SyncRunner(
        state,
        vault,
        push_fn(api, access, identity),
        pull_fn(api, access),
        refresh_login=refresh_fn(api),
        config=EngineConfig(interval=sync_interval),
        on_integrity=on_integrity,
    )
