"""Node envelopes: what the server stores for each node (DESIGN §6, docs/crypto.md).

* ``node_id = hex(HMAC-SHA256(id key of the node's epoch, tapes hash))``, the id key derived from
  the epoch key (:func:`~keymgmt.keyring.node_id_key`), so it rotates with the epoch; the parent is
  named by its own node ID, which may be under an older epoch's key (or a version-1 ID).
* The body (the node as the client serialized it) is compressed with zstandard when that helps,
  framed and zero-padded to a Padmé length (at least 256 bytes), then sealed with
  XChaCha20-Poly1305 under the epoch key and a random 24-byte nonce.
* The associated data binds envelope version, team, epoch, node ID, parent ID, author
  fingerprint, record type, content mode, padded size, the digest of the clear metadata and the
  chain position the writer had verified (``at_seqno``, ``at_hash``). A reader refuses a record
  whose position is not on its verified chain, whose epoch is not the one in force there, or
  whose author was not a reader there.
* Content policy ``omit`` (metadata only): no nonce, no ciphertext. There is no AEAD tag, so the
  author signs ``label || AD`` with Ed25519 instead; the signature is the record's only
  authenticator and anybody with the chain (viewers included) can check it.

Version 1 envelopes (before 2026-12: IDs under the vault id key, no chain position) still open;
only version 2 is sealed.

Encrypted records carry no signature: the AEAD tag proves the record was made by a holder of the
epoch key, and the ``author`` field is that holder's claim (see threat-model.md).

:func:`open_node` is the only way from an :class:`Envelope` to an :class:`OpenedNode`, and every
failure inside it raises the one opaque :class:`~keymgmt.errors.IntegrityError`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from keymgmt import _primitives as prim
from keymgmt import labels
from keymgmt._encoding import HEX64_RE, b64d, b64e, lp, u64
from keymgmt.chain import VerifiedTeamState
from keymgmt.errors import IntegrityError, PolicyError
from keymgmt.identity import FINGERPRINT_RE, Identity
from keymgmt.keyring import TeamKeys, node_id
from keymgmt.metadata import MetadataValue, metadata_digest

__all__ = [
    "MAX_BODY_BYTES",
    "RECORD_TYPES",
    "AnyEnvelope",
    "Envelope",
    "EnvelopeWire",
    "Hasher",
    "OpenedNode",
    "PackedEnvelope",
    "is_base64url",
    "node_id",
    "open_node",
    "padded_length",
    "seal_node",
    "verify_metadata_only",
]

log = logging.getLogger("keymgmt.envelope")

RECORD_TYPES: Final = frozenset({"node"})
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
MIN_PADDED: Final = 256
_FRAME: Final = struct.Struct(">BI")  # format (0 raw, 1 zstd), payload length
_RAW, _ZSTD = 0, 1

Hasher = Callable[[bytes], tuple[str, str | None]]
"""Maps a decrypted body to ``(tapes_hash, parent_tapes_hash or None)``; supplied by the client."""


def padded_length(n: int) -> int:
    """Padmé (Nikitin et al., PURBs 2019): at most ~12% overhead, leaks O(log log n) bits."""
    n = max(n, MIN_PADDED)
    exponent = n.bit_length() - 1
    mantissa_bits = exponent.bit_length()
    mask = (1 << (exponent - mantissa_bits)) - 1
    return (n + mask) & ~mask


_Hex64 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
# The ciphertext is bounded here but its alphabet is not matched by a pattern: a regular
# expression over megabytes of base64 cost more than the rest of decoding a page. Every reader
# decodes it strictly (``Envelope.from_wire``: ``b64d``) and the server checks it with
# :func:`is_base64url` before storing it.
_B64 = Annotated[str, Meta(max_length=48 * 1024 * 1024)]
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def is_base64url(text: str) -> bool:
    """Whether ``text`` uses only the base64url alphabet (a C-speed scan, no regex)."""
    return text.isascii() and not text.encode("ascii").translate(None, _B64_ALPHABET)


class _Header(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The fields an envelope has in both wire forms, first and in this order."""

    version: Annotated[int, Meta(ge=1, le=255)]
    team: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    epoch: Annotated[int, Meta(ge=0, le=2**31)]
    node_id: _Hex64
    parent_id: _Hex64 | None
    author: Annotated[str, Meta(pattern=r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$")]
    record_type: Annotated[str, Meta(pattern=r"^[a-z_]{1,32}$")]
    metadata: Annotated[dict[Annotated[str, Meta(max_length=64)], MetadataValue],
                        Meta(max_length=32)]  # fmt: skip
    padded_size: Annotated[int, Meta(ge=0, le=64 * 1024 * 1024)]


_Seqno = Annotated[int, Meta(ge=0, le=2**31)]


class EnvelopeWire(_Header, frozen=True):
    """An envelope as JSON carries it. The server validates pushes with it and indexes its
    routing fields (IDs, epoch, sizes, clear metadata); :func:`open_node` opens it. Byte fields
    are unpadded base64url; ``at_seqno`` and ``at_hash`` appear from version 2 on."""

    nonce: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{32}$")] | None
    ciphertext: _B64 | None
    signature: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{86}$")] | None
    at_seqno: _Seqno | None = None
    at_hash: _Hex64 | None = None


class PackedEnvelope(_Header, array_like=True, frozen=True):
    """An envelope as the binary wire (MessagePack) carries it and the server stores it: the
    fields of :class:`EnvelopeWire`, in its order, as one array; ``nonce``, ``ciphertext`` and
    ``signature`` as bytes. A page of them is ~0.72 of its JSON and decodes ~5x faster: no
    base64 either way, no field names."""

    nonce: Annotated[bytes, Meta(min_length=24, max_length=24)] | None
    ciphertext: Annotated[bytes, Meta(max_length=36 * 1024 * 1024)] | None
    signature: Annotated[bytes, Meta(min_length=64, max_length=64)] | None
    at_seqno: _Seqno | None = None
    at_hash: _Hex64 | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One stored record, as sent to and received from the server. Unverified by itself.

    ``to_dict`` gives plain JSON: IDs in lowercase hex, ``nonce``, ``ciphertext`` and
    ``signature`` in unpadded base64url, ``None`` as ``null``. ``at_seqno`` and ``at_hash``
    (the writer's verified chain position) appear from version 2 on.
    """

    version: int
    team: str
    epoch: int
    node_id: str
    parent_id: str | None
    author: str
    record_type: str
    metadata: Mapping[str, MetadataValue]
    padded_size: int
    nonce: bytes | None
    ciphertext: bytes | None = field(repr=False)
    signature: bytes | None = None
    at_seqno: int | None = None
    at_hash: str | None = None

    def to_dict(self) -> dict[str, object]:
        wire: dict[str, object] = {
            "version": self.version,
            "team": self.team,
            "epoch": self.epoch,
            "node_id": self.node_id,
            "parent_id": self.parent_id,
            "author": self.author,
            "record_type": self.record_type,
            "metadata": dict(self.metadata),
            "padded_size": self.padded_size,
            "nonce": None if self.nonce is None else b64e(self.nonce),
            "ciphertext": None if self.ciphertext is None else b64e(self.ciphertext),
            "signature": None if self.signature is None else b64e(self.signature),
        }
        if self.version != labels.ENVELOPE_V1:
            wire |= {"at_seqno": self.at_seqno, "at_hash": self.at_hash}
        return wire

    def to_wire(self) -> EnvelopeWire:
        return EnvelopeWire(
            self.version, self.team, self.epoch, self.node_id, self.parent_id, self.author,
            self.record_type, dict(self.metadata), self.padded_size,
            None if self.nonce is None else b64e(self.nonce),
            None if self.ciphertext is None else b64e(self.ciphertext),
            None if self.signature is None else b64e(self.signature),
            self.at_seqno, self.at_hash,
        )  # fmt: skip

    def to_packed(self) -> PackedEnvelope:
        return PackedEnvelope(
            self.version, self.team, self.epoch, self.node_id, self.parent_id, self.author,
            self.record_type, dict(self.metadata), self.padded_size, self.nonce,
            self.ciphertext, self.signature, self.at_seqno, self.at_hash,
        )  # fmt: skip

    @classmethod
    def from_packed(cls, p: PackedEnvelope) -> Envelope:
        """The record a packed envelope carries (its bytes are bytes already: nothing fails)."""
        return cls(
            p.version, p.team, p.epoch, p.node_id, p.parent_id, p.author, p.record_type,
            p.metadata, p.padded_size, p.nonce, p.ciphertext, p.signature, p.at_seqno,
            p.at_hash,
        )  # fmt: skip

    @classmethod
    def from_wire(cls, w: EnvelopeWire) -> Envelope:
        """The record a wire envelope carries; malformed base64 raises :class:`IntegrityError`."""
        try:
            return cls(
                w.version, w.team, w.epoch, w.node_id, w.parent_id, w.author, w.record_type,
                w.metadata, w.padded_size, _opt_b64(w.nonce), _opt_b64(w.ciphertext),
                _opt_b64(w.signature), w.at_seqno, w.at_hash,
            )  # fmt: skip
        except ValueError:
            raise _fail("malformed envelope") from None

    @classmethod
    def from_dict(cls, data: object) -> Envelope:
        """Parse the wire form from plain JSON values; malformed input raises
        :class:`IntegrityError`."""
        try:
            wire = msgspec.convert(data, EnvelopeWire)
        except msgspec.ValidationError:
            raise _fail("malformed envelope") from None
        return cls.from_wire(wire)

    @classmethod
    def parse(cls, envelope: AnyEnvelope) -> Envelope:
        if isinstance(envelope, Envelope):
            return envelope
        if isinstance(envelope, PackedEnvelope):
            return cls.from_packed(envelope)
        if isinstance(envelope, EnvelopeWire):
            return cls.from_wire(envelope)
        return cls.from_dict(envelope)

    @property
    def metadata_only(self) -> bool:
        return self.ciphertext is None


AnyEnvelope = Envelope | PackedEnvelope | EnvelopeWire | Mapping[str, object]
"""What :func:`open_node` and :func:`verify_metadata_only` take: a record, either wire form, or
the JSON form's plain values."""


def _opt_b64(text: str | None) -> bytes | None:
    return None if text is None else b64d(text)


@dataclass(frozen=True, slots=True)
class OpenedNode:
    """A record that passed every check. ``body`` and ``tapes_hash`` are None when metadata-only."""

    node_id: str
    parent_id: str | None
    author: str
    epoch: int
    record_type: str
    metadata: Mapping[str, MetadataValue]
    body: bytes | None = field(repr=False)
    tapes_hash: str | None
    parent_tapes_hash: str | None


def _ad(env: Envelope, digest: bytes) -> bytes:
    at = None if env.at_seqno is None or env.at_hash is None else (env.at_seqno, env.at_hash)
    return _ad_of(
        (env.version, env.team, env.epoch, env.node_id, env.parent_id, env.author,
         env.record_type), env.ciphertext is not None, env.padded_size, digest, at,
    )  # fmt: skip


def _ad_of(
    header: tuple[int, str, int, str, str | None, str, str],
    encrypted: bool,
    padded_size: int,
    digest: bytes,
    at: tuple[int, str] | None,
) -> bytes:
    """The associated data of a record with this header (the envelope's first seven fields);
    from version 2 on it ends with the writer's chain position ``at``."""
    version, team, epoch, node, parent, author, record_type = header
    position = b"" if at is None else u64(at[0]) + lp(at[1].encode())
    return b"".join(
        (
            labels.ENVELOPE_AD,
            bytes([version & 0xFF]),
            lp(team.encode()),
            u64(epoch),
            lp(node.encode()),
            b"\x01" if parent is not None else b"\x00",
            lp((parent or "").encode()),
            lp(author.encode()),
            lp(record_type.encode()),
            b"\x01" if encrypted else b"\x00",
            u64(padded_size),
            digest,
            position,
        )
    )


def _frame(body: bytes) -> bytes:
    compressed = prim.compress(body)
    fmt, payload = (_ZSTD, compressed) if len(compressed) < len(body) else (_RAW, body)
    framed = _FRAME.pack(fmt, len(payload)) + payload
    return framed + bytes(padded_length(len(framed)) - len(framed))


def _nonzero(data: bytes, start: int) -> bool:
    """Whether any byte of ``data`` from ``start`` on is not zero (one C-level comparison)."""
    return data[start:] != bytes(len(data) - start)


def _unframe(padded: bytes) -> bytes:
    if len(padded) < _FRAME.size:
        raise _fail("frame too short")
    fmt, size = _FRAME.unpack_from(padded)
    end = _FRAME.size + size
    if end > len(padded) or padded_length(end) != len(padded) or _nonzero(padded, end):
        raise _fail("bad padding")
    payload = padded[_FRAME.size : end]
    if fmt == _RAW:
        return payload
    if fmt != _ZSTD:
        raise _fail("unknown body format")
    try:
        return prim.decompress(payload, max_size=MAX_BODY_BYTES)
    except prim.PrimitiveError:
        raise _fail("body does not decompress") from None


def _check_hash(value: str) -> str:
    if not value.isascii() or not value:
        raise PolicyError("a tapes hash must be a non-empty ASCII string")
    return value


def seal_node(
    *,
    state: VerifiedTeamState,
    keys: TeamKeys,
    tapes_hash: str,
    parent_id: str | None,
    body: bytes | None,
    metadata: Mapping[str, MetadataValue],
    author: str,
    record_type: str = "node",
    signer: Identity | None = None,
    nonce: bytes | None = None,
) -> Envelope:
    """Seal one node in the current epoch of the verified ``state``, at its head.

    The node is named under the epoch's node-ID key; ``parent_id`` is the parent's node ID as the
    vault holds it (the caller knows it: the parent may have been sealed in an older epoch), or
    None for a root. ``body`` is the serialized node; ``None`` means content policy ``omit``
    (metadata only), which needs ``signer`` (the author's
    :class:`~keymgmt.identity.Identity`). ``metadata`` comes from
    :func:`~keymgmt.metadata.project_metadata`. ``nonce`` is for test vectors only; by default a
    fresh random 24-byte nonce is drawn. There is no way to seal under an older epoch.
    """
    if record_type not in RECORD_TYPES:
        raise PolicyError(f"unknown record type {record_type!r}")
    if not FINGERPRINT_RE.fullmatch(author) or (signer and signer.fingerprint != author):
        raise PolicyError("author must be the signer's fingerprint")
    if parent_id is not None and not HEX64_RE.fullmatch(parent_id):
        raise PolicyError("a parent ID is 64 lowercase hex digits")
    epoch, epoch_key = keys.sealing_key(state)
    own_id = keys.node_id(epoch, _check_hash(tapes_hash))
    header = (labels.ENVELOPE_VERSION, state.team, epoch, own_id, parent_id, author, record_type)
    at = (state.head.seqno, state.head.hash)
    clear = dict(metadata)
    try:
        digest = metadata_digest(clear)
    except ValueError:
        raise PolicyError("metadata values must be strings or integers below 2**53") from None
    if body is None:
        if signer is None:
            raise PolicyError("a metadata-only record must be signed by its author")
        ad = _ad_of(header, False, 0, digest, at)
        signature = signer.sign(labels.ENVELOPE_METADATA_SIGNATURE + ad)
        return Envelope(*header, clear, 0, None, None, signature, *at)
    if len(body) > MAX_BODY_BYTES:
        raise PolicyError(f"node body exceeds {MAX_BODY_BYTES} bytes")
    padded = _frame(body)
    nonce = prim.random_bytes(prim.AEAD_NONCE_BYTES) if nonce is None else nonce
    try:
        ad = _ad_of(header, True, len(padded), digest, at)
        ciphertext = prim.aead_encrypt(epoch_key, nonce, padded, ad)
    except prim.PrimitiveError:
        raise PolicyError("epoch key must be 32 bytes and nonce 24 bytes") from None
    return Envelope(*header, clear, len(padded), nonce, ciphertext, None, *at)


def _fail(reason: str) -> IntegrityError:
    log.debug("envelope rejected: %s", reason)
    return IntegrityError()


def _digest(env: Envelope) -> bytes:
    try:
        return metadata_digest(env.metadata)
    except ValueError:  # outside RFC 8785's domain (huge integers, lone surrogates)
        raise _fail("metadata cannot be canonicalized") from None


def _check_header(env: Envelope, state: VerifiedTeamState) -> None:
    if env.version == labels.ENVELOPE_VERSION:
        _check_position(env, state)
    elif env.version != labels.ENVELOPE_V1 or env.at_seqno is not None or env.at_hash is not None:
        raise _fail("envelope version")
    if env.team != state.team or env.record_type not in RECORD_TYPES:
        raise _fail("team or record type")
    if not HEX64_RE.fullmatch(env.node_id) or (
        env.parent_id is not None and not HEX64_RE.fullmatch(env.parent_id)
    ):
        raise _fail("malformed node id")
    if not state.was_writer(env.author, env.epoch):
        raise _fail("author was not a reader in that epoch")


def _check_position(env: Envelope, state: VerifiedTeamState) -> None:
    """A version-2 record names the chain position its writer had verified: it must be on this
    reader's verified chain, the record's epoch must be the one in force there (an honest writer
    seals under the newest epoch it verified), and the author must have been a reader there."""
    seqno, at_hash = env.at_seqno, env.at_hash
    if seqno is None or at_hash is None or not 0 <= seqno < len(state.checkpoints):
        raise _fail("chain position missing or beyond the verified chain")
    checkpoint = state.checkpoints[seqno]
    if not prim.constant_time_equal(checkpoint.hash.encode(), at_hash.encode()):
        raise _fail("chain position is not on the verified chain")
    if checkpoint.epoch != env.epoch or env.author not in checkpoint.readers:
        raise _fail("epoch or author does not match the writer's chain position")


def verify_metadata_only(envelope: AnyEnvelope, *, state: VerifiedTeamState) -> OpenedNode:
    """Check a metadata-only record's signature; usable by viewers (needs no content key)."""
    env = Envelope.parse(envelope)
    _check_header(env, state)
    if env.ciphertext is not None or env.nonce is not None or env.padded_size != 0:
        raise _fail("not a metadata-only record")
    if env.signature is None:
        raise _fail("unsigned metadata-only record")
    ad = _ad(env, _digest(env))
    if not state.known_identities[env.author].verify(
        labels.ENVELOPE_METADATA_SIGNATURE + ad, env.signature
    ):
        raise _fail("bad author signature")
    return OpenedNode(
        env.node_id, env.parent_id, env.author, env.epoch, env.record_type, env.metadata,
        None, None, None,
    )  # fmt: skip


def open_node(
    envelope: AnyEnvelope,
    *,
    state: VerifiedTeamState,
    keys: TeamKeys | None,
    hasher: Hasher,
) -> OpenedNode:
    """Verify and decrypt one record; any failure raises :class:`IntegrityError`.

    For an encrypted record: decrypt under the envelope's epoch key (AD checked by the tag),
    strip padding, decompress, call ``hasher`` on the body and check that the node ID and the
    parent ID recomputed from its result equal the envelope's. A metadata-only record is
    checked as in :func:`verify_metadata_only`.
    """
    env = Envelope.parse(envelope)
    if env.ciphertext is None:
        return verify_metadata_only(env, state=state)
    _check_header(env, state)
    if keys is None or keys.team != env.team:
        raise _fail("no keys for this team")
    epoch_key = keys.epoch_key(env.epoch)
    if epoch_key is None or env.nonce is None or env.signature is not None:
        raise _fail("no key for that epoch, or malformed record")
    if len(env.ciphertext) != env.padded_size + prim.AEAD_TAG_BYTES:
        raise _fail("ciphertext length does not match padded size")
    try:
        padded = prim.aead_decrypt(epoch_key, env.nonce, env.ciphertext, _ad(env, _digest(env)))
    except prim.PrimitiveError:
        raise _fail("AEAD tag") from None
    body = _unframe(padded)
    tapes_hash, parent_hash = _rehash(hasher, body)
    _check_ids(env, keys, tapes_hash, parent_hash)
    return OpenedNode(
        env.node_id, env.parent_id, env.author, env.epoch, env.record_type, env.metadata,
        body, tapes_hash, parent_hash,
    )  # fmt: skip


def _rehash(hasher: Hasher, body: bytes) -> tuple[str, str | None]:
    try:
        tapes_hash, parent_hash = hasher(body)
        _check_hash(tapes_hash)
        if parent_hash is not None:
            _check_hash(parent_hash)
    except Exception:  # noqa: BLE001 - any failure to parse the node is an integrity failure
        raise _fail("body is not a valid node") from None
    return tapes_hash, parent_hash


def _check_ids(env: Envelope, keys: TeamKeys, tapes_hash: str, parent_hash: str | None) -> None:
    """The node ID must be the body's hash under the record's own epoch id key (version 1: the
    vault id key); the parent ID must be the parent hash's ID under an epoch no later than the
    record's, or its version-1 ID (the parent may have been sealed before a rotation)."""
    own = keys.vault_id_key if env.version == labels.ENVELOPE_V1 else keys.id_key(env.epoch)
    if own is None:
        raise _fail("no key for that epoch")
    if not prim.constant_time_equal(node_id(own, tapes_hash).encode(), env.node_id.encode()):
        raise _fail("node ID does not match the body")
    if parent_hash is None:
        if env.parent_id is not None:
            raise _fail("parent ID present but the body has no parent")
        return
    if env.parent_id is None:
        raise _fail("parent ID does not match the body")
    wanted = env.parent_id.encode()
    # Most often the parent was sealed in its child's own epoch: tried first, alone.
    if prim.constant_time_equal(node_id(own, parent_hash).encode(), wanted):
        return
    if not any(
        prim.constant_time_equal(node_id(key, parent_hash).encode(), wanted)
        for key in _earlier_id_keys(env, keys)
    ):
        raise _fail("parent ID does not match the body")


def _earlier_id_keys(env: Envelope, keys: TeamKeys) -> list[bytes]:
    """The id keys a parent of ``env`` may be named under besides the record's own: those of
    the earlier epochs held, newest first, then the vault id key (version 1)."""
    if env.version == labels.ENVELOPE_V1:
        return []
    earlier = sorted((e for e in keys.epochs if e < env.epoch), reverse=True)
    return [k for e in earlier if (k := keys.id_key(e))] + [keys.vault_id_key]
