"""Every response is bounded: ancestry is paged, pages carry at most ``MAX_PAGE_BYTES`` of
envelopes, and a parent link can never send a walk round in a circle.

Before: ``GET /nodes/{id}/ancestry`` walked up to 1,000,000 links in one request, and after
retention deleted a node its ID could be pushed again with its own grandchild as parent, so one
request walked 1,000,000 rows of a cycle; a pull page of 1,000 envelopes of 15 MiB each was
loaded whole.
"""

from __future__ import annotations

import json
import os
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from server.db.models import NodeRecord, Team
from tapes_e2e.protocol import MAX_PAGE_BYTES
from tests.server.conftest import User, Vault, b64


def push(user: User, envelopes: list[dict[str, Any]]) -> None:
    response = user.post("/api/v1/sync/push", {"vault": user.vault, "envelopes": envelopes})
    assert response.status_code == 200, response.text


def ancestry(user: User, node_id: str, **params: int) -> dict[str, Any]:
    response = user.get(f"/api/v1/nodes/{node_id}/ancestry", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_ancestry_comes_in_pages_that_continue_where_they_stop(alice: User) -> None:
    chain = Vault(alice.vault, alice.identity).chain(25)
    push(alice, chain)
    ids = [env["node_id"] for env in reversed(chain)]  # leaf first
    got: list[str] = []
    cursor: str | None = ids[0]
    pages = 0
    while cursor is not None:
        page = ancestry(alice, cursor, limit=10)
        assert len(page["items"]) <= 10
        got += [item["envelope"]["node_id"] for item in page["items"]]
        cursor = page["next"]
        pages += 1
    assert (got, pages) == (ids, 3)
    session = alice.get(f"/api/v1/sessions/{ids[0]}", params={"limit": 25}).json()
    assert ([i["envelope"]["node_id"] for i in session["items"]], session["next"]) == (ids, None)


def test_a_parent_link_that_loops_back_is_never_followed(
    alice: User, client: TestClient[Any]
) -> None:
    """Retention deleted the root; its ID is pushed again naming the old leaf as its parent.
    The walk follows only parents stored before their child, so it stops instead of circling."""
    a, b, c = Vault(alice.vault, alice.identity).chain(3)
    push(alice, [a, b, c])
    with Session(client.app.state.engine) as db, db.begin():
        db.execute(delete(NodeRecord).where(NodeRecord.node_id == a["node_id"]))
        db.execute(update(Team).where(Team.id == alice.vault).values(node_count=2))
    _hash, looping = Vault(alice.vault, alice.identity).seal("again", None)
    push(alice, [dict(looping, node_id=a["node_id"], parent_id=c["node_id"])])
    for start in (c, b):
        page = ancestry(alice, start["node_id"])
        assert page["next"] is None
        assert [i["envelope"]["node_id"] for i in page["items"]] == (
            [c["node_id"], b["node_id"]] if start is c else [b["node_id"]]
        )
    page = ancestry(alice, a["node_id"])  # the re-pushed node walks down once, then stops
    assert ([i["envelope"]["node_id"] for i in page["items"]], page["next"]) == (
        [a["node_id"], c["node_id"], b["node_id"]], None,
    )  # fmt: skip


def test_pull_and_ancestry_pages_stop_at_the_byte_budget(alice: User) -> None:
    """Five envelopes of 3 MiB of ciphertext each (4 MiB stored): a page carries what fits in
    MAX_PAGE_BYTES, says there is more, and the next page goes on from there."""
    size = 3 * 1024 * 1024
    chain = [
        dict(env, ciphertext=b64(os.urandom(size)), padded_size=size - 16)
        for env in Vault(alice.vault, alice.identity).chain(5)
    ]
    for envelope in chain:  # one per request: each is near the batch limit
        push(alice, [envelope])
    fits = MAX_PAGE_BYTES // len(json.dumps(chain[0], separators=(",", ":")))
    assert 1 < fits < 5
    pulled = alice.get("/api/v1/sync/pull", params={"vault": alice.vault, "limit": 1000}).json()
    assert (len(pulled["items"]), pulled["more"]) == (fits, True)
    assert pulled["cursor"] == pulled["items"][-1]["seq"]
    rest = alice.get(
        "/api/v1/sync/pull", params={"vault": alice.vault, "after": pulled["cursor"]}
    ).json()
    assert (len(rest["items"]), rest["more"]) == (5 - fits, False)
    page = ancestry(alice, chain[-1]["node_id"])
    assert len(page["items"]) == fits
    assert page["next"] == page["items"][-1]["envelope"]["parent_id"] == chain[4 - fits]["node_id"]


def test_status_counts_what_is_left_exactly_up_to_a_bound(alice: User, monkeypatch: Any) -> None:
    """Exact while few are left (a share's sequence number is not a node to pull); far behind,
    one bounded walk of the index and the sequence numbers left as the answer."""
    from server.domain.nodes import services

    push(alice, Vault(alice.vault, alice.identity).chain(5))

    def pending(after: int) -> int:
        status = alice.get(f"/api/v1/sync/status?vault={alice.vault}&after={after}").json()
        return int(status["pending_pull"])

    assert [pending(a) for a in (0, 3, 5)] == [5, 2, 0]
    monkeypatch.setattr(services, "EXACT_PENDING_UP_TO", 2)
    assert [pending(a) for a in (0, 3, 5)] == [5, 2, 0]  # 5 > 2: the bound's answer
