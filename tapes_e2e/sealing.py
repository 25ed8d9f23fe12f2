"""Sealing batches to push: every node of a batch sealed under the vault's current epoch and
encoded for the wire.

:func:`seal_items` is the work, done the same way wherever it runs. :class:`BatchSealer` decides
where: in the calling thread (the sync runner's helper, while the runner waits for the server),
or in worker processes (:mod:`tapes_e2e.workpool` says when and how). The part that reads the
node (its body, its clear metadata, its parent's node ID) is done here and is cheap; the workers
compress, encrypt and name each node under the keys they are sent. A team whose content policy
is ``omit`` (metadata only) signs each record with its member's identity key, which never
leaves this process: those batches are always sealed here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool

import msgspec

import keymgmt
from tapes_e2e.envelopes import SealInput, seal_envelope, seal_input
from tapes_e2e.node import Node
from tapes_e2e.workpool import WorkerPool, slices

__all__ = ["MIN_BATCH_FOR_WORKERS", "BatchSealer", "Sealed", "seal_items", "wire_bytes"]

MIN_BATCH_FOR_WORKERS = 256
"""A batch this large starts the workers (a full batch: more are likely to follow)."""

Sealed = tuple[list[str], list[bytes]]
"""The node ID of each item and its envelope encoded for the wire (JSON, or packed), in order."""
SealItems = Callable[
    [Sequence[SealInput], keymgmt.VerifiedTeamState, keymgmt.TeamKeys, str, bool], Sealed
]
""":func:`seal_items` as a sealer takes it when it is made (a benchmark puts a stand-in with the
cryptography off in its place): a module-level function, since workers receive it by name."""

_encode = msgspec.json.Encoder().encode
_encode_packed = msgspec.msgpack.Encoder().encode


def wire_bytes(envelope: keymgmt.Envelope, *, packed: bool) -> bytes:
    """``envelope`` as a push body embeds it: packed (MessagePack) or JSON."""
    return _encode_packed(envelope.to_packed()) if packed else _encode(envelope.to_wire())


def seal_items(
    items: Sequence[SealInput],
    state: keymgmt.VerifiedTeamState,
    keys: keymgmt.TeamKeys,
    author: str,
    packed: bool = False,
) -> Sealed:
    """Seal each item, encrypted, in the current epoch of ``state``, written by ``author`` (a
    fingerprint), and encode it for a push in MessagePack (``packed``) or JSON."""
    ids: list[str] = []
    envelopes: list[bytes] = []
    for item in items:
        envelope = keymgmt.seal_node(
            state=state, keys=keys, tapes_hash=item.tapes_hash, parent_id=item.parent_id,
            body=item.body, metadata=item.metadata, author=author,
        )  # fmt: skip
        ids.append(envelope.node_id)
        envelopes.append(wire_bytes(envelope, packed=packed))
    return ids, envelopes


class BatchSealer:
    """Seals batches in worker processes when ``pool`` has them, else in the calling thread."""

    def __init__(self, pool: WorkerPool | None = None) -> None:
        self.pool = pool or WorkerPool()
        self._seal: SealItems = seal_items

    def seal(
        self,
        nodes: Sequence[Node],
        parent_ids: Mapping[str, str],
        state: keymgmt.VerifiedTeamState,
        keys: keymgmt.TeamKeys,
        author: keymgmt.Identity,
        *,
        packed: bool = False,
    ) -> Sealed:
        """Seal ``nodes`` (a parent outside the batch named by ``parent_ids``, the ID the vault
        holds it under) and encode each envelope, packed for a MessagePack push or JSON."""
        if state.content_policy != "encrypted":  # signed with the identity key: only here
            envelopes = [
                seal_envelope(
                    node,
                    state=state,
                    keys=keys,
                    author=author,
                    parent_id=parent_ids.get(node.parent_hash or ""),
                )
                for node in nodes
            ]
            return [e.node_id for e in envelopes], [wire_bytes(e, packed=packed) for e in envelopes]
        items = [
            seal_input(
                node, state=state, keys=keys, parent_id=parent_ids.get(node.parent_hash or "")
            )
            for node in nodes
        ]
        pool = self.pool.ready(start=self.pool.seals and len(items) >= MIN_BATCH_FOR_WORKERS)
        if pool is not None and items:
            try:
                parts = [
                    pool.submit(self._seal, items[a:b], state, keys, author.fingerprint, packed)
                    for a, b in slices(len(items), self.pool.workers)
                ]
                results = [part.result() for part in parts]
            except BrokenProcessPool:
                self.pool.lost()
            except RuntimeError:  # the pool was closed meanwhile (the round ended)
                pass
            else:
                return (
                    [node_id for ids, _ in results for node_id in ids],
                    [envelope for _, envelopes in results for envelope in envelopes],
                )
        return self._seal(items, state, keys, author.fingerprint, packed)
