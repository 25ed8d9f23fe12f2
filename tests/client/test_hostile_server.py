"""A hostile server: the real app behind an ``httpx.MockTransport`` that alters its answers.

For every kind of alteration of a pulled envelope (blob bytes, node ID, parent, epoch, author,
clear metadata) and of the team chain, the client refuses the altered data with an integrity or
chain error, stores nothing it could not verify, and keeps the rest of the store intact.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from tapes_e2e import context
from tapes_e2e.protocol import MAX_SEQ, MSGPACK
from tests.client.conftest import Tapes
from tests.client.test_sync_round_trip import hashes, record
from tests.client.wire import answer_with, body_of, is_packed
from tests.server.conftest import AUDIENCE

Mutation = Callable[[dict[str, Any]], None]


def _flip(text: str, at: int = 7) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _last(page: dict[str, Any]) -> dict[str, Any]:
    envelope: dict[str, Any] = page["items"][-1]["envelope"]
    return envelope


PULL_MUTATIONS: dict[str, Mutation] = {
    "ciphertext byte": lambda p: _last(p).update(ciphertext=_flip(_last(p)["ciphertext"])),
    "nonce byte": lambda p: _last(p).update(nonce=_flip(_last(p)["nonce"])),
    "node id": lambda p: _last(p).update(node_id="0" * 64),
    "parent id": lambda p: _last(p).update(parent_id="1" * 64),
    "epoch": lambda p: _last(p).update(epoch=2),
    "clear metadata": lambda p: _last(p)["metadata"].update(total_tokens=999_999),
    "blob swapped between two nodes": lambda p: p["items"][-1]["envelope"].update(
        ciphertext=p["items"][-2]["envelope"]["ciphertext"],
        nonce=p["items"][-2]["envelope"]["nonce"],
        padded_size=p["items"][-2]["envelope"]["padded_size"],
    ),
}


def hostile(
    client: TestClient[Any], path_part: str, mutate: Mutation, *, form: str | None = None,
    altered: list[str] | None = None,
) -> httpx.Client:  # fmt: skip
    """Forward to the real app; alter the answers of requests whose path has ``path_part``
    (as JSON values, sent on in the form they came in; each one's media type is added to
    ``altered``). ``form`` replaces the client's ``Accept`` (a JSON-only server, say)."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers) | ({"accept": form} if form else {})
        answer = client.request(
            request.method, str(request.url), content=request.content, headers=headers
        )
        if path_part not in request.url.path or answer.status_code != 200:
            return httpx.Response(
                answer.status_code, content=answer.content, headers=answer.headers
            )
        body = body_of(answer)
        mutate(body)
        changed = answer_with(answer, body)
        if altered is not None:
            altered.append(changed.headers["content-type"])
        return changed

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.fixture
def synced(tapes: Tapes, tmp_path: Path) -> list[str]:
    """Alice's laptop recorded and pushed five nodes; her desktop is logged in, empty."""
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    recorded = record(tmp_path / "laptop")
    assert tapes("laptop", "storage", "sync")[0] == 0
    (tmp_path / "desktop").mkdir()
    shutil.copy(tmp_path / "laptop" / "identity.key", tmp_path / "desktop" / "identity.key")
    assert tapes("desktop", "auth", "login", "--server", AUDIENCE)[0] == 0
    return recorded


@pytest.mark.parametrize("form", [None, "application/json"], ids=["msgpack", "json"])
@pytest.mark.parametrize("name", sorted(PULL_MUTATIONS))
def test_an_altered_envelope_is_refused_and_not_stored(
    name: str, form: str | None, synced: list[str], tapes: Tapes, tmp_path: Path,
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """In either wire form: the client asks for MessagePack, a JSON-only server answers JSON."""
    altered: list[str] = []
    evil = hostile(client, "/api/v1/sync/pull", PULL_MUTATIONS[name], form=form, altered=altered)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1, name
    assert "integrity" in err
    assert set(altered) == {form or MSGPACK}  # the altered pages reached the client so
    stored = hashes(tmp_path / "desktop")
    assert set(stored) < set(synced)  # only verified nodes, and not all of them
    assert tapes("desktop", "verify")[0] == 0  # what was stored is intact


@pytest.mark.parametrize("form", [None, "application/json"], ids=["msgpack", "json"])
def test_either_wire_form_pulls_every_node(
    form: str | None, synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The client asks for MessagePack; a server that answers only JSON serves it as well."""
    altered: list[str] = []
    relay = hostile(client, "/api/v1/sync/pull", lambda _page: None, form=form, altered=altered)
    monkeypatch.setattr(context, "http_factory", lambda _url: relay)
    assert tapes("desktop", "storage", "sync")[0] == 0
    assert set(altered) == {form or MSGPACK}
    assert sorted(hashes(tmp_path / "desktop")) == sorted(synced)


BROKEN_PAGES = {
    "not MessagePack": b"\xc1\xc1\xc1",
    "JSON labelled MessagePack": b'{"vault":"v","items":[],"cursor":0,"more":false}',
    "a page cut short": b"\x85\xa5vault",
    "an envelope with a field too many": None,  # built from the real page in the test
}


@pytest.mark.parametrize("name", sorted(BROKEN_PAGES))
def test_a_malformed_binary_page_is_one_clear_error_and_stores_nothing(
    name: str, synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def handler(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method, str(request.url), content=request.content, headers=request.headers
        )
        if "/api/v1/sync/pull" not in request.url.path:
            return httpx.Response(answer.status_code, content=answer.content,
                                  headers=answer.headers)  # fmt: skip
        assert is_packed(answer)
        content = BROKEN_PAGES[name]
        if content is None:  # one more element in the first envelope's array
            page = msgspec.msgpack.decode(answer.content)
            page["items"][0]["envelope"].append("extra")
            content = msgspec.msgpack.encode(page)
        return httpx.Response(200, content=content, headers={"content-type": MSGPACK})

    evil = httpx.Client(transport=httpx.MockTransport(handler))
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert err.splitlines()[0] == (
        "tapes: error: sync failed: server: the server's answer to GET /api/v1/sync/pull is "
        "malformed"
    ), err
    assert hashes(tmp_path / "desktop") == []


def test_a_forged_chain_is_refused_before_any_key_is_used(
    synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def forge(page: dict[str, Any]) -> None:
        statement = page["statements"][0]
        statement["signature"] = _flip(statement["signature"], 3)

    evil = hostile(client, "/chain", forge)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert err.startswith("tapes: error: ")
    assert hashes(tmp_path / "desktop") == []


def test_a_chain_swapped_for_another_vaults_is_refused(
    synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The server answers with Bob's (valid, signed) chain in place of Alice's."""
    assert tapes("bob", "auth", "login", "--server", AUDIENCE, "--handle", "bob")[0] == 0
    bob_vault = json.loads((tmp_path / "bob" / "session.json").read_text())["personal_vault"]
    bobs_chain = client.get(
        f"/api/v1/vaults/{bob_vault}/chain",
        headers={"Authorization": "Bearer " + json.loads(
            (tmp_path / "bob" / "session.json").read_text())["access_token"]},
    ).json()  # fmt: skip

    def swap(page: dict[str, Any]) -> None:
        page.clear()
        page.update(bobs_chain)

    evil = hostile(client, "/chain", swap)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert err.startswith("tapes: error: ")
    assert hashes(tmp_path / "desktop") == []


def test_a_chain_rolled_back_below_the_verified_head_is_refused(
    synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The laptop verified the chain up to its head; a later answer without it is a rollback."""

    def truncate(page: dict[str, Any]) -> None:
        if "statements" in page:  # the chain, without its genesis
            page["statements"] = []
            page["head"] = {"seqno": -1, "hash": ""}
        if "items" in page:  # a pull page that says the chain moved, to make the client look
            page["chain_seqno"] = -1

    evil = hostile(client, "/api/v1/", truncate)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("laptop", "storage", "sync")
    assert code == 1
    assert err.startswith("tapes: error: ")
    assert sorted(hashes(tmp_path / "laptop")) == synced  # the local store is untouched


def _cursor(home: Path) -> int:
    with sqlite3.connect(home / "tapes.sqlite") as db:
        row = db.execute("SELECT value FROM e2e_state WHERE key = 'cursor'").fetchone()
    return int(row[0]) if row else 0


def test_a_cursor_that_never_advances_ends_the_round_instead_of_looping(
    synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Every pull answers "more" from where the client already is, with nothing in it."""

    def stall(page: dict[str, Any]) -> None:
        page.update(items=[], cursor=0, more=True)

    evil = hostile(client, "/api/v1/sync/pull", stall)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert "integrity" in err
    assert "cursor did not advance" in err
    assert hashes(tmp_path / "desktop") == []
    assert _cursor(tmp_path / "desktop") == 0


def test_a_cursor_sent_back_to_the_start_never_moves_the_clients_back(
    synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """After an honest sync the server answers with cursor 0, "more", and the old nodes again."""
    desktop = tmp_path / "desktop"
    assert tapes("desktop", "storage", "sync")[0] == 0
    assert sorted(hashes(desktop)) == synced
    honest = _cursor(desktop)
    assert honest > 0
    replay: list[dict[str, Any]] = []

    def rewind(page: dict[str, Any]) -> None:
        if not replay:  # the first answer after the honest sync: capture a page of old items
            replay.extend(client.get(
                "/api/v1/sync/pull", params={"vault": page["vault"], "after": 0},
                headers={"Authorization": "Bearer " + json.loads(
                    (desktop / "session.json").read_text())["access_token"]},
            ).json()["items"])  # fmt: skip
        page.update(items=replay, cursor=0, more=True)

    evil = hostile(client, "/api/v1/sync/pull", rewind)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert "cursor did not advance" in err
    assert _cursor(desktop) == honest  # never moved back
    assert sorted(hashes(desktop)) == synced  # the replayed nodes are stored once
    assert tapes("desktop", "verify")[0] == 0


PUSH_ANSWERS: dict[str, Mutation] = {
    "a head no server takes back": lambda a: a.update(head_seq=MAX_SEQ + 1),
    "a run longer than the batch": lambda a: a.update(first_seq=1, head_seq=MAX_SEQ),
    "a run shorter than the batch": lambda a: a.update(first_seq=a["head_seq"]),
    "a run starting at 0": lambda a: a.update(first_seq=0),
    "a negative head": lambda a: a.update(head_seq=-1),
    "a run for nothing stored": lambda a: a.update(stored=[], existing=a["stored"]),
}


@pytest.mark.parametrize("name", sorted(PUSH_ANSWERS))
def test_a_push_answer_whose_numbers_do_not_fit_is_refused_and_nothing_recorded(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:  # fmt: skip
    """The numbers of a push answer become the client's own runs, which its pull steps over, and
    its cursor: a run that is not exactly the stored nodes would skip others' nodes for ever, a
    number beyond what the server takes back (``after`` ≤ ``MAX_SEQ``) would make every later
    pull a 400. Refused as malformed, nothing recorded; the next honest sync finishes."""
    laptop = tmp_path / "laptop"
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    recorded = record(laptop)
    evil = hostile(client, "/api/v1/sync/push", PUSH_ANSWERS[name])
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("laptop", "storage", "sync")
    assert code == 1
    assert "malformed" in err.splitlines()[0]
    with sqlite3.connect(laptop / "tapes.sqlite") as db:
        assert db.execute("SELECT count(*) FROM e2e_remote").fetchone() == (0,)
    assert _cursor(laptop) == 0
    monkeypatch.setattr(context, "http_factory", lambda _url: client)
    code, out, err = tapes("laptop", "storage", "sync", "--json")
    assert code == 0, err
    assert json.loads(out)["pulled"] == 0  # its own nodes, now known as such, are not pulled
    assert "0 to pull" in tapes("laptop", "storage", "status")[1]
    assert len(recorded) == 5


@pytest.mark.parametrize("cursor", [MAX_SEQ + 1, -1])
def test_a_pull_cursor_no_server_takes_back_is_refused_and_not_kept(
    synced: list[str], tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch, cursor: int,
) -> None:  # fmt: skip
    desktop = tmp_path / "desktop"
    evil = hostile(client, "/api/v1/sync/pull", lambda page: page.update(cursor=cursor))
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert "malformed" in err.splitlines()[0]
    assert hashes(desktop) == []
    assert _cursor(desktop) == 0
    monkeypatch.setattr(context, "http_factory", lambda _url: client)
    assert tapes("desktop", "storage", "sync")[0] == 0
    assert sorted(hashes(desktop)) == synced
