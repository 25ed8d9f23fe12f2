"""The binary wire: a pull answers MessagePack when asked (``Accept``), the server stores each
envelope packed, and rows stored as JSON before the binary wire are served in both forms. The
two forms carry the same records, and a JSON client reads back byte for byte what it pushed."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from keymgmt import Envelope, PackedEnvelope
from keymgmt._encoding import b64d
from server.db.models import NodeRecord
from server.domain.nodes.stored import as_json
from tapes_e2e.protocol import MAX_PAGE_BYTES, MSGPACK, PackedPullPage
from tests.server.conftest import User, Vault, b64
from tests.server.test_bounded_pages import push

PACKED = {"Accept": MSGPACK}


def pull(user: User, accept: str | None = None, **params: Any) -> Any:
    headers = dict(user.headers) | ({"Accept": accept} if accept is not None else {})
    response = user.client.get(
        "/api/v1/sync/pull", params={"vault": user.vault, **params}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


def records(page: PackedPullPage) -> list[Envelope]:
    return [Envelope.from_packed(item.envelope) for item in page.items]


def test_a_pull_in_messagepack_carries_the_same_records_in_fewer_bytes(alice: User) -> None:
    chain = Vault(alice.vault, alice.identity).chain(6)
    push(alice, chain)
    as_json_answer = pull(alice)
    packed_answer = pull(alice, MSGPACK)
    assert as_json_answer.headers["content-type"].startswith("application/json")
    assert packed_answer.headers["content-type"] == MSGPACK
    assert packed_answer.headers["vary"] == as_json_answer.headers["vary"] == "Accept"
    page = msgspec.msgpack.decode(packed_answer.content, type=PackedPullPage)
    plain = as_json_answer.json()
    assert records(page) == [Envelope.from_dict(e) for e in chain]
    assert [i["envelope"] for i in plain["items"]] == chain  # byte for byte what was pushed
    assert [(i.seq, i.uploaded_at) for i in page.items] == [
        (i["seq"], i["uploaded_at"]) for i in plain["items"]
    ]
    assert (page.cursor, page.more, page.chain_seqno) == (
        plain["cursor"], plain["more"], plain["chain_seqno"],
    )  # fmt: skip
    assert len(packed_answer.content) < 0.8 * len(as_json_answer.content)


@pytest.mark.parametrize(
    ("accept", "packed"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        (MSGPACK, True),
        (f"application/json;q=0.5, {MSGPACK}", True),
        (f"{MSGPACK};q=0.2, application/json", False),
        ("text/html", False),
    ],
)
def test_the_form_follows_the_accept_header_and_json_is_the_default(
    alice: User, accept: str | None, packed: bool
) -> None:
    push(alice, Vault(alice.vault, alice.identity).chain(2))
    answer = pull(alice, accept)
    assert (answer.headers["content-type"] == MSGPACK) is packed


def test_each_envelope_is_stored_packed_and_smaller_than_its_json(
    client: TestClient[Any], alice: User
) -> None:
    chain = Vault(alice.vault, alice.identity).chain(3)
    push(alice, chain)
    with Session(client.app.state.engine) as db:
        stored = list(db.scalars(select(NodeRecord.envelope).order_by(NodeRecord.seq)))
    for blob, pushed in zip(stored, chain, strict=True):
        assert blob[:1] != b"{"
        unpacked = msgspec.msgpack.decode(blob, type=PackedEnvelope)
        assert unpacked == Envelope.from_dict(pushed).to_packed()
        assert json.loads(as_json(blob)) == pushed
        assert len(blob) < 0.8 * len(json.dumps(pushed, separators=(",", ":")))


def test_rows_stored_as_json_before_the_binary_wire_are_served_in_both_forms(
    client: TestClient[Any], alice: User
) -> None:
    chain = Vault(alice.vault, alice.identity).chain(4)
    push(alice, chain)
    with Session(client.app.state.engine) as db, db.begin():
        for row in db.scalars(select(NodeRecord).where(NodeRecord.seq <= 2)):
            row.envelope = as_json(row.envelope)  # as a push before this change stored it
    page = msgspec.msgpack.decode(pull(alice, MSGPACK).content, type=PackedPullPage)
    assert records(page) == [Envelope.from_dict(e) for e in chain]
    assert [i["envelope"] for i in pull(alice).json()["items"]] == chain
    node = alice.get(f"/api/v1/nodes/{chain[0]['node_id']}").json()
    assert node["envelope"] == chain[0]


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("ciphertext", "AB", "not canonical"),  # the last character's unused bits are set
        ("ciphertext", "ABCDE", "not canonical"),  # 4n+1 characters: no such base64
    ],
)
def test_a_byte_field_that_is_not_canonical_base64url_is_refused(
    client: TestClient[Any], alice: User, field: str, value: str, why: str
) -> None:
    (envelope,) = Vault(alice.vault, alice.identity).chain(1)
    response = alice.post(
        "/api/v1/sync/push", {"vault": alice.vault, "envelopes": [dict(envelope, **{field: value})]}
    )
    assert response.status_code == 400, response.text
    assert why in response.json()["detail"]
    with Session(client.app.state.engine) as db:
        assert db.scalar(select(NodeRecord.node_id)) is None


def test_a_page_is_bounded_by_the_bytes_it_carries_in_its_own_form(
    client: TestClient[Any], alice: User
) -> None:
    """Five envelopes of 3 MiB: three fit a JSON page (4 MiB each), all five a packed one."""
    size = 3 * 1024 * 1024
    chain = [
        dict(env, ciphertext=b64(bytes(size)), padded_size=size - 16)
        for env in Vault(alice.vault, alice.identity).chain(5)
    ]
    for envelope in chain:
        push(alice, [envelope])
    plain = pull(alice, limit=1000).json()
    packed = msgspec.msgpack.decode(pull(alice, MSGPACK, limit=1000).content, type=PackedPullPage)
    json_size = len(json.dumps(chain[0], separators=(",", ":")))
    assert (len(plain["items"]), plain["more"]) == (MAX_PAGE_BYTES // json_size, True)
    assert (len(packed.items), packed.more) == (5, False)


def test_an_old_json_row_that_cannot_be_packed_goes_out_in_a_json_page(
    client: TestClient[Any], alice: User
) -> None:
    """A row a server stored as JSON before the binary wire, with a ciphertext in the base64url
    alphabet that is no base64 (4n+1 characters; only the alphabet was checked then): a
    MessagePack pull gets that page as JSON, never a 500, and every reader refuses the row
    when it decodes it strictly."""
    chain = Vault(alice.vault, alice.identity).chain(3)
    push(alice, chain)
    text = chain[1]["ciphertext"]
    odd = text + "A" * ((1 - len(text)) % 4)
    with Session(client.app.state.engine) as db, db.begin():
        row = db.scalars(select(NodeRecord).where(NodeRecord.seq == 2)).one()
        row.envelope = json.dumps(dict(chain[1], ciphertext=odd), separators=(",", ":")).encode()
    answer = pull(alice, MSGPACK)
    assert answer.headers["content-type"].startswith("application/json")
    items = answer.json()["items"]
    assert [i["envelope"]["node_id"] for i in items] == [e["node_id"] for e in chain]
    assert items[1]["envelope"]["ciphertext"] == odd
    assert b64d_or_none(odd) is None  # refused by every strict reader
    after = msgspec.msgpack.decode(pull(alice, MSGPACK, after=2).content, type=PackedPullPage)
    assert records(after) == [Envelope.from_dict(chain[2])]  # the next page is packed again


def b64d_or_none(text: str) -> bytes | None:
    try:
        return b64d(text)
    except ValueError:
        return None
