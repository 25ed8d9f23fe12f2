"""Shared fixtures: deterministic randomness, identities and a verified four-role team."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import rfc8785

from keymgmt import (
    Envelope,
    Identity,
    TeamKeys,
    VerifiedTeamState,
    add_member,
    create_team,
    generate_identity,
    labels,
    node_id,
    open_keyring,
    seal_keyring,
    seal_node,
    verify_chain,
)
from keymgmt import _primitives as prim
from keymgmt.chain import UnverifiedStatement, extend_chain
from keymgmt.envelope import _ad_of, _frame
from keymgmt.metadata import MetadataValue, metadata_digest

T0 = 1_780_000_000


class DetRng:
    """Deterministic byte source (SHA-256 in counter mode) so tests and vectors are pinned."""

    def __init__(self, seed: str) -> None:
        self.seed = seed.encode()
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


def make_body(content: str, parent: str | None) -> bytes:
    """A stand-in for a serialized tapes node: hash = sha256(JCS(parent, content))."""
    return json.dumps({"parent": parent, "content": content}).encode()


def tapes_hash_of(content: str, parent: str | None) -> str:
    return hashlib.sha256(rfc8785.dumps({"parent": parent or "", "content": content})).hexdigest()


def hasher(body: bytes) -> tuple[str, str | None]:
    node = json.loads(body)
    return tapes_hash_of(node["content"], node["parent"]), node["parent"]


@dataclass
class Team:
    team: str
    owner: Identity
    admin: Identity
    member: Identity
    viewer: Identity
    outsider: Identity
    statements: list[UnverifiedStatement]
    state: VerifiedTeamState
    vault_id_key: bytes
    epoch_key: bytes
    rng: DetRng

    def keys_for(self, who: Identity) -> TeamKeys:
        ring = seal_keyring(
            self.state,
            sealer=self.owner,
            epoch=self.state.epoch,
            epoch_key=self.epoch_key,
            vault_id_key=self.vault_id_key,
            rng=self.rng,
        )
        return TeamKeys.from_epoch_keys(
            open_keyring(ring.to_dict(), state=self.state, identity=who)
        )

    def state_at(self, seqno: int) -> VerifiedTeamState:
        """The verified chain as it stood right after statement ``seqno``."""
        return verify_chain(self.statements[: seqno + 1])

    def append(self, statement: UnverifiedStatement) -> None:
        self.statements.append(statement)
        self.state = extend_chain(self.state, [statement])


def seal_in(
    team: Team,
    content: str,
    parent: str | None,
    *,
    state: VerifiedTeamState | None = None,
    epoch_key: bytes | None = None,
    vault_id_key: bytes | None = None,
    **kw: object,
) -> Envelope:
    """Seal a node as a holder of ``epoch_key`` (default: the team's first) whose verified chain
    is ``state`` (default: the team's now), its parent named as sealed in the same epoch."""
    state = state or team.state
    keys = TeamKeys(
        team.team, vault_id_key or team.vault_id_key, {state.epoch: epoch_key or team.epoch_key}
    )
    args: dict[str, object] = {
        "state": state,
        "keys": keys,
        "tapes_hash": tapes_hash_of(content, parent),
        "parent_id": None if parent is None else keys.node_id(state.epoch, parent),
        "body": make_body(content, parent),
        "author": team.member.fingerprint,
    }
    args.update(kw)
    return seal_node(**args)  # type: ignore[arg-type]


def seal_v1(
    state: VerifiedTeamState,
    keys: TeamKeys,
    *,
    tapes_hash: str,
    parent_hash: str | None,
    body: bytes,
    metadata: dict[str, MetadataValue],
    author: str,
) -> dict[str, object]:
    """An encrypted record as the sealer before 2026-12 wrote it (envelope version 1: IDs under
    the vault id key, no chain position). Nothing seals these any more; tests make them to
    prove such history still opens, and that the checks it relies on still hold."""
    ids = keys.vault_id_key
    parent = None if parent_hash is None else node_id(ids, parent_hash)
    header = (labels.ENVELOPE_V1, state.team, 1, node_id(ids, tapes_hash), parent, author, "node")
    padded, nonce = _frame(body), prim.random_bytes(24)
    ad = _ad_of(header, True, len(padded), metadata_digest(metadata), None)
    ciphertext = prim.aead_encrypt(keys.epoch_key(1) or b"", nonce, padded, ad)
    return Envelope(*header, metadata, len(padded), nonce, ciphertext).to_dict()


def build_team(seed: str = "team") -> Team:
    rng = DetRng(seed)
    owner, admin, member, viewer, outsider = (generate_identity(rng=rng) for _ in range(5))
    vault_id_key, epoch_key = rng(32), rng(32)
    genesis = create_team(
        team="team-1", owner=owner, vault_id_key=vault_id_key, epoch_key=epoch_key, now=T0
    )
    statements = [genesis]
    state = verify_chain(statements)
    for i, (who, role) in enumerate(((admin, "admin"), (member, "member"), (viewer, "viewer"))):
        st = add_member(state, signer=owner, member=who.public, role=role, now=T0 + i + 1)  # type: ignore[arg-type]
        statements.append(st)
        state = extend_chain(state, [st])
    return Team(
        "team-1",
        owner,
        admin,
        member,
        viewer,
        outsider,
        statements,
        state,
        vault_id_key,
        epoch_key,
        rng,
    )


@pytest.fixture
def team() -> Team:
    return build_team()


@pytest.fixture
def rng() -> Callable[[int], bytes]:
    return DetRng("fixture")
