"""The sync API over real HTTP against ``tapes-server serve`` subprocesses.

On SQLite: two users register, push sessions (with a branch), pull them back page by page byte for
byte, and the other user gets 404s. On PostgreSQL: two server processes on one database serve one
consistent API (tokens from one work on the other, pushes through both land in one gapless
sequence).
"""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer, ServerFactory
from tests.server.conftest import User, Vault, b64, unb64

PAGE = 7


def canonical(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


def push(user: User, envelopes: list[dict[str, Any]], vault: str | None = None) -> httpx.Response:
    response: httpx.Response = user.post(
        "/api/v1/sync/push", {"vault": vault or user.vault, "envelopes": envelopes}
    )
    return response


def pull_all(
    clients: list[httpx.Client], headers: dict[str, str], vault: str, limit: int = PAGE
) -> tuple[list[dict[str, Any]], int]:
    """Every item of ``vault``, page by page, alternating between ``clients``. Returns the items
    and the number of requests it took."""
    items: list[dict[str, Any]] = []
    after = 0
    for requests, client in enumerate(itertools.cycle(clients), start=1):
        response = client.get(
            "/api/v1/sync/pull",
            params={"vault": vault, "after": after, "limit": limit},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        if page["items"]:
            assert page["cursor"] == page["items"][-1]["seq"]
        after = page["cursor"]
        if not page["more"]:
            return items, requests
    raise AssertionError("unreachable")  # pragma: no cover


def sessions_with_branch(keys: Vault) -> tuple[list[dict[str, Any]], list[str]]:
    """Two sessions of 12 and 9 turns plus a branch regenerated off turn 4 of the first.

    Returns the envelopes (parents first) and the node IDs of the three leaves."""
    first = keys.chain(12, size=300)
    hashes: list[str] = []
    parent: str | None = None
    for index in range(12):  # the tapes hashes of ``first``, to branch off one of them
        parent, _ = keys.seal(f"turn {index}", parent, size=300)
        hashes.append(parent)
    branch: list[dict[str, Any]] = []
    parent = hashes[4]
    for index in range(3):
        parent, envelope = keys.seal(f"regenerated {index}", parent, size=300)
        branch.append(envelope)
    second: list[dict[str, Any]] = []
    parent = None
    for index in range(9):
        parent, envelope = keys.seal(f"second session {index}", parent, size=300)
        second.append(envelope)
    assert branch[0]["parent_id"] == first[4]["node_id"]
    leaves = [first[-1]["node_id"], branch[-1]["node_id"], second[-1]["node_id"]]
    return first + branch + second, leaves


def test_two_users_push_and_pull_over_real_http(live_server: LiveServer) -> None:
    with live_server.client() as http:
        assert http.get("/api/v1/sync/status", params={"vault": "v_x"}).status_code == 401
        alice, bob = User(http, "alice"), User(http, "bob")  # type: ignore[arg-type]
        assert alice.vault != bob.vault
        keys = Vault(alice.vault, alice.identity)
        envelopes, leaves = sessions_with_branch(keys)
        assert len(envelopes) == 24

        # three batches, the branch batch relying on a parent stored by the first one
        for batch in (envelopes[:12], envelopes[12:15], envelopes[15:]):
            result = push(alice, batch)
            assert result.status_code == 200, result.text
            assert result.json()["stored"] == [e["node_id"] for e in batch]
            assert result.json()["existing"] == []
        again = push(alice, envelopes[:5]).json()
        assert again == {
            "stored": [],
            "existing": [e["node_id"] for e in envelopes[:5]],
            "head_seq": 24,
            "first_seq": 0,  # nothing new was stored
        }

        items, requests = pull_all([http], alice.headers, alice.vault)
        assert requests == 4  # 7 + 7 + 7 + 3
        assert [i["seq"] for i in items] == list(range(1, 25))
        assert [canonical(i["envelope"]) for i in items] == [canonical(e) for e in envelopes]
        assert [i["envelope"]["ciphertext"] for i in items] == [e["ciphertext"] for e in envelopes]

        idle = alice.get("/api/v1/sync/pull", params={"vault": alice.vault, "after": 24}).json()
        assert idle == {
            "vault": alice.vault,
            "items": [],
            "cursor": 24,
            "more": False,
            "chain_seqno": -1,
        }
        status = alice.get("/api/v1/sync/status", params={"vault": alice.vault}).json()
        assert (status["head_seq"], status["node_count"], status["pending_pull"]) == (24, 24, 24)
        sessions = alice.get("/api/v1/sessions", params={"vault": alice.vault}).json()
        assert {s["session_id"] for s in sessions["items"]} == set(leaves)
        branch_path = alice.get(f"/api/v1/sessions/{leaves[1]}").json()["items"]
        assert [n["envelope"]["node_id"] for n in branch_path] == [
            e["node_id"] for e in reversed(envelopes[:5] + envelopes[12:15])
        ]
        one = alice.get(f"/api/v1/nodes/{envelopes[7]['node_id']}").json()
        assert canonical(one["envelope"]) == canonical(envelopes[7])

        # bob: his own vault is empty, alice's does not exist for him
        mine = bob.get("/api/v1/sync/pull", params={"vault": bob.vault}).json()
        assert (mine["items"], mine["cursor"], mine["more"]) == ([], 0, False)
        node_id = envelopes[7]["node_id"]
        for path in (
            f"/api/v1/nodes/{node_id}",
            f"/api/v1/nodes/{node_id}/ancestry",
            f"/api/v1/sessions/{leaves[0]}",
            f"/api/v1/sync/pull?vault={alice.vault}",
            f"/api/v1/sync/status?vault={alice.vault}",
            f"/api/v1/sessions?vault={alice.vault}",
        ):
            denied = bob.get(path)
            assert denied.status_code == 404, path
            assert denied.headers["content-type"].startswith("application/problem+json")
            assert node_id not in denied.text
        intruder = push(bob, Vault(alice.vault, bob.identity).chain(1), vault=alice.vault)
        assert intruder.status_code == 404
        after = alice.get("/api/v1/sync/status", params={"vault": alice.vault}).json()
        assert (after["head_seq"], after["node_count"]) == (24, 24)


def test_kept_alive_requests_are_not_stalled(live_server: LiveServer) -> None:
    assert kept_alive_median(live_server) < 0.020


def test_a_single_worker_is_not_stalled(live_server_factory: ServerFactory) -> None:
    """The control for the test above: one worker (uvicorn's own bind, proto IPPROTO_TCP)."""
    assert kept_alive_median(live_server_factory(workers=1)) < 0.020


def kept_alive_median(server: LiveServer) -> float:
    with server.client() as http:
        assert http.get("/healthz").status_code == 200  # the connection is open
        times = []
        for _ in range(15):
            start = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_server_processes_on_one_postgres_serve_one_api(
    live_server_factory: ServerFactory, pg_database: str
) -> None:
    # one deployment behind one public URL (a load balancer, say): both processes share it
    public = "https://tapes.example.test"
    one = live_server_factory(pg_database, public_url=public)
    two = live_server_factory(pg_database, public_url=public)
    assert one.port != two.port
    with one.client() as a, two.client() as b:
        alice = User(a, "alice")  # type: ignore[arg-type]
        bob = User(b, "bob")  # type: ignore[arg-type]
        # a token from one process is good at the other, both ways
        me = b.get("/auth/me", headers=alice.headers)
        assert me.status_code == 200, me.text
        assert (me.json()["user_id"], me.json()["handle"]) == (alice.user_id, "alice")
        assert a.get("/auth/me", headers=bob.headers).json()["handle"] == "bob"
        # a refresh token issued by one rotates at the other; its reuse at the first is caught
        rotated = b.post("/auth/token/refresh", json={"refresh_token": alice.refresh})
        assert rotated.status_code == 200, rotated.text
        reused = a.post("/auth/token/refresh", json={"refresh_token": alice.refresh})
        assert reused.status_code == 401
        assert b.get("/auth/me", headers=alice.headers).status_code == 401  # family revoked
        alice.access, alice.refresh = alice.login()["access_token"], ""
        assert b.get("/auth/me", headers=alice.headers).status_code == 200

        # sequential pushes alternating between the processes
        keys = Vault(alice.vault, alice.identity)
        envelopes = keys.chain(30)
        for index, start in enumerate(range(0, 30, 5)):
            http = (a, b)[index % 2]
            response = http.post(
                "/api/v1/sync/push",
                json={"vault": alice.vault, "envelopes": envelopes[start : start + 5]},
                headers=alice.headers,
            )
            assert response.status_code == 200, response.text
            assert response.json()["head_seq"] == start + 5

        # bob pushes through both as well
        bob_envelopes = Vault(bob.vault, bob.identity).chain(6)
        for index, start in enumerate(range(0, 6, 2)):
            http = (b, a)[index % 2]
            response = http.post(
                "/api/v1/sync/push",
                json={"vault": bob.vault, "envelopes": bob_envelopes[start : start + 2]},
                headers=bob.headers,
            )
            assert response.status_code == 200, response.text

        items, requests = pull_all([a, b], alice.headers, alice.vault, limit=4)
        assert requests == 8  # 30 items in pages of 4, served alternately by both
        assert [i["seq"] for i in items] == list(range(1, 31))
        assert [canonical(i["envelope"]) for i in items] == [canonical(e) for e in envelopes]
        bob_items, _ = pull_all([b, a], bob.headers, bob.vault, limit=4)
        assert [i["seq"] for i in bob_items] == list(range(1, 7))
        assert [canonical(i["envelope"]) for i in bob_items] == [
            canonical(e) for e in bob_envelopes
        ]
        for http in (a, b):
            status = http.get(
                "/api/v1/sync/status", params={"vault": alice.vault}, headers=alice.headers
            ).json()
            assert (status["head_seq"], status["node_count"]) == (30, 30)
        # bob sees none of it, through either process
        for http in (a, b):
            denied = http.get(
                "/api/v1/sync/pull", params={"vault": alice.vault}, headers=bob.headers
            )
            assert denied.status_code == 404


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_pushes_through_both_processes_into_one_vault(
    live_server_factory: ServerFactory, pg_database: str
) -> None:
    """Four writers, two per process, into one vault: one gapless sequence. (Before e6b949c the
    vault row re-read under the lock kept a stale head_seq and this answered 500s.)"""
    # one deployment behind one public URL (a load balancer, say): both processes share it
    public = "https://tapes.example.test"
    one = live_server_factory(pg_database, public_url=public)
    two = live_server_factory(pg_database, public_url=public)
    with one.client() as a, two.client() as b:
        alice = User(a, "alice")  # type: ignore[arg-type]
        first = Vault(alice.vault, alice.identity).chain(10)
        assert (
            b.post(
                "/api/v1/sync/push",
                json={"vault": alice.vault, "envelopes": first},
                headers=alice.headers,
            ).json()["head_seq"]
            == 10
        )
        chains = [Vault(alice.vault, alice.identity).chain(60) for _ in range(4)]
        errors: list[str] = []

        def writer(http: httpx.Client, chain: list[dict[str, Any]]) -> None:
            for start in range(0, len(chain), 4):
                body = {"vault": alice.vault, "envelopes": chain[start : start + 4]}
                got = http.post("/api/v1/sync/push", json=body, headers=alice.headers)
                if got.status_code != 200:
                    errors.append(f"{got.status_code} {got.json()['detail']}")

        threads = []
        for index, chain in enumerate(chains):
            # one httpx client per thread, half of them on each process
            http = (one, two)[index % 2].client()
            threads.append((http, threading.Thread(target=writer, args=(http, chain))))
        for _, thread in threads:
            thread.start()
        for http, thread in threads:
            thread.join(timeout=120)
            assert not thread.is_alive()
            http.close()
        assert errors == []

        everything = first + [e for chain in chains for e in chain]
        items, requests = pull_all([a, b], alice.headers, alice.vault, limit=25)
        assert requests == 10  # 250 items in pages of 25, served alternately by both
        assert [i["seq"] for i in items] == list(range(1, 251))  # no gap, no duplicate
        by_id = {e["node_id"]: canonical(e) for e in everything}
        assert len(by_id) == 250
        assert {i["envelope"]["node_id"]: canonical(i["envelope"]) for i in items} == by_id
        position = {i["envelope"]["node_id"]: i["seq"] for i in items}
        for chain in chains:  # each chain arrived parents first
            seqs = [position[e["node_id"]] for e in chain]
            assert seqs == sorted(seqs)
        for http in (a, b):
            status = http.get(
                "/api/v1/sync/status", params={"vault": alice.vault}, headers=alice.headers
            ).json()
            assert (status["head_seq"], status["node_count"]) == (250, 250)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_challenge_from_one_process_is_redeemed_at_the_other(
    live_server_factory: ServerFactory, pg_database: str
) -> None:
    # one deployment behind one public URL (a load balancer, say): both processes share it
    public = "https://tapes.example.test"
    one = live_server_factory(pg_database, public_url=public)
    two = live_server_factory(pg_database, public_url=public)
    with one.client() as a, two.client() as b:
        from keymgmt import generate_identity
        from keymgmt.login import sign_login

        identity = generate_identity()
        challenge = a.post("/auth/challenge").json()
        signature = sign_login(
            identity,
            server=challenge["audience"],
            challenge_id=challenge["challenge_id"],
            nonce=unb64(challenge["nonce"]),
        )
        body = {
            "challenge_id": challenge["challenge_id"],
            "keys": {
                "x25519": identity.public.x25519.hex(),
                "ed25519": identity.public.ed25519.hex(),
            },
            "signature": b64(signature),
            "handle": "carol",
        }
        response = b.post("/auth/login", json=body)
        assert response.status_code == 200, response.text
