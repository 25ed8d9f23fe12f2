"""Rotating a member's own identity (``rekey``): the old key signs the new one into the team, the
new key proves it holds itself, a reader's rotation starts an epoch the old key never opens, and
the new key seals that epoch's keyrings without being a manager."""

from __future__ import annotations

import msgspec
import pytest

from keymgmt import (
    ChainFormatError,
    ChainPermissionError,
    ChainReplayError,
    ChainSignatureError,
    IntegrityError,
    PolicyError,
    generate_identity,
    labels,
    open_keyring,
    rekey,
    seal_keyring,
    verify_chain,
)
from keymgmt._encoding import b64e, canonical_json
from keymgmt.chain import _sign, chain_to_wire, rekey_proof_message
from keymgmt.identity import Identity
from keymgmt.keyring import UnverifiedKeyring

from .conftest import T0, Team


def _rotate(team: Team, who: Identity, *, now: int = T0 + 10) -> tuple[Identity, bytes]:
    new, key = generate_identity(rng=team.rng), team.rng(32)
    team.append(rekey(team.state, signer=who, new=new, new_epoch_key=key, now=now))
    return new, key


def test_a_reader_rotates_keeps_the_role_and_starts_an_epoch(team: Team) -> None:
    new, _ = _rotate(team, team.member)
    state = verify_chain(chain_to_wire(team.statements))
    assert state.epoch == 2
    assert team.member.fingerprint not in state.members
    assert state.members[new.fingerprint].role == "member"
    assert state.members[new.fingerprint].public == new.public
    assert new.fingerprint in state.readers
    assert team.member.fingerprint not in state.readers
    # what the old key wrote stays attributable; it writes nothing more
    assert state.was_writer(team.member.fingerprint, 1)
    assert not state.was_writer(team.member.fingerprint, 2)
    assert state.was_writer(new.fingerprint, 2)
    assert state.known_identities[team.member.fingerprint] == team.member.public


def test_the_new_key_seals_its_epoch_for_every_reader_and_the_old_key_opens_nothing(
    team: Team,
) -> None:
    new, key = _rotate(team, team.member)
    ring = seal_keyring(
        team.state, sealer=new, epoch=2, epoch_key=key, vault_id_key=team.vault_id_key,
        rng=team.rng,
    )  # fmt: skip
    for reader in (team.owner, team.admin, new):
        assert open_keyring(ring.to_dict(), state=team.state, identity=reader).epoch_key == key
    for outsider in (team.member, team.viewer):
        with pytest.raises(IntegrityError):
            open_keyring(ring.to_dict(), state=team.state, identity=outsider)
    # the right to seal is the rotation's only: one statement later it is gone
    team.append(rekey(team.state, signer=team.admin, new=generate_identity(), now=T0 + 11,
                      new_epoch_key=team.rng(32)))  # fmt: skip
    with pytest.raises(PolicyError):
        seal_keyring(team.state, sealer=new, epoch=2, epoch_key=key,
                     vault_id_key=team.vault_id_key)  # fmt: skip


def test_a_plain_member_seals_nothing_outside_their_own_rotation(team: Team) -> None:
    new_admin, key = _rotate(team, team.admin)
    honest = seal_keyring(
        team.state, sealer=new_admin, epoch=2, epoch_key=key, vault_id_key=team.vault_id_key,
    )  # fmt: skip
    # the same keyring, declared and signed by the member: the rotation was not theirs
    body = msgspec.structs.replace(honest.body, sealer=team.member.fingerprint)
    body_bytes = canonical_json(msgspec.to_builtins(body))
    signature = team.member.sign(labels.KEYRING_SIGNATURE + body_bytes)
    forged = UnverifiedKeyring(body, body_bytes, signature).to_dict()
    with pytest.raises(IntegrityError):
        open_keyring(forged, state=team.state, identity=team.owner)
    assert open_keyring(honest.to_dict(), state=team.state, identity=team.owner).epoch_key == key
    with pytest.raises(PolicyError):
        seal_keyring(team.state, sealer=team.member, epoch=1, epoch_key=team.epoch_key,
                     vault_id_key=team.vault_id_key)  # fmt: skip


def test_a_viewer_rotates_without_a_new_epoch(team: Team) -> None:
    new = generate_identity(rng=team.rng)
    with pytest.raises(ChainFormatError):
        rekey(team.state, signer=team.viewer, new=new, new_epoch_key=team.rng(32), now=T0 + 10)
    team.append(rekey(team.state, signer=team.viewer, new=new, now=T0 + 10))
    assert team.state.epoch == 1
    assert team.state.members[new.fingerprint].role == "viewer"
    assert new.fingerprint not in team.state.readers


def test_a_reader_cannot_rotate_without_a_new_epoch(team: Team) -> None:
    with pytest.raises(ChainFormatError):
        rekey(team.state, signer=team.member, new=generate_identity(), now=T0 + 10)


def _forged(team: Team, signer: Identity, new: Identity, proof_by: Identity) -> object:
    """A rekey by ``signer`` to ``new`` whose key proof ``proof_by`` signed."""
    honest = rekey(team.state, signer=team.member, new=new, new_epoch_key=team.rng(32),
                   now=T0 + 10)  # fmt: skip
    body = msgspec.structs.replace(honest.body, signer=signer.fingerprint)
    body = msgspec.structs.replace(body, key_proof=b64e(proof_by.sign(rekey_proof_message(body))))
    return _sign(body, signer)


def test_nobody_is_rotated_to_a_key_that_did_not_sign_the_rekey(team: Team) -> None:
    """The proof is what stops a server from ending a chain it wrote at a victim's key."""
    victim, thief = generate_identity(), generate_identity()
    with pytest.raises(ChainSignatureError, match="new key did not sign"):
        verify_chain([*team.statements, _forged(team, team.member, victim, thief)])
    # a proof made for another place in the chain does not carry over
    elsewhere = rekey(team.state, signer=team.member, new=victim, new_epoch_key=team.rng(32),
                      now=T0 + 10)  # fmt: skip
    moved = msgspec.structs.replace(elsewhere.body, signer=team.admin.fingerprint)
    with pytest.raises(ChainSignatureError):
        verify_chain([*team.statements, _sign(moved, team.admin)])
    for proof in ("", "!!"):
        bad = msgspec.structs.replace(elsewhere.body, key_proof=proof)
        with pytest.raises((ChainFormatError, ChainSignatureError)):
            verify_chain([*team.statements, _sign(bad, team.member)])


def test_the_old_key_signs_the_rekey_and_only_a_member_can(team: Team) -> None:
    new = generate_identity()
    with pytest.raises(ChainPermissionError):
        verify_chain([*team.statements, _forged(team, team.outsider, new, new)])
    st = rekey(team.state, signer=team.member, new=new, new_epoch_key=team.rng(32), now=T0 + 10)
    with pytest.raises(ChainSignatureError):
        verify_chain([*team.statements, _sign(st.body, team.admin)])  # signer field says member
    # after the rotation the old key is no member: it cannot sign, nor rotate again
    team.append(st)
    with pytest.raises(ChainPermissionError):
        rekey(team.state, signer=team.member, new=generate_identity(),
              new_epoch_key=team.rng(32), now=T0 + 11)  # fmt: skip


def test_no_rotation_to_a_key_the_team_ever_knew(team: Team) -> None:
    # to another member's key: two members would share one key
    with pytest.raises(ChainReplayError):
        rekey(team.state, signer=team.member, new=team.admin, new_epoch_key=team.rng(32),
              now=T0 + 10)  # fmt: skip
    # back to one's own old key, after a rotation away from it
    new, _ = _rotate(team, team.member)
    with pytest.raises(ChainReplayError):
        rekey(team.state, signer=new, new=team.member, new_epoch_key=team.rng(32), now=T0 + 11)


def test_a_rekey_carries_only_its_own_fields(team: Team) -> None:
    st = rekey(team.state, signer=team.member, new=generate_identity(),
               new_epoch_key=team.rng(32), now=T0 + 10)  # fmt: skip
    for extra in ({"role": "owner"}, {"invite_id": "x"}, {"metadata_policy": "full"}):
        bad = msgspec.structs.replace(st.body, **extra)
        with pytest.raises(ChainFormatError, match="unexpected fields"):
            verify_chain([*team.statements, _sign(bad, team.member)])
    for missing in ({"member_keys": None}, {"member": None}):
        bad = msgspec.structs.replace(st.body, **missing)
        with pytest.raises(ChainFormatError):
            verify_chain([*team.statements, _sign(bad, team.member)])


def test_the_last_owner_can_rotate(team: Team) -> None:
    new, _ = _rotate(team, team.owner)
    assert team.state.members[new.fingerprint].role == "owner"
    # and keeps every power of an owner under the new key
    team.append(rekey(team.state, signer=team.admin, new=generate_identity(), now=T0 + 11,
                      new_epoch_key=team.rng(32)))  # fmt: skip
