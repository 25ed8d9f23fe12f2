"""Wire schemas of the vault-generic endpoints: a personal vault's genesis, and the chain and
keyrings of any vault (personal or team) as its members read them.

Same rules as :mod:`tapes_e2e.protocol`: frozen msgspec Structs that refuse unknown fields.
Signed objects travel as :class:`~tapes_e2e.protocol.teams.SignedWire`, exactly as keymgmt's
``to_dict()`` writes them. The chain and keyrings are read with the team structs
(:class:`~tapes_e2e.protocol.teams.ChainPage`, :class:`~tapes_e2e.protocol.teams.KeyringOut`).
"""

from __future__ import annotations

import msgspec

from tapes_e2e.protocol.teams import ChainHeadOut, SignedWire

__all__ = ["GenesisCreate", "GenesisCreated"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class GenesisCreate(_Strict, frozen=True):
    """A personal vault's genesis: the owner's ``keymgmt.create_team`` statement for the vault id
    and the epoch-1 keyring sealed to the owner (``keymgmt.seal_keyring``). Accepted once."""

    statement: SignedWire
    keyring: SignedWire


class GenesisCreated(_Strict, frozen=True):
    """The vault and its chain head after the genesis (seqno 0)."""

    vault_id: str
    head: ChainHeadOut
