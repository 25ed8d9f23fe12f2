"""The binary push: ``POST /api/v1/sync/push`` takes its batch in JSON or in MessagePack, chosen
by ``Content-Type`` (any other is a 415), and ``OPTIONS`` lists both in ``Accept-Post``.

A batch pushed packed is stored byte for byte as the same batch pushed in JSON (the server
encodes each envelope again, whatever encoding the client chose), and it passes the same checks:
a body that is no valid batch is a 400 with a one-line detail, a stale epoch a 409, someone
else's vault a 404, and a refused push stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from keymgmt import Envelope, EnvelopeWire, PackedEnvelope
from server.db.models import NodeRecord
from server.domain.nodes.stored import store_form
from tapes_e2e.protocol import MSGPACK, PackedPullPage, Problem
from tests.server.conftest import User, Vault
from tests.server.test_bad_input import assert_problem, row_counts
from tests.server.test_binary_wire import pull, records

PUSH = "/api/v1/sync/push"
# Refusals decided before the database is reached: on SQLite only (the rest run on both).
DECODING_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ACCEPT_POST = "application/json, application/vnd.msgpack"
NOT_A_BATCH = "the push body is not a valid batch: "
FIELDS = PackedEnvelope.__struct_fields__
DEEP = b"\x91" * 100_000 + b"\xc0"  # [[[...[nil]...]]], 100,000 deep


def send(user: User, body: bytes, content_type: str | None = MSGPACK) -> httpx.Response:
    """``body`` pushed as it is, under ``content_type`` (none at all for ``None``)."""
    headers = user.headers | ({} if content_type is None else {"Content-Type": content_type})
    return user.client.post(PUSH, content=body, headers=headers)


def packed(vault: str, envelopes: list[Any]) -> bytes:
    """A MessagePack push body; each envelope a JSON dict (packed here) or a list of fields."""
    items = [Envelope.from_dict(e).to_packed() if isinstance(e, dict) else e for e in envelopes]
    return msgspec.msgpack.encode({"vault": vault, "envelopes": items})


def fields(envelope: dict[str, Any], **changes: Any) -> list[Any]:
    """The packed envelope's array, some fields changed (to values no JSON dict could hold)."""
    envelope_fields = msgspec.structs.astuple(Envelope.from_dict(envelope).to_packed())
    values = dict(zip(FIELDS, envelope_fields, strict=True))
    unknown = set(changes) - set(FIELDS)
    assert not unknown, unknown
    return list((values | changes).values())


def canonical(envelope: dict[str, Any]) -> bytes:
    """The bytes the server stores for ``envelope`` pushed in JSON."""
    return store_form(msgspec.convert(envelope, EnvelopeWire))


def stored(client: TestClient[Any]) -> list[bytes]:
    with Session(client.app.state.engine) as db:
        return list(db.scalars(select(NodeRecord.envelope).order_by(NodeRecord.seq)))


def wide(value: Any) -> bytes:
    """``value`` in MessagePack's widest encodings: valid, but not what any encoder writes."""
    if value is None or isinstance(value, bool):
        return msgspec.msgpack.encode(value)
    if isinstance(value, int):
        return b"\xce" + value.to_bytes(4) if value < 2**32 else b"\xcf" + value.to_bytes(8)
    if isinstance(value, str):
        return b"\xdb" + len(value.encode()).to_bytes(4) + value.encode()
    if isinstance(value, bytes):
        return b"\xc6" + len(value).to_bytes(4) + value
    if isinstance(value, list | tuple):
        return b"\xdd" + len(value).to_bytes(4) + b"".join(map(wide, value))
    assert isinstance(value, dict), value
    return b"\xdf" + len(value).to_bytes(4) + b"".join(wide(k) + wide(v) for k, v in value.items())


# --- the two forms --------------------------------------------------------------------------


def test_options_lists_both_forms_in_accept_post_to_a_caller_with_credentials(
    client: TestClient[Any], alice: User
) -> None:
    answer = client.options(PUSH, headers=alice.headers)
    assert answer.status_code == 204, answer.text
    assert answer.headers["accept-post"] == ACCEPT_POST
    anonymous = client.options(PUSH)
    assert_problem(anonymous, 401)
    assert "accept-post" not in anonymous.headers


def test_a_packed_batch_is_stored_and_answered_as_the_same_batch_in_json(
    client: TestClient[Any], alice: User
) -> None:
    vault = Vault(alice.vault, alice.identity)
    metadata_only = vault.seal_metadata_only("b" * 64, {"model": "m"}, alice.identity)
    batch = [*vault.chain(3), metadata_only]  # nil nonce, ciphertext and signature too
    ids = [e["node_id"] for e in batch]
    first = send(alice, packed(alice.vault, batch[:2]))
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": ids[:2], "existing": [], "head_seq": 2, "first_seq": 1}
    assert stored(client) == [canonical(e) for e in batch[:2]]
    rest = alice.post(PUSH, {"vault": alice.vault, "envelopes": batch})  # the rest in JSON
    assert rest.json() == {"stored": ids[2:], "existing": ids[:2], "head_seq": 4, "first_seq": 3}
    again = send(alice, packed(alice.vault, batch))
    assert again.json() == {"stored": [], "existing": ids, "head_seq": 4, "first_seq": 0}
    assert stored(client) == [canonical(e) for e in batch]
    assert [i["envelope"] for i in pull(alice).json()["items"]] == batch
    page = msgspec.msgpack.decode(pull(alice, MSGPACK).content, type=PackedPullPage)
    assert records(page) == [Envelope.from_dict(e) for e in batch]


def test_a_batch_in_a_non_canonical_encoding_is_stored_in_the_servers_own(
    client: TestClient[Any], alice: User
) -> None:
    """Every int a uint32, every str a str32, every bin a bin32, every array and map 32-bit
    counted: the stored bytes are still those of the canonical encoding."""
    batch = Vault(alice.vault, alice.identity).chain(2)
    body = {"vault": alice.vault, "envelopes": [fields(e) for e in batch]}
    assert wide(body) != msgspec.msgpack.encode(body)
    answer = send(alice, wide(body))
    assert answer.status_code == 200, answer.text
    assert stored(client) == [canonical(e) for e in batch]


# --- a body that is no valid batch ------------------------------------------------------------


def _one(vault: str, env: dict[str, Any], **changes: Any) -> bytes:
    return packed(vault, [fields(env, **changes)])


def _bad_utf8(vault: str, env: dict[str, Any], old: bytes, new: bytes) -> bytes:
    body = packed(vault, [env])
    assert body.count(old) == 1, old
    return body.replace(old, new)


Malformed = Callable[[str, dict[str, Any]], bytes]
MALFORMED: dict[str, Malformed] = {
    "empty": lambda v, e: b"",
    "truncated": lambda v, e: packed(v, [e])[:-1],
    "trailing bytes": lambda v, e: packed(v, [e]) + b"\xc0",
    "an extra element": lambda v, e: packed(v, [[*fields(e), None]]),
    "a missing element": lambda v, e: packed(v, [fields(e)[: FIELDS.index("signature")]]),
    "nonce as str": lambda v, e: _one(v, e, nonce=e["nonce"]),
    "nonce of 23 bytes": lambda v, e: _one(v, e, nonce=bytes(23)),
    "signature of 63 bytes": lambda v, e: _one(v, e, signature=bytes(63)),
    "epoch as str": lambda v, e: _one(v, e, epoch="1"),
    "an ext value": lambda v, e: _one(v, e, epoch=msgspec.msgpack.Ext(1, b"\x01")),
    "invalid utf-8 in a str": lambda v, e: _bad_utf8(v, e, b"\xa4node", b"\xa4n\xffde"),
    "invalid utf-8 in a metadata key": lambda v, e: _bad_utf8(v, e, b"\xa4role", b"\xa4\xc0le"),
    "deep at the top": lambda v, e: DEEP,
    "deep as an envelope": lambda v, e: packed(v, [msgspec.Raw(DEEP)]),
    "deep in metadata": lambda v, e: _one(v, e, metadata={"model": msgspec.Raw(DEEP)}),
    "no envelopes": lambda v, e: packed(v, []),
    "2001 envelopes": lambda v, e: packed(v, [fields(e)] * 2001),
    "an envelope as a map": lambda v, e: msgspec.msgpack.encode({"vault": v, "envelopes": [e]}),
    "a vault that is an array": lambda v, e: msgspec.msgpack.encode(
        {"vault": [v], "envelopes": []}
    ),
    "a metadata value in bin": lambda v, e: _one(v, e, metadata={"model": b"m"}),
    "a metadata value in float": lambda v, e: _one(v, e, metadata={"total_tokens": 7.0}),
    "a metadata value that is a map": lambda v, e: _one(v, e, metadata={"model": {"n": "m"}}),
    "a metadata value that is nil": lambda v, e: _one(v, e, metadata={"model": None}),
    "a metadata value that is a bool": lambda v, e: _one(v, e, metadata={"total_tokens": True}),
    "a metadata key that is an int": lambda v, e: _one(v, e, metadata={7: "m"}),
    "json as msgpack": lambda v, e: msgspec.json.encode({"vault": v, "envelopes": [e]}),
    "msgpack as json": lambda v, e: packed(v, [e]),
}


@DECODING_ONLY
@pytest.mark.parametrize("case", MALFORMED)
def test_a_body_that_is_no_valid_batch_is_400_on_one_line_and_stores_nothing(
    client: TestClient[Any], alice: User, case: str
) -> None:
    (env,) = Vault(alice.vault, alice.identity).chain(1)
    body = MALFORMED[case](alice.vault, env)
    before = row_counts(client)
    answer = send(alice, body, "application/json" if case == "msgpack as json" else MSGPACK)
    assert_problem(answer, 400)
    assert answer.json()["detail"].startswith(NOT_A_BATCH)
    assert row_counts(client) == before
    assert send(alice, packed(alice.vault, [env])).status_code == 200  # the batch itself is fine


@DECODING_ONLY
@pytest.mark.parametrize("name", ["x\ny", "x\r\ny", "x\u2028y", "x\x00y", "x" * 5000 + "\n"])
@pytest.mark.parametrize("form", ["application/json", MSGPACK])
def test_an_unknown_field_name_cannot_break_the_detail_onto_two_lines(
    alice: User, name: str, form: str
) -> None:
    (env,) = Vault(alice.vault, alice.identity).chain(1)
    if form == MSGPACK:
        body = msgspec.msgpack.encode({"vault": alice.vault, "envelopes": [fields(env)], name: 1})
    else:
        body = msgspec.json.encode({"vault": alice.vault, "envelopes": [env], name: 1})
    answer = send(alice, body, form)
    assert_problem(answer, 400)
    detail = answer.json()["detail"]
    assert detail.startswith(NOT_A_BATCH + "Object contains unknown field `x")
    assert detail.isprintable()
    assert len(detail) < 400


# --- the same checks as JSON --------------------------------------------------------------


REFUSED_METADATA: dict[str, dict[str, Any]] = {
    "nul in metadata": {"model": "g\x00"},
    "nul in a metadata key": {"mo\x00del": "g"},
    "a field no policy keeps": {"colour": "blue"},
    "a token count too large": {"total_tokens": 2**64 - 1},
    "a negative token count": {"prompt_tokens": -1},
    "a model name too long": {"model": "m" * 513},
    "a created_at that is no timestamp": {"created_at": "yesterday"},
}


def _refusals(alice: User, bob: User) -> dict[str, tuple[User, list[dict[str, Any]]]]:
    """Batches for alice's vault the service refuses: (who pushes, what)."""
    chain = Vault(alice.vault, alice.identity).chain(3)
    stale = Vault(alice.vault, alice.identity)
    stale.epoch = 2  # the personal vault is in epoch 1
    first = chain[0]
    return {
        "missing parent": (alice, [chain[0], chain[2]]),
        "another vault named": (alice, [first, *Vault("v_other", alice.identity).chain(1)]),
        "stale epoch": (alice, stale.chain(1)),
        "someone else's vault": (bob, chain),
        "the same node twice": (alice, [first, first]),
        "no chain position": (alice, [first | {"at_seqno": None}]),
        "no nonce": (alice, [first | {"nonce": None}]),
    } | {name: (alice, [first | {"metadata": md}]) for name, md in REFUSED_METADATA.items()}


@pytest.mark.parametrize(
    ("case", "status", "problem"),
    [
        ("missing parent", 400, Problem.MISSING_PARENT),
        ("another vault named", 400, "about:blank"),
        ("stale epoch", 409, Problem.STALE_EPOCH),
        ("someone else's vault", 404, "about:blank"),
        ("the same node twice", 400, "about:blank"),
        ("no chain position", 400, "about:blank"),
        ("no nonce", 400, "about:blank"),
        *[(name, 400, "about:blank") for name in REFUSED_METADATA],
    ],
)
def test_a_packed_batch_is_refused_as_the_same_batch_in_json_is(
    client: TestClient[Any], alice: User, bob: User, case: str, status: int, problem: str
) -> None:
    user, batch = _refusals(alice, bob)[case]
    before = row_counts(client)
    as_packed = send(user, packed(alice.vault, batch))
    as_json = user.post(PUSH, {"vault": alice.vault, "envelopes": batch})
    assert_problem(as_packed, status)
    assert as_packed.json()["type"] == problem
    assert as_packed.json() == as_json.json()
    assert not as_packed.json()["detail"].startswith(NOT_A_BATCH)  # refused past decoding
    assert row_counts(client) == before


@pytest.mark.parametrize(
    "size", [16 * 1024 * 1024, 21 * 1024 * 1024], ids=["over the batch", "over the body"]
)
def test_a_packed_batch_over_the_byte_limits_is_413_and_stores_nothing(
    client: TestClient[Any], alice: User, size: int
) -> None:
    (env,) = Vault(alice.vault, alice.identity).chain(1)
    big = fields(env, ciphertext=bytes(size), padded_size=size - 16)
    before = row_counts(client)
    assert_problem(send(alice, packed(alice.vault, [big])), 413)
    assert row_counts(client) == before


# --- Content-Type -----------------------------------------------------------------------------


@DECODING_ONLY
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/msgpack",
        "application/json-seq",
        "application/vnd.msgpackx",
    ],
)
def test_a_body_in_another_form_is_415_with_the_forms_in_accept_post(
    client: TestClient[Any], alice: User, content_type: str
) -> None:
    batch = Vault(alice.vault, alice.identity).chain(1)
    bodies = [
        packed(alice.vault, batch),
        msgspec.json.encode({"vault": alice.vault, "envelopes": batch}),
    ]
    before = row_counts(client)
    for body in bodies:  # a valid batch in either form
        answer = send(alice, body, content_type)
        assert_problem(answer, 415)
        assert answer.headers["accept-post"] == ACCEPT_POST
    assert row_counts(client) == before


@pytest.mark.parametrize(
    ("content_type", "form"),
    [
        (None, "json"),
        ("application/json; charset=utf-8", "json"),
        ("Application/JSON", "json"),
        (f"{MSGPACK}; q=1", "msgpack"),
        ("Application/Vnd.MsgPack", "msgpack"),
    ],
)
def test_json_without_a_content_type_and_either_form_with_parameters_are_taken(
    client: TestClient[Any], alice: User, content_type: str | None, form: str
) -> None:
    batch = Vault(alice.vault, alice.identity).chain(2)
    if form == "json":
        body = msgspec.json.encode({"vault": alice.vault, "envelopes": batch})
    else:
        body = packed(alice.vault, batch)
    answer = send(alice, body, content_type)
    assert ("content-type" in answer.request.headers) is (content_type is not None)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == [e["node_id"] for e in batch]
    assert stored(client) == [canonical(e) for e in batch]


@DECODING_ONLY
@pytest.mark.parametrize("content_type", [MSGPACK, "text/plain", "application/json"])
def test_an_anonymous_push_is_401_whatever_its_body(
    client: TestClient[Any], alice: User, content_type: str
) -> None:
    before = row_counts(client)
    for body in (b"\xc1", DEEP, packed(alice.vault, Vault(alice.vault, alice.identity).chain(1))):
        answer = client.post(PUSH, content=body, headers={"Content-Type": content_type})
        assert_problem(answer, 401)
    assert row_counts(client) == before


# --- the contract -------------------------------------------------------------------------


@DECODING_ONLY
def test_the_openapi_schema_documents_both_forms_the_415_and_the_options(
    client: TestClient[Any],
) -> None:
    operations = client.get("/schema/openapi.json").json()["paths"][PUSH]
    content = operations["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", MSGPACK}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/PushRequest"}
    assert "MessagePack" in content[MSGPACK]["schema"]["description"]
    assert "415" in operations["post"]["responses"]
    options = operations["options"]["responses"]
    assert "Accept-Post" in options["204"]["headers"]
    assert "401" in options
