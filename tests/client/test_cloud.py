"""The cloud provider: every call goes to the real app; nodes are sealed and verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tapes_e2e import account, context
from tapes_e2e.context import Settings
from tapes_e2e.errors import MissingParentError, NodeNotFoundError
from tapes_e2e.identity import unlock
from tapes_e2e.node import Node
from tapes_e2e.providers.base import Provider
from tapes_e2e.providers.cloud import CloudProvider
from tapes_e2e.vaults import Trust
from tests.client.conftest import Tapes
from tests.conftest import chain, text_bucket
from tests.server.conftest import AUDIENCE


def open_cloud(home: Path) -> CloudProvider:
    settings = Settings.resolve(config_dir=home, db=None, debug=False)
    session = account.load_session(home)
    assert session is not None
    identity = unlock(home, use_os_keyring=False)
    api = context.api_client(settings, session.server)
    trust = Trust(home, identity, session.personal_vault)
    return CloudProvider(api, account.open_vault(api, session.personal_vault, trust), trust)


def test_the_provider_contract_over_the_server(tapes: Tapes, tmp_path: Path) -> None:
    assert tapes("c", "auth", "login", "--server", AUDIENCE, "--handle", "cleo")[0] == 0
    cloud = open_cloud(tmp_path / "c")
    assert isinstance(cloud, Provider)
    trunk = chain(["q1", "a1", "q2", "a2"])
    branch = chain(["a2, regenerated"], parent=trunk[2])
    assert [cloud.put(n) for n in [*trunk, *branch]] == [True] * 5
    assert cloud.put(trunk[0]) is False
    assert cloud.get(trunk[1].hash) == trunk[1]
    assert cloud.has(trunk[3].hash)
    assert not cloud.has("e" * 64)
    assert [n.hash for n in cloud.ancestry(branch[0].hash)] == [
        branch[0].hash, trunk[2].hash, trunk[1].hash, trunk[0].hash,
    ]  # fmt: skip
    assert cloud.depth(trunk[3].hash) == 3
    assert {n.hash for n in cloud.leaves()} == {trunk[3].hash, branch[0].hash}
    assert [n.hash for n in cloud.roots()] == [trunk[0].hash]
    assert len(cloud.list()) == 5
    with pytest.raises(NodeNotFoundError):
        cloud.get("f" * 64)
    with pytest.raises(MissingParentError):
        cloud.put(Node.new(text_bucket("user", "orphan"), "d" * 64))


def test_another_users_cloud_sees_nothing(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    assert tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "ana")[0] == 0
    assert tapes("b", "auth", "login", "--server", AUDIENCE, "--handle", "ben")[0] == 0
    node = chain(["ana's private question"])[0]
    open_cloud(tmp_path / "a").put(node)
    ben = open_cloud(tmp_path / "b")
    assert not ben.has(node.hash)
    assert ben.list() == []
