"""The binary wire for pushes: a client asks the server once (``OPTIONS`` on the push route,
``Accept-Post``) and sends its batches in MessagePack only when the server lists it; a server
that lists nothing, answers an error or cannot be reached is sent JSON, and a server that refuses
MessagePack after all (415: replaced by an older one mid-sync) gets the batch again in JSON and
is never sent MessagePack again by that client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.domain.nodes import controllers
from server.errors import UnsupportedMediaType
from tapes_e2e.client import ApiClient
from tapes_e2e.errors import UnsupportedBodyError
from tapes_e2e.protocol import MSGPACK
from tests.client.conftest import Tapes
from tests.client.test_api_client import SESSION, URL
from tests.client.test_sync_no_double_work import (
    BATCH,
    sessions,
    small_batches,
    sync_report,
    sync_status,
)
from tests.client.test_teams import ok
from tests.server.conftest import AUDIENCE

__all__ = ["small_batches"]  # the fixture, found by pytest by name


class Sent:
    """Every request the CLI's clients send: method, path and the body's content type."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        real = ApiClient._send

        def send(self_: ApiClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
            kind = kwargs.get("content_type") if kwargs.get("body") is not None else None
            self.requests.append((method, path, kind))
            return real(self_, method, path, **kwargs)

        monkeypatch.setattr(ApiClient, "_send", send)

    def pushes(self) -> list[str | None]:
        return [kind for method, path, kind in self.requests if path == "/api/v1/sync/push"]


@pytest.mark.usefixtures("small_batches")
def test_a_sync_asks_once_and_pushes_every_batch_in_messagepack(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(tapes("alice", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    sessions(tmp_path / "alice", 3, 4)  # 12 nodes: four batches
    sent = Sent(monkeypatch)
    report = sync_report(tapes, "alice")
    assert report["pushed"] == 12
    asked = [r for r in sent.requests if r[0] == "OPTIONS"]
    assert asked == [("OPTIONS", "/api/v1/sync/push", None)]  # once, for four batches
    assert sent.pushes() == [None, MSGPACK, MSGPACK, MSGPACK, MSGPACK]
    assert sync_status(tapes, "alice")["pending_push"] == 0


@pytest.mark.usefixtures("small_batches")
def test_a_server_that_refuses_messagepack_mid_sync_gets_json_from_then_on(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said it takes MessagePack, then answers 415 (an older server took its place): the
    refused batch goes again in JSON, and so does every batch after it; nothing is lost."""
    ok(tapes("alice", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    sessions(tmp_path / "alice", 3, 4)
    real_form = controllers.push_form

    def json_only(content_type: str) -> str:
        form = real_form(content_type)
        if form == MSGPACK:
            raise UnsupportedMediaType("JSON only", accept_post="application/json")
        return form

    monkeypatch.setattr(controllers, "push_form", json_only)
    sent = Sent(monkeypatch)
    report = sync_report(tapes, "alice")
    assert report["pushed"] == 12
    kinds = [kind for kind in sent.pushes() if kind is not None]
    # refused: the batch in flight, and perhaps the one sealed ahead meanwhile; each went again
    # in JSON, and every later batch went in JSON at once
    assert kinds.count(MSGPACK) in (1, 2)
    assert kinds.count("application/json") == 12 // BATCH
    assert kinds[kinds.count(MSGPACK) + 1 :] == ["application/json"] * (12 // BATCH - 1)
    assert sync_status(tapes, "alice")["pending_push"] == 0


def asking(answer: Callable[[httpx.Request], httpx.Response]) -> tuple[ApiClient, list[str]]:
    """A client of a mock server that answers the push route's ``OPTIONS`` with ``answer``."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.method)
        assert (request.method, request.url.path) == ("OPTIONS", "/api/v1/sync/push")
        return answer(request)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return ApiClient(http, api_url=URL, session=SESSION), asked


@pytest.mark.parametrize(
    ("answer", "packed"),
    [
        (httpx.Response(204, headers={"Accept-Post": "application/json, " + MSGPACK}), True),
        (httpx.Response(204, headers={"Accept-Post": f" {MSGPACK.upper()} ;q=1"}), True),
        (httpx.Response(204, headers={"Accept-Post": "application/json"}), False),
        (httpx.Response(204, headers={"Allow": "OPTIONS, POST"}), False),  # an older server
        (httpx.Response(204, headers={"Accept-Post": MSGPACK + "x"}), False),
        (httpx.Response(404), False),
        (httpx.Response(500, headers={"Accept-Post": MSGPACK}), False),  # an error lists nothing
    ],
)
def test_messagepack_is_sent_only_to_a_server_that_lists_it_and_the_answer_is_kept(
    answer: httpx.Response, packed: bool
) -> None:
    api, asked = asking(lambda _request: answer)
    assert api.takes_packed_push() is packed
    assert api.takes_packed_push() is packed
    assert asked == ["OPTIONS"]


def test_an_unreachable_server_is_sent_json_and_asked_again_later() -> None:
    reachable = [False]

    def answer(request: httpx.Request) -> httpx.Response:
        if not reachable[0]:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(204, headers={"Accept-Post": MSGPACK})

    api, asked = asking(answer)
    assert api.takes_packed_push() is False
    reachable[0] = True
    assert api.takes_packed_push() is True
    assert asked == ["OPTIONS", "OPTIONS"]


def test_a_415_to_a_messagepack_push_is_its_own_error_and_the_client_stops_sending_it() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "OPTIONS":
            return httpx.Response(204, headers={"Accept-Post": MSGPACK})
        assert request.headers["content-type"] == MSGPACK
        problem = {"type": "about:blank", "title": "T", "status": 415, "detail": "JSON only"}
        return httpx.Response(415, json=problem)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    api = ApiClient(http, api_url=URL, session=SESSION)
    assert api.takes_packed_push()
    with pytest.raises(UnsupportedBodyError) as info:
        api.push_encoded(b"\x80", packed=True)
    assert (info.value.status, info.value.detail) == (415, "JSON only")
    assert not api.takes_packed_push()  # remembered: no second question either
