"""A vault synced before envelope version 2 keeps working: its version-1 records (node IDs under
the vault id key, no chain position) are pulled and opened, and a session continued now names its
version-1 parent, which the server, the sync and the cloud provider all follow."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import keymgmt
from keymgmt.envelope import EnvelopeWire, PackedEnvelope
from server.domain.nodes import services as server_nodes
from tapes_e2e.envelopes import clear_fields, node_body
from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tests.client.conftest import Tapes
from tests.client.test_cloud import open_cloud
from tests.client.test_sync_round_trip import hashes
from tests.conftest import chain
from tests.keymgmt.conftest import seal_v1
from tests.server.conftest import AUDIENCE


def v1_record(node: Node, state: keymgmt.VerifiedTeamState, keys: keymgmt.TeamKeys,
              author: str) -> dict[str, object]:  # fmt: skip
    return seal_v1(
        state, keys, tapes_hash=node.hash, parent_hash=node.parent_hash, body=node_body(node),
        metadata=keymgmt.project_metadata(state.metadata_policy, clear_fields(node)),
        author=author,
    )  # fmt: skip


def test_version_1_history_is_pulled_opened_and_continued(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("old", "auth", "login", "--server", AUDIENCE, "--handle", "olga")[0] == 0
    cloud = open_cloud(tmp_path / "old")
    access = cloud.access
    history = chain(["Why is the build red?", "A flaky test."])
    old = [v1_record(n, access.state, access.content_keys(), cloud.identity.fingerprint)
           for n in history]  # fmt: skip
    real_check = server_nodes.check_envelope

    def as_before_the_upgrade(vault: str, env: EnvelopeWire | PackedEnvelope) -> None:
        real_check(vault, msgspec.structs.replace(env, version=2, at_seqno=0, at_hash="0" * 64))

    with monkeypatch.context() as patch:  # the server then stored version 1
        patch.setattr(server_nodes, "check_envelope", as_before_the_upgrade)
        assert len(cloud.api.push(access.vault, old).stored) == 2
    # a store that never saw these records pulls and opens them
    code, _out, err = tapes("old", "storage", "sync")
    assert code == 0, err
    home = tmp_path / "old"
    assert {n.hash for n in history} <= set(hashes(home))
    # ...and continues the session: the new (version 2) child names the version-1 parent
    with LocalProvider(home / "tapes.sqlite") as store:
        follow_up = chain(["Which one?"], parent=store.get(history[-1].hash))
        store.put_many(follow_up)
    code, _out, err = tapes("old", "storage", "sync")
    assert code == 0, err
    fresh = open_cloud(home)
    child = fresh._fetch(follow_up[0].hash).envelope
    assert (child.version, child.parent_id) == (2, old[-1]["node_id"])
    path = [n.hash for n in fresh.ancestry(follow_up[0].hash)]
    assert path == [follow_up[0].hash, history[1].hash, history[0].hash]
