"""The sync runner's server calls: seal and push local nodes, pull, verify and open remote ones.

:func:`push_fn` and :func:`pull_fn` build the callables :class:`tapes_e2e.sync.worker.SyncRunner`
drives (see its contract), from an :class:`~tapes_e2e.client.ApiClient` and the vault's verified
chain and opened keys (:class:`~tapes_e2e.vaults.VaultAccess`). Client failures become the
engine's failure kinds; an envelope that fails verification is rejected (reported, not stored)
without stopping the page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import msgspec

import keymgmt
from tapes_e2e.account import fetch_vault_material
from tapes_e2e.client import ApiClient, encode_push
from tapes_e2e.errors import (
    AuthError,
    ServerError,
    ServerUnreachableError,
    StaleEpochError,
    UnsupportedBodyError,
)
from tapes_e2e.node import Node
from tapes_e2e.opening import Opening, PageOpener
from tapes_e2e.protocol import PushResult
from tapes_e2e.sealing import BatchSealer
from tapes_e2e.store.syncstate import HEAD, SyncState
from tapes_e2e.sync.engine import EngineConfig, Event
from tapes_e2e.sync.worker import (
    PulledBatch,
    PushReceipt,
    RefreshFn,
    SyncError,
    SyncRunner,
)
from tapes_e2e.vaults import Trust, VaultAccess, VaultMaterial
from tapes_e2e.workpool import WorkerPool

if TYPE_CHECKING:
    from tapes_e2e.locks import LockFile
    from tapes_e2e.providers.local import LocalProvider

__all__ = [
    "PushHooks",
    "VaultHolder",
    "VaultPuller",
    "VaultPusher",
    "chain_failures",
    "pull_fn",
    "push_fn",
    "refresh_fn",
    "sync_failure",
    "vault_runner",
]


@contextmanager
def chain_failures() -> Iterator[None]:
    """Around fetching and verifying a vault's chain: a client error becomes its failure kind,
    and a chain that does not verify an integrity failure (nothing from it is used)."""
    try:
        yield
    except ServerError as exc:
        raise sync_failure(exc) from exc
    except keymgmt.KeymgmtError as exc:
        raise SyncError("integrity", f"the server's team chain is refused: {exc.message}") from exc


def sync_failure(exc: ServerError) -> SyncError:
    """The sync engine's failure kind for a client error."""
    if isinstance(exc, ServerUnreachableError):
        return SyncError("offline", exc.message)
    if isinstance(exc, AuthError):
        return SyncError("auth", exc.message)
    return SyncError("server", exc.message)  # an error answer, or one that does not decode


class VaultHolder:
    """The vault's verified chain and opened keys, shared by push and pull and replaced when the
    chain moves. Every verification goes through ``trust`` (:class:`tapes_e2e.vaults.Trust`), from
    this identity's head pin, which it moves forward. The material (signed chain, sealed keyrings)
    is cached in the store's ``e2e_state`` and verified again on every load, so an up-to-date
    sync needs no chain request: each pull page says where the chain head is, and only a moved
    head is refetched. A cache older than the pin (another command of this identity saw the chain
    move, e.g. ``tapes team remove``) is refetched; a server that then shows an older chain than
    the pin is refused, so nothing is ever sealed under an epoch older than the newest verified."""

    def __init__(self, api: ApiClient, state: SyncState, vault: str, trust: Trust) -> None:
        self.api, self.state, self.vault, self.trust = api, state, vault, trust
        self.identity = trust.identity
        legacy = state.load(vault).head  # stores synced before head pins kept one of their own
        self._legacy = [keymgmt.ChainHead.from_dict(legacy)] if legacy else []
        cached = state.values(vault)
        if _CHAIN in cached and _KEYRINGS in cached:
            material = (json.loads(cached[_CHAIN]), json.loads(cached[_KEYRINGS]))
            try:
                self.access = self._open(material)
            except keymgmt.ChainError:  # a stale cache: the server's chain decides (from the pin)
                self.refresh()
        else:
            self.refresh()

    def _open(self, material: VaultMaterial) -> VaultAccess:
        access = self.trust.open(self.vault, material, also_verified=self._legacy)
        if self._legacy:  # pinned now: the store's own copy of the head is not kept any more
            self.state.set_values(self.vault, **{HEAD: None})
            self._legacy = []
        return access

    def refresh(self) -> None:
        """Fetch, verify (against the pin) and cache the chain and keyrings."""
        material = fetch_vault_material(self.api, self.vault)
        self.access = self._open(material)
        self.state.set_values(
            self.vault,
            **{_CHAIN: json.dumps(material[0]), _KEYRINGS: json.dumps(material[1])},
        )

    def follow(self, chain_seqno: int) -> None:
        """Refetch when the server says the chain is anywhere but where this client verified it
        (an older head than the pin is refused by the refetch's verification)."""
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


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A batch sealed under ``access`` (the vault's keys at the time), encoded for the wire."""

    access: VaultAccess
    nodes: Sequence[Node]
    node_ids: list[str]
    body: bytes
    packed: bool  # the body is MessagePack (the server said it takes it), else JSON


class VaultPusher:
    """Seals and pushes batches to one vault (a :class:`~tapes_e2e.sync.worker.Pusher`).

    ``prepare`` seals and encodes: CPU only, so the runner runs it on a helper thread for the
    next batch while ``send`` waits for the server. A batch sealed under keys that have since
    been replaced (the chain moved) is sealed again before it is sent. A batch the server refuses
    with 409 (sealed under another key epoch than the vault's: this client missed a removal) is
    sealed again after the chain is refetched and verified, and sent once more.
    """

    def __init__(
        self,
        api: ApiClient,
        holder: VaultHolder,
        hooks: PushHooks | None = None,
        sealer: BatchSealer | None = None,
    ) -> None:
        self.api, self.holder, self.hooks = api, holder, hooks
        self.sealer = sealer or BatchSealer()

    def prepare(self, vault: str, nodes: Sequence[Node]) -> _Sealed:
        """Seal the batch (in worker processes when the machine has cores for them:
        :class:`~tapes_e2e.sealing.BatchSealer`). A parent outside the batch is named by the ID
        the vault holds it under (``e2e_remote``: it may have been sealed in an older epoch); a
        parent inside it is sealed now, in this epoch. The read is of rows only ever added, so
        it is safe here."""
        access, author = self.holder.access, self.holder.identity
        outside = {n.parent_hash for n in nodes if n.parent_hash} - {n.hash for n in nodes}
        known = self.holder.state.remote_ids(vault, outside) if outside else {}
        packed = self.api.takes_packed_push()
        ids, envelopes = self.sealer.seal(
            nodes, known, access.state, access.content_keys(), author, packed=packed
        )
        body = encode_push(vault, [msgspec.Raw(envelope) for envelope in envelopes], packed=packed)
        return _Sealed(access, nodes, ids, body, packed)

    def send(self, vault: str, prepared: _Sealed) -> PushReceipt:
        if self.hooks is not None:
            self.hooks.before_push(self.holder)  # may move the holder to a new epoch
        if prepared.access is not self.holder.access:
            prepared = self.prepare(vault, prepared.nodes)
        try:
            result = self.api.push_encoded(prepared.body, packed=prepared.packed)
        except StaleEpochError:  # the vault is in another key epoch than the batch
            prepared = self._resealed(vault, prepared)
            result = self._push_once(prepared)
        except UnsupportedBodyError as exc:  # MessagePack to a server that no longer takes it
            if not prepared.packed:
                raise sync_failure(exc) from exc
            prepared = self.prepare(vault, prepared.nodes)  # JSON now: the client remembers
            result = self._push_once(prepared)
        except ServerError as exc:
            raise sync_failure(exc) from exc
        if set(prepared.node_ids) - set(result.stored) - set(result.existing):
            raise SyncError("server", "the server did not acknowledge every node of the batch")
        if self.hooks is not None:
            self.hooks.after_push(prepared.access, prepared.nodes, prepared.node_ids)
        last = result.head_seq if result.first_seq else 0
        return PushReceipt(prepared.node_ids, result.first_seq, last)

    @property
    def sends_ahead(self) -> bool:
        """A personal vault's batches may go out on a helper thread; a team vault's push hooks
        (catching up with the chain, auto_share) run in the runner's thread only."""
        return self.hooks is None

    def _resealed(self, vault: str, prepared: _Sealed) -> _Sealed:
        """Catch up with a chain this client missed (fetched and verified from the last verified
        head) and seal the batch again under its keys."""
        with chain_failures():
            self.holder.refresh()
        return self.prepare(vault, prepared.nodes)

    def _push_once(self, prepared: _Sealed) -> PushResult:
        """The resealed batch's push: a second refusal is an ordinary failure."""
        try:
            return self.api.push_encoded(prepared.body, packed=prepared.packed)
        except ServerError as exc:
            raise sync_failure(exc) from exc

    def __call__(self, vault: str, nodes: Sequence[Node]) -> PushReceipt:
        """Both steps at once: a plain push function."""
        return self.send(vault, self.prepare(vault, nodes))


def push_fn(
    api: ApiClient,
    holder: VaultHolder,
    hooks: PushHooks | None = None,
    pool: WorkerPool | None = None,
) -> VaultPusher:
    return VaultPusher(api, holder, hooks, BatchSealer(pool))


class VaultPuller:
    """Fetches and opens pages of one vault (a :class:`~tapes_e2e.sync.worker.Puller`).

    ``fetch`` is the request, so the runner makes it ahead on a helper thread; it also starts
    opening the page in worker processes when the machine has cores for them
    (:class:`~tapes_e2e.opening.PageOpener`). ``open`` follows the chain head the page names
    (refetching and verifying a moved chain) and then takes the page's rows: the workers', when
    they opened it under the chain and keys that hold now, else opened here. An envelope that
    fails is rejected with a message, not stored, and does not stop the page.
    """

    def __init__(self, api: ApiClient, holder: VaultHolder, opener: PageOpener | None = None):
        self.api, self.holder = api, holder
        self.opener = opener or PageOpener()

    def fetch(self, vault: str, after: int, limit: int) -> Opening:
        try:
            page, raw = self.api.pull_with_bytes(vault, after, limit)
        except ServerError as exc:
            raise sync_failure(exc) from exc
        access = self.holder.access
        return self.opener.start(page, raw, access.state, access.content_keys())

    def open(self, vault: str, after: int, fetched: Opening) -> PulledBatch:
        page = fetched.page
        with chain_failures():
            self.holder.follow(page.chain_seqno)
        access = self.holder.access
        rows, rejected = self.opener.finish(fetched, access.state, access.content_keys())
        cursor = max([after, page.cursor, *(item.seq for item in page.items)])
        return PulledBatch(rows, cursor, page.more, rejected)

    def close(self) -> None:
        self.opener.close()

    def __call__(self, vault: str, after: int, limit: int) -> PulledBatch:
        """Both steps at once: a plain pull function."""
        return self.open(vault, after, self.fetch(vault, after, limit))


def pull_fn(api: ApiClient, holder: VaultHolder, pool: WorkerPool | None = None) -> VaultPuller:
    return VaultPuller(api, holder, PageOpener(pool))


def refresh_fn(api: ApiClient) -> RefreshFn:
    def refresh() -> None:
        try:
            api.refresh()
        except ServerError as exc:
            raise sync_failure(exc) from exc

    return refresh


def vault_runner(
    store: LocalProvider,
    api: ApiClient,
    vault: str,
    trust: Trust,
    *,
    sync_interval: float = 300.0,
    on_integrity: Callable[[str], None] | None = None,
    on_progress: Callable[[Event], None] | None = None,
    hooks: PushHooks | None = None,
    lock: LockFile | None = None,
) -> SyncRunner:
    """A runner for ``vault`` over ``store``. The chain is verified against ``trust``'s pin (a
    fork or rollback is refused) and the keys opened, from the cache when the store has one; the
    pin moves to the new head. ``hooks`` are a team vault's push hooks; ``lock`` the store and
    vault's sync lock, for a worker to take each round (``SyncState.sync_lock``)."""
    state = SyncState(store)
    holder = VaultHolder(api, state, vault, trust)
    pool = WorkerPool()  # one set of worker processes for the round's sealing and opening
    return SyncRunner(
        state,
        vault,
        push_fn(api, holder, hooks, pool),
        pull_fn(api, holder, pool),
        refresh_login=refresh_fn(api),
        config=EngineConfig(interval=sync_interval),
        on_integrity=on_integrity,
        on_progress=on_progress,
        lock=lock,
    )
