"""Usage from clear metadata: viewers and read-usage keys see counts, never blobs."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from tests.server.conftest import Clock, User
from tests.server.test_teams import TeamKit


def test_usage_by_day_model_and_member(client: TestClient[Any], clock: Clock) -> None:
    alice, bob, dave, mallory = (User(client, n) for n in ("alice", "bob", "dave", "mallory"))
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(dave, "viewer").status_code == 200
    for user, count in ((alice, 3), (bob, 2)):
        vault = kit.vault(user)
        envelopes = [vault.seal(f"{user.handle} {i}")[1] for i in range(count)]
        pushed = user.post("/api/v1/sync/push", {"vault": kit.team_id, "envelopes": envelopes})
        assert pushed.status_code == 200, pushed.text
    path = f"/api/v1/teams/{kit.team_id}/usage/?days=7"
    report = dave.get(path)  # a viewer: no content key, but usage is theirs to read
    assert report.status_code == 200, report.text
    rows = {(r["member"], r["model"]): r for r in report.json()["rows"]}
    assert set(rows) == {("alice", "m"), ("bob", "m")}
    assert (rows["alice", "m"]["nodes"], rows["alice", "m"]["total_tokens"]) == (3, 21)
    assert (rows["bob", "m"]["nodes"], rows["bob", "m"]["total_tokens"]) == (2, 14)
    assert {r["day"] for r in report.json()["rows"]} == {clock.now.date().isoformat()}
    assert dave.get(f"/api/v1/sync/pull?vault={kit.team_id}").status_code == 403
    assert mallory.get(path).status_code == 404
    assert client.get(path).status_code == 401


def test_api_keys_need_read_usage(client: TestClient[Any], alice: User) -> None:
    path = f"/api/v1/teams/{alice.vault}/usage/"
    for permissions, expected in ((["read-usage"], 200), (["pull"], 404)):
        key = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": permissions})
        headers = {"Authorization": f"Bearer {key.json()['api_key']}"}
        assert client.get(path, headers=headers).status_code == expected
