"""Nodes sealed into envelopes and opened back, under every team policy, and what is refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keymgmt
from tapes_e2e.envelopes import (
    MetadataRecord,
    body_and_fields,
    clear_fields,
    node_body,
    open_envelope,
    seal_envelope,
)
from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tests.conftest import chain


class Team:
    def __init__(self, metadata_policy: str = "coarse", content_policy: str = "encrypted") -> None:
        self.owner = keymgmt.generate_identity()
        self.vault_key, self.epoch_key = keymgmt.new_key(), keymgmt.new_key()
        genesis = keymgmt.create_team(
            team="t_envelopes", owner=self.owner, vault_id_key=self.vault_key,
            epoch_key=self.epoch_key, metadata_policy=metadata_policy,  # type: ignore[arg-type]
            content_policy=content_policy,  # type: ignore[arg-type]
        )  # fmt: skip
        self.state = keymgmt.verify_chain([genesis])
        self.keys = keymgmt.TeamKeys("t_envelopes", self.vault_key, {1: self.epoch_key})

    def seal(self, node: Node) -> dict[str, Any]:
        envelope = seal_envelope(node, state=self.state, keys=self.keys, author=self.owner)
        return envelope.to_dict()

    def raw(
        self, tapes_hash: str, parent_hash: str | None, *, state: Any = None, **kw: Any
    ) -> dict[str, Any]:
        """``keymgmt.seal_node`` straight, with whatever body and metadata the test chooses."""
        state = state or self.state
        parent_id = None if parent_hash is None else self.keys.node_id(state.epoch, parent_hash)
        return keymgmt.seal_node(
            state=state, keys=self.keys, tapes_hash=tapes_hash, parent_id=parent_id, **kw
        ).to_dict()

    def open(self, envelope: dict[str, Any]) -> Node | MetadataRecord:
        return open_envelope(envelope, state=self.state, keys=self.keys)


@pytest.mark.parametrize("policy", ["none", "coarse", "full"])
def test_round_trip_under_every_metadata_policy(policy: str) -> None:
    team = Team(metadata_policy=policy)
    for node in chain(["a question", "an answer", "another question"]):
        envelope = team.seal(node)
        assert envelope["node_id"] != node.hash  # keyed: the server cannot confirm a guess
        opened = team.open(envelope)
        assert opened == node
        assert isinstance(opened, Node)
        assert opened.created_at == node.created_at
        assert opened.usage == node.usage
    fields = set(team.seal(chain(["x", "y"])[1])["metadata"])
    expected = {
        "none": set(),
        "coarse": {"model", "provider", "role", "stop_reason", "prompt_tokens",
                   "completion_tokens", "total_tokens", "created_at"},
        "full": {"model", "provider", "role", "stop_reason", "prompt_tokens",
                 "completion_tokens", "total_tokens", "created_at"},
    }[policy]  # fmt: skip
    assert fields == expected


def test_metadata_only_vaults_carry_no_content() -> None:
    team = Team(content_policy="omit")
    node = chain(["secret prompt", "secret answer"])[1]
    envelope = team.seal(node)
    assert envelope["ciphertext"] is None
    assert envelope["nonce"] is None
    assert "secret" not in str(envelope)
    record = team.open(envelope)
    assert isinstance(record, MetadataRecord)
    assert record.metadata["total_tokens"] == node.usage.total_tokens  # type: ignore[union-attr]


def test_untrue_clear_metadata_is_refused() -> None:
    """A member holding the key seals a node whose clear token count is not the node's own."""
    team = Team()
    node = chain(["q", "a"])[1]
    lie = dict(clear_fields(node)) | {"total_tokens": 1}
    metadata = keymgmt.project_metadata("coarse", lie)
    envelope = team.raw(
        node.hash, node.parent_hash,
        body=node_body(node),
        metadata=metadata, author=team.owner.fingerprint,
    )  # fmt: skip
    with pytest.raises(keymgmt.IntegrityError):
        team.open(envelope)


@pytest.mark.parametrize(
    ("before", "after"), [("coarse", "full"), ("full", "none"), ("none", "coarse")]
)
def test_a_policy_change_leaves_history_readable(before: str, after: str) -> None:
    """Nodes sealed under the policy of their time keep opening after the owner changes it; new
    nodes carry the new policy's metadata; a node whose metadata fits no policy the chain ever
    had is still refused."""
    team = Team(metadata_policy=before)
    old, new = chain(["sealed before", "the change"]), chain(["sealed after"])
    sealed_before = [team.seal(node) for node in old]
    change = keymgmt.change_policy(team.state, signer=team.owner, metadata_policy=after)  # type: ignore[arg-type]
    team.state = keymgmt.extend_chain(team.state, [change])
    assert [team.open(e) for e in sealed_before] == old
    sealed_after = team.seal(new[0])
    assert sealed_after["metadata"] == keymgmt.project_metadata(after, clear_fields(new[0]))  # type: ignore[arg-type]
    assert team.open(sealed_after) == new[0]
    lie = dict(clear_fields(new[0])) | {"total_tokens": 1}
    forged = team.raw(
        new[0].hash, None, body=node_body(new[0]),
        metadata=keymgmt.project_metadata("full", lie), author=team.owner.fingerprint,
    )  # fmt: skip
    with pytest.raises(keymgmt.IntegrityError):
        team.open(forged)


def _go_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f000+00:00")


def test_a_node_written_under_an_epoch_after_its_end_is_refused() -> None:
    """Bob, removed (the chain moved to epoch 2), still holds the epoch-1 key: a node he seals
    under it claiming a time after his removal is refused; history from before it still opens."""
    team, bob = Team(), keymgmt.generate_identity()
    removed_at = int(datetime.now(UTC).timestamp())
    add = keymgmt.add_member(team.state, signer=team.owner, member=bob.public, role="member",
                             now=removed_at)  # fmt: skip
    team.state = bobs_view = keymgmt.extend_chain(team.state, [add])
    new_key = keymgmt.new_key()
    removal = keymgmt.remove_member(team.state, signer=team.owner, member=bob.fingerprint,
                                    new_epoch_key=new_key, now=removed_at)  # fmt: skip
    team.state = keymgmt.extend_chain(team.state, [removal])
    team.keys = keymgmt.TeamKeys("t_envelopes", team.vault_key, {1: team.epoch_key, 2: new_key})

    def by_bob(written: datetime) -> dict[str, Any]:
        node = dataclasses.replace(chain(["from bob"])[0], created_at=_go_time(written))
        return team.raw(
            node.hash, None, body=node_body(node),
            metadata=keymgmt.project_metadata("coarse", clear_fields(node)),
            author=bob.fingerprint, state=bobs_view,
        )  # fmt: skip

    removal_time = datetime.fromtimestamp(removed_at, UTC)
    assert isinstance(team.open(by_bob(removal_time - timedelta(minutes=30))), Node)
    assert isinstance(team.open(by_bob(removal_time + timedelta(minutes=5))), Node)  # skew
    with pytest.raises(keymgmt.IntegrityError):
        team.open(by_bob(removal_time + timedelta(hours=1)))
    with pytest.raises(keymgmt.IntegrityError):
        team.open(by_bob(datetime.now(UTC) + timedelta(days=1)))


def test_a_body_whose_content_does_not_match_its_id_is_refused() -> None:
    team = Team()
    real, other = chain(["real"])[0], chain(["swapped in"])[0]
    forged = dataclasses.replace(other, hash=real.hash)  # claims the real node's hash
    envelope = team.raw(
        real.hash, None,
        body=node_body(forged),
        metadata=keymgmt.project_metadata("coarse", clear_fields(forged)),
        author=team.owner.fingerprint,
    )  # fmt: skip
    with pytest.raises(keymgmt.IntegrityError):
        team.open(envelope)


def test_go_timestamps_become_iso_metadata() -> None:
    node = dataclasses.replace(chain(["t"])[0], created_at="2026-11-24 23:37:56.726195728+00:00")
    assert clear_fields(node)["created_at"] == "2026-11-24T23:37:56.726195+00:00"
    assert clear_fields(dataclasses.replace(node, created_at="junk"))["created_at"] is None


def _stored(tmp_path: Path, nodes: list[Node]) -> list[Node]:
    """The nodes as the store hands them out: buckets not decoded yet."""
    with LocalProvider(tmp_path / "tapes.sqlite") as store:
        store.put_many(nodes)
        return [store.get(node.hash) for node in nodes]


@pytest.mark.parametrize("policy", ["none", "coarse", "full"])
def test_a_node_from_the_store_is_sealed_from_its_stored_bucket_bytes(
    tmp_path: Path, policy: str
) -> None:
    """Pushing reuses the stored bucket JSON (Go's escaping included) instead of decoding it,
    and the envelope opens to the same node and the same clear metadata as the decoded path."""
    team = Team(metadata_policy=policy)
    nodes = chain(["<b>bold</b> & \u2028 \U0001f600", "second"])
    for original, stored in zip(nodes, _stored(tmp_path, nodes), strict=True):
        raw = stored.bucket.undecoded_json()
        assert raw is not None
        body, fields = body_and_fields(stored)
        assert raw in body  # the stored bytes, as they are
        assert fields == clear_fields(original)
        opened = team.open(team.seal(stored))
        assert opened == original
        assert stored.bucket.undecoded_json() == raw  # sealing did not decode it either


def test_a_stored_bucket_the_fast_reader_would_not_take_is_decoded_in_full(
    tmp_path: Path,
) -> None:
    """A ``-0`` in the bucket sends the opening side to its Go-compatible reader: the pushing side
    then encodes the decoded bucket instead of reusing the bytes."""
    team = Team()
    node = chain(["minus zero"])[0]
    block = dataclasses.replace(node.bucket.content[0], tool_input={"x": -0.0})  # type: ignore[index]
    odd = Node.new(dataclasses.replace(node.bucket, content=(block,)))
    (stored,) = _stored(tmp_path, [odd])
    raw = stored.bucket.undecoded_json()
    assert raw is not None
    assert b"-0" in raw
    body, _ = body_and_fields(stored)
    assert raw not in body
    assert team.open(team.seal(stored)) == odd


@st.composite
def _nanos(draw: st.DrawFn) -> int:
    """Nanoseconds with 0 to 9 significant fraction digits, each length equally likely."""
    digits: int = draw(st.integers(min_value=0, max_value=9))
    nanos: int = draw(st.integers(min_value=0, max_value=10**digits - 1))
    return nanos * int(10 ** (9 - digits))


@given(
    seconds=st.integers(min_value=0, max_value=4_102_444_799),  # 1970 .. 2099
    nanos=_nanos(),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_every_go_timestamp_keeps_its_time_in_the_metadata(
    seconds: int, nanos: int, offset_minutes: int
) -> None:
    """Go writes 0 to 9 fraction digits (trailing zeros dropped) and an offset; each becomes the
    ISO time to the microsecond. (A fraction shorter than 9 digits once lost its time: the
    offset's digits were read as fraction digits.)"""
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = datetime.fromtimestamp(seconds, UTC).astimezone(zone)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    sign = "+" if offset_minutes >= 0 else "-"
    text += f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    node = dataclasses.replace(chain(["t"])[0], created_at=text)
    expected = moment.replace(microsecond=nanos // 1000).isoformat()
    assert clear_fields(node)["created_at"] == expected
