"""The head pin (tapes_e2e/vaults.py) without a server: monotonic, per identity, persisted once,
migrated from the two places older versions kept a head, and the personal-vault rule."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgspec
import pytest

import keymgmt
from keymgmt._encoding import b64e
from keymgmt.chain import MemberKeys, _sign, rekey_proof_message
from tapes_e2e.errors import ConfigError
from tapes_e2e.vaults import PINS_FILE, Trust, check_personal

VAULT = "t_pinned"


def grown_chain(owner: keymgmt.Identity, length: int) -> list[keymgmt.VerifiedTeamState]:
    """A team chain of ``length`` statements and the verified state after each."""
    genesis = keymgmt.create_team(
        team=VAULT, owner=owner, vault_id_key=keymgmt.new_key(), epoch_key=keymgmt.new_key()
    )
    states = [keymgmt.verify_chain([genesis], team=VAULT)]
    while len(states) < length:
        other = keymgmt.generate_identity().public
        add = keymgmt.add_member(states[-1], signer=owner, member=other, role="member")
        states.append(keymgmt.extend_chain(states[-1], [add]))
    return states


def wire(state: keymgmt.VerifiedTeamState) -> list[dict[str, str]]:
    return [s.to_dict() for s in state.statements]


def test_a_pin_moves_forward_only_and_is_private(tmp_path: Path) -> None:
    owner = keymgmt.generate_identity()
    states = grown_chain(owner, 3)
    trust = Trust(tmp_path, owner)
    assert trust.pin(VAULT) is None
    trust.verify(VAULT, wire(states[2]))
    assert trust.pin(VAULT) == states[2].head
    assert stat.S_IMODE((tmp_path / PINS_FILE).stat().st_mode) == 0o600
    with pytest.raises(keymgmt.ChainRollbackError, match="hiding a removal"):
        trust.verify(VAULT, wire(states[1]))  # a shorter, validly signed chain
    with pytest.raises(keymgmt.ChainRollbackError):
        trust.pins.advance(owner.fingerprint, states[1])  # even when asked directly
    assert trust.pin(VAULT) == states[2].head


def test_a_fork_at_the_pinned_seqno_is_refused(tmp_path: Path) -> None:
    owner = keymgmt.generate_identity()
    trust = Trust(tmp_path, owner)
    trust.verify(VAULT, wire(grown_chain(owner, 2)[1]))
    other_history = grown_chain(owner, 2)[1]  # same team id, another genesis
    with pytest.raises(keymgmt.ChainForkError):
        trust.verify(VAULT, wire(other_history))
    with pytest.raises(keymgmt.ChainForkError):
        trust.pins.advance(owner.fingerprint, other_history)


def test_pins_are_per_identity(tmp_path: Path) -> None:
    alice, bob = keymgmt.generate_identity(), keymgmt.generate_identity()
    Trust(tmp_path, alice).verify(VAULT, wire(grown_chain(alice, 2)[1]))
    assert Trust(tmp_path, bob).pin(VAULT) is None


def test_a_head_kept_in_teams_json_by_an_older_version_is_the_pin(tmp_path: Path) -> None:
    owner = keymgmt.generate_identity()
    states = grown_chain(owner, 3)
    legacy = {"version": 1, "teams": {VAULT: {"name": "Acme", "head": states[2].head.to_dict()}}}
    (tmp_path / "teams.json").write_text(json.dumps(legacy))
    trust = Trust(tmp_path, owner)
    assert trust.pin(VAULT) == states[2].head
    with pytest.raises(keymgmt.ChainRollbackError):
        trust.verify(VAULT, wire(states[1]))
    trust.verify(VAULT, wire(states[2]))
    assert json.loads((tmp_path / PINS_FILE).read_text())["pins"][owner.fingerprint][VAULT]


def test_a_head_a_store_kept_must_be_in_the_chain_too(tmp_path: Path) -> None:
    owner = keymgmt.generate_identity()
    states = grown_chain(owner, 3)
    trust = Trust(tmp_path, owner)
    with pytest.raises(keymgmt.ChainRollbackError):
        trust.verify(VAULT, wire(states[1]), also_verified=[states[2].head])
    assert trust.pin(VAULT) is None


def test_a_malformed_pins_file_is_an_error_never_replaced(tmp_path: Path) -> None:
    (tmp_path / PINS_FILE).write_text("{not json")
    owner = keymgmt.generate_identity()
    with pytest.raises(ConfigError, match="malformed"):
        Trust(tmp_path, owner).pin(VAULT)
    assert (tmp_path / PINS_FILE).read_text() == "{not json"


def test_a_personal_vault_is_its_owners_alone(tmp_path: Path) -> None:
    owner = keymgmt.generate_identity()
    states = grown_chain(owner, 2)
    check_personal(states[0], owner)  # genesis only: fine
    with pytest.raises(keymgmt.ChainPermissionError, match="not written by your identity"):
        check_personal(states[1], owner)  # someone else was added
    stranger = keymgmt.generate_identity()
    with pytest.raises(keymgmt.ChainPermissionError):
        check_personal(states[0], stranger)  # another identity's genesis
    trust = Trust(tmp_path, owner, personal_vault=VAULT)
    with pytest.raises(keymgmt.ChainPermissionError):
        trust.verify(VAULT, wire(states[1]))
    assert trust.pin(VAULT) is None


def _rotated(signer: keymgmt.Identity, new: keymgmt.Identity, *, forged: bool = False
             ) -> list[dict[str, str]]:  # fmt: skip
    """A personal vault chain: ``signer``'s genesis, then a rekey to ``new``. Honest: ``new``
    signs its proof. Forged: the proof is signed by a key the forger holds, then the statement
    names ``new`` and the forger signs it again."""
    genesis = keymgmt.create_team(
        team=VAULT, owner=signer, vault_id_key=keymgmt.new_key(), epoch_key=keymgmt.new_key()
    )
    state = keymgmt.verify_chain([genesis], team=VAULT)
    decoy = keymgmt.generate_identity() if forged else new
    rekey = keymgmt.rekey(state, signer=signer, new=decoy, new_epoch_key=keymgmt.new_key())
    if forged:
        keys = MemberKeys(new.public.x25519.hex(), new.public.ed25519.hex())
        body = msgspec.structs.replace(rekey.body, member=new.fingerprint, member_keys=keys)
        body = msgspec.structs.replace(body, key_proof=b64e(decoy.sign(rekey_proof_message(body))))
        rekey = _sign(body, signer)
    return [genesis.to_dict(), rekey.to_dict()]


def test_a_personal_vault_chain_rotated_onto_this_key_without_its_proof_is_refused(
    tmp_path: Path,
) -> None:
    """A server that writes a personal vault chain with its own key cannot end it at a victim's
    key: the rekey needs the victim's signature over its place in the chain."""
    me, server = keymgmt.generate_identity(), keymgmt.generate_identity()
    trust = Trust(tmp_path, me, personal_vault=VAULT)
    forged = _rotated(server, me, forged=True)
    with pytest.raises(keymgmt.ChainSignatureError, match="new key did not sign"):
        trust.verify(VAULT, forged)
    assert trust.pin(VAULT) is None
    # the honest lineage: my old key rotated onto me, with my proof
    old = keymgmt.generate_identity()
    honest = _rotated(old, me)
    state = trust.verify(VAULT, honest)
    assert set(state.members) == {me.fingerprint}
    # the old key's machine is told it was rotated, not that the server forged its vault
    with pytest.raises(keymgmt.ChainPermissionError, match=f"rotated to {me.fingerprint}"):
        check_personal(state, old)
