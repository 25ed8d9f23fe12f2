"""Node envelopes: round trips, node IDs, padding, metadata-only records, failing closed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keymgmt import (
    Envelope,
    IntegrityError,
    PolicyError,
    TeamKeys,
    is_base64url,
    node_id,
    open_node,
    project_metadata,
    remove_member,
    rotate,
    seal_node,
    verify_metadata_only,
)
from keymgmt._encoding import b64d, b64e
from keymgmt.envelope import MIN_PADDED, _frame, _unframe, padded_length

from .conftest import T0, Team, build_team, hasher, make_body, seal_in, tapes_hash_of

FIELDS = {
    "model": "claude-sonnet-4",
    "provider": "anthropic",
    "agent_name": "claude-code",
    "role": "assistant",
    "stop_reason": "end_turn",
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "project": "secret-project",
    "created_at": "2026-11-26T00:34:14Z",
}
NONCE = bytes(range(24))


def seal(team: Team, content: str = "hello", parent: str | None = None, **kw: Any) -> Envelope:
    args: dict[str, Any] = {"metadata": project_metadata("coarse", FIELDS), "nonce": NONCE}
    return seal_in(team, content, parent, **(args | kw))


def open_(team: Team, env: object, keys: TeamKeys | None = None) -> Any:
    return open_node(env, state=team.state, keys=keys or team.keys_for(team.member), hasher=hasher)  # type: ignore[arg-type]


def test_node_id_is_hmac_of_tapes_hash() -> None:
    key, h = b"k" * 32, "ab" * 32
    assert node_id(key, h) == hmac.new(key, h.encode(), hashlib.sha256).hexdigest()


def test_round_trip_through_json(team: Team) -> None:
    parent = tapes_hash_of("root", None)
    env = seal(team, "child " * 200, parent)
    wire = json.loads(json.dumps(env.to_dict()))
    assert Envelope.from_dict(wire) == env
    opened = open_(team, wire)
    assert opened.body == make_body("child " * 200, parent)
    assert opened.tapes_hash == tapes_hash_of("child " * 200, parent)
    assert opened.parent_tapes_hash == parent
    assert opened.parent_id == team.keys_for(team.member).node_id(1, parent)
    assert opened.metadata == env.metadata
    assert "secret-project" not in json.dumps(wire)  # coarse drops project


def test_random_nonce_by_default(team: Team) -> None:
    a, b = seal(team, nonce=None), seal(team, nonce=None)
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext


def test_padding_hides_small_length_differences(team: Team) -> None:
    sizes = {seal(team, "x" * n).padded_size for n in range(0, 200, 7)}
    assert sizes == {MIN_PADDED}
    for n in (1, 255, 256, 257, 1000, 4096, 10_000, 1_000_000):
        p = padded_length(n)
        assert p >= max(n, MIN_PADDED)
        assert p - n <= max(MIN_PADDED, n * 0.12)


def test_incompressible_body_is_stored_raw(team: Team) -> None:
    random_text = base64.b64encode(hashlib.sha512(b"x").digest() * 40).decode()
    env = seal(team, random_text)
    assert open_(team, env).body == make_body(random_text, None)


def test_metadata_only_record_has_no_ciphertext_and_is_signed(team: Team) -> None:
    env = seal(team, body=None, signer=team.member)
    wire = env.to_dict()
    assert wire["ciphertext"] is None
    assert wire["nonce"] is None
    assert wire["signature"]
    opened = open_node(wire, state=team.state, keys=None, hasher=hasher)
    assert opened.body is None
    assert opened.tapes_hash is None
    assert verify_metadata_only(wire, state=team.state).metadata == env.metadata
    tampered = dict(wire, metadata={**wire["metadata"], "total_tokens": 1})  # type: ignore[dict-item]
    with pytest.raises(IntegrityError):
        verify_metadata_only(tampered, state=team.state)
    with pytest.raises(IntegrityError):  # unsigned
        verify_metadata_only(dict(wire, signature=None), state=team.state)
    with pytest.raises(IntegrityError):  # an encrypted record is not metadata-only
        verify_metadata_only(seal(team), state=team.state)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"record_type": "share"},
        {"author": "nobody"},
        {"parent_id": "not-a-node-id"},
        {"body": None, "signer": None},
        {"epoch_key": b"short"},
        {"tapes_hash": "é"},
    ],
)
def test_seal_refuses_bad_input(team: Team, kwargs: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        seal(team, **kwargs)


def test_seal_refuses_author_who_is_not_the_signer(team: Team) -> None:
    with pytest.raises(PolicyError):
        seal(team, body=None, signer=team.admin)


def test_oversized_body_is_refused(team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keymgmt.envelope.MAX_BODY_BYTES", 10)
    with pytest.raises(PolicyError):
        seal(team, "more than ten bytes")


def _mutations(team: Team) -> dict[str, Any]:
    env: dict[str, Any] = seal(team, "original", tapes_hash_of("root", None)).to_dict()
    other: dict[str, Any] = seal(team, "another").to_dict()
    return {
        "version": dict(env, version=3),
        "version_1": dict(env, version=1),
        "at_seqno": dict(env, at_seqno=env["at_seqno"] - 1),
        "at_hash": dict(env, at_hash="0" * 64),
        "at_removed": dict(env, at_seqno=None, at_hash=None),
        "team": dict(env, team="team-2"),
        "epoch": dict(env, epoch=2),
        "node_id": dict(env, node_id=other["node_id"]),
        "parent_id": dict(env, parent_id=None),
        "author": dict(env, author=team.admin.fingerprint),
        "author_viewer": dict(env, author=team.viewer.fingerprint),
        "record_type": dict(env, record_type="share"),
        "metadata": dict(env, metadata={**env["metadata"], "model": "gpt"}),
        "metadata_added": dict(env, metadata={**env["metadata"], "project": "x"}),
        "padded_size": dict(env, padded_size=env["padded_size"] + 16),
        "nonce": dict(env, nonce=other["nonce"][:-1] + "A"),
        "ciphertext_swap": dict(env, ciphertext=other["ciphertext"]),
        "ciphertext_truncated": dict(env, ciphertext=env["ciphertext"][:-4]),
        "strip_to_metadata_only": dict(env, ciphertext=None, nonce=None, padded_size=0),
        "signature_added": dict(env, signature=b64e(bytes(64))),
        "malformed": dict(env, nonce="!!"),
        "missing_field": {k: v for k, v in env.items() if k != "author"},
        "node_id_not_hex": dict(env, node_id="zz"),
    }


@pytest.mark.parametrize("name", sorted(_mutations(build_team())))
def test_every_envelope_field_is_authenticated(team: Team, name: str) -> None:
    with pytest.raises(IntegrityError) as info:
        open_(team, _mutations(team)[name])
    assert str(info.value) == IntegrityError.MESSAGE


def test_nothing_is_sealed_without_the_current_epochs_key(team: Team) -> None:
    """Not under an older epoch either: the node ID and the key both come from the state's."""
    for keys in (TeamKeys(team.team, team.vault_id_key), team.keys_for(team.member)):
        if keys.epochs:
            team.append(rotate(team.state, signer=team.owner, new_epoch_key=bytes(32), now=T0 + 9))
        with pytest.raises(PolicyError, match="current epoch"):
            seal_node(
                state=team.state, keys=keys, tapes_hash="ab", parent_id=None, body=b"x",
                metadata={}, author=team.member.fingerprint,
            )  # fmt: skip


def test_wrong_key_or_missing_epoch_fails(team: Team) -> None:
    env = seal(team)
    wrong = TeamKeys(team.team, team.vault_id_key, {1: bytes(32)})
    with pytest.raises(IntegrityError):
        open_(team, env, wrong)
    with pytest.raises(IntegrityError):
        open_(team, env, TeamKeys(team.team, team.vault_id_key, {2: team.epoch_key}))
    with pytest.raises(IntegrityError):
        open_(team, env, TeamKeys("team-2", team.vault_id_key, {1: team.epoch_key}))
    with pytest.raises(IntegrityError):
        open_node(env, state=team.state, keys=None, hasher=hasher)


def test_hasher_mismatch_and_failures(team: Team) -> None:
    env = seal(team, "content", tapes_hash_of("root", None))
    keys = team.keys_for(team.member)

    def lying(body: bytes) -> tuple[str, str | None]:
        return tapes_hash_of("other", None), None

    def no_parent(body: bytes) -> tuple[str, str | None]:
        return hasher(body)[0], None

    def other_parent(body: bytes) -> tuple[str, str | None]:
        return hasher(body)[0], "cd" * 32

    def broken(body: bytes) -> tuple[str, str | None]:
        raise ValueError(body[:10])

    for bad in (lying, no_parent, other_parent, broken):
        with pytest.raises(IntegrityError):
            open_node(env, state=team.state, keys=keys, hasher=bad)
    root = seal(team, "root")
    with pytest.raises(IntegrityError):  # parent claimed where the body has none
        open_node(
            dict(root.to_dict(), parent_id="ab" * 32), state=team.state, keys=keys, hasher=hasher
        )


@pytest.mark.parametrize(
    "padded",
    [
        b"",
        b"\x00\x00\x00\xff\xffabc" + bytes(MIN_PADDED - 8),  # length beyond the frame
        b"\x00\x00\x00\x00\x01a" + b"\x01" + bytes(MIN_PADDED - 7),  # non-zero padding
        b"\x07\x00\x00\x00\x01a" + bytes(MIN_PADDED - 6),  # unknown format
        b"\x01\x00\x00\x00\x01a" + bytes(MIN_PADDED - 6),  # not zstd
        b"\x00\x00\x00\x00\x01a" + bytes(MIN_PADDED),  # wrong padded length
    ],
)
def test_unframe_refuses_bad_padding(padded: bytes) -> None:
    with pytest.raises(IntegrityError):
        _unframe(padded)


def test_frame_round_trip() -> None:
    for body in (b"", b"a", b"a" * 10_000, bytes(range(256)) * 3):
        assert _unframe(_frame(body)) == body


def test_old_epoch_nodes_still_open_and_removed_member_cannot_author_new_epoch(team: Team) -> None:
    old = seal(team)
    keys = team.keys_for(team.member)
    key2 = team.rng(32)
    team.append(
        remove_member(
            team.state,
            signer=team.owner,
            member=team.member.fingerprint,
            new_epoch_key=key2,
            now=T0 + 50,
        )
    )
    assert open_(team, old, keys).body is not None
    forged = seal(team, epoch_key=key2)  # claims the removed member as author
    keys.epochs[2] = key2
    with pytest.raises(IntegrityError):
        open_(team, forged, keys)


# --- bit flips ------------------------------------------------------------------------------

_TEAM = build_team("flip")
_KEYS = _TEAM.keys_for(_TEAM.member)
_ENV: dict[str, Any] = seal(_TEAM, "bit flip target " * 50, tapes_hash_of("root", None)).to_dict()
_META_ONLY: dict[str, Any] = seal(_TEAM, body=None, signer=_TEAM.member).to_dict()


def _flip_b64(value: str, bit: int) -> str:
    raw = bytearray(b64d(value))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return b64e(bytes(raw))


def _flip_text(value: str, bit: int) -> str:
    raw = bytearray(value.encode())
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return raw.decode("latin-1")


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["ciphertext", "nonce"]), bit=st.integers(0, 10**6))
def test_any_bit_flip_in_ciphertext_or_nonce_fails(field: str, bit: int) -> None:
    tampered = dict(_ENV, **{field: _flip_b64(_ENV[field], bit)})
    with pytest.raises(IntegrityError):
        open_node(tampered, state=_TEAM.state, keys=_KEYS, hasher=hasher)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["team", "node_id", "parent_id", "author", "record_type", "model"]),
    bit=st.integers(0, 10**6),
    meta_only=st.booleans(),
)
def test_any_bit_flip_in_an_ad_field_fails(field: str, bit: int, meta_only: bool) -> None:
    env = _META_ONLY if meta_only else _ENV
    if field == "model":
        tampered = dict(
            env, metadata={**env["metadata"], "model": _flip_text(env["metadata"]["model"], bit)}
        )
    elif env[field] is None:
        tampered = dict(env, **{field: "ab" * 32})
    else:
        tampered = dict(env, **{field: _flip_text(env[field], bit)})
    with pytest.raises(IntegrityError):
        open_node(tampered, state=_TEAM.state, keys=_KEYS, hasher=hasher)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["epoch", "padded_size", "version"]), delta=st.integers(1, 2**20))
def test_any_change_to_an_integer_ad_field_fails(field: str, delta: int) -> None:
    tampered = dict(_ENV, **{field: _ENV[field] + delta})
    with pytest.raises(IntegrityError):
        open_node(tampered, state=_TEAM.state, keys=_KEYS, hasher=hasher)


@settings(max_examples=200, deadline=None)
@given(bit=st.integers(0, 511))
def test_any_bit_flip_in_metadata_only_signature_fails(bit: int) -> None:
    tampered = dict(_META_ONLY, signature=_flip_b64(_META_ONLY["signature"], bit))
    with pytest.raises(IntegrityError):
        open_node(tampered, state=_TEAM.state, keys=None, hasher=hasher)


@pytest.mark.parametrize("value", [2**60, "\ud800"])
def test_metadata_outside_rfc8785_domain_fails_closed(team: Team, value: object) -> None:
    wire = seal(team).to_dict()
    tampered = dict(wire, metadata={**wire["metadata"], "total_tokens": value})  # type: ignore[dict-item]
    with pytest.raises(IntegrityError):
        open_(team, tampered)
    with pytest.raises(IntegrityError):
        verify_metadata_only(
            dict(
                seal(team, body=None, signer=team.member).to_dict(),
                metadata={"x": value},
            ),
            state=team.state,
        )
    with pytest.raises(PolicyError):
        seal(team, metadata={"total_tokens": value})


@given(st.text(max_size=40) | st.binary(max_size=30).map(b64e))
def test_the_base64url_alphabet_check_matches_the_pattern_it_replaced(text: str) -> None:
    """``is_base64url`` (a byte translation) accepts exactly what ``^[A-Za-z0-9_-]*$`` did, and
    everything it accepts either decodes strictly or is refused by ``b64d``: nothing else."""
    assert is_base64url(text) == bool(re.fullmatch(r"[A-Za-z0-9_-]*", text))
    if not is_base64url(text):
        with pytest.raises(ValueError, match="base64url"):
            b64d(text)


def test_a_pulled_envelope_with_a_ciphertext_outside_the_alphabet_is_refused() -> None:
    """The wire type no longer matches the alphabet by pattern: strict decoding refuses it."""
    team = build_team()
    wire = seal(team).to_dict()
    assert open_(team, wire).body is not None  # the control: untouched, it opens
    with pytest.raises(IntegrityError):
        open_(team, wire | {"ciphertext": "not base64!"})


def test_a_member_who_names_a_node_after_other_content_is_refused(team: Team) -> None:
    """The writer seals the AD, so the tag holds for any ID it chose: the reader recomputes the
    node's ID from the decrypted body, and the parent's."""
    parent = tapes_hash_of("root", None)
    honest = seal(team, "content", parent)
    assert open_(team, honest).tapes_hash == tapes_hash_of("content", parent)  # the control
    for lie in (
        {"tapes_hash": tapes_hash_of("other content", parent)},
        {"parent_id": team.keys_for(team.member).node_id(1, tapes_hash_of("another root", None))},
    ):
        with pytest.raises(IntegrityError):
            open_(team, seal(team, "content", parent, **lie))
