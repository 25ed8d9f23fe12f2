"""Team keyrings: the vault id key and one epoch key, sealed to every reader of the team.

A keyring is made by an owner or admin (or, at a ``rekey`` statement, by the member's new key)
for one epoch at one point of the verified chain (the statement ``at_seqno`` whose hash is
``at_hash``). Its body is canonical JSON carried verbatim and signed by the sealer; the wire form
is ``{"body": "<canonical JSON>", "signature": "..."}`` with a body of ``version, team, epoch,
at_seqno, at_hash, sealer, recipients`` where ``recipients`` maps each reader's fingerprint to
``seal_to(x25519, vault_id_key || epoch_key)`` (see :mod:`keymgmt._primitives`), with associated
data binding team, epoch, position, sealer and recipient.

:func:`open_keyring` accepts a keyring only if, at ``at_seqno`` of the verified chain, the sealer
was an owner or admin (or the new key of a member who rotated at that very statement), ``epoch``
had already started, and the recipient set equals the chain's readers exactly — viewers, removed
members and anybody else (an "escrow" key) make it fail. The opened keys must match the
commitments in the chain, so a sealer cannot hand different members
different keys. Every failure raises the same :class:`~keymgmt.errors.IntegrityError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec

from keymgmt import _primitives as prim
from keymgmt import labels
from keymgmt._encoding import Uint, b64d, b64e, canonical_json, decode_canonical, lp, u64
from keymgmt.chain import (
    Checkpoint,
    VerifiedTeamState,
    epoch_key_commitment,
    vault_key_commitment,
)
from keymgmt.errors import IntegrityError, PolicyError
from keymgmt.identity import Identity

__all__ = [
    "EpochKeys",
    "TeamKeys",
    "UnverifiedKeyring",
    "may_seal",
    "new_key",
    "node_id",
    "node_id_key",
    "open_keyring",
    "parse_keyring",
    "seal_keyring",
]

log = logging.getLogger("keymgmt.keyring")

KEY_BYTES: Final = 32


class KeyringBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    team: str
    epoch: Uint
    at_seqno: Uint
    at_hash: str
    sealer: str
    recipients: dict[str, str]


_DECODER: Final = msgspec.json.Decoder(KeyringBody)


@dataclass(frozen=True, slots=True)
class UnverifiedKeyring:
    """A parsed keyring; nothing in it is trusted until :func:`open_keyring` accepts it."""

    body: KeyringBody
    body_bytes: bytes
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {"body": self.body_bytes.decode("utf-8"), "signature": b64e(self.signature)}


@dataclass(frozen=True, slots=True)
class EpochKeys:
    """The keys one opened keyring yields. ``repr`` never shows key bytes."""

    team: str
    epoch: int
    epoch_key: bytes = field(repr=False)
    vault_id_key: bytes = field(repr=False)


def node_id(id_key: bytes, tapes_hash: str) -> str:
    """Lowercase hex HMAC-SHA256(id key, ASCII tapes hash): the ID the server sees."""
    return prim.hmac_sha256(id_key, tapes_hash.encode("ascii")).hex()


def node_id_key(team: str, epoch: int, epoch_key: bytes) -> bytes:
    """The key that names the nodes sealed in ``epoch``: HKDF-SHA256 of that epoch's key.

    It changes with every epoch, so a member removed at a rotation, who keeps the vault id key
    and the old epoch keys, cannot compute the ID of a node written after it and so cannot
    confirm a guess of its content against the IDs the server shows. Dedup holds within an epoch.
    """
    return prim.hkdf_sha256(
        epoch_key, salt=b"", info=labels.NODE_ID_KEY + lp(team.encode()) + u64(epoch)
    )


@dataclass(slots=True)
class TeamKeys:
    """All epoch keys a member holds for one team, plus the team's vault id key.

    The vault id key names the nodes of envelopes sealed before per-epoch IDs (version 1); every
    envelope sealed now is named under its epoch's :func:`node_id_key`."""

    team: str
    vault_id_key: bytes = field(repr=False)
    epochs: dict[int, bytes] = field(default_factory=dict, repr=False)
    _id_keys: dict[int, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def id_key(self, epoch: int) -> bytes | None:
        """The node-ID key of ``epoch``, or None without that epoch's key."""
        key = self._id_keys.get(epoch)
        if key is None and epoch in self.epochs:
            key = self._id_keys[epoch] = node_id_key(self.team, epoch, self.epochs[epoch])
        return key

    def node_id(self, epoch: int, tapes_hash: str) -> str:
        """The ID of the node with ``tapes_hash`` sealed in ``epoch``."""
        key = self.id_key(epoch)
        if key is None:
            raise PolicyError(f"no key for epoch {epoch} of team {self.team}")
        return node_id(key, tapes_hash)

    def node_ids(self, tapes_hash: str, *, up_to: int) -> list[str]:
        """Every ID the node with ``tapes_hash`` can have in the vault if sealed no later than
        epoch ``up_to``: one per epoch held, newest first, then its version-1 ID."""
        ids = [
            node_id(key, tapes_hash)
            for epoch in sorted(self.epochs, reverse=True)
            if epoch <= up_to and (key := self.id_key(epoch)) is not None
        ]
        return [*ids, node_id(self.vault_id_key, tapes_hash)]

    def add(self, keys: EpochKeys) -> None:
        if keys.team != self.team or not prim.constant_time_equal(
            keys.vault_id_key, self.vault_id_key
        ):
            raise PolicyError("these keys belong to another team")
        self.epochs[keys.epoch] = keys.epoch_key

    def epoch_key(self, epoch: int) -> bytes | None:
        return self.epochs.get(epoch)

    @property
    def current_epoch(self) -> int:
        return max(self.epochs)

    def sealing_key(self, state: VerifiedTeamState) -> tuple[int, bytes]:
        """The epoch and key new content must use: the chain's current epoch, never an older one.

        A server that withholds the newest keyring cannot make the client fall back to an old
        epoch (which a removed member may still hold): this raises instead.
        """
        key = self.epochs.get(state.epoch)
        if state.team != self.team or key is None:
            raise PolicyError(
                f"no key for the team's current epoch {state.epoch}; refusing to encrypt",
                hint="fetch the newest keyring from the server (an admin must seal it to you)",
            )
        return state.epoch, key

    @classmethod
    def from_epoch_keys(cls, keys: EpochKeys) -> TeamKeys:
        team_keys = cls(keys.team, keys.vault_id_key)
        team_keys.add(keys)
        return team_keys


def new_key(*, rng: prim.Rng = prim.random_bytes) -> bytes:
    """A fresh 32-byte key (epoch key or vault id key)."""
    key = rng(KEY_BYTES)
    if len(key) != KEY_BYTES:
        raise PolicyError("the random source returned the wrong number of bytes")
    return key


def _seal_ad(body: KeyringBody, recipient: str) -> bytes:
    return (
        labels.KEYRING_SEAL
        + lp(body.team.encode())
        + u64(body.epoch)
        + u64(body.at_seqno)
        + lp(body.at_hash.encode())
        + lp(body.sealer.encode())
        + lp(recipient.encode())
    )


def seal_keyring(
    state: VerifiedTeamState,
    *,
    sealer: Identity,
    epoch: int,
    epoch_key: bytes,
    vault_id_key: bytes,
    rng: prim.Rng = prim.random_bytes,
) -> UnverifiedKeyring:
    """Seal ``epoch``'s key and the vault id key to every reader of the verified ``state``."""
    if not may_seal(state.checkpoints[-1], sealer.fingerprint):
        raise PolicyError("only an owner or admin can seal a keyring")
    if not 1 <= epoch <= state.epoch:
        raise PolicyError(f"epoch {epoch} has not started")
    if epoch_key_commitment(state.team, epoch, epoch_key) != state.epoch_commitments[epoch]:
        raise PolicyError(f"this is not the key the chain committed to for epoch {epoch}")
    if vault_key_commitment(state.team, vault_id_key) != state.vault_key_commitment:
        raise PolicyError("this is not the team's vault id key")
    template = KeyringBody(
        version=labels.PROTOCOL_VERSION, team=state.team, epoch=epoch,
        at_seqno=state.head.seqno, at_hash=state.head.hash, sealer=sealer.fingerprint,
        recipients={},
    )  # fmt: skip
    recipients = {
        fp: b64e(
            prim.seal_to(
                state.members[fp].public.x25519,
                vault_id_key + epoch_key,
                _seal_ad(template, fp),
                rng=rng,
            )
        )
        for fp in sorted(state.readers)
    }
    body = msgspec.structs.replace(template, recipients=recipients)
    body_bytes = canonical_json(msgspec.to_builtins(body))
    signature = sealer.sign(labels.KEYRING_SIGNATURE + body_bytes)
    return UnverifiedKeyring(body, body_bytes, signature)


def parse_keyring(wire: object) -> UnverifiedKeyring:
    """Parse the wire form; any malformation raises :class:`IntegrityError`."""
    if isinstance(wire, UnverifiedKeyring):
        return wire
    try:
        if not isinstance(wire, Mapping) or set(wire) != {"body", "signature"}:
            raise ValueError("shape")  # noqa: TRY301 - folded into the one opaque error below
        body_bytes = str(wire["body"]).encode("utf-8")
        body = decode_canonical(_DECODER, body_bytes)
        return UnverifiedKeyring(body, body_bytes, b64d(wire["signature"]))
    except (ValueError, msgspec.DecodeError):
        log.debug("keyring rejected: malformed")
        raise IntegrityError from None


def _fail(reason: str) -> IntegrityError:
    log.debug("keyring rejected: %s", reason)
    return IntegrityError()


def open_keyring(wire: object, *, state: VerifiedTeamState, identity: Identity) -> EpochKeys:
    """Check a keyring against the verified chain and open this identity's copy."""
    keyring = parse_keyring(wire)
    body = keyring.body
    _check_against_chain(keyring, state)
    sealed = body.recipients.get(identity.fingerprint)
    if sealed is None:
        raise _fail("not a recipient")
    try:
        plaintext = identity.open_sealed(b64d(sealed), _seal_ad(body, identity.fingerprint))
    except (prim.PrimitiveError, ValueError):
        raise _fail("sealed key does not open") from None
    if len(plaintext) != 2 * KEY_BYTES:
        raise _fail("sealed key has the wrong length")
    vault_id_key, epoch_key = plaintext[:KEY_BYTES], plaintext[KEY_BYTES:]
    if vault_key_commitment(state.team, vault_id_key) != state.vault_key_commitment:
        raise _fail("vault id key does not match the chain's commitment")
    if (
        epoch_key_commitment(state.team, body.epoch, epoch_key)
        != state.epoch_commitments[body.epoch]
    ):
        raise _fail("epoch key does not match the chain's commitment")
    return EpochKeys(state.team, body.epoch, epoch_key, vault_id_key)


def may_seal(checkpoint: Checkpoint, sealer: str) -> bool:
    """An owner or admin at that point, or the new key of the member who rotated there."""
    return sealer in checkpoint.managers or sealer == checkpoint.rekeyed


def _check_against_chain(keyring: UnverifiedKeyring, state: VerifiedTeamState) -> None:
    body = keyring.body
    if body.version != labels.PROTOCOL_VERSION or body.team != state.team:
        raise _fail("version or team")
    if not 0 <= body.at_seqno < len(state.checkpoints):
        raise _fail("sealed at a position the chain does not have")
    checkpoint = state.checkpoints[body.at_seqno]
    if checkpoint.hash != body.at_hash:
        raise _fail("sealed against a different chain")
    if not may_seal(checkpoint, body.sealer):
        raise _fail("sealer was not an owner or admin at that point")
    if not 1 <= body.epoch <= checkpoint.epoch:
        raise _fail("epoch had not started at that point")
    if set(body.recipients) != checkpoint.readers:
        raise _fail("recipients differ from the chain's readers")
    sealer = state.known_identities[body.sealer]
    if not sealer.verify(labels.KEYRING_SIGNATURE + keyring.body_bytes, keyring.signature):
        raise _fail("bad sealer signature")
