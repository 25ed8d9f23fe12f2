"""Canary: plaintext sealed by the client never reaches the server in any form.

Nodes whose plaintext holds a unique canary are sealed with keymgmt and pushed to a live
``tapes-server serve`` on SQLite. The canary (as UTF-8, UTF-16, base64 at every alignment, hex)
must then be absent from every file the server wrote (the database, its -wal and -shm, the logs)
and from every response alice (the uploader, holding no key here) and bob (another user) get.
Positive controls show the scan would see it: the ciphertext the server stores *is* found in the
database files, and a planted encoded canary is found by the same scanner.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import LiveServer
from tests.server.conftest import User, Vault, unb64


def encodings(canary: str) -> dict[str, bytes]:
    """Byte patterns that would betray the canary, however it were stored or logged."""
    raw = canary.encode("utf-8")
    forms = {
        "utf-8": raw,
        "utf-16-le": canary.encode("utf-16-le"),
        "utf-16-be": canary.encode("utf-16-be"),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    # base64 of a longer stream shows the canary differently at each of 3 offsets mod 3:
    # keep only the characters that depend on the canary's bytes alone.
    for shift in range(3):
        pad = b"\0" * shift
        encoded = base64.b64encode(pad + raw)
        lead = (shift * 4 + 2) // 3  # characters touched by the pad bytes
        usable = (len(pad + raw) // 3) * 4  # whole groups, no trailing partial group
        core = encoded[lead:usable]
        forms[f"base64@{shift}"] = core
        forms[f"base64url@{shift}"] = core.replace(b"+", b"-").replace(b"/", b"_")
    return forms


def leaks(blob: bytes, forms: dict[str, bytes]) -> list[str]:
    return sorted(name for name, pattern in forms.items() if pattern in blob)


class Recorder:
    """Every response body a client received, kept as bytes."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append((f"{response.request.method} {response.request.url}", response.content))


def push(user: User, envelopes: list[dict[str, Any]]) -> httpx.Response:
    response: httpx.Response = user.post(
        "/api/v1/sync/push", {"vault": user.vault, "envelopes": envelopes}
    )
    return response


def test_encodings_find_a_planted_canary() -> None:
    canary = "CANARY-" + uuid.uuid4().hex
    forms = encodings(canary)
    for prefix in (b"", b"a", b"ab", b"abc"):
        blob = base64.b64encode(prefix + canary.encode() + b"tail")
        assert "base64@" + str(len(prefix) % 3) in leaks(b"xx" + blob + b"yy", forms)
        assert leaks(base64.urlsafe_b64encode(prefix + canary.encode()), forms)
    assert leaks(json.dumps({"t": canary.encode().hex()}).encode(), forms) == ["hex"]
    assert leaks(canary.encode("utf-16"), forms) == ["utf-16-le"]  # BOM + little endian
    assert leaks(b"nothing here", forms) == []


def sealed_with_canary(keys: Vault, canary: str) -> list[dict[str, Any]]:
    """20 turns holding the canary (short and long plaintexts), then a branch off turn 9."""
    envelopes: list[dict[str, Any]] = []
    parent: str | None = None
    hashes: list[str] = []
    for index in range(20):
        text = f"turn {index}: the secret is {canary} " + canary * (index % 4)
        parent, envelope = keys.seal(text, parent, size=50 * index)
        envelopes.append(envelope)
        hashes.append(parent)
    _, branch = keys.seal(f"regenerated: {canary}", hashes[9])
    return [*envelopes, branch]


def read_everything(alice: User, envelopes: list[dict[str, Any]]) -> None:
    """Every kind of read alice has: pull pages, nodes, ancestry, sessions, status, teams."""
    branch = envelopes[-1]
    pulled: list[dict[str, Any]] = []
    after = 0
    while True:
        page = alice.get(
            "/api/v1/sync/pull", params={"vault": alice.vault, "after": after, "limit": 6}
        ).json()
        pulled.extend(page["items"])
        after = page["cursor"]
        if not page["more"]:
            break
    assert [item["envelope"] for item in pulled] == envelopes  # what was pushed, exactly
    assert [item["seq"] for item in pulled] == list(range(1, 22))
    for envelope in (envelopes[0], envelopes[10], branch):
        node = alice.get(f"/api/v1/nodes/{envelope['node_id']}")
        assert node.json()["envelope"] == envelope
    ancestry = alice.get(f"/api/v1/nodes/{branch['node_id']}/ancestry").json()["items"]
    assert [n["envelope"] for n in ancestry] == [branch, *reversed(envelopes[:10])]
    sessions = alice.get("/api/v1/sessions", params={"vault": alice.vault}).json()
    leaves = {envelopes[19]["node_id"], branch["node_id"]}
    assert {s["session_id"] for s in sessions["items"]} == leaves
    for leaf in leaves:
        assert alice.get(f"/api/v1/sessions/{leaf}").status_code == 200
    status = alice.get("/api/v1/sync/status", params={"vault": alice.vault}).json()
    assert (status["head_seq"], status["node_count"]) == (21, 21)
    assert alice.get("/auth/me").status_code == 200
    teams = alice.get("/api/v1/teams")
    assert teams.status_code == 200, teams.text
    assert alice.vault in teams.text
    assert alice.get(f"/api/v1/teams/{alice.vault}").status_code == 200


def probe_as(bob: User, alice: User, envelopes: list[dict[str, Any]]) -> None:
    """bob asks for alice's vault and nodes; every answer is a 404."""
    branch = envelopes[-1]
    for path in (
        f"/api/v1/sync/pull?vault={alice.vault}",
        f"/api/v1/sync/status?vault={alice.vault}",
        f"/api/v1/sessions?vault={alice.vault}",
        f"/api/v1/nodes/{envelopes[5]['node_id']}",
        f"/api/v1/nodes/{branch['node_id']}/ancestry",
        f"/api/v1/sessions/{branch['node_id']}",
        f"/api/v1/teams/{alice.vault}",
    ):
        assert bob.get(path).status_code == 404, path
    assert bob.get("/api/v1/sync/pull", params={"vault": bob.vault}).json()["items"] == []


def server_files(server: LiveServer) -> dict[str, bytes]:
    database = Path(server.database_url.removeprefix("sqlite:///"))
    files = {
        "db": database,
        "wal": database.with_name(database.name + "-wal"),
        "shm": database.with_name(database.name + "-shm"),
        "stdout": server.stdout_path,
        "stderr": server.stderr_path,
    }
    assert database.stat().st_size > 0
    contents = {name: path.read_bytes() if path.exists() else b"" for name, path in files.items()}
    # and every other file the server process could have written under its private root
    for path in sorted(server.root.rglob("*")):
        if path.is_file() and path not in files.values():
            contents[str(path)] = path.read_bytes()
    return contents


def test_canary_plaintext_never_reaches_the_server(live_server: LiveServer) -> None:
    canary = "CANARY-" + uuid.uuid4().hex
    forms = encodings(canary)
    alice_seen, bob_seen = Recorder(), Recorder()
    base = live_server.base_url
    with (
        httpx.Client(base_url=base, timeout=30, event_hooks={"response": [alice_seen]}) as one,
        httpx.Client(base_url=base, timeout=30, event_hooks={"response": [bob_seen]}) as two,
    ):
        alice = User(one, "alice")  # type: ignore[arg-type]
        bob = User(two, "bob")  # type: ignore[arg-type]
        envelopes = sealed_with_canary(Vault(alice.vault, alice.identity), canary)
        assert all(leaks(json.dumps(e).encode(), forms) == [] for e in envelopes)
        for start in range(0, len(envelopes), 8):
            response = push(alice, envelopes[start : start + 8])
            assert response.status_code == 200, response.text
        again = push(alice, envelopes[:3]).json()
        assert again["existing"] == [e["node_id"] for e in envelopes[:3]]
        read_everything(alice, envelopes)
        probe_as(bob, alice, envelopes)

    assert len(alice_seen.bodies) >= 20
    assert len(bob_seen.bodies) >= 10
    for where, body in alice_seen.bodies + bob_seen.bodies:
        assert leaks(body, forms) == [], where

    live_server.stop()  # the server closes its files; the WAL is what it left behind
    contents = server_files(live_server)
    for name, blob in contents.items():
        assert leaks(blob, forms) == [], name
    # positive control: the scan covered where the data lives (the ciphertext's bytes: the
    # server stores each envelope packed, its byte fields as bytes)
    stored = contents["db"] + contents["wal"]
    for envelope in envelopes:
        assert unb64(envelope["ciphertext"]) in stored
