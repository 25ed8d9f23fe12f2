"""One named test per attack class of ../shared/attack-classes.md that keymgmt defends.

Each test plays the hostile server (or member) and checks that the client fails closed. The
ids of these tests are the ones threat-model.md cites.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import keymgmt
from keymgmt import (
    ChainError,
    ChainForkError,
    ChainLinkError,
    ChainPermissionError,
    ChainRollbackError,
    ChainSignatureError,
    Envelope,
    IntegrityError,
    KdfParamsError,
    PolicyError,
    TeamKeys,
    add_member,
    extend_chain,
    generate_identity,
    new_key,
    open_keyring,
    open_node,
    project_metadata,
    read_key_file,
    remove_member,
    rotate,
    safety_number,
    seal_keyring,
    verify_chain,
)
from keymgmt import _primitives as prim
from keymgmt._encoding import b64d, b64e
from keymgmt.chain import StatementBody, UnverifiedStatement, _sign, chain_to_wire
from keymgmt.keyring import _seal_ad
from keymgmt.keystore import TEST_KDF

from .conftest import (
    T0,
    DetRng,
    Team,
    build_team,
    hasher,
    make_body,
    seal_in,
    seal_v1,
    tapes_hash_of,
)

KEYMGMT = Path(__file__).resolve().parents[2] / "keymgmt"


def seal(team: Team, content: str, parent: str | None = None, **kw: Any) -> Envelope:
    args = {"metadata": project_metadata("coarse", {"model": "m", "total_tokens": 5})}
    return seal_in(team, content, parent, **(args | kw))


def opens(team: Team, env: object, keys: TeamKeys) -> bool:
    try:
        open_node(env, state=team.state, keys=keys, hasher=hasher)  # type: ignore[arg-type]
    except IntegrityError:
        return False
    return True


# 1 -------------------------------------------------------------------------------------------
def test_attack_01_public_key_substitution(team: Team) -> None:
    """The server hands out an attacker X25519 key for the member; wrapping ignores it."""
    attacker = generate_identity(rng=DetRng("attacker"))
    # the chain is the only source of keys: seal_keyring takes recipients from the verified state
    ring = seal_keyring(
        team.state,
        sealer=team.owner,
        epoch=1,
        epoch_key=team.epoch_key,
        vault_id_key=team.vault_id_key,
    ).to_dict()
    with pytest.raises(IntegrityError):
        open_keyring(ring, state=team.state, identity=attacker)
    # substituting the key inside the chain breaks the owner's signature
    add = team.statements[2]
    assert add.body.member_keys is not None
    keys = msgspec.structs.replace(add.body.member_keys, x25519=attacker.public.x25519.hex())
    body = msgspec.structs.replace(add.body, member_keys=keys)
    swapped = UnverifiedStatement(
        body, json.dumps(msgspec.to_builtins(body)).encode(), add.signature
    )
    with pytest.raises(ChainError):
        verify_chain([*team.statements[:2], swapped, *team.statements[3:]])


# 2 -------------------------------------------------------------------------------------------
def test_attack_02_replaced_key_material(team: Team) -> None:
    """A wrap of an attacker-chosen team key to the member's real key is rejected."""
    ring = seal_keyring(
        team.state,
        sealer=team.owner,
        epoch=1,
        epoch_key=team.epoch_key,
        vault_id_key=team.vault_id_key,
    )
    evil = new_key()
    fp = team.member.fingerprint
    wrap = prim.seal_to(
        team.member.public.x25519, team.vault_id_key + evil, _seal_ad(ring.body, fp)
    )
    recipients = dict(ring.body.recipients, **{fp: b64e(wrap)})
    body = msgspec.structs.replace(ring.body, recipients=recipients)
    unsigned = {
        "body": json.dumps(msgspec.to_builtins(body)),
        "signature": ring.to_dict()["signature"],
    }
    with pytest.raises(IntegrityError):  # not signed by an authorized admin
        open_keyring(unsigned, state=team.state, identity=team.member)


# 3 -------------------------------------------------------------------------------------------
def test_attack_03_ghost_member(team: Team) -> None:
    """Unsigned links, links by a non-admin or a removed admin, and bad prev-hashes are refused."""
    ghost = generate_identity(rng=DetRng("ghost")).public
    st = add_member(team.state, signer=team.owner, member=ghost, role="member", now=T0 + 10)
    with pytest.raises(ChainSignatureError):
        verify_chain([*team.statements, UnverifiedStatement(st.body, st.body_bytes, bytes(64))])
    by_member = _sign(msgspec.structs.replace(st.body, signer=team.member.fingerprint), team.member)
    with pytest.raises(ChainPermissionError):
        verify_chain([*team.statements, by_member])
    bad_prev = _sign(msgspec.structs.replace(st.body, prev="00" * 32), team.owner)
    with pytest.raises(ChainLinkError):
        verify_chain([*team.statements, bad_prev])
    team.append(
        remove_member(
            team.state,
            signer=team.owner,
            member=team.admin.fingerprint,
            new_epoch_key=new_key(),
            now=T0 + 11,
        )
    )
    by_removed = _sign(
        StatementBody(
            version=1,
            team=team.team,
            seqno=team.state.head.seqno + 1,
            prev=team.state.head.hash,
            time=T0 + 12,
            signer=team.admin.fingerprint,
            action="add",
            epoch=2,
            member=st.body.member,
            member_keys=st.body.member_keys,
            role="member",
        ),
        team.admin,
    )
    with pytest.raises(ChainPermissionError):
        verify_chain([*team.statements, by_removed])


# 4 -------------------------------------------------------------------------------------------
def test_attack_04_chain_rollback_or_fork(team: Team) -> None:
    """An older or forked head is refused via the persisted head; safety numbers differ."""
    team.append(
        remove_member(
            team.state,
            signer=team.owner,
            member=team.member.fingerprint,
            new_epoch_key=new_key(),
            now=T0 + 10,
        )
    )
    head = verify_chain(chain_to_wire(team.statements)).head
    with pytest.raises(ChainRollbackError):
        verify_chain(chain_to_wire(team.statements[:-1]), last_verified_head=head)
    fork_state = verify_chain(team.statements[:-1])
    forked = add_member(
        fork_state, signer=team.owner, member=team.outsider.public, role="member", now=T0 + 10
    )
    fork = [*team.statements[:-1], forked]
    with pytest.raises(ChainForkError):
        verify_chain(fork, last_verified_head=head)
    assert safety_number(verify_chain(fork)) != safety_number(team.state)


# 5 -------------------------------------------------------------------------------------------
def test_attack_05_rotation_cannot_be_omitted_after_removal(team: Team) -> None:
    """Removal and rotation are one signed statement; the removed member opens 0 new nodes."""
    removed_keys = team.keys_for(team.member)
    key2 = new_key()
    st = remove_member(
        team.state,
        signer=team.owner,
        member=team.member.fingerprint,
        new_epoch_key=key2,
        now=T0 + 10,
    )
    suppressed = _sign(
        msgspec.structs.replace(st.body, epoch=1, epoch_key_commitment=None), team.owner
    )
    with pytest.raises(ChainError):  # a removal without its rotation does not verify
        verify_chain([*team.statements, suppressed])
    team.append(st)
    assert team.state.epoch == 2
    ring = seal_keyring(
        team.state, sealer=team.owner, epoch=2, epoch_key=key2, vault_id_key=team.vault_id_key
    ).to_dict()
    with pytest.raises(IntegrityError):
        open_keyring(ring, state=team.state, identity=team.member)
    new_nodes = [
        seal(team, f"after removal {i}", epoch_key=key2, author=team.owner.fingerprint)
        for i in range(20)
    ]
    assert sum(opens(team, env, removed_keys) for env in new_nodes) == 0
    owner_keys = TeamKeys.from_epoch_keys(open_keyring(ring, state=team.state, identity=team.owner))
    assert all(opens(team, env, owner_keys) for env in new_nodes)


def test_attack_05_client_never_falls_back_to_an_old_epoch(team: Team) -> None:
    """DESIGN §4: the server withholds the new keyring; the client refuses to encrypt."""
    keys = team.keys_for(team.member)
    assert keys.sealing_key(team.state) == (1, team.epoch_key)
    team.append(rotate(team.state, signer=team.owner, new_epoch_key=new_key(), now=T0 + 10))
    with pytest.raises(PolicyError, match="current epoch 2"):
        keys.sealing_key(team.state)


# 6 -------------------------------------------------------------------------------------------
def test_attack_06_escrow_recipient_injected(team: Team) -> None:
    """Recipients must equal the chain roster for the epoch; an extra one is refused."""
    escrow = generate_identity(rng=DetRng("escrow"))
    ring = seal_keyring(
        team.state,
        sealer=team.owner,
        epoch=1,
        epoch_key=team.epoch_key,
        vault_id_key=team.vault_id_key,
    )
    wrap = prim.seal_to(
        escrow.public.x25519,
        team.vault_id_key + team.epoch_key,
        _seal_ad(ring.body, escrow.fingerprint),
    )
    body = msgspec.structs.replace(
        ring.body, recipients={**ring.body.recipients, escrow.fingerprint: b64e(wrap)}
    )
    from keymgmt import labels
    from keymgmt._encoding import canonical_json

    body_bytes = canonical_json(msgspec.to_builtins(body))
    signed = {
        "body": body_bytes.decode(),
        "signature": b64e(team.owner.sign(labels.KEYRING_SIGNATURE + body_bytes)),
    }
    with pytest.raises(IntegrityError):  # even when the rightful owner signed it
        open_keyring(signed, state=team.state, identity=team.member)


# 7 -------------------------------------------------------------------------------------------
def test_attack_07_node_injection(team: Team) -> None:
    """Nodes not made with the team key, by a non-member, or replayed from elsewhere are refused."""
    keys = team.keys_for(team.member)
    assert opens(team, seal(team, "genuine"), keys)
    assert not opens(team, seal(team, "server-made", epoch_key=new_key()), keys)
    assert not opens(team, seal(team, "outsider", author=team.outsider.fingerprint), keys)
    assert not opens(team, seal(team, "viewer", author=team.viewer.fingerprint), keys)
    other = build_team("other-team")
    foreign = seal(other, "from another team")
    assert not opens(team, dict(foreign.to_dict(), team=team.team), keys)
    # a genuine node replayed into another session (other parent) or under another node ID
    genuine = seal(team, "child", tapes_hash_of("root-a", None)).to_dict()
    replayed = dict(genuine, parent_id=keys.node_id(1, tapes_hash_of("root-b", None)))
    assert not opens(team, replayed, keys)


def test_attack_07_a_version_1_record_must_be_by_a_reader_of_its_epoch(team: Team) -> None:
    """Version-1 records carry no chain position, so the author check is theirs alone: one made
    with the epoch key but naming an outsider or a viewer as author is refused."""
    keys = team.keys_for(team.member)

    def v1(author: str) -> dict[str, object]:
        return seal_v1(
            team.state, keys, tapes_hash=tapes_hash_of("old", None),
            body=make_body("old", None), parent_hash=None, metadata={}, author=author,
        )  # fmt: skip

    assert opens(team, v1(team.member.fingerprint), keys)
    assert not opens(team, v1(team.outsider.fingerprint), keys)
    assert not opens(team, v1(team.viewer.fingerprint), keys)


# 8 -------------------------------------------------------------------------------------------
def test_attack_08_metadata_tampering(team: Team) -> None:
    """Every clear field of an envelope is in the AD (see also the bit-flip properties)."""
    keys = team.keys_for(team.member)
    wire = seal(team, "node", tapes_hash_of("root", None)).to_dict()
    for name, value in (
        ("metadata", {"model": "m", "total_tokens": 500_000}),
        ("metadata", {}),
        ("author", team.admin.fingerprint),
        ("epoch", 2),
        ("padded_size", 512),
        ("version", 0),
        ("record_type", "share"),
        ("parent_id", None),
    ):
        assert not opens(team, dict(wire, **{name: value}), keys), name


# 9 -------------------------------------------------------------------------------------------
def test_attack_09_node_swap_relocation_and_type_confusion(team: Team) -> None:
    """Moving a blob to another node ID, session, team, epoch or type fails the AD check."""
    keys = team.keys_for(team.member)
    a = seal(team, "node a", tapes_hash_of("root", None)).to_dict()
    b = seal(team, "node b", tapes_hash_of("root", None)).to_dict()
    swapped = dict(a, nonce=b["nonce"], ciphertext=b["ciphertext"], padded_size=b["padded_size"])
    assert not opens(team, swapped, keys)
    assert not opens(team, dict(a, node_id=b["node_id"]), keys)
    assert not opens(team, dict(a, record_type="share"), keys)
    assert not opens(team, dict(a, team="team-2"), keys)
    assert not opens(
        team, dict(a, epoch=2), TeamKeys(team.team, team.vault_id_key, {2: team.epoch_key})
    )
    meta_only = seal(
        team, "node a", tapes_hash_of("root", None), body=None, epoch_key=None, signer=team.member
    ).to_dict()
    assert not opens(team, dict(meta_only, nonce=a["nonce"], ciphertext=a["ciphertext"]), keys)
    other_meta = seal(
        team, "node b", tapes_hash_of("root", None), body=None, epoch_key=None, signer=team.member
    ).to_dict()
    assert not opens(
        team,
        dict(a, ciphertext=None, nonce=None, padded_size=0, signature=other_meta["signature"]),
        keys,
    )


# 10 ------------------------------------------------------------------------------------------
NON_AEAD = re.compile(
    r"\b(CBC|ECB|CTR|OFB|CFB|XTS|AES|Fernet|SecretBox|crypto_stream\w*|crypto_secretbox\w*"
    r"|hazmat\.primitives\.ciphers)\b"
)


def test_attack_10_no_malleable_modes_lint() -> None:
    """Lint: keymgmt uses XChaCha20-Poly1305 only, no raw cipher modes (bit flips: properties)."""
    for path in KEYMGMT.glob("*.py"):
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        tree = ast.parse(code)
        strings = {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        stripped = code
        for s in strings:
            stripped = stripped.replace(s, "")
        assert not NON_AEAD.search(stripped), path.name


def test_attack_10_only_primitives_module_imports_crypto_libraries() -> None:
    crypto = {"nacl", "cryptography", "argon2", "zstandard"}
    for path in KEYMGMT.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        if path.name != "_primitives.py":
            assert not imported & crypto, path.name


# 11 ------------------------------------------------------------------------------------------
def test_attack_11_truncation_reordering_duplication_appending(team: Team) -> None:
    """Each node is one AEAD message (no chunks); any cut, repeat or append of it fails."""
    keys = team.keys_for(team.member)
    wire = seal(team, "long node " * 500).to_dict()
    ct = b64d(wire["ciphertext"])
    half = len(ct) // 2
    for variant in (ct[:-16], ct[:half], ct + ct[-16:], ct + ct, ct[half:] + ct[:half], ct[16:]):
        assert not opens(team, dict(wire, ciphertext=b64e(variant)), keys)
    # at the DAG level, each node's parent link is bound, so sessions cannot be reordered either
    child = seal(team, "child", tapes_hash_of("root", None)).to_dict()
    assert not opens(team, dict(child, parent_id=child["node_id"]), keys)


# 12 ------------------------------------------------------------------------------------------
def test_attack_12_protocol_and_parameter_downgrade(team: Team, tmp_path: Path) -> None:
    """Old versions are refused (version is in the AD) and KDF parameters below the floor too."""
    keys = team.keys_for(team.member)
    wire = seal(team, "node").to_dict()
    assert not opens(team, dict(wire, version=0), keys)
    genesis = team.statements[0]
    old = _sign(msgspec.structs.replace(genesis.body, version=0), team.owner)
    with pytest.raises(ChainError):
        verify_chain([old])
    from keymgmt import write_key_file

    path = tmp_path / "weak.json"
    write_key_file(path, team.member, "pw", params=TEST_KDF, floor=TEST_KDF)
    with pytest.raises(KdfParamsError):
        read_key_file(path, "pw")


# 14 ------------------------------------------------------------------------------------------
def test_attack_14_uniform_error_for_malformed_wraps_and_envelopes(team: Team) -> None:
    """Malformed wraps, small-order points, wrong lengths: one message, nothing to tell apart."""
    keys = team.keys_for(team.member)
    ring = seal_keyring(
        team.state,
        sealer=team.owner,
        epoch=1,
        epoch_key=team.epoch_key,
        vault_id_key=team.vault_id_key,
    ).to_dict()
    wire = seal(team, "node").to_dict()
    attempts: list[Callable[[], object]] = [
        lambda: open_keyring(ring, state=team.state, identity=team.viewer),
        lambda: open_keyring(
            {"body": "{}", "signature": ""}, state=team.state, identity=team.member
        ),
        lambda: open_keyring(dict(ring, signature="AAAA"), state=team.state, identity=team.member),
        lambda: open_node(dict(wire, nonce="AAAA"), state=team.state, keys=keys, hasher=hasher),
        lambda: open_node(
            dict(wire, ciphertext="AAAA"), state=team.state, keys=keys, hasher=hasher
        ),
        lambda: open_node(
            dict(wire, node_id="00" * 32), state=team.state, keys=keys, hasher=hasher
        ),
        lambda: open_node({"version": 1}, state=team.state, keys=keys, hasher=hasher),
    ]
    messages: set[tuple[type, str, str | None]] = set()
    for attempt in attempts:
        with pytest.raises(IntegrityError) as info:
            attempt()
        messages.add((type(info.value), str(info.value), info.value.hint))
    assert len(messages) == 1


# 15 ------------------------------------------------------------------------------------------
def test_attack_15_no_content_confirmation_via_ids(team: Team) -> None:
    """The hash of a guessed plaintext matches no identifier the server stores."""
    guess = "You are Claude Code, Anthropic's official CLI"
    wire = seal(team, guess, tapes_hash_of("root", None)).to_dict()
    stored = json.dumps(wire)
    candidates = {
        tapes_hash_of(guess, None),
        tapes_hash_of(guess, tapes_hash_of("root", None)),
        tapes_hash_of("root", None),
        hashlib.sha256(guess.encode()).hexdigest(),
        hashlib.sha256(make_body(guess, None)).hexdigest(),
    }
    for digest in candidates:
        assert digest not in stored


def test_attack_15_node_ids_are_keyed_by_the_epoch(team: Team) -> None:
    """The same node gets unrelated IDs under two teams' keys, and an ID is the keyed HMAC under
    its epoch's node-ID key: nobody without that epoch's key can compute (and so confirm) it."""
    guess = "You are Claude Code, Anthropic's official CLI"
    mine = seal(team, guess).node_id
    theirs = seal(team, guess, epoch_key=keymgmt.new_key()).node_id
    assert mine != theirs
    id_key = keymgmt.node_id_key(team.team, 1, team.epoch_key)
    assert mine == keymgmt.node_id(id_key, tapes_hash_of(guess, None))
    assert mine != keymgmt.node_id(team.vault_id_key, tapes_hash_of(guess, None))


def test_attack_15_a_removed_member_cannot_confirm_a_guess_written_after_the_removal(
    team: Team,
) -> None:
    """The member keeps the vault id key and epoch 1's key; after the removal the owner writes
    the content the member guesses. No ID the member can compute matches the stored one."""
    guess = "the launch date is 2027-03-01"
    removed_keys = team.keys_for(team.member)
    key2 = keymgmt.new_key()
    team.append(
        remove_member(
            team.state, signer=team.owner, member=team.member.fingerprint, new_epoch_key=key2,
            now=T0 + 10,
        )
    )  # fmt: skip
    written = seal(team, guess, epoch_key=key2, author=team.owner.fingerprint)
    computable = removed_keys.node_ids(tapes_hash_of(guess, None), up_to=99)
    assert written.node_id not in computable
    # ...while within one epoch the same content keeps one ID (dedup)
    again = seal(team, guess, epoch_key=key2, author=team.owner.fingerprint)
    assert again.node_id == written.node_id


# 16 ------------------------------------------------------------------------------------------
def test_attack_16_team_key_holders_can_decrypt_any_vault_node(team: Team) -> None:
    """Documented limit: which sessions a member may fetch is the server's ACL, not crypto.

    Any reader holding the epoch key opens any node of the vault, shared or not, given the
    ciphertext. threat-model.md and docs say "server-enforced" for this control.
    """
    private_node = seal(team, "not shared with anyone", author=team.owner.fingerprint)
    assert opens(team, private_node, team.keys_for(team.member))
    assert opens(team, private_node, team.keys_for(team.admin))


# 17 ------------------------------------------------------------------------------------------
ENVELOPE_FIELDS = {
    "version",
    "at_seqno",
    "at_hash",
    "team",
    "epoch",
    "node_id",
    "parent_id",
    "author",
    "record_type",
    "metadata",
    "padded_size",
    "nonce",
    "ciphertext",
    "signature",
}


@pytest.mark.parametrize("policy", ["none", "coarse", "full"])
def test_attack_17_metadata_only_mode_sends_only_the_allowlist(team: Team, policy: str) -> None:
    """Snapshot: a metadata-only record holds exactly these fields and no content."""
    canary = "CANARY secret prompt"
    fields = {
        "model": "m",
        "project": "proj",
        "created_at": "2026-11-26T00:34:14Z",
        "total_tokens": 7,
        "content": canary,
        "bucket": canary,
    }
    env: dict[str, Any] = seal(
        team,
        canary,
        body=None,
        epoch_key=None,
        signer=team.member,
        metadata=project_metadata(policy, fields),  # type: ignore[arg-type]
    ).to_dict()
    assert set(env) == ENVELOPE_FIELDS
    assert env["ciphertext"] is None
    assert env["nonce"] is None
    assert env["padded_size"] == 0
    expected = {
        "none": set(),
        "coarse": {"model", "total_tokens", "created_at"},
        "full": {"model", "total_tokens", "created_at", "project"},
    }[policy]
    assert set(env["metadata"]) == expected
    assert canary not in json.dumps(env)
    assert tapes_hash_of(canary, None) not in json.dumps(env)


# length leakage and invite replay ------------------------------------------------------------
def test_length_leakage_is_bucketed_for_incompressible_bodies(team: Team) -> None:
    """Bodies that do not compress (random text) still fall into few padded sizes."""
    rng = random.Random(15)
    sizes = {
        seal(team, "".join(rng.choices(string.ascii_letters, k=n))).padded_size
        for n in range(2000, 2100)
    }
    assert len(sizes) <= 2, sorted(sizes)


def test_length_leakage_is_bucketed(team: Team) -> None:
    """Padmé padding: bodies of different lengths share sizes; overhead stays under 12 %."""
    sizes = [seal(team, "x" * n).padded_size for n in range(1000, 1100)]
    assert len(set(sizes)) <= 2
    big = seal(team, "".join(chr(33 + (i * 7919) % 90) for i in range(50_000)))
    assert big.padded_size <= 1.12 * (len(make_body("x" * 50_000, None)) + 5)


# W -------------------------------------------------------------------------------------------
def test_attack_w_a_writer_who_saw_the_rotation_cannot_seal_under_the_old_epoch(
    team: Team,
) -> None:
    """A record claiming a chain position after a rotation but sealed under the epoch before it
    (a removed member's old key, or a client that ignored what it verified) is refused, though
    its AEAD and every other check pass."""
    keys = team.keys_for(team.member)
    team.append(rotate(team.state, signer=team.owner, new_epoch_key=new_key(), now=T0 + 10))
    keys.epochs[2] = bytes(32)  # never used: the record below is under epoch 1
    stale = dataclasses.replace(team.state, epoch=1)  # the head after the rotation, epoch 1
    forged = seal(team, "late under epoch 1", state=stale)
    assert forged.at_seqno == team.state.head.seqno
    assert forged.epoch == 1
    assert not opens(team, forged.to_dict(), keys)
    honest = seal(team, "early under epoch 1", state=team.state_at(team.state.head.seqno - 1))
    assert opens(team, honest.to_dict(), keys)


def test_attack_w_a_writer_must_have_been_a_reader_at_the_position_it_claims(team: Team) -> None:
    """The member claims the genesis position, before it was added; refused though its key,
    its epoch and its AEAD are all right."""
    keys = team.keys_for(team.member)
    early = seal(team, "from before I joined", state=team.state_at(0))
    assert early.at_seqno == 0
    assert not opens(team, early.to_dict(), keys)
    assert opens(team, seal(team, "now", state=team.state).to_dict(), keys)


def test_attack_w_a_record_written_on_a_forked_chain_is_refused(team: Team) -> None:
    """The server shows the writer one chain and the reader another (same length and epoch:
    only an added member differs). The writer's record names a position the reader's chain does
    not have, and is refused though its key, epoch and author all fit the reader's chain."""
    fork_a = extend_chain(
        team.state,
        [add_member(team.state, signer=team.owner, member=team.outsider.public, role="viewer",
                    now=T0 + 20)],
    )  # fmt: skip
    team.append(
        add_member(team.state, signer=team.owner, member=team.outsider.public, role="admin",
                   now=T0 + 20)
    )  # fmt: skip
    assert fork_a.head.seqno == team.state.head.seqno
    assert fork_a.head.hash != team.state.head.hash
    keys = team.keys_for(team.member)
    assert not opens(team, seal(team, "on the writer's fork", state=fork_a).to_dict(), keys)
    assert opens(team, seal(team, "on the reader's chain").to_dict(), keys)
