"""The signed team chain: valid histories verify, every kind of tampering is refused."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keymgmt import (
    ChainForkError,
    ChainFormatError,
    ChainHead,
    ChainKeyError,
    ChainLinkError,
    ChainPermissionError,
    ChainReplayError,
    ChainRollbackError,
    ChainSignatureError,
    add_member,
    change_policy,
    change_role,
    create_team,
    extend_chain,
    generate_identity,
    parse_statement,
    remove_member,
    rotate,
    safety_number,
    verify_chain,
)
from keymgmt.chain import (
    MAX_CLOCK_SKEW_SECONDS,
    StatementBody,
    UnverifiedStatement,
    _sign,
    chain_to_wire,
    epoch_key_commitment,
)
from keymgmt.errors import ChainError
from keymgmt.identity import Identity

from .conftest import T0, DetRng, Team, build_team


def resign(statement: UnverifiedStatement, by: Identity, **changes: object) -> UnverifiedStatement:
    return _sign(msgspec.structs.replace(statement.body, **changes), by)


def wire(team: Team) -> list[dict[str, str]]:
    return chain_to_wire(team.statements)


def test_valid_chain_verifies_with_roles_keys_epoch_and_policy(team: Team) -> None:
    state = verify_chain(wire(team), team="team-1")
    assert state.team == "team-1"
    roles = {fp: m.role for fp, m in state.members.items()}
    assert roles == {
        team.owner.fingerprint: "owner",
        team.admin.fingerprint: "admin",
        team.member.fingerprint: "member",
        team.viewer.fingerprint: "viewer",
    }
    assert state.members[team.member.fingerprint].public == team.member.public
    assert state.readers == {
        team.owner.fingerprint,
        team.admin.fingerprint,
        team.member.fingerprint,
    }
    assert state.epoch == 1
    assert (state.metadata_policy, state.content_policy) == ("coarse", "encrypted")
    assert state.head == ChainHead(3, team.statements[-1].hash)
    assert state.member(team.outsider.fingerprint) is None


def test_remove_carries_new_epoch_and_rotation_in_one_statement(team: Team) -> None:
    key2 = team.rng(32)
    team.append(
        remove_member(
            team.state,
            signer=team.admin,
            member=team.member.fingerprint,
            new_epoch_key=key2,
            now=T0 + 10,
        )
    )
    state = verify_chain(wire(team))
    assert state.epoch == 2
    assert team.member.fingerprint not in state.readers
    assert state.epoch_commitments[2] == epoch_key_commitment("team-1", 2, key2)
    assert state.was_writer(team.member.fingerprint, 1)
    assert not state.was_writer(team.member.fingerprint, 2)


def test_removal_without_new_epoch_is_refused(team: Team) -> None:
    st = remove_member(
        team.state,
        signer=team.owner,
        member=team.member.fingerprint,
        new_epoch_key=team.rng(32),
        now=T0 + 10,
    )
    bad = resign(st, team.owner, epoch=1, epoch_key_commitment=None)
    with pytest.raises(ChainFormatError):
        verify_chain([*team.statements, bad])


def test_demoting_reader_to_viewer_rotates(team: Team) -> None:
    with pytest.raises(ChainFormatError):
        change_role(team.state, signer=team.owner, member=team.member.fingerprint, role="viewer")
    team.append(
        change_role(
            team.state,
            signer=team.owner,
            member=team.member.fingerprint,
            role="viewer",
            new_epoch_key=team.rng(32),
            now=T0 + 10,
        )
    )
    assert team.state.epoch == 2
    assert team.member.fingerprint not in team.state.readers
    team.append(
        change_role(
            team.state,
            signer=team.admin,
            member=team.viewer.fingerprint,
            role="member",
            now=T0 + 11,
        )
    )
    assert team.viewer.fingerprint in team.state.readers
    assert team.state.epoch == 2


def test_rotate_and_policy_change(team: Team) -> None:
    team.append(rotate(team.state, signer=team.admin, new_epoch_key=team.rng(32), now=T0 + 10))
    team.append(change_policy(team.state, signer=team.owner, metadata_policy="none", now=T0 + 11))
    team.append(change_policy(team.state, signer=team.owner, content_policy="omit", now=T0 + 12))
    state = verify_chain(wire(team))
    assert (state.epoch, state.metadata_policy, state.content_policy) == (2, "none", "omit")
    with pytest.raises(ChainFormatError, match="no policy"):
        change_policy(state, signer=team.owner, now=T0 + 13)


@pytest.mark.parametrize(
    ("signer", "action"),
    [
        ("member", "add"),
        ("viewer", "add"),
        ("admin", "add_admin"),
        ("admin", "remove_admin"),
        ("member", "rotate"),
        ("viewer", "policy"),
        ("admin", "promote_owner"),
        ("outsider", "add"),
    ],
)
def test_unauthorized_signer_is_refused(team: Team, signer: str, action: str) -> None:
    who: Identity = getattr(team, signer)
    newcomer = generate_identity(rng=DetRng("newcomer")).public
    calls = {
        "add": lambda: add_member(
            team.state, signer=who, member=newcomer, role="member", now=T0 + 9
        ),
        "add_admin": lambda: add_member(
            team.state, signer=who, member=newcomer, role="admin", now=T0 + 9
        ),
        "remove_admin": lambda: remove_member(
            team.state,
            signer=who,
            member=team.admin.fingerprint,
            new_epoch_key=team.rng(32),
            now=T0 + 9,
        ),
        "rotate": lambda: rotate(team.state, signer=who, new_epoch_key=team.rng(32), now=T0 + 9),
        "policy": lambda: change_policy(team.state, signer=who, metadata_policy="full", now=T0 + 9),
        "promote_owner": lambda: change_role(
            team.state, signer=who, member=team.member.fingerprint, role="owner"
        ),
    }
    with pytest.raises(ChainPermissionError):
        calls[action]()


def test_only_an_owner_changes_the_policy(team: Team) -> None:
    """The policy decides what leaves every member's machine in clear: an admin may not."""
    with pytest.raises(ChainPermissionError, match="admin may not change policy"):
        change_policy(team.state, signer=team.admin, metadata_policy="full", now=T0 + 9)
    team.append(change_policy(team.state, signer=team.owner, metadata_policy="full", now=T0 + 9))
    assert verify_chain(wire(team)).metadata_policy == "full"


def test_a_statement_dated_in_the_future_is_refused(team: Team) -> None:
    """Also on the client, not only on an honest server: beyond the skew, relative to ``now``."""
    statements = wire(team)
    last = team.state.last_time
    assert verify_chain(statements, now=last - MAX_CLOCK_SKEW_SECONDS).head == team.state.head
    with pytest.raises(ChainLinkError, match="dated in the future"):
        verify_chain(statements, now=last - MAX_CLOCK_SKEW_SECONDS - 1)
    ahead = rotate(
        team.state,
        signer=team.owner,
        new_epoch_key=team.rng(32),
        now=int(time.time()) + 2 * MAX_CLOCK_SKEW_SECONDS,
    )  # a signer's fast clock
    with pytest.raises(ChainLinkError, match="dated in the future"):
        extend_chain(team.state, [ahead])


def test_last_owner_cannot_leave_or_be_demoted(team: Team) -> None:
    with pytest.raises(ChainPermissionError, match="last owner"):
        remove_member(
            team.state,
            signer=team.owner,
            member=team.owner.fingerprint,
            new_epoch_key=team.rng(32),
            now=T0 + 9,
        )
    with pytest.raises(ChainPermissionError, match="last owner"):
        change_role(
            team.state, signer=team.owner, member=team.owner.fingerprint, role="admin", now=T0 + 9
        )
    team.append(
        change_role(
            team.state, signer=team.owner, member=team.admin.fingerprint, role="owner", now=T0 + 9
        )
    )
    team.append(
        remove_member(
            team.state,
            signer=team.admin,
            member=team.owner.fingerprint,
            new_epoch_key=team.rng(32),
            now=T0 + 10,
        )
    )
    assert team.state.members[team.admin.fingerprint].role == "owner"


def test_removed_admin_can_no_longer_sign(team: Team) -> None:
    team.append(
        remove_member(
            team.state,
            signer=team.owner,
            member=team.admin.fingerprint,
            new_epoch_key=team.rng(32),
            now=T0 + 10,
        )
    )
    newcomer = generate_identity(rng=DetRng("x")).public
    body = StatementBody(
        version=1,
        team="team-1",
        seqno=team.state.head.seqno + 1,
        prev=team.state.head.hash,
        time=T0 + 11,
        signer=team.admin.fingerprint,
        action="add",
        epoch=2,
        member=newcomer.fingerprint,
        member_keys=None,
        role="member",
    )
    with pytest.raises(ChainError):
        extend_chain(team.state, [_sign(body, team.admin)])


def test_bad_signature_is_refused(team: Team) -> None:
    last = team.statements[-1]
    forged = UnverifiedStatement(last.body, last.body_bytes, bytes(64))
    with pytest.raises(ChainSignatureError):
        verify_chain([*team.statements[:-1], forged])
    # a statement signed by someone else than its declared signer
    other = resign(last, team.admin)
    with pytest.raises(ChainSignatureError):
        verify_chain(
            [
                *team.statements[:-1],
                UnverifiedStatement(last.body, last.body_bytes, other.signature),
            ]
        )


def test_key_substitution_is_refused(team: Team) -> None:
    """The server swaps the member's keys in the add statement (class 1)."""
    last = team.statements[2]
    attacker = generate_identity(rng=DetRng("attacker")).public
    assert last.body.member_keys is not None
    keys = msgspec.structs.replace(last.body.member_keys, x25519=attacker.x25519.hex())
    swapped = resign(last, team.owner, member_keys=keys)
    with pytest.raises(ChainKeyError):
        verify_chain([*team.statements[:2], swapped])
    bad_point = msgspec.structs.replace(last.body.member_keys, x25519="00" * 32)
    with pytest.raises(ChainKeyError):
        verify_chain([*team.statements[:2], resign(last, team.owner, member_keys=bad_point)])


def test_replay_and_duplicates_are_refused(team: Team) -> None:
    with pytest.raises(ChainLinkError):  # same statement twice: wrong seqno
        verify_chain([*team.statements, team.statements[-1]])
    dup = add_member(
        team.state, signer=team.owner, member=team.outsider.public, role="member", now=T0 + 9
    )
    again = resign(dup, team.owner, seqno=dup.body.seqno + 1, prev=dup.hash)
    with pytest.raises(ChainReplayError):
        verify_chain([*team.statements, dup, again])
    with pytest.raises(ChainReplayError):
        add_member(team.state, signer=team.owner, member=team.member.public, role="member")


def test_statement_from_another_team_is_refused(team: Team) -> None:
    other = build_team("other-seed")
    foreign = resign(other.statements[1], other.owner, team="team-2")
    with pytest.raises(ChainLinkError):
        verify_chain([*team.statements[:1], foreign])
    with pytest.raises(ChainLinkError):
        verify_chain(wire(team), team="team-2")


def test_time_going_backwards_is_refused(team: Team) -> None:
    st = add_member(
        team.state, signer=team.owner, member=team.outsider.public, role="member", now=T0 + 10
    )
    with pytest.raises(ChainLinkError, match="backwards"):
        verify_chain([*team.statements, resign(st, team.owner, time=T0 - 1)])


def test_rollback_and_fork_against_last_verified_head(team: Team) -> None:
    head = verify_chain(wire(team)).head
    with pytest.raises(ChainRollbackError):
        verify_chain(wire(team)[:-1], last_verified_head=head)
    fork = build_team()  # same keys and genesis, different last statement
    fork.statements[-1] = add_member(
        verify_chain(fork.statements[:-1]),
        signer=fork.owner,
        member=fork.viewer.public,
        role="member",
        now=T0 + 3,
    )
    with pytest.raises(ChainForkError):
        verify_chain(chain_to_wire(fork.statements), last_verified_head=head)
    assert safety_number(verify_chain(fork.statements)) != safety_number(team.state)
    team.append(rotate(team.state, signer=team.owner, new_epoch_key=team.rng(32), now=T0 + 20))
    assert verify_chain(wire(team), last_verified_head=head).head.seqno == 4


def test_chain_head_round_trip() -> None:
    head = ChainHead(3, "ab" * 32)
    assert ChainHead.from_dict(head.to_dict()) == head
    with pytest.raises(ChainFormatError):
        ChainHead.from_dict({"seqno": "3", "hash": "ab" * 32})


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "nope",
        {"body": 3, "signature": ""},
        {"body": "{}", "signature": ""},
        {"body": "{}", "signature": "", "extra": 1},
    ],
)
def test_malformed_statements_are_refused(bad: object) -> None:
    with pytest.raises(ChainFormatError):
        verify_chain(bad if isinstance(bad, list) else [bad])


def test_create_must_be_first_and_well_formed(team: Team) -> None:
    genesis = team.statements[0]
    with pytest.raises(ChainLinkError):
        verify_chain([team.statements[1]])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, role="admin")])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, team="")])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, metadata_policy=None)])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, vault_key_commitment="xy")])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, version=2)])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, invite_id="ab")])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, member_keys=None)])
    with pytest.raises(ChainFormatError):
        verify_chain([resign(genesis, team.owner, signer="not-a-fingerprint")])
    second = create_team(
        team="team-1", owner=team.admin, vault_id_key=bytes(32), epoch_key=bytes(32), now=T0 + 5
    )
    with pytest.raises(ChainLinkError):
        verify_chain([genesis, resign(second, team.admin, seqno=1, prev=genesis.hash)])


def test_field_rules_per_action(team: Team) -> None:
    state = team.state
    st = add_member(
        state, signer=team.owner, member=team.outsider.public, role="member", now=T0 + 9
    )
    for changes in (
        {"role": None},
        {"epoch": 2},
        {"invite_id": "ab" * 8},
        {"metadata_policy": "full"},
    ):
        with pytest.raises(ChainError):
            extend_chain(state, [resign(st, team.owner, **changes)])
    rm = remove_member(
        state,
        signer=team.owner,
        member=team.member.fingerprint,
        new_epoch_key=team.rng(32),
        now=T0 + 9,
    )
    with pytest.raises(ChainFormatError):
        extend_chain(state, [resign(rm, team.owner, member=None)])
    with pytest.raises(ChainPermissionError):
        extend_chain(state, [resign(rm, team.owner, member=team.outsider.fingerprint)])
    cr = change_role(state, signer=team.owner, member=team.viewer.fingerprint, role="member")
    with pytest.raises(ChainFormatError):
        extend_chain(state, [resign(cr, team.owner, role="viewer")])


def test_safety_number_shape_and_stability(team: Team) -> None:
    number = safety_number(team.state)
    assert len(number.split()) == 8
    assert all(len(g) == 5 and g.isdigit() for g in number.split())
    assert number == safety_number(verify_chain(wire(team)))


def test_parse_statement_round_trips(team: Team) -> None:
    for statement in team.statements:
        again = parse_statement(json.loads(json.dumps(statement.to_dict())))
        assert again == statement
        assert parse_statement(statement) is statement


# --- properties ---------------------------------------------------------------------------

_OPS = st.lists(st.sampled_from(["add", "remove", "rotate", "role", "policy"]), max_size=12)


def _random_chain(ops: list[str], seed: int) -> Team:
    team = build_team(f"prop-{seed}")
    rng = DetRng(f"ops-{seed}")
    for i, op in enumerate(ops):
        now = T0 + 100 + i
        state = team.state
        removable = [fp for fp, m in state.members.items() if m.role in {"member", "viewer"}]
        if op == "add":
            who = generate_identity(rng=rng).public
            team.append(add_member(state, signer=team.owner, member=who, role="member", now=now))
        elif op == "remove" and removable:
            team.append(
                remove_member(
                    state, signer=team.admin, member=removable[0], new_epoch_key=rng(32), now=now
                )
            )
        elif op == "role" and removable:
            target = state.members[removable[-1]]
            if target.role == "viewer":
                team.append(
                    change_role(
                        state, signer=team.admin, member=removable[-1], role="member", now=now
                    )
                )
            else:
                team.append(
                    change_role(
                        state,
                        signer=team.admin,
                        member=removable[-1],
                        role="viewer",
                        new_epoch_key=rng(32),
                        now=now,
                    )
                )
        elif op == "policy":
            team.append(change_policy(state, signer=team.owner, metadata_policy="full", now=now))
        else:
            team.append(rotate(state, signer=team.owner, new_epoch_key=rng(32), now=now))
    return team


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, seed=st.integers(0, 10_000))
def test_random_valid_chains_verify(ops: list[str], seed: int) -> None:
    team = _random_chain(ops, seed)
    state = verify_chain(wire(team))
    assert state.head == team.state.head
    assert state.members.keys() == team.state.members.keys()
    assert state.epoch == team.state.epoch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_reordering_is_refused(data: st.DataObject) -> None:
    team = _random_chain(["add", "rotate", "remove", "add"], 7)
    order = data.draw(st.permutations(range(len(team.statements))))
    if list(order) == sorted(order):
        return
    with pytest.raises(ChainError):
        verify_chain([team.statements[i] for i in order])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_truncation_below_head_or_gap_is_refused(data: st.DataObject) -> None:
    team = _random_chain(["add", "rotate", "remove", "add"], 8)
    head = team.state.head
    n = len(team.statements)
    cut = data.draw(st.integers(1, n - 1))
    with pytest.raises(ChainRollbackError):
        verify_chain(team.statements[:cut], last_verified_head=head)
    gap = data.draw(st.integers(1, n - 2))  # dropping the last one is a truncation, above
    with pytest.raises(ChainError):
        verify_chain(team.statements[:gap] + team.statements[gap + 1 :])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_a_statement_is_refused(data: st.DataObject) -> None:
    team = _BITFLIP_TEAM
    index = data.draw(st.integers(0, len(team.statements) - 1))
    target = team.statements[index].to_dict()
    field = data.draw(st.sampled_from(["body", "signature"]))
    raw = bytearray(target[field].encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        target[field] = raw.decode()
    except UnicodeDecodeError:
        return  # not representable as a JSON string: the transport would refuse it anyway
    tampered = [s.to_dict() for s in team.statements]
    tampered[index] = target
    with pytest.raises(ChainError):
        verify_chain(tampered)


_BITFLIP_TEAM = build_team("bitflip")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_fork_at_or_below_the_verified_head_is_refused(data: st.DataObject) -> None:
    """A validly signed alternative history that diverges at or before the head is refused."""
    team = _random_chain(["add", "rotate", "add", "policy"], 9)
    head = team.state.head
    n = len(team.statements)
    at = data.draw(st.integers(1, n - 1))
    prefix = team.statements[:at]
    alt = add_member(
        verify_chain(prefix),
        signer=team.owner,
        member=generate_identity(rng=DetRng(f"fork-{at}")).public,
        role="viewer",
        now=T0 + 10_000,
    )
    seen = ChainHead(at, team.statements[at].hash)  # the client had verified up to ``at``
    with pytest.raises(ChainForkError):
        verify_chain([*prefix, alt], last_verified_head=seen)
    with pytest.raises((ChainForkError, ChainRollbackError)):
        verify_chain([*prefix, alt], last_verified_head=head)
