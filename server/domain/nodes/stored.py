"""An envelope's stored form, and each wire form made from it.

A push stores each envelope **packed** (:class:`keymgmt.PackedEnvelope` in MessagePack, ~0.72 of
its JSON), converted once when it arrives (one pushed packed is encoded again by the server's own
encoder, so the stored bytes do not depend on the form it came in): a node is pushed once and
pulled by every device of every reader, so the conversion is paid at the cheap end. Rows stored
before the binary wire hold the JSON the client sent. The first byte tells the two apart: JSON
starts with ``{``, a packed envelope with a MessagePack array.

A pull answers in the form asked for (``Accept``), passing the stored bytes through where the
forms agree and converting where they do not. Both conversions are exact: base64url is checked
canonical on the way in (``keymgmt``'s ``b64d``), and the fields keep their order, so a JSON
client reads back byte for byte the JSON that was pushed.
"""

from __future__ import annotations

from typing import Final

import msgspec

from keymgmt import Envelope, EnvelopeWire, IntegrityError, PackedEnvelope
from server.errors import BadRequest

__all__ = ["NotPackableError", "as_json", "as_packed", "store_form", "wire_of"]

_pack: Final = msgspec.msgpack.Encoder().encode
_unpack: Final = msgspec.msgpack.Decoder(PackedEnvelope).decode
_json: Final = msgspec.json.Encoder().encode
_from_json: Final = msgspec.json.Decoder(EnvelopeWire).decode


class NotPackableError(ValueError):
    """A row stored as JSON before the binary wire whose bytes are not canonical base64url
    (the server did not check that then): it can go out only as the JSON it is."""


def store_form(env: EnvelopeWire | PackedEnvelope) -> bytes:
    """The bytes a push stores for ``env`` (checked already by ``check_envelope``). One pushed
    packed is encoded again, not stored as sent: the stored bytes are the server's encoding."""
    if isinstance(env, PackedEnvelope):
        return _pack(env)
    try:
        return _packed(env)
    except IntegrityError:
        raise BadRequest(
            f"envelope {env.node_id}: a byte field is not canonical unpadded base64url"
        ) from None


def _packed(env: EnvelopeWire) -> bytes:
    """``env`` packed; :class:`IntegrityError` if a byte field does not decode strictly."""
    return _pack(Envelope.from_wire(env).to_packed())


def _is_json(stored: bytes) -> bool:
    return stored[:1] == b"{"


def as_json(stored: bytes) -> bytes:
    """The envelope's JSON (as an :class:`EnvelopeWire` encodes it)."""
    return stored if _is_json(stored) else _json(wire_of(stored))


def as_packed(stored: bytes) -> bytes:
    """The envelope packed; :class:`NotPackableError` for an old JSON row that cannot be."""
    if not _is_json(stored):
        return stored
    try:
        return _packed(_from_json(stored))
    except (IntegrityError, msgspec.DecodeError):
        raise NotPackableError("a stored JSON envelope cannot be packed") from None


def wire_of(stored: bytes) -> EnvelopeWire:
    """The envelope decoded, in its JSON form (for the routes that answer only JSON)."""
    if _is_json(stored):
        return _from_json(stored)
    return Envelope.from_packed(_unpack(stored)).to_wire()
